"""The registry builds every form with its options; a form's options all reach it, bad ones are
refused with the variant's name, and forms built with other options are other objects."""

from __future__ import annotations

import importlib
import inspect

import pytest

from parbench.backends import VARIANTS, get_backend
from parbench.errors import ConfigError, UnknownVariant


def _form_class(variant: str) -> type:
    """The form's class; a skip only when a third-party package it needs is not installed."""
    form = VARIANTS[variant]
    try:
        module = importlib.import_module(form.module)
    except ModuleNotFoundError as exc:
        if (exc.name or "").startswith("parbench"):
            raise
        pytest.skip(f"{form.module} needs {exc.name}, which is not installed here")
    return getattr(module, form.cls)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_constructor_option_reaches_the_form(variant: str) -> None:
    cls = _form_class(variant)
    params = [
        p
        for p in inspect.signature(cls).parameters.values()
        if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    default = get_backend(variant)
    assert default.name == variant
    for p in params:
        built = get_backend(variant, **{p.name: p.default})
        assert type(built) is cls and built.options() == default.options(), p.name
        if p.default is not None:  # None means "the form's default", stored as resolved
            assert getattr(built, p.name) == p.default, p.name


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_an_unknown_option_is_refused_with_the_variant_name(variant: str) -> None:
    _form_class(variant)
    with pytest.raises(ConfigError, match=f"variant {variant!r} does not take the option"):
        get_backend(variant, no_such_option=1)


def test_options_build_other_objects_and_leave_the_default_alone() -> None:
    default = get_backend("onnx")
    two = get_backend("onnx", threads=2)
    assert two is not default and two is get_backend("onnx", threads=2)
    assert (default.threads, two.threads) == (None, 2)
    assert get_backend("onnx") is default
    # a form without a runtime thread pool ignores threads: the same object as its default
    assert get_backend("torchscript", threads=4) is get_backend("torchscript")
    dynamo = get_backend("onnx", exporter="dynamo")
    assert dynamo.options()["exporter"] == "dynamo" != default.options()["exporter"]


def test_bad_names_and_values_are_config_errors() -> None:
    with pytest.raises(UnknownVariant, match="unknown variant 'tflite'; known: eager, torchscript"):
        get_backend("tflite")
    with pytest.raises(ConfigError, match="'onnx': options take plain values"):
        get_backend("onnx", opset={"default": 17})
    # a TOML list becomes a tuple (keep_fp32 = [...]); a form that wants a number still says so
    with pytest.raises(ConfigError, match="'onnx': opset must be an ONNX opset number"):
        get_backend("onnx", opset=[17])
    with pytest.raises(ConfigError, match="'onnx': opset must be an ONNX opset number"):
        get_backend("onnx", opset="17")
