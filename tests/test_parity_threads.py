"""Parity cases run with the torch thread count PARBENCH_PARITY_THREADS asks for (1 by default)."""

import pytest
import torch

from parbench.errors import ConfigError
from parbench.run import parity


def test_thread_count_from_the_environment(monkeypatch):
    monkeypatch.delenv("PARBENCH_PARITY_THREADS", raising=False)
    assert parity.parity_threads() == 1
    monkeypatch.setenv("PARBENCH_PARITY_THREADS", "2")
    assert parity.parity_threads() == 2
    monkeypatch.setenv("PARBENCH_PARITY_THREADS", "all")
    assert parity.parity_threads() is None
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv("PARBENCH_PARITY_THREADS", bad)
        with pytest.raises(ConfigError, match=f"PARBENCH_PARITY_THREADS is '{bad}'; give a thread count"):
            parity.parity_threads()


def test_a_case_runs_with_that_count_and_restores_the_previous_one(monkeypatch):
    seen = []

    def fake_check(h, name, variant, size):
        seen.append(torch.get_num_threads())
        return parity.ParityOutcome(
            parity.ParityRecord(model=name, variant=variant, size=size, verdict="pass")
        )

    monkeypatch.setattr(parity, "_check", fake_check)
    monkeypatch.delenv("PARBENCH_PARITY_THREADS", raising=False)
    before = torch.get_num_threads()
    parity.check(None, "m", "eager", 8)
    assert seen == [1]
    assert torch.get_num_threads() == before
