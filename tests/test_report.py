"""parbench report: tables from a real bench JSON (smoke tier, made once per session by
tests/test_bench.py's helper), parity JSON lines and a device store."""

from __future__ import annotations

import copy
import json
import os
import re
import statistics
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from click.testing import CliRunner
from test_bench import smoke_bench_json

from parbench.cli.report import report_command
from parbench.errors import ReportError
from parbench.report.build import build_report, collect

SIZES = {"tiny_classifier": [224, 320], "tiny_generator": [256, 320]}
FORMS = ["eager", "torchscript"]


def parity_line(model: str, variant: str, size: int, verdict: str, cosine: float = 1.0) -> dict[str, Any]:
    return {
        "model": model,
        "variant": variant,
        "size": size,
        "case": f"{model}-{variant}-{size}",
        "task": "classification",
        "family": "fp32",
        "executor": "x",
        "verdict": verdict,
        "metrics": {
            "output": {
                "max_abs": 1e-3,
                "mean_abs": 1e-4,
                "rel_l2": 2e-3,
                "cosine": cosine,
                "snr_db": 50.0,
                "psnr_db": 60.0,
            }
        },
        "thresholds": {},
        "message": f"{verdict} message",
        "export": {},
        "versions": {},
        "timestamp": "2026-11-23T12:00:00Z",
    }


@pytest.fixture(scope="module")
def bench_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return smoke_bench_json(tmp_path_factory)


@pytest.fixture(scope="module")
def bench_doc(bench_json: Path) -> dict[str, Any]:
    return json.loads(bench_json.read_text())


@pytest.fixture
def parity_jsonl(tmp_path: Path) -> Path:
    lines = [parity_line(m, v, s, "pass") for m in SIZES for v in FORMS for s in SIZES[m]]
    lines.append(parity_line("tiny_classifier", "lite", 224, "pass"))
    lines.append(parity_line("tiny_classifier", "lite", 320, "fail", cosine=0.97))
    lines.append(parity_line("tiny_generator", "coreml_fp16", 256, "skip"))
    lines.append(parity_line("tiny_generator", "onnx", 256, "error"))
    lines.append(parity_line("tiny_generator", "quantized_int8", 256, "xfail"))
    path = tmp_path / "parity.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return path


def median_ms(doc: dict[str, Any], model: str, variant: str, size: int) -> float:
    samples = [
        ns
        for b in doc["benchmarks"]
        for ns in b["extra_info"]["samples_ns"]
        if (b["extra_info"]["model"], b["extra_info"]["variant"], b["extra_info"]["size"])
        == (model, variant, size)
    ]
    return statistics.median(samples) / 1e6


