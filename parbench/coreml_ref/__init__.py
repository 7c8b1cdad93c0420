"""Core ML reference executor: runs a saved Core ML ML program (.mlpackage) on any OS.

Core ML's own ``predict`` exists only on Apple systems.  This package reads the MIL program
back from the package and executes it op by op with PyTorch CPU kernels, following the
program's precision (fp16-typed values are rounded to fp16 after every op).  Its API mirrors
coremltools' ``MLModel`` so that switching is one line::

    from parbench.coreml_ref import MLModel      # instead of coremltools.models.MLModel
    out = MLModel("model.mlpackage").predict({"input": x})
"""

from __future__ import annotations

from parbench.coreml_ref.model import FeatureSpec, InputShapeError, MLModel
from parbench.coreml_ref.registry import CoreMLRefError, UnsupportedOpError, registered_ops


def supported_ops() -> list[str]:
    """Names of the MIL ops (iOS15-iOS18 opsets) the reference executor runs, sorted."""
    return sorted(set(registered_ops()) | {"const"})


__all__ = [
    "CoreMLRefError",
    "FeatureSpec",
    "InputShapeError",
    "MLModel",
    "UnsupportedOpError",
    "supported_ops",
]
