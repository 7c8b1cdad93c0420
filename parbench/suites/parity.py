"""Parity of every deployment form against eager fp32, per model x variant x input size.

Ids read ``model-variant-size`` (``-k "mobilenet_v2 and coreml"``).  Each case's full metrics, verdict,
versions and executor go to reports/parity/*.jsonl; a failure prints the metric table and, where the
form allows it, the first layer or op where it departs from eager.
"""

import pytest


def test_parity(parbench_case, parbench_parity, parbench_recorder):
    record = parbench_parity.record(parbench_case)  # localised when it fails: the first diverging layer
    parbench_recorder.record(record)
    if record.verdict == "skip":
        pytest.skip(record.message)
    if record.verdict == "xfail":  # a known failure the zoo or config declares: say which, briefly
        lines = record.message.splitlines()
        pytest.xfail(next((ln for ln in lines if ln.startswith("known failure")), lines[0]))
    assert record.verdict == "pass", record.message
