"""The test client's retry rule is the device core's: the same answers are retried."""

from __future__ import annotations

import re
from pathlib import Path

from support.collector_helpers import RETRY_STATUSES

CORE = Path(__file__).resolve().parents[2] / "device_runner" / "core" / "src" / "collector.cpp"


def test_device_request_retries_what_the_device_core_retries() -> None:
    body = re.search(r"bool is_retryable\(.*?\n}\n", CORE.read_text(), re.S)
    assert body is not None, f"is_retryable not found in {CORE}"
    retried = {int(n) for n in re.findall(r"case (\d+):", body.group(0))} - {0}  # 0: no response
    assert retried == RETRY_STATUSES
