"""Deployment forms, one module each.  Adding a form = one module + one line in VARIANTS."""

from __future__ import annotations

import importlib
import inspect

from parbench.backends.base import Availability, Backend

# variant name -> module defining a Backend class whose `name` is that variant
VARIANTS: dict[str, str] = {
    "eager": "parbench.backends.eager",
    "torchscript": "parbench.backends.torchscript",
    "lite": "parbench.backends.lite",
    "quantized_int8": "parbench.backends.quantized",
    "onnx": "parbench.backends.onnx",
    "executorch_fp32": "parbench.backends.executorch",
    "executorch_int8": "parbench.backends.executorch",
    "coreml_fp16": "parbench.backends.coreml",
    "coreml_fp32": "parbench.backends.coreml",
    "coreml_image": "parbench.backends.coreml_image",  # app's view: ImageType, normalization folded
    "coreml_image_exact": "parbench.backends.coreml_image",  # ImageType, normalization as a first layer
}

_cache: dict[str, Backend] = {}


class UnknownVariant(KeyError):
    def __str__(self) -> str:
        return f"unknown deployment form {self.args[0]!r}; known: {', '.join(VARIANTS)}"


class _Broken:
    """Stands in for a form whose module does not import here (missing package, bad install)."""

    def __init__(self, name: str, reason: str):
        self.name, self.family, self.shape_mode, self.suffix = name, "fp32", "any", ""
        self._reason = reason

    def available(self) -> Availability:
        return Availability(False, False, self._reason, executor="none")

    def options(self) -> dict:
        return {}


def get_backend(variant: str) -> Backend:
    if variant not in VARIANTS:
        raise UnknownVariant(variant)
    if variant not in _cache:
        try:
            module = importlib.import_module(VARIANTS[variant])
        except Exception as exc:  # keep every other form usable; doctor and results say why
            _cache[variant] = _Broken(variant, f"{VARIANTS[variant]} does not import: {type(exc).__name__}: {exc}")
            return _cache[variant]
        classes = [c for _, c in inspect.getmembers(module, inspect.isclass)
                   if getattr(c, "name", None) == variant and c.__module__ == module.__name__]
        if len(classes) != 1:
            raise RuntimeError(f"{VARIANTS[variant]} must define exactly one Backend named {variant!r}")
        _cache[variant] = classes[0]()
    return _cache[variant]


def all_variants() -> list[str]:
    return list(VARIANTS)
