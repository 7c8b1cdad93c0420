"""The report shows where localised parity failures depart from eager: the first diverging layer,
how the damage starts, and SNR along the network as an inline plot."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from parbench.records.parity import FirstDivergence
from parbench.report.build import build_report
from parbench.report.divergence import divergence_views, summary

PROFILE = [("stem.0", 45.0), ("stem.1", 44.0), ("spike", 2.5), ("mix", 3.0), ("head", 3.1)]


def line(variant: str, verdict: str, first_divergence: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "model": "spiky",
        "variant": variant,
        "size": 64,
        "task": "generic",
        "family": "int8",
        "verdict": verdict,
        "metrics": {"output": {"rel_l2": 0.9, "cosine": 0.4}},
        "message": f"{verdict} message",
        "first_divergence": first_divergence,
        "timestamp": "2026-11-23T12:00:00Z",
    }


def found() -> dict[str, Any]:
    return {
        "status": "found",
        "layer": "spike",
        "kind": "Conv2d",
        "how": "compared",
        "snr_db": 2.5,
        "cosine": 0.61,
        "flagged": ["spike", "mix", "head"],
        "onset": "one layer starts it: spike introduces -41.5 dB",
        "largest_drop": "spike (-41.5 dB)",
        "thresholds": {"snr_db": 9.1, "cosine": 0.94},
        "layers": 7,
        "compared": 5,
        "identity": "nn_module_stack",
        "tool": "Numeric Suite loggers",
        "case": "spiky/64/0",
        "size": 64,
        "profile": [
            {"order": i, "layer": name, "snr_db": snr, "flagged": snr < 9.1}
            for i, (name, snr) in enumerate(PROFILE)
        ],
    }


def test_html_shows_the_first_diverging_layer_and_the_snr_profile(tmp_path: Path) -> None:
    not_run = {"status": "not_run", "reason": "not started: rebuilding takes about 900 s", "size": 64}
    rows = [
        line("torchscript", "pass", None),
        line("quantized_int8", "fail", found()),
        line("executorch_int8", "fail", not_run),
    ]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    page = build_report([path], tmp_path / "out").html.read_text()
    section = page.split('<h2 id="divergence">', 1)[1].split("<h2", 1)[0]
    assert section.count("<h3") == 2  # the two localised failures, not the passing form
    assert "first diverging layer spike (Conv2d): SNR 2.5 dB, cosine 0.61000" in section
    assert "one layer starts it: spike" in section and "5 of 7 layers compared" in section
    assert "not localised: not started: rebuilding takes about 900 s" in section
    assert section.count("<svg") == 1  # only the case with a profile has a plot
    svg = section.split("<svg", 1)[1].split("</svg>", 1)[0]
    assert 'aria-label="spiky · quantized_int8 · 64 px: SNR along the network"' in svg
    assert "limit 9.1 dB" in svg and ">spike<" in svg  # the limit line and the flagged layer's label
    assert not re.search(r"<metadata>|<script", section)
    md = (tmp_path / "out" / "latency.md").read_text()
    section = md.split("## Where failing forms depart from eager\n", 1)[1]
    assert "- spiky · quantized_int8 · 64 px (fail): first diverging layer spike (Conv2d)" in section
    assert "- spiky · executorch_int8 · 64 px (fail): not localised: not started" in section


def test_views_order_failures_first_and_skip_records_without_localisation() -> None:
    import pandas as pd

    fd = FirstDivergence.model_validate(found())
    none = FirstDivergence(status="none", reason="every compared layer within the limits")
    parity = pd.DataFrame(
        [
            {"model": "a", "variant": "onnx", "size": 64, "verdict": "xfail", "first_divergence": none},
            {"model": "b", "variant": "lite", "size": 64, "verdict": "pass", "first_divergence": None},
            {
                "model": "c",
                "variant": "quantized_int8",
                "size": 64,
                "verdict": "fail",
                "first_divergence": fd,
            },
        ]
    )
    views = divergence_views(parity)
    assert [v["verdict"] for v in views] == ["fail", "xfail"]
    assert (
        views[1]["summary"]
        == summary(none)
        == ("no layer over the per-layer limits (every compared layer within the limits)")
    )
    assert divergence_views(parity.drop(columns="first_divergence")) == []
