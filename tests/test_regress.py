"""Regression decisions on synthetic runs with known shifts, and `parbench compare` end to end."""

from __future__ import annotations

import functools
import json
import math
import os
import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import stats as sps

from parbench.cli.regress import compare_command
from parbench.errors import RegressError
from parbench.regress import decide as regress
from parbench.regress.decide import decide as decide_default
from parbench.regress.decide import decide_latency, decide_parity
from parbench.regress.sides import load_benchmark_runs

# make_runs draws symmetric per-call noise around each run's level, which a run's median
# summarizes best; the rule's mechanics are tested on medians, and the default statistic (a run's
# fastest round) on one-sided interference noise in test_default_run_statistic_*.
MEDIAN = ["--run-stat", "median"]

decide = functools.partial(decide_default, run_stat="median")


def make_runs(
    n_runs: int,
    center_ms: float,
    *,
    run_sd: float = 0.01,
    call_sd: float = 0.02,
    rounds: int = 100,
    seed: int = 0,
) -> list[np.ndarray]:
    """Runs in ns: each run has its own offset (process-to-process noise, lognormal run_sd) and
    per-call noise around it; calls inside a run share the run's offset, as on a real machine."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_runs):
        run_center = center_ms * 1e6 * math.exp(rng.normal(0.0, run_sd))
        out.append(run_center * np.exp(rng.normal(0.0, call_sd, rounds)))
    return out


def bench_doc(
    runs: list[np.ndarray],
    *,
    model: str = "mobilenet_v2",
    variant: str = "eager",
    size: int = 256,
    stamp: str = "2026-01-01T02:00:00+00:00",
    commit: str = "a" * 40,
    with_samples: bool = True,
    cpu_runs: list[np.ndarray] | None = None,
) -> dict:
    """A pytest-benchmark JSON document (the layout its writer produces) holding one benchmark
    entry per run, with parbench's extra_info."""
    benchmarks = []
    for i, r in enumerate(runs):
        data = [float(v) / 1e9 for v in r]
        extra = {
            "model": model,
            "variant": variant,
            "size": size,
            "threads": 1,
            "executor": "torch",
            "artifact_bytes": 1000,
            "load_ms": 5.0,
            "first_run_ms": float(r[0]) / 1e6 * 2,
            "peak_rss_mb": 100.0,
            "run_index": i,
            "source": "host",
        }
        if with_samples:
            extra["samples_ns"] = [int(v) for v in r]
        if cpu_runs is not None:
            extra["samples_cpu_ns"] = [int(v) for v in cpu_runs[i]]
        benchmarks.append(
            {
                "group": None,
                "name": f"test_latency[{model}-{variant}-{size}]",
                "fullname": f"bench/test_latency.py::test_latency[{model}-{variant}-{size}]",
                "params": {"case": f"{model}-{variant}-{size}"},
                "param": f"{model}-{variant}-{size}",
                "extra_info": extra,
                "options": {
                    "disable_gc": False,
                    "timer": "perf_counter",
                    "min_rounds": 5,
                    "max_time": 1.0,
                    "min_time": 5e-06,
                    "warmup": False,
                },
                "stats": {
                    "min": min(data),
                    "max": max(data),
                    "mean": float(np.mean(data)),
                    "stddev": float(np.std(data, ddof=1)),
                    "rounds": len(data),
                    "median": float(np.median(data)),
                    "iqr": 0.0,
                    "q1": 0.0,
                    "q3": 0.0,
                    "iqr_outliers": 0,
                    "stddev_outliers": 0,
                    "outliers": "0;0",
                    "ld15iqr": min(data),
                    "hd15iqr": max(data),
                    "ops": 1 / float(np.mean(data)),
                    "total": float(np.sum(data)),
                    "data": data,
                    "iterations": 1,
                },
            }
        )
    return {
        "machine_info": {
            "node": "ci",
            "processor": "x86_64",
            "machine": "x86_64",
            "python_version": "3.11.9",
            "system": "Linux",
            "release": "6.1",
            "cpu": {"brand_raw": "test cpu", "count": 2},
        },
        "commit_info": {
            "id": commit,
            "time": stamp,
            "author_time": stamp,
            "dirty": False,
            "project": "parbench",
            "branch": "main",
        },
        "benchmarks": benchmarks,
        "datetime": stamp,
        "version": "5.3.0",
    }


