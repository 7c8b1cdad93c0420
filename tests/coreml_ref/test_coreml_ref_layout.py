"""The kernel modules follow coremltools' op definition files: a module named like one of them holds
only ops that coremltools defines in that file (in some opset); the few family modules hold only ops
of the files they name."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections import defaultdict

import pytest

pytest.importorskip("coremltools")

from parbench.coreml_ref import supported_ops  # noqa: E402
from parbench.coreml_ref.registry import builder_for, registered_ops  # noqa: E402

OPSETS = ("iOS15", "iOS16", "iOS17", "iOS18")
FAMILIES = {  # parbench module -> the coremltools defs files it groups
    "elementwise": {"elementwise_unary", "elementwise_binary", "activation"},
    "nn": {"conv", "linear", "pool", "normalization"},
    "image": {"image_resizing"},
    "compression": {"compression", "constexpr_ops", "quantization_ops"},
}


def _coremltools_files() -> dict[str, set[str]]:
    """op type -> the stems of the defs files that define it, over every opset."""
    from coremltools.converters.mil.mil.operation import Operation

    files: dict[str, set[str]] = defaultdict(set)
    for opset in OPSETS:
        pkg = importlib.import_module(f"coremltools.converters.mil.mil.ops.defs.{opset}")
        for info in pkgutil.iter_modules(pkg.__path__):
            mod = importlib.import_module(f"{pkg.__name__}.{info.name}")
            for name, cls in vars(mod).items():
                if inspect.isclass(cls) and issubclass(cls, Operation) and cls.__module__ == mod.__name__:
                    files[name].add(info.name)
    return files


def test_every_kernel_sits_in_the_module_of_its_coremltools_file():
    files = _coremltools_files()
    by_module: dict[str, list[str]] = defaultdict(list)
    for op in registered_ops():
        by_module[builder_for(op).__module__.rsplit(".", 1)[-1]].append(op)
    assert {
        "tensor_transformation",
        "tensor_operation",
        "scatter_gather",
        "reduction",
        "control_flow",
    } <= set(by_module)
    misplaced = {
        op: (module, sorted(files.get(op, ())))
        for module, ops in by_module.items()
        for op in ops
        if not files.get(op, set()) & FAMILIES.get(module, {module})
    }
    assert not misplaced, f"kernels in a module coremltools does not define them in: {misplaced}"


def test_every_kernel_is_a_coremltools_op():
    files = _coremltools_files()
    assert [op for op in supported_ops() if op != "const" and op not in files] == []
