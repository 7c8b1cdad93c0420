"""Variant name -> deployment form.  Adding a form = one module + one entry in VARIANTS.

``get_backend(variant, **options)`` builds the form with its options (e.g.
``get_backend("quantized_int8", fix_clamp_layout=True)``, ``get_backend("onnx", exporter="dynamo")``);
one instance is kept per variant and options.  ``threads`` is a load-time option: forms with a
runtime thread pool of their own (ONNX Runtime, ExecuTorch) take it, torch-based forms follow
``torch.set_num_threads`` and ignore it.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING, Any

from parbench.errors import ConfigError, UnknownVariant

if TYPE_CHECKING:  # base imports torch; the variant names and their order do not need it
    from parbench.backends.base import Availability, Backend


@dataclasses.dataclass(frozen=True)
class Form:
    module: str  # the module that defines the form
    cls: str  # its Backend class
    takes_threads: bool = False  # has a runtime thread pool sized at load
    # the tiers whose default variant selection (no --variants) includes the form; None: every tier
    default_tiers: tuple[str, ...] | None = None


VARIANTS: dict[str, Form] = {
    "eager": Form("parbench.backends.eager", "EagerBackend"),
    "torchscript": Form("parbench.backends.torchscript", "TorchScriptBackend"),
    "lite": Form("parbench.backends.lite", "LiteBackend"),
    "quantized_int8": Form("parbench.backends.quantized", "QuantizedInt8Backend"),
    "onnx": Form("parbench.backends.onnx", "OnnxBackend", takes_threads=True),
    "executorch_fp32": Form("parbench.backends.executorch", "ExecuTorchFp32Backend", takes_threads=True),
    "executorch_int8": Form("parbench.backends.executorch", "ExecuTorchInt8Backend", takes_threads=True),
    "coreml_fp16": Form("parbench.backends.coreml", "CoreMLFp16Backend"),
    "coreml_fp32": Form("parbench.backends.coreml", "CoreMLFp32Backend"),
    # the app's view: ImageType input, normalization folded into Core ML's one image scale
    "coreml_image": Form("parbench.backends.coreml_image", "CoreMLImageBackend"),
    # ImageType input, normalization as an exact first layer
    "coreml_image_exact": Form("parbench.backends.coreml_image", "CoreMLImageExactBackend"),
    # Apple's Core AI runtime: minutes per call at 640 px on a CPU, so opt-in beyond the smoke tier
    "coreai_fp32": Form("parbench.backends.coreai", "CoreAIFp32Backend", default_tiers=("smoke",)),
    "coreai_fp16": Form("parbench.backends.coreai", "CoreAIFp16Backend", default_tiers=("smoke",)),
}

_instances: dict[tuple[str, tuple[tuple[str, Any], ...]], Backend] = {}


class _Broken:
    """Stands in for a form whose module does not import here (missing package, bad install)."""

    def __init__(self, name: str, reason: str):
        self.name, self.family, self.shape_mode, self.suffix = name, "fp32", "any", ""
        self._reason = reason

    def available(self) -> Availability:
        from parbench.backends.base import Availability

        return Availability(False, False, self._reason, executor="none")

    def options(self) -> dict:
        return {}


def get_backend(variant: str, threads: int | None = None, **options: Any) -> Backend:
    """The form named ``variant``, built with ``options`` (kept: the same arguments give the same
    object).  A form whose module does not import here comes back as a stand-in whose
    ``available()`` says why, so every other form stays usable."""
    form = VARIANTS.get(variant)
    if form is None:
        raise UnknownVariant(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    if threads is not None and form.takes_threads:
        options["threads"] = threads
    options = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}  # TOML lists
    key = (variant, tuple(sorted(options.items())))
    try:
        hash(key)
    except TypeError:
        raise ConfigError(
            f"variant {variant!r}: options take plain values (str, int, float, bool, None), got {options}"
        ) from None
    if key in _instances:
        return _instances[key]
    try:
        module = importlib.import_module(form.module)
    except Exception as exc:  # keep every other form usable; doctor and results say why
        backend: Backend = _Broken(variant, f"{form.module} does not import: {type(exc).__name__}: {exc}")
    else:
        cls = getattr(module, form.cls)
        try:
            backend = cls(**options)
        except TypeError as exc:
            raise ConfigError(
                f"variant {variant!r} does not take the option(s) {sorted(options)}: {exc}"
            ) from None
        except ConfigError as exc:
            raise ConfigError(f"variant {variant!r}: {exc}") from None
    _instances[key] = backend
    return backend


def register(variant: str, form: Form) -> None:
    """Add a form (or replace one) under ``variant``, e.g. a form that lives in another package."""
    VARIANTS[variant] = form
    unregister_instances(variant)


def unregister(variant: str) -> None:
    VARIANTS.pop(variant, None)
    unregister_instances(variant)


def unregister_instances(variant: str) -> None:
    for key in [k for k in _instances if k[0] == variant]:
        del _instances[key]


def all_variants() -> list[str]:
    return list(VARIANTS)


def default_variants(tier: str) -> list[str]:
    """The variants a run of ``tier`` selects when none are named."""
    return [v for v, form in VARIANTS.items() if form.default_tiers is None or tier in form.default_tiers]
