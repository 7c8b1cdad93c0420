"""Versions of the libraries that decide an artifact or a number (recorded in every result)."""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata

RECORDED = (
    "parbench",
    "torch",
    "torchvision",
    "coremltools",
    "onnxruntime",
    "onnx",
    "executorch",
    "torchao",
    "numpy",
    "coreai-torch",
    "coreai-core",
    "coreai-opt",
)


def version_of(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@functools.lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    out: dict[str, str] = {}
    for dist in RECORDED:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out
