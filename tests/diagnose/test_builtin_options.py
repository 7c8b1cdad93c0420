"""The built-in models' form options (keep_fp32 where a localisation pointed to it) are what the
harness builds the form with, and name modules the model really has."""

from __future__ import annotations

import dataclasses

import pytest

from parbench.backends.export_support import check_module_paths
from parbench.errors import ConfigError
from parbench.run.harness import Harness
from parbench.zoo.builtin import builtins


def test_builtin_keep_fp32_paths_exist_and_reach_the_form(tmp_path):
    h = Harness(cache_dir=tmp_path, registry={s.name: s for s in builtins()})
    with_options = [(s, v, o) for s in h.registry.values() for v, o in s.options.items()]
    assert ("animegan", "quantized_int8") in {(s.name, v) for s, v, _ in with_options}
    for spec, variant, options in with_options:
        backend = h.backend(spec.name, variant)
        assert backend.keep_fp32 == tuple(options["keep_fp32"])
        check_module_paths(spec.resolve_factory()(), backend.keep_fp32, f"{spec.name} {variant} keep_fp32")


def test_an_option_the_form_does_not_take_names_model_and_form(tmp_path):
    spec = next(s for s in builtins() if s.name == "tiny_classifier")
    bad = dataclasses.replace(spec, options={"onnx": {"keep_fp32": ("features.0",)}})
    h = Harness(cache_dir=tmp_path, registry={bad.name: bad})
    with pytest.raises(ConfigError, match=r"model 'tiny_classifier', options\.onnx: .*keep_fp32"):
        h.backend(bad.name, "onnx")
    with pytest.raises(ConfigError, match="options.coreml_nope: unknown variant"):
        Harness(
            cache_dir=tmp_path, registry={bad.name: dataclasses.replace(spec, options={"coreml_nope": {}})}
        )
