"""Parity of every deployment form against eager fp32, per model x form x input size.

Ids read `model-form-size` (`pytest parity/ -k "mobilenet_v2 and coreml"`). Each case's full metrics,
verdict, versions and executor go to reports/parity/*.jsonl; a failure prints the metric table.
"""

import pytest


def test_parity(parbench_case, parbench_harness, parbench_recorder):
    c = parbench_case
    result = parbench_harness.parity(c.model, c.variant, c.size)
    parbench_recorder.record(result)
    if result.verdict == "skip":
        pytest.skip(result.message)
    if result.verdict == "xfail":  # a known failure the zoo or config declares: say which, briefly
        lines = result.message.splitlines()
        pytest.xfail(next((ln for ln in lines if ln.startswith("known failure")), lines[0]))
    assert result.verdict == "pass", result.message
