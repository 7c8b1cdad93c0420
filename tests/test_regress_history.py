"""Change points over nightly histories, and the store-backed `compare` / `history` commands."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_regress import bench_doc, make_runs, squeeze, write_doc

from parbench.cli.regress import compare_command, history_command
from parbench.regress.changepoints import change_points, e_divisive, energy_q


def night_levels(n: int, step_at: int | None, step: float, seed: int, sd: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    levels = 10.0 * np.exp(rng.normal(0.0, sd, n))
    if step_at is not None:
        levels[step_at:] *= 1 + step
    return levels


def test_energy_statistic_matches_its_definition() -> None:
    x = np.random.default_rng(0).normal(0, 1, 12)
    q = energy_q(x)
    for tau in range(1, 12):
        a, b = x[:tau], x[tau:]
        m, k = len(a), len(b)
        within_a = np.abs(a[:, None] - a[None, :]).sum() / (m * (m - 1)) if m > 1 else 0.0
        within_b = np.abs(b[:, None] - b[None, :]).sum() / (k * (k - 1)) if k > 1 else 0.0
        expect = m * k / (m + k) * (2 * np.abs(a[:, None] - b[None, :]).mean() - within_a - within_b)
        assert q[tau] == pytest.approx(expect)


def test_change_point_finds_the_step_night() -> None:
    series = night_levels(30, 18, 0.08, seed=1)
    cps = change_points(series, [f"night{i}" for i in range(30)])
    assert [c.index for c in cps] == [18]
    c = cps[0]
    assert c.label == "night18" and c.confirmed and c.nights_after == 12
    assert c.ratio == pytest.approx(1.08, abs=0.015)
    assert c.p_value <= 0.05


def test_two_steps_and_a_flat_history() -> None:
    series = night_levels(40, 12, 0.10, seed=2)
    series[27:] /= 1.10
    assert [c.index for c in change_points(series)] == [12, 27]
    assert change_points(night_levels(40, None, 0.0, seed=3)) == []
    # a real but tiny step (1%) is below the 3% floor
    assert change_points(night_levels(40, 20, 0.01, seed=4, sd=0.001)) == []


def test_noisy_flat_history_has_no_change_point() -> None:
    # nights wander by 5%: splits of such a series often differ by more than the floor, only the
    # permutation test tells them from a shift
    # (the test is at 5% per split: a few of 40 flat histories may show one)
    with_change = sum(
        bool(change_points(night_levels(30, None, 0.0, seed=seed, sd=0.05))) for seed in range(100, 140)
    )
    assert with_change <= 5


def test_a_single_odd_last_night_is_not_a_change_point() -> None:
    # one night alone cannot be told from an outlier by a permutation test: tonight's compare
    # verdict covers it; two nights at the new level make the shift
    assert change_points(night_levels(25, 24, 0.15, seed=5)) == []
    two = night_levels(26, 24, 0.15, seed=5)
    cps = change_points(two)
    assert [(c.index, c.confirmed, c.nights_after) for c in cps] == [(24, True, 2)]
    assert not change_points(two, min_persist=3)[0].confirmed


def test_e_divisive_is_deterministic() -> None:
    series = np.log(night_levels(30, 10, 0.05, seed=6))
    assert e_divisive(series) == e_divisive(series)


# ---------------------------------------------------------------------------------------------
# the history store


@pytest.fixture()
def history(tmp_path: Path) -> tuple[Path, list[Path]]:
    from parbench.history.ingest import ingest_benchmark_json
    from parbench.history.store import Store

    db = tmp_path / "history.sqlite"
    files = []
    levels = night_levels(12, 7, 0.12, seed=7, sd=0.005)
    with Store(db) as store:
        for night, level in enumerate(levels):
            doc = bench_doc(
                make_runs(3, float(level), run_sd=0.004, rounds=30, seed=100 + night),
                stamp=f"2026-02-{night + 1:02d}T02:00:00+00:00",
                commit=f"{night:02d}" * 20,
            )
            f = write_doc(tmp_path / f"night{night:02d}.json", doc)
            ingest_benchmark_json(store, f)
            files.append(f)
    return db, files


def test_history_command_plots_and_lists_the_change(history: tuple[Path, list[Path]], tmp_path: Path) -> None:
    db, _ = history
    out = tmp_path / "out"
    res = CliRunner().invoke(history_command, ["mobilenet_v2", "--store", str(db), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "mobilenet_v2-eager-256: 12 nights" in res.output
    assert "change at 2026-02-08 07070707" in res.output and "confirmed" in res.output
    png = out / "history_mobilenet_v2_eager_256.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    html = (out / "history_mobilenet_v2.html").read_text()
    assert "data:image/png;base64," in html and "2026-02-08" in html
    res = CliRunner().invoke(history_command, ["no_such_model", "--store", str(db), "--out", str(out)])
    assert res.exit_code == 2 and "no host results for model 'no_such_model'" in res.output


def test_compare_against_pooled_recent_nights(history: tuple[Path, list[Path]], tmp_path: Path) -> None:
    db, files = history
    recent = 10.0 * 1.12
    same = write_doc(
        tmp_path / "same.json",
        bench_doc(make_runs(5, recent, run_sd=0.004, seed=200), stamp="2026-02-13T02:00:00+00:00"),
    )
    slow = write_doc(
        tmp_path / "slow.json",
        bench_doc(make_runs(5, recent * 1.2, run_sd=0.004, seed=201), stamp="2026-02-13T02:00:00+00:00"),
    )
    runner = CliRunner()
    args = ["--store", str(db), "--baseline-nights", "4", "--candidate"]
    res = runner.invoke(compare_command, args + [str(same)])
    assert res.exit_code == 0, res.output
    assert "12/5" in res.output  # 4 nights x 3 runs pooled
    res = runner.invoke(compare_command, args + [str(slow)])
    assert res.exit_code == 1, res.output
    assert "slower" in res.output
    # the last stored night as the candidate: the step is 4 nights old, so no regression
    res = runner.invoke(
        compare_command, ["--store", str(db), "--baseline-nights", "3", "--candidate-nights", "1"]
    )
    assert res.exit_code == 0 and "9/3" in res.output, res.output
    # a candidate already ingested is not also part of its own baseline
    res = runner.invoke(
        compare_command, ["--store", str(db), "--baseline-nights", "3", "--candidate", str(files[-1])]
    )
    assert "9/3" in res.output, res.output
    res = runner.invoke(
        compare_command,
        ["--store", str(tmp_path / "missing.sqlite"), "--baseline-nights", "3", "--candidate", str(same)],
    )
    assert res.exit_code == 2 and "does not exist" in res.output


def test_candidate_nights_are_not_in_the_baseline(tmp_path: Path) -> None:
    from parbench.history.ingest import ingest_benchmark_json
    from parbench.history.store import Store

    db = tmp_path / "h.sqlite"
    with Store(db) as store:
        for night in range(5):
            level = 10.0 * (1.2 if night == 4 else 1.0)
            runs = make_runs(5, level, run_sd=0.004, rounds=20, seed=300 + night)
            doc = bench_doc(
                runs, stamp=f"2026-03-{night + 1:02d}T02:00:00+00:00", cpu_runs=[r * 0.9 for r in runs]
            )
            ingest_benchmark_json(store, write_doc(tmp_path / f"n{night}.json", doc))
    res = CliRunner().invoke(
        compare_command, ["--store", str(db), "--baseline-nights", "3", "--candidate-nights", "1"]
    )
    assert res.exit_code == 1, res.output
    assert "15/5" in res.output and "slower" in res.output
    # the CPU-time samples travel through the store too (kept with the result's extra fields)
    res = CliRunner().invoke(
        compare_command,
        [
            "--store",
            str(db),
            "--baseline-nights",
            "3",
            "--candidate-nights",
            "1",
            "--clock",
            "cpu",
            "--run-stat",
            "median",
        ],
    )
    assert res.exit_code == 1 and "| 8.9" in squeeze(res.output) and "cpu clock" in res.output, res.output


def test_the_default_store_is_read_when_the_command_runs(
    history: tuple[Path, list[Path]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db, _ = history
    args = ["--baseline-nights", "3", "--candidate-nights", "1"]
    monkeypatch.chdir(tmp_path)  # no reports/history.sqlite here
    monkeypatch.delenv("PARBENCH_STORE", raising=False)
    res = CliRunner().invoke(compare_command, args)
    assert res.exit_code == 2 and "reports/history.sqlite does not exist" in res.output, res.output
    monkeypatch.setenv("PARBENCH_STORE", str(db))  # set after the import of the command
    res = CliRunner().invoke(compare_command, args)
    assert res.exit_code == 0 and "9/3" in res.output, res.output
    res = CliRunner().invoke(history_command, ["mobilenet_v2", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0 and "12 nights" in res.output, res.output