def write_doc(path: Path, doc: dict) -> Path:
    path.write_text(json.dumps(doc, indent=1))
    return path


def squeeze(text: str) -> str:
    """Markdown tables with their column padding collapsed: ``| a | b |`` whatever the widths."""
    return re.sub(r" {2,}", " ", text)


def each(option: str, paths: list) -> list[str]:
    """``--candidate a --candidate b ...``: the option repeated for every file."""
    return [arg for p in paths for arg in (option, str(p))]


# ---------------------------------------------------------------------------------------------
# the decision


def test_aa_is_unchanged_and_false_alarms_stay_rare() -> None:
    base = make_runs(5, 10.0, seed=1)
    cand = make_runs(5, 10.0, seed=2)
    d = decide(base, cand)
    assert d.verdict == "unchanged", d
    assert d.ci_low < 1.0 < d.ci_high
    # many A/A comparisons: the rule alarms on far fewer than 1 in 100 (the test level is 1% per
    # direction, the floor removes most of what is left)
    alarms = sum(
        decide(make_runs(5, 10.0, seed=100 + i), make_runs(5, 10.0, seed=900 + i)).verdict == "slower"
        for i in range(150)
    )
    assert alarms <= 2


def test_calls_inside_a_run_are_not_the_unit() -> None:
    # identical code, runs 3% apart from process to process: the first runs of each side differ
    # by 5%, so a mean:5% check on one run per side alarms and a per-call rank test finds
    # p ~ 1e-34 (calls inside a run share the run's offset); the run-level rule asks for more runs
    base = make_runs(5, 10.0, run_sd=0.03, call_sd=0.002, seed=9)
    cand = make_runs(5, 10.0, run_sd=0.03, call_sd=0.002, seed=109)
    assert cand[0].mean() / base[0].mean() > 1.05
    assert sps.mannwhitneyu(base[0], cand[0]).pvalue < 1e-6
    d = decide(base, cand)
    assert d.verdict == "unknown" and d.need_candidate > 10
    # and with precise runs (0.2% apart) it settles on unchanged
    base = make_runs(5, 10.0, run_sd=0.002, call_sd=0.002, seed=3)
    cand = make_runs(5, 10.0, run_sd=0.002, call_sd=0.002, seed=4)
    assert sps.mannwhitneyu(base[0], cand[0]).pvalue < 0.05
    assert decide(base, cand).verdict == "unchanged"


def test_real_ten_percent_shift_is_slower_and_faster_the_other_way() -> None:
    base = make_runs(5, 10.0, seed=5)
    cand = make_runs(5, 11.0, seed=6)
    d = decide(base, cand)
    assert d.verdict == "slower"
    assert d.ratio == pytest.approx(1.10, abs=0.02)
    assert 1.0 < d.ci_low < d.ratio < d.ci_high
    assert d.p_value < 0.05
    assert decide(cand, base).verdict == "faster"


def test_real_change_below_the_floor_is_unchanged() -> None:
    base = make_runs(7, 10.0, run_sd=0.001, seed=7)
    cand = make_runs(7, 10.1, run_sd=0.001, seed=8)  # 1% slower, measured precisely
    d = decide(base, cand)
    assert d.p_value < 0.05 and d.ci_low > 1.0  # the change is real...
    assert d.verdict == "unchanged"  # ...but smaller than the 3% floor
    assert "floor" in d.note
    assert decide(base, cand, floor=0.005).verdict == "slower"


