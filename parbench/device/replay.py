"""Host side of the device runner: build the C++ core, replay a fixture set against a collector,
import results an iPhone attached to an .xcresult bundle, and check that .ptl artifacts will load
in the lite-interpreter runtime the app links (backporting their bytecode where torch can).

The runner itself lives in ``device_runner/core`` (C++17); see ``device_runner/README.md``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

# ---------------------------------------------------------------------------------------------
# replay


@dataclasses.dataclass
class ReplayOutcome:
    returncode: int
    doc: dict[str, Any] | None  # {"run_id", "run", "results", ...} as the runner wrote it
    seconds: float
    stdout: str
    stderr: str

    @property
    def run_id(self) -> str | None:
        return None if self.doc is None else self.doc.get("run_id")

    @property
    def results(self) -> list[dict[str, Any]]:
        return [] if self.doc is None else list(self.doc.get("results", []))


def tier_models(tier: str) -> list[str]:
    from parbench import zoo

    return [s.name for s in zoo.select(zoo.registry(None), tier)]


def replay_command_line(
    binary: Path,
    *,
    collector: str | None = None,
    fixtures_dir: str | Path | None = None,
    models: Sequence[str] = (),
    variants: Sequence[str] = (),
    sizes: Sequence[int] = (),
    rounds: int = 10,
    warmup: int = 3,
    threads: int = 1,
    run_id: str | None = None,
    commit: str | None = None,
    out: Path | None = None,
    cache_dir: Path | None = None,
    dump_outputs: Path | None = None,
    retries: int | None = None,
) -> list[str]:
    cmd = [str(binary)]
    if collector:
        cmd += ["--collector", collector]
    if fixtures_dir:
        cmd += ["--fixtures-dir", str(fixtures_dir)]
    for flag, values in (
        ("--models", models),
        ("--variants", variants),
        ("--sizes", [str(s) for s in sizes]),
    ):
        if values:
            cmd += [flag, ",".join(values)]
    cmd += ["--rounds", str(rounds), "--warmup", str(warmup), "--threads", str(threads)]
    for flag, value in (
        ("--run-id", run_id),
        ("--commit", commit),
        ("--out", out),
        ("--cache-dir", cache_dir),
        ("--dump-outputs", dump_outputs),
        ("--retries", retries),
    ):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def run_replay(
    binary: Path, *, token: str | None = None, on_line: Callable[[str], None] | None = None, **options: Any
) -> ReplayOutcome:
    """Runs the core binary (see replay_command_line for the options); the token goes through
    the environment, not the command line. Streams its progress lines to `on_line`."""
    out = options.pop("out", None)
    tmp = None
    if out is None:
        tmp = tempfile.NamedTemporaryFile(prefix="parbench-replay-", suffix=".json", delete=False)
        tmp.close()
        out = Path(tmp.name)
    cmd = replay_command_line(binary, out=Path(out), **options)
    env = dict(os.environ)
    if token:
        env["PARBENCH_TOKEN"] = token
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    err_lines = []
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:
        err_lines.append(line)
        if on_line:
            on_line(line.rstrip("\n"))
    stdout = proc.stdout.read()
    code = proc.wait()
    seconds = time.perf_counter() - start
    doc = None
    try:
        text = Path(out).read_text()
        doc = json.loads(text) if text.strip() else None
    except (OSError, json.JSONDecodeError):
        doc = None
    finally:
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
    return ReplayOutcome(code, doc, seconds, stdout, "".join(err_lines))


def summary_rows(results: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per result: ids, median/first/load ms, worst cosine over outputs, error."""
    import statistics

    rows = []
    for r in results:
        samples = r.get("samples_ns") or []
        cos = [m.get("cosine") for m in (r.get("metrics") or {}).values() if m.get("cosine") is not None]
        rows.append(
            {
                "id": f"{r['model']}-{r['variant']}-{r['size']}"
                + (f"-{r['compute_units']}" if r.get("compute_units") else ""),
                "case": r["case"],
                "median_ms": statistics.median(samples) / 1e6 if samples else None,
                "first_run_ms": r.get("first_run_ms"),
                "load_ms": r.get("load_ms"),
                "rounds": len(samples),
                "min_cosine": min(cos) if cos else None,
                "error": r.get("error"),
            }
        )
    return rows


def format_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lines = [
        f"{'id':<34} {'case':<24} {'median ms':>10} {'first ms':>9} {'load ms':>8} {'cosine':>10}  error"
    ]
    for r in rows:
        lines.append(
            f"{r['id']:<34} {r['case']:<24} {num(r['median_ms'], '.3f'):>10} "
            f"{num(r['first_run_ms'], '.3f'):>9} {num(r['load_ms'], '.2f'):>8} "
            f"{num(r['min_cosine'], '.7f'):>10}  {r['error'] or ''}"
        )
    return "\n".join(lines)
