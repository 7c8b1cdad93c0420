"""Fixtures of the deployment-form tests: the photo, models with realistic activations."""

from __future__ import annotations

import pytest
import torch
from support.nets import TinyNet, TinySeg
from support.photos import crops, load_photo
from torch import nn

from parbench.zoo import recalibrate_batchnorm


@pytest.fixture(scope="session")
def photo() -> torch.Tensor:
    return load_photo()


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _calibrated(net: nn.Module, photo: torch.Tensor, size: int) -> nn.Module:
    recalibrate_batchnorm(net, crops(photo, size, range(8)))
    return net


@pytest.fixture(scope="session")
def tiny(photo: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    return _calibrated(TinyNet(), photo, 64)


@pytest.fixture(scope="session")
def tiny_seg(photo: torch.Tensor) -> nn.Module:
    torch.manual_seed(1)
    return _calibrated(TinySeg(), photo, 64)


@pytest.fixture(scope="session")
def mobilenet_v2(photo: torch.Tensor) -> nn.Module:
    from parbench.zoo import networks

    torch.manual_seed(0)
    return _calibrated(networks.mobilenet_v2(), photo, 128)