def test_too_few_runs_is_unknown_with_the_runs_needed() -> None:
    base = make_runs(2, 10.0, run_sd=0.001, seed=9)
    cand = make_runs(2, 11.0, run_sd=0.001, seed=10)
    d = decide(base, cand)
    assert d.verdict == "unknown"
    # an exact two-sided Mann-Whitney test needs 9 runs in all (4 + 5) to reach p < 0.02;
    # the runs are precise, so the noise asks for nothing more
    assert regress.mannwhitney_min_p(4, 4) > 0.02 > regress.mannwhitney_min_p(4, 5)
    assert (d.need_baseline, d.need_candidate) == (2, 3)
    assert d.label() == "unknown — need 2 more baseline and 3 more candidate runs"
    # noisier runs: the same two runs per side, and the spread they show asks for more
    noisy = decide(make_runs(2, 10.0, run_sd=0.04, seed=9), make_runs(2, 11.0, run_sd=0.04, seed=10))
    assert noisy.verdict == "unknown" and noisy.need_candidate > 2


def test_noisy_runs_ask_for_the_number_the_noise_requires() -> None:
    base = make_runs(5, 10.0, run_sd=0.05, seed=11)
    cand = make_runs(5, 10.0, run_sd=0.05, seed=12)
    d = decide(base, cand)
    assert d.verdict == "unknown"
    # the CI half-width z*sd*sqrt(1/b + 1/c) must fit in half the floor (log 1.03): the fewest
    # runs in all that do it, split as evenly as possible
    xb = np.log([np.median(r) for r in base])
    xc = np.log([np.median(r) for r in cand])
    sd = math.sqrt((np.sum((xb - xb.mean()) ** 2) + np.sum((xc - xc.mean()) ** 2)) / 8)
    z = sps.norm.ppf(1 - regress.DEFAULT_ALPHA / 2)

    def fits(b: int, c: int) -> bool:
        return z * sd * math.sqrt(1 / b + 1 / c) <= math.log(1.03) / 2

    total = min(b + c for b in range(5, 800) for c in range(5, 800) if fits(b, c))
    b, c = 5 + d.need_baseline, 5 + d.need_candidate
    assert b + c == total and fits(b, c) and abs(b - c) <= 1
    assert d.label() in (
        f"unknown — need {b - 5} more runs per side",
        f"unknown — need {b - 5} more baseline and {c - 5} more candidate runs",
    )
    assert d.noise == pytest.approx(sd)
    n = max(b, c)
    # with those runs (same noise) the question is settled one way or the other
    more_b = make_runs(n, 10.0, run_sd=0.05, rounds=20, seed=13)
    more_c = make_runs(n, 10.0, run_sd=0.05, rounds=20, seed=14)
    assert decide(more_b, more_c).verdict in ("unchanged", "slower", "faster")


def test_history_baseline_only_needs_more_candidate_runs() -> None:
    # a large, precise baseline (pooled nights) and a short candidate: only the candidate side
    # is short, so only candidate runs are asked for
    xb = np.exp(np.random.default_rng(15).normal(0, 0.005, 40))
    xc = np.exp(np.random.default_rng(16).normal(0, 0.005, 3))
    d = decide_latency(xb, xc, min_runs=5)
    assert d.verdict == "unknown" and d.need_baseline == 0 and d.need_candidate == 2
    assert d.label() == "unknown — need 2 more candidate runs"


def test_decisions_are_deterministic_and_seeded() -> None:
    base = make_runs(6, 10.0, seed=17)
    cand = make_runs(6, 10.4, seed=18)
    a, b = decide(base, cand), decide(base, cand)
    assert a == b
    c = decide(base, cand, seed=1)
    assert (c.ci_low, c.ci_high) != (a.ci_low, a.ci_high)


def test_night_effects_widen_a_history_baseline() -> None:
    # ten nights whose levels wander by ~3% (the machine changes between nights), 5 runs each;
    # tonight sits 4% above the average night: inside the night-to-night spread
    rng = np.random.default_rng(19)
    nights = rng.normal(0, 0.03, 10)
    xb = np.concatenate([np.exp(m + rng.normal(0, 0.003, 5)) for m in nights])
    groups = [f"n{i}" for i in range(10) for _ in range(5)]
    xc = np.exp(nights.mean() + 0.04 + rng.normal(0, 0.003, 5))
    assert decide_latency(xb, xc).verdict == "slower"  # runs as units: night effects ignored
    assert decide_latency(xb, xc, baseline_groups=groups).verdict != "slower"
    # a 20% step stays a regression when nights are the unit
    xc_big = np.exp(nights.mean() + 0.2 + rng.normal(0, 0.003, 5))
    assert decide_latency(xb, xc_big, baseline_groups=groups).verdict == "slower"