def md_section(md: str, model: str) -> list[list[str]]:
    """The rows (cells) of a model's table in latency.md, header first."""
    block = md.split(f"## {model}\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in block.splitlines() if line.startswith("|")]
    return [[c.strip() for c in r.strip("|").split(" | ")] for r in rows if not set(r) <= set("|-: ")]


def test_tables_have_a_column_per_size_and_a_row_per_form(
    bench_json: Path, bench_doc: dict, parity_jsonl: Path, tmp_path: Path
) -> None:
    out = build_report([bench_json, parity_jsonl], tmp_path / "out")
    md = out.markdown.read_text()
    for model, sizes in SIZES.items():
        rows = md_section(md, model)
        header, body = rows[0], rows[1:]
        assert header[: 1 + len(sizes)] == ["form", *map(str, sizes)]
        assert [r[0] for r in body] == FORMS
        for r in body:
            for i, size in enumerate(sizes, 1):
                # "median ±IQR [· speed-up]": the median is the real samples' median
                assert float(r[i].split(" ")[0]) == pytest.approx(
                    median_ms(bench_doc, model, r[0], size), rel=0.01
                )
        ts = dict(zip(header, body[1], strict=True))
        assert "×" in ts[str(sizes[0])]  # TorchScript shows its speed-up vs eager
        assert ts["parity"] == "pass" and float(ts["artifact MB"]) > 0.01 and float(ts["load ms"]) > 0
    # the parity overview lists every form seen in parity, with the worst verdict per form
    assert "| lite | fail @320 |" in re.sub(r" {2,}", " ", md)
    assert "## Parity overview" in md


def test_csv_numbers_match_the_samples(
    bench_json: Path, bench_doc: dict, parity_jsonl: Path, tmp_path: Path
) -> None:
    out = build_report([bench_json, parity_jsonl], tmp_path)
    df = pd.read_csv(out.csv)
    assert sorted(zip(df["model"], df["form"], strict=True)) == sorted((m, f) for m in SIZES for f in FORMS)
    assert [c for c in df.columns if c.endswith(" median_ms")] == [
        "224 median_ms",
        "256 median_ms",
        "320 median_ms",
    ]
    for _, r in df.iterrows():
        for size in SIZES[r["model"]]:
            assert r[f"{size} median_ms"] == pytest.approx(
                median_ms(bench_doc, r["model"], r["form"], size), rel=1e-4
            )
        other = ({224, 256, 320} - set(SIZES[r["model"]])).pop()
        assert pd.isna(r[f"{other} median_ms"])  # a size the model does not have stays empty
    eager = df[df["form"] == "eager"].set_index("model")
    ts = df[df["form"] == "torchscript"].set_index("model")
    assert (eager["320 speedup"] == 1).all()
    for model in SIZES:
        assert ts.loc[model, "320 speedup"] == pytest.approx(
            eager.loc[model, "320 median_ms"] / ts.loc[model, "320 median_ms"], rel=1e-4
        )
        assert ts.loc[model, "parity"] == "pass"


def test_runs_are_pooled(bench_json: Path, bench_doc: dict, tmp_path: Path) -> None:
    doc = copy.deepcopy(bench_doc)
    first = doc["benchmarks"][0]
    twin = copy.deepcopy(first)
    twin["extra_info"]["run_index"] = 1
    twin["extra_info"]["samples_ns"] = [s * 3 for s in first["extra_info"]["samples_ns"]]
    doc["benchmarks"].append(twin)
    path = tmp_path / "two-runs.json"
    path.write_text(json.dumps(doc))
    rep = collect([path])
    e = first["extra_info"]
    row = rep.summary[
        (rep.summary["model"] == e["model"])
        & (rep.summary["form"] == e["variant"])
        & (rep.summary["size"] == e["size"])
    ].iloc[0]
    pooled = e["samples_ns"] + twin["extra_info"]["samples_ns"]
    assert row["runs"] == 2 and row["n_samples"] == len(pooled)
    assert row["median_ms"] == pytest.approx(statistics.median(pooled) / 1e6)


def test_device_results_become_their_own_columns(bench_json: Path, tmp_path: Path) -> None:
    from parbench.history.store import Store

    store_path = tmp_path / "history.sqlite"
    with Store(store_path) as store:
        store.put_run(
            {
                "run_id": "device-run-0001",
                "source": "device",
                "created_utc": "2026-11-23T10:00:00Z",
                "machine": {},
                "env": {},
                "device": {"model": "iPhone15,2", "os": "iOS 18.1"},
                "runtime": {"name": "coreml", "version": "8.0"},
            }
        )
        store.put_results(
            "device-run-0001",
            [
                {
                    "model": "tiny_classifier",
                    "variant": "coreml_fp16",
                    "size": 224,
                    "compute_units": "cpuOnly",
                    "executor": "coreml",
                    "load_ms": 12.0,
                    "first_run_ms": 30.0,
                    "samples_ns": [4_000_000, 5_000_000, 6_000_000],
                },
                {
                    "model": "tiny_classifier",
                    "variant": "torchscript",
                    "size": 224,
                    "compute_units": "cpuOnly",
                    "executor": "libtorch",
                    "load_ms": 12.0,
                    "first_run_ms": 30.0,
                    "samples_ns": [8_000_000, 9_000_000],
                },
            ],
        )
    out = build_report([bench_json], tmp_path / "out", store=store_path)
    rows = md_section(out.markdown.read_text(), "tiny_classifier")
    header = rows[0]
    assert header[:4] == ["form", "224", "320", "iPhone15,2 / cpuOnly 224"]
    cells = {r[0]: dict(zip(header, r, strict=True)) for r in rows[1:]}
    assert cells["coreml_fp16"]["iPhone15,2 / cpuOnly 224"].startswith("5.00 ±1.00")
    assert cells["coreml_fp16"]["224"] == ""  # not timed on the host
    assert cells["torchscript"]["iPhone15,2 / cpuOnly 224"].startswith("8.50")
    df = pd.read_csv(out.csv)
    assert "iPhone15,2 / cpuOnly 224 median_ms" in df.columns
    assert df.set_index("form").loc["coreml_fp16", "iPhone15,2 / cpuOnly 224 median_ms"] == pytest.approx(5.0)


def test_html_is_self_contained(bench_json: Path, parity_jsonl: Path, tmp_path: Path) -> None:
    out = build_report([bench_json, parity_jsonl], tmp_path)
    page = out.html.read_text()
    # nothing to fetch: no external scripts, styles, images, fonts or imports
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"url\(\s*['\"]?(?:https?:)?//", page, re.I)
    assert "@import" not in page and "<link" not in page and "<script" not in page
    assert page.count("<svg") == len(SIZES)  # one latency plot per model
    assert page.count('<table class="latency"') == len(SIZES)
    # the parity heatmap: a cell per form x model, coloured, with the metrics in its hover title
    heat = page.split('<table class="heat">', 1)[1].split("</table>", 1)[0]
    assert heat.count("<tr>") == 1 + 6  # header + eager, torchscript, lite, quantized_int8, onnx, coreml_fp16
    assert 'class="v-fail" style="background:#d64541"' in heat
    assert re.search(r'title="tiny_classifier / lite: 224: pass; 320: fail[^"]*cosine 0\.97', heat)
    for verdict in ("pass", "xfail", "fail", "error", "skip"):
        assert f"{verdict}: " in page.split('<p class="legend">', 1)[1]


