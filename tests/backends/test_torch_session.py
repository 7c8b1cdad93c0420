"""The one session of the torch forms (eager, TorchScript, lite, quantized): inputs by name,
outputs checked against the eager model's names."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from parbench.backends.torch_session import TorchModuleSession
from parbench.errors import SessionError
from parbench.zoo.outputs import TorchOutputFlattening


class ImageAndMask(nn.Module):
    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"masked": image * mask, "total": (image - mask).sum((1, 2, 3))}


IMAGE = np.arange(2 * 3 * 4 * 4, dtype=np.float32).reshape(2, 3, 4, 4)
MASK = (np.arange(2 * 3 * 4 * 4) % 3 == 0).astype(np.float32).reshape(2, 3, 4, 4)


def test_inputs_are_fed_by_name_whatever_the_mapping_order() -> None:
    session = TorchModuleSession(ImageAndMask(), "torch-eager", ["image", "mask"], ["masked", "total"])
    out = session.run({"mask": MASK, "image": IMAGE})
    assert list(out) == ["masked", "total"]
    np.testing.assert_array_equal(out["masked"], IMAGE * MASK)
    np.testing.assert_array_equal(out["total"], (IMAGE - MASK).sum((1, 2, 3)))
    assert out["total"].dtype == np.float32


def test_without_names_the_mapping_order_is_the_argument_order() -> None:
    out = TorchModuleSession(ImageAndMask(), "torch-eager").run({"b": MASK, "a": IMAGE})
    np.testing.assert_array_equal(out["total"], (MASK - IMAGE).sum((1, 2, 3)))


def test_a_missing_input_is_named() -> None:
    session = TorchModuleSession(ImageAndMask(), "torch-eager", ["image", "mask"], ["masked", "total"])
    with pytest.raises(
        SessionError, match=r"missing input\(s\) \['mask'\]; the artifact takes \['image', 'mask'\]"
    ):
        session.run({"image": IMAGE})


def test_outputs_that_are_not_the_eager_models_are_refused() -> None:
    session = TorchModuleSession(ImageAndMask(), "torch-jit", ["image", "mask"], ["output_0", "output_1"])
    with pytest.raises(
        SessionError, match=r"returns outputs \['masked', 'total'\] but the eager model returns"
    ):
        session.run({"image": IMAGE, "mask": MASK})


def test_flat_outputs_are_named_by_position_and_counted() -> None:
    flat = TorchOutputFlattening(ImageAndMask())
    out = TorchModuleSession(
        flat, "torchscript", ["image", "mask"], ["masked", "total"], flat_outputs=True
    ).run({"image": IMAGE, "mask": MASK})
    np.testing.assert_array_equal(out["masked"], IMAGE * MASK)
    short = TorchModuleSession(flat, "torchscript", ["image", "mask"], ["masked"], flat_outputs=True)
    with pytest.raises(SessionError, match=r"returns 2 outputs, the eager model 1 \(\['masked'\]\)"):
        short.run({"image": IMAGE, "mask": MASK})