def test_bad_inputs_raise_with_a_reason() -> None:
    with pytest.raises(RegressError, match="positive"):
        decide_latency([1.0, -1.0, 2.0], [1.0, 1.0, 1.0])
    with pytest.raises(RegressError, match="floor"):
        decide_latency([1.0] * 5, [1.0] * 5, floor=0)
    with pytest.raises(RegressError, match="no samples"):
        decide([[]], [[1.0]])
    with pytest.raises(RegressError, match="run statistic"):
        decide([[1.0]], [[1.0]], run_stat="p99")


def exact_mw_pvalue_by_counting(x: np.ndarray, y: np.ndarray) -> float:
    """The exact two-sided Mann-Whitney p-value for untied samples, from first principles (the
    counting parbench did itself before it called scipy): count the orderings of m x's and n y's
    by U = #{(i, j): x_i < y_j}.  The last element of an ordering is a y (above all m x's: U grows
    by m) or an x, so c(m, n, u) = c(m, n - 1, u - m) + c(m - 1, n, u).  Both tails are summed
    from the counts (whole numbers, exact in float64 up to 40 runs), so a tiny tail keeps its
    precision."""
    n1, n2 = len(x), len(y)
    size = n1 * n2 + 1
    prev = [np.zeros(size) for _ in range(n2 + 1)]
    for n in range(n2 + 1):
        prev[n][0] = 1.0
    for m in range(1, n1 + 1):
        cur = [np.zeros(size) for _ in range(n2 + 1)]
        cur[0][0] = 1.0
        for n in range(1, n2 + 1):
            cur[n] = prev[n].copy()
            cur[n][m:] += cur[n - 1][: size - m]
        prev = cur
    counts = prev[n2]
    u = int(np.searchsorted(np.sort(x), y).sum())
    lower, upper = counts[: u + 1].sum(), counts[u:].sum()
    return float(min(1.0, 2.0 * min(lower, upper) / counts.sum()))


def test_rank_test_p_values_are_the_exact_ones() -> None:
    # scipy's exact Mann-Whitney gives the counted p-values on untied samples of every size the
    # decision meets (up to 40 runs in all), shifted or not
    rng = np.random.default_rng(30)
    for _ in range(300):
        n1, n2 = (int(v) for v in rng.integers(1, 21, size=2))
        x = rng.normal(0.0, 1.0, n1)
        y = rng.normal(float(rng.choice([-3.0, 0.0, 0.5, 2.0, 4.0])), 1.0, n2)
        assert len(np.unique(np.concatenate([x, y]))) == n1 + n2
        assert regress._mw_pvalue(x, y) == pytest.approx(exact_mw_pvalue_by_counting(x, y), rel=1e-12, abs=0)
    # the smallest p-value a size pair can give is the one the run counts are planned with
    x, y = np.arange(4.0), np.arange(4.0, 9.0)
    assert regress._mw_pvalue(x, y) == pytest.approx(regress.mannwhitney_min_p(4, 5))
    # ties or more than 40 runs: scipy's tie-corrected normal approximation; no spread at all: 1
    tied = np.array([1.0, 1.0, 2.0, 3.0])
    assert regress._mw_pvalue(tied, tied + 5) == pytest.approx(
        sps.mannwhitneyu(tied + 5, tied, method="asymptotic").pvalue
    )
    assert regress._mw_pvalue(np.ones(4), np.ones(5)) == 1.0


# ---------------------------------------------------------------------------------------------
# parity


