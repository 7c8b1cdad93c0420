"""Import torchvision on machines where its C++ extension does not match torch.

torchvision 0.28 has no CPU build; with the CPU torch its extension fails to load and the import
dies with ``operator torchvision::nms does not exist`` (registering fake kernels needs the
schema).  Declaring the two schemas it needs lets the pure-Python models import.  The C++ ops
(nms, roi_align, ...) then have no kernel: parbench's detector stops before NMS, as apps do.
Where torchvision imports natively (macOS, CUDA boxes) nothing is changed.
"""

from __future__ import annotations

import sys
from types import ModuleType

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_state: dict[str, object] = {}


def import_torchvision() -> ModuleType:
    """Return torchvision, declaring missing op schemas first if this torch needs it."""
    if "module" in _state:
        return _state["module"]  # type: ignore[return-value]
    import torch

    try:
        import torchvision
    except RuntimeError as exc:
        if "torchvision::" not in str(exc):
            raise
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "DEF")  # noqa: TID251 - kept alive below
        for op, schema in _SCHEMAS.items():
            if not torch._C._jit_get_schemas_for_operator(f"torchvision::{op}"):
                lib.define(schema)
        _state["library"] = lib
        _state["shimmed"] = True
        import torchvision
    _state["module"] = torchvision
    return torchvision


def torchvision_status() -> str:
    """One line for `parbench doctor`."""
    tv = import_torchvision()
    if _state.get("shimmed"):
        return (
            f"torchvision {tv.__version__}: C++ extension does not match this torch; "
            "pure-Python models only (op schemas declared by parbench)"
        )
    return f"torchvision {tv.__version__}: native"
