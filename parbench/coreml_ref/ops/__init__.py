"""Kernels of the reference executor, one module per family; importing registers them."""

from parbench.coreml_ref.ops import compression, elementwise, image, misc, nn, recurrent, tensor

__all__ = ["compression", "elementwise", "image", "misc", "nn", "recurrent", "tensor"]
