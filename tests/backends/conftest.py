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


@pytest.fixture(scope="session")
def tiny(photo: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    net = TinyNet()
    recalibrate_batchnorm(net, crops(photo, 64, range(8)))
    return net


@pytest.fixture(scope="session")
def tiny_seg(photo: torch.Tensor) -> nn.Module:
    torch.manual_seed(1)
    net = TinySeg()
    recalibrate_batchnorm(net, crops(photo, 64, range(8)))
    return net


@pytest.fixture(scope="session")
def mobilenet_v2(photo: torch.Tensor) -> nn.Module:
    from parbench.zoo import networks

    torch.manual_seed(0)
    model = networks.mobilenet_v2()
    recalibrate_batchnorm(model, crops(photo, 128, range(8)))
    return model
