"""Kernels of the reference executor; importing registers them.

Modules named like coremltools' op definition files (``coremltools/converters/mil/mil/ops/defs/
iOS15`` ... ``iOS18``) hold exactly the ops coremltools defines there; ``elementwise`` (unary, binary,
activation), ``nn`` (conv, linear, pool, normalization), ``image`` (image_resizing) and
``compression`` (compression, constexpr_ops, quantization_ops) group several of its files.
"""

from parbench.coreml_ref.ops import (
    classify,
    compression,
    control_flow,
    elementwise,
    image,
    nn,
    recurrent,
    reduction,
    scatter_gather,
    tensor_operation,
    tensor_transformation,
    transformers,
)

__all__ = [
    "classify",
    "compression",
    "control_flow",
    "elementwise",
    "image",
    "nn",
    "recurrent",
    "reduction",
    "scatter_gather",
    "tensor_operation",
    "tensor_transformation",
    "transformers",
]