def test_parity_drop_beyond_floor_and_noise_is_worse() -> None:
    base = [0.99999, 0.99999, 0.99999]  # 50 dB of cosine error, deterministic
    d = decide_parity("cosine", base, [0.999, 0.999, 0.999])  # 30 dB: 20 dB worse
    assert d.verdict == "worse"
    assert d.ratio == pytest.approx(-20.0, abs=1e-6)
    assert decide_parity("cosine", base, [0.999989] * 3).verdict == "unchanged"  # 0.4 dB
    assert decide_parity("psnr_db", [41.0, 41.0], [38.5, 38.5]).verdict == "worse"
    assert decide_parity("psnr_db", [38.5, 38.5], [41.0, 41.0]).verdict == "better"


def test_parity_one_candidate_night_against_deterministic_history() -> None:
    history = [42.0] * 7
    assert decide_parity("psnr_db", history, [39.0]).verdict == "worse"
    assert decide_parity("psnr_db", history, [41.5]).verdict == "unchanged"
    # with a spread in the history, one candidate run cannot be tested: ask for more
    d = decide_parity("psnr_db", [42.0, 41.0, 43.0, 42.5, 41.5, 42.2, 41.8], [39.0])
    assert d.verdict == "unknown" and d.need_candidate >= 1 and "rank test" in d.note


def test_parity_drop_within_run_to_run_noise_is_not_worse() -> None:
    rng = np.random.default_rng(20)
    base = list(40 + rng.normal(0, 3.0, 5))  # a nondeterministic backend: 3 dB of spread
    cand = list(38.5 + rng.normal(0, 3.0, 5))  # 1.5 dB lower, well inside that spread
    assert decide_parity("snr_db", base, cand).verdict in ("unchanged", "unknown")
    assert decide_parity("snr_db", base, list(np.array(cand) - 15)).verdict == "worse"


# ---------------------------------------------------------------------------------------------
# the command line, on JSON files in pytest-benchmark's layout


def test_cli_aa_exits_0_and_ten_percent_exits_1(tmp_path: Path) -> None:
    base = write_doc(tmp_path / "base.json", bench_doc(make_runs(5, 12.0, seed=21)))
    same = write_doc(tmp_path / "same.json", bench_doc(make_runs(5, 12.0, seed=22)))
    slow = write_doc(tmp_path / "slow.json", bench_doc(make_runs(5, 13.2, seed=23)))
    runner = CliRunner()
    aa = runner.invoke(compare_command, [*MEDIAN, "--baseline", str(base), "--candidate", str(same)])
    assert aa.exit_code == 0, aa.output
    assert "| mobilenet_v2 | eager | 256 |" in squeeze(aa.output) and "unchanged" in aa.output
    out_json = tmp_path / "verdicts.json"
    ab = runner.invoke(
        compare_command, [*MEDIAN, "--baseline", str(base), "--candidate", str(slow), "--json", str(out_json)]
    )
    assert ab.exit_code == 1, ab.output
    assert "slower" in ab.output and "1 regression(s)" in ab.output
    rows = json.loads(out_json.read_text())["rows"]
    assert rows[0]["verdict"] == "slower" and rows[0]["n_baseline"] == rows[0]["n_candidate"] == 5
    assert rows[0]["ratio"] == pytest.approx(1.10, abs=0.02)
    # the short form, one file per side: BASELINE CANDIDATE
    short = runner.invoke(compare_command, [*MEDIAN, str(base), str(slow)])
    assert short.exit_code == 1 and "slower" in short.output, short.output
    assert runner.invoke(compare_command, [*MEDIAN, str(base), str(same)]).exit_code == 0


