"""Fixtures of the localisation tests: small nets with realistic activations, built once."""

from __future__ import annotations

import pytest
import torch
from support.diagnose_nets import Branchy, HeldOut, Spiky, build, make_spiky, spec


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def heldout():
    s = spec("heldout", HeldOut, (64,), 64)
    return s, build(s)


@pytest.fixture(scope="session")
def spiky():
    s = spec("spiky", lambda: make_spiky(Spiky()), (64,), 64)
    return s, build(s, seed=1)


@pytest.fixture(scope="session")
def branchy():
    s = spec("branchy", Branchy, (32, 48), 32)
    return s, build(s, seed=2)
