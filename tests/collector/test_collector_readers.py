"""What a device may name itself must not break or inject into the store's readers (issue 15,
defects 6 and 11): `parbench report --store` over device runs only."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.collector_helpers import make_result

from parbench.history.store import Store
from parbench.report.build import build_report


def _device_store(path: Path, model: str, name: str | None = None) -> Path:
    with Store(path) as store:
        store.put_run(
            {
                "run_id": "device-run-0001",
                "source": "device",
                "created_utc": "2026-11-23T10:00:00Z",
                "device": {"model": model, "os": "iOS 18.1", "name": name},
                "runtime": {"name": "coreml", "version": "8.0"},
            }
        )
        store.put_results(
            "device-run-0001",
            [
                make_result(i, model="tiny_classifier", variant="coreml_fp16", size=s)
                for i, s in enumerate((64, 128))
            ],
        )
    return path


@pytest.mark.parametrize("model", [r"iPhone $\notacommand$", "A16 $x^{$ y$", "cost $5 and $6"])
def test_dollar_signs_in_a_device_model_do_not_break_the_report(tmp_path, model) -> None:
    store = _device_store(tmp_path / "s.sqlite", model)
    out = build_report([], tmp_path / "out", reports_dir=tmp_path / "none", store=store)
    html = out.html.read_text()
    assert "<svg" in html and model.replace("$", "$") in html.replace("&#x27;", "'")


def test_device_strings_are_escaped_in_markdown_and_csv(tmp_path) -> None:
    store = _device_store(tmp_path / "s.sqlite", "<script>alert(1)</script>")
    out = build_report([], tmp_path / "out", reports_dir=tmp_path / "none", store=store)
    md = out.markdown.read_text()
    assert "<script>" not in md and "&lt;script&gt;" in md
    header = out.csv.read_text().splitlines()[0]
    assert "<script>" in header  # CSV is data: kept verbatim, but never a formula
    store = _device_store(tmp_path / "t.sqlite", "=HYPERLINK(1)")
    out = build_report([], tmp_path / "out2", reports_dir=tmp_path / "none", store=store)
    assert ",=HYPERLINK" not in out.csv.read_text().splitlines()[0]