def test_cli_one_file_per_run_and_several_candidates(tmp_path: Path) -> None:
    # each file holds one run (no run_index), several files per side after --candidate
    base = [
        write_doc(tmp_path / f"b{i}.json", bench_doc([r], with_samples=False))
        for i, r in enumerate(make_runs(5, 5.0, seed=24))
    ]
    cand = [
        write_doc(tmp_path / f"c{i}.json", bench_doc([r], with_samples=False))
        for i, r in enumerate(make_runs(5, 5.5, seed=25))
    ]
    res = CliRunner().invoke(
        compare_command, [*MEDIAN, *each("--baseline", base), *each("--candidate", cand), "--floor", "0.05"]
    )
    assert res.exit_code == 1, res.output
    assert "5/5" in res.output and "slower" in res.output
    # quoted globs name the same files
    globs = ["--baseline", str(tmp_path / "b*.json"), "--candidate", str(tmp_path / "c*.json")]
    res = CliRunner().invoke(compare_command, [*MEDIAN, *globs, "--floor", "0.05"])
    assert res.exit_code == 1 and "5/5" in res.output, res.output
    res = CliRunner().invoke(
        compare_command, ["--baseline", str(tmp_path / "x*.json"), "--candidate", str(cand[0])]
    )
    assert res.exit_code == 2 and "x*.json matches no file" in res.output
    # an unquoted glob after --candidate (the shell expands it): the files it leaves without an
    # option are refused, never taken for the baseline
    res = CliRunner().invoke(compare_command, [*map(str, base), "--candidate", *map(str, cand)])
    assert res.exit_code == 2 and "9 file(s) without --baseline/--candidate" in res.output, res.output


def test_cli_too_few_runs_reports_unknown_and_exits_0(tmp_path: Path) -> None:
    base = write_doc(tmp_path / "b.json", bench_doc(make_runs(2, 5.0, run_sd=0.001, seed=26)))
    cand = write_doc(tmp_path / "c.json", bench_doc(make_runs(2, 9.0, run_sd=0.001, seed=27)))
    res = CliRunner().invoke(compare_command, [*MEDIAN, "--baseline", str(base), "--candidate", str(cand)])
    assert res.exit_code == 0, res.output
    assert "unknown — need 2 more baseline and 3 more candidate runs" in res.output