def test_html_escapes_what_the_results_say(tmp_path: Path) -> None:
    line = parity_line("tiny_generator", "onnx", 256, "error")
    line["metrics"], line["message"] = {}, 'export failed: <script>alert("x")</script> & more'
    lines = tmp_path / "p.jsonl"
    lines.write_text(json.dumps(line) + "\n")
    page = build_report([lines], tmp_path / "out").html.read_text()
    assert "<script" not in page and "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; more" in page


def test_cli_uses_the_newest_results_by_default(bench_json: Path, parity_jsonl: Path, tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    (reports / "bench").mkdir(parents=True)
    (reports / "parity").mkdir()
    old = json.loads(bench_json.read_text())
    old["benchmarks"] = [b for b in old["benchmarks"] if b["extra_info"]["model"] == "tiny_classifier"]
    (reports / "bench" / "20260101T000000Z.json").write_text(json.dumps(old))
    newest = reports / "bench" / "20260102T000000Z.json"
    newest.write_text(bench_json.read_text())
    os.utime(reports / "bench" / "20260101T000000Z.json", (1_000_000, 1_000_000))
    # parity run written by two xdist workers, and an older run
    lines = parity_jsonl.read_text().splitlines()
    (reports / "parity" / "20260101T000000Z-0a0a0a.jsonl").write_text(lines[0] + "\n")
    os.utime(reports / "parity" / "20260101T000000Z-0a0a0a.jsonl", (1_000_000, 1_000_000))
    (reports / "parity" / "20260102T000000Z-abc123-gw0.jsonl").write_text("\n".join(lines[:5]) + "\n")
    (reports / "parity" / "20260102T000000Z-abc123-gw1.jsonl").write_text("\n".join(lines[5:]) + "\n")
    result = CliRunner().invoke(report_command, ["--reports-dir", str(reports), "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    assert f"bench:  {newest}" in result.output and "2 model(s), 4 form row(s)" in result.output
    assert result.output.count("parity: ") == 2 and "0a0a0a" not in result.output
    md = (tmp_path / "o" / "latency.md").read_text()
    assert "| lite | fail @320 |" in re.sub(r" {2,}", " ", md)  # from the gw1 file
    assert (tmp_path / "o" / "report.html").exists() and (tmp_path / "o" / "latency.csv").exists()


def test_cli_errors_say_what_to_do(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(report_command, ["--reports-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert (
        result.exit_code == 1 and "no results to report" in result.output and "pytest bench/" in result.output
    )
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    result = runner.invoke(report_command, [str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1 and f"{bad} is not valid JSON" in result.output
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    result = runner.invoke(report_command, [str(other)])
    assert result.exit_code == 1 and "not a pytest-benchmark JSON file" in result.output
    lines = tmp_path / "p.jsonl"
    lines.write_text(json.dumps({"model": "m"}) + "\n")
    missing = r"\(variant: Field required; size: Field required; verdict: Field required\)"
    with pytest.raises(ReportError, match=rf"p.jsonl:1 is not a parity result line {missing}"):
        collect([lines])
    result = runner.invoke(report_command, [str(tmp_path / "missing.json")])
    assert result.exit_code == 1 and "does not exist" in result.output
