"""Fixtures for the collector and store tests: a small real fixture set and live collectors."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.collector_helpers import LiveCollector, build_fixture_set


@pytest.fixture
def live_collector(tmp_path: Path) -> Iterator[type[LiveCollector]]:
    """A factory of collectors; every one started is stopped at teardown."""
    started: list[LiveCollector] = []

    class Tracked(LiveCollector):
        def start(self, timeout: float = 60.0) -> LiveCollector:
            started.append(self)
            return super().start(timeout)

    yield Tracked
    for c in started:
        c.stop()


@pytest.fixture(scope="session")
def fixture_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixture_set(tmp_path_factory.mktemp("fixture_sets") / "set")