def test_cli_bad_input_exits_2_with_a_reason(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    good = write_doc(tmp_path / "g.json", bench_doc(make_runs(3, 5.0, seed=28)))
    runner = CliRunner()
    res = runner.invoke(compare_command, ["--baseline", str(bad), "--candidate", str(good)])
    assert res.exit_code == 2 and "not valid JSON" in res.output
    res = runner.invoke(compare_command, [str(good)])
    assert res.exit_code == 2 and "no candidate" in res.output
    res = runner.invoke(compare_command, ["--baseline", str(good), "--candidate", str(good)])
    assert res.exit_code == 2 and "both sides" in res.output
    other = write_doc(tmp_path / "o.json", bench_doc(make_runs(3, 5.0, seed=29), model="other"))
    res = runner.invoke(compare_command, ["--baseline", str(good), "--candidate", str(other)])
    assert res.exit_code == 2 and "share no benchmark" in res.output


def test_cli_parity_jsonl(tmp_path: Path) -> None:
    def parity_file(path: Path, cosine: float, psnr: float) -> str:
        lines = [
            {
                "model": "mobilenet_v2",
                "variant": "coreml_fp16",
                "size": 256,
                "case": f"img{i}",
                "verdict": "pass",
                "metrics": {"output": {"cosine": cosine, "psnr_db": psnr - i}},
            }
            for i in range(2)
        ]
        path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        return str(path)

    base = [parity_file(tmp_path / f"b{i}.jsonl", 0.99999, 45.0) for i in range(3)]
    cand = [parity_file(tmp_path / f"c{i}.jsonl", 0.9999, 45.0) for i in range(3)]
    res = CliRunner().invoke(
        compare_command, [*MEDIAN, *each("--baseline", base), *each("--candidate", cand)]
    )
    assert res.exit_code == 1, res.output
    lines = [ln for ln in squeeze(res.output).splitlines() if "coreml_fp16" in ln]
    cos = next(ln for ln in lines if "| cosine |" in ln)
    psnr = next(ln for ln in lines if "| psnr_db |" in ln)
    assert "worse" in cos and "-10.00" in cos
    assert "unchanged" in psnr and "44.00" in psnr  # the worst case of each run is compared


def test_cli_reads_files_written_by_pytest_benchmark_itself(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "test_tiny.py").write_text(
        "import pytest\n\n"
        "@pytest.mark.parametrize('case', ['tiny-eager-64'])\n"
        "def test_latency(benchmark, case):\n"
        "    benchmark(sum, range(2000))\n"
    )
    outs = []
    for i in range(2):
        out = tmp_path / f"run{i}.json"
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "test_tiny.py",
                "-q",
                "-p",
                "no:cacheprovider",
                "-p",
                "pytest_benchmark.plugin",
                "--rootdir",
                str(tmp_path),
                "--benchmark-max-time=0.05",
                "--benchmark-min-rounds=20",
                f"--benchmark-json={out}",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            # a clean pytest: no xdist worker variables from an outer -n run (pytest-benchmark
            # turns itself off under xdist), no plugin autoload
            env={
                **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
                "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
            },
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outs.append(out)
    runs = load_benchmark_runs(outs)
    assert [r.key for r in runs] == [("tiny", "eager", "64")] * 2
    assert all(len(r.samples_ns) >= 20 for r in runs)
    res = CliRunner().invoke(
        compare_command, [*MEDIAN, "--baseline", str(outs[0]), "--candidate", str(outs[1])]
    )
    assert res.exit_code == 0, res.output
    assert "| tiny | eager | 64 |" in squeeze(res.output) and "1/1" in res.output
    assert "unknown — need 3 more baseline and 4 more candidate runs" in res.output


def test_cli_cpu_clock_reads_cpu_samples(tmp_path: Path) -> None:
    # a busy machine: wall-clock runs wander by 30%, thread CPU time by 0.5%; the code is 10% slower
    wall_b, wall_c = make_runs(5, 10.0, run_sd=0.3, seed=40), make_runs(5, 11.0, run_sd=0.3, seed=41)
    cpu_b, cpu_c = make_runs(5, 9.0, run_sd=0.005, seed=42), make_runs(5, 9.9, run_sd=0.005, seed=43)
    base = write_doc(tmp_path / "b.json", bench_doc(wall_b, cpu_runs=cpu_b))
    cand = write_doc(tmp_path / "c.json", bench_doc(wall_c, cpu_runs=cpu_c))
    runner = CliRunner()
    wall = runner.invoke(compare_command, [*MEDIAN, "--baseline", str(base), "--candidate", str(cand)])
    assert wall.exit_code == 0 and "unknown" in wall.output, wall.output
    cpu = runner.invoke(
        compare_command, [*MEDIAN, "--baseline", str(base), "--candidate", str(cand), "--clock", "cpu"]
    )
    assert cpu.exit_code == 1 and "slower" in cpu.output and "cpu clock" in cpu.output, cpu.output
    plain = write_doc(tmp_path / "p.json", bench_doc(wall_c))
    res = runner.invoke(
        compare_command, [*MEDIAN, "--baseline", str(base), "--candidate", str(plain), "--clock", "cpu"]
    )
    assert res.exit_code == 2 and "samples_cpu_ns" in res.output


def interfered_runs(n_runs: int, center_ms: float, seed: int, rounds: int = 200) -> list[np.ndarray]:
    """Runs as a shared machine makes them: every call costs the code's time plus a little jitter,
    and a share of the calls (different in every process: 5-60%) are slowed 10-60% by neighbours."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n_runs):
        share = rng.uniform(0.05, 0.6)
        hit = rng.random(rounds) < share
        calls = center_ms * 1e6 * np.exp(np.abs(rng.normal(0.0, 0.003, rounds)))
        out.append(calls * np.where(hit, 1.0 + rng.uniform(0.1, 0.6, rounds), 1.0))
    return out


def test_default_run_statistic_sees_through_interference() -> None:
    assert regress.DEFAULT_RUN_STAT == "min"
    base, same = interfered_runs(7, 10.0, seed=41), interfered_runs(7, 10.0, seed=42)
    slow = interfered_runs(7, 10.5, seed=43)  # the code got 5% slower
    medians = [np.median(r) for r in base]
    assert max(medians) / min(medians) > 1.1  # the run medians wander by more than the change
    assert decide_default(base, same).verdict == "unchanged"
    assert decide_default(base, slow).verdict == "slower"
    assert decide_default(base, slow).ratio == pytest.approx(1.05, abs=0.01)
    # on the same runs, medians cannot tell the 5% from the interference
    assert decide(base, slow).verdict == "unknown"
