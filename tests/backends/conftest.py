"""Fixtures of the deployment-form tests: the photo, models with realistic activations."""

from __future__ import annotations

import pytest
import torch
from support.forms_support import TinyNet, TinySeg, crop, load_photo, recalibrate_bn
from torch import nn


@pytest.fixture(scope="session")
def photo() -> torch.Tensor:
    return load_photo()


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny(photo: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    return recalibrate_bn(TinyNet(), [torch.cat([crop(photo, 64, i) for i in range(8)])])


@pytest.fixture(scope="session")
def tiny_seg(photo: torch.Tensor) -> nn.Module:
    torch.manual_seed(1)
    return recalibrate_bn(TinySeg(), [torch.cat([crop(photo, 64, i) for i in range(8)])])


@pytest.fixture(scope="session")
def mobilenet_v2(photo: torch.Tensor) -> nn.Module:
    from parbench.zoo.torchvision_shim import import_torchvision

    torch.manual_seed(0)
    model = import_torchvision().models.mobilenet_v2(weights=None)
    return recalibrate_bn(model, [torch.cat([crop(photo, 128, i) for i in range(8)])])
