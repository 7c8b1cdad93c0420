"""Device results through the collector (in process), the store and `parbench compare --source
device`: one time verdict per device x model x form x size, each device judged against its own nights."""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from fastapi.testclient import TestClient
from support.collector_helpers import AUTH, TOKEN, device_run, make_result

from parbench.cli.regress import compare_command
from parbench.collector.app import create_app

A, B = "iPhone15,2", "iPhone16,1"
# (variant, compute units, typical ms): Core ML's compute units are separate forms
FORMS = (("lite", None, 4.0), ("coreml_fp16", "cpuOnly", 6.0), ("coreml_fp16", "all", 1.5))
# nights at 01:00 UTC, so that no night straddles midnight, whenever the tests run
TODAY = datetime.now(UTC).replace(hour=1, minute=0, second=0, microsecond=0)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "collector.sqlite"


@pytest.fixture
def client(store: Path) -> Iterator[TestClient]:
    with TestClient(create_app(store, TOKEN), raise_server_exceptions=True) as c:
        yield c


def post_night(
    c: TestClient,
    device: str,
    nights_ago: int,
    *,
    runs: int = 6,
    slowdown: float = 1.0,
    speed: float = 1.0,
    os: str = "iOS 18.1",
    seed: int = 0,
) -> None:
    """One night of a device: `runs` app processes (a run id each), every form timed on two cases
    of size 64, 20 rounds each; 0.5% run-to-run and 1% call-to-call spread."""
    rng = np.random.default_rng([seed, nights_ago, zlib.crc32(device.encode())])
    created = TODAY - timedelta(days=nights_ago)
    for k in range(runs):
        run_id = f"ios-{device.replace(',', '-')}-{created:%Y%m%d}-{k}"
        run = device_run(run_id, model=device) | {
            "created_utc": f"{created + timedelta(minutes=k):%Y-%m-%dT%H:%M:%SZ}"
        }
        run["device"]["os"] = os
        assert c.put(f"/api/v1/runs/{run_id}", json=run, headers=AUTH).status_code == 201
        run_factor = np.exp(rng.normal(0, 0.005))
        results = []
        for variant, units, ms in FORMS:
            for case in (0, 1):
                samples = ms * 1e6 * speed * slowdown * run_factor * np.exp(rng.normal(0, 0.01, 20))
                results.append(
                    make_result(
                        k,
                        variant=variant,
                        compute_units=units,
                        case=f"tiny_net/64/{case}",
                        samples_ns=samples.astype(np.int64).tolist(),
                    )
                )
        r = c.post(f"/api/v1/runs/{run_id}/results", json={"results": results}, headers=AUTH)
        assert r.status_code == 200 and r.json()["stored"] == len(results), r.text
        assert c.post(f"/api/v1/runs/{run_id}/complete", json={}, headers=AUTH).status_code == 200


def compare(store: Path, tmp_path: Path, *extra: str) -> tuple[Result, dict[str, Any] | None]:
    out = tmp_path / "compare.json"
    out.unlink(missing_ok=True)
    args = ["--source", "device", "--store", str(store), "--baseline-nights", "3", "--candidate-nights", "1"]
    res = CliRunner().invoke(compare_command, [*args, "--json", str(out), *extra])
    return res, json.loads(out.read_text()) if out.exists() else None


def rows_by_key(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(r["device"], r["variant"]): r for r in doc["rows"]}


def test_unchanged_device_nights_are_unchanged_per_form(
    client: TestClient, store: Path, tmp_path: Path
) -> None:
    for night in (3, 2, 1, 0):
        post_night(client, A, night)
    res, doc = compare(store, tmp_path)
    assert res.exit_code == 0, res.output
    assert doc is not None
    rows = rows_by_key(doc)
    assert set(rows) == {(A, "lite"), (A, "coreml_fp16/cpuOnly"), (A, "coreml_fp16/all")}
    for row in rows.values():
        assert row["verdict"] == "unchanged", row
        # a run is one app process: its two cases are one run, not two
        assert (row["n_baseline"], row["n_candidate"]) == (18, 6)
        assert row["model"] == "tiny_net" and row["size"] == "64"
    assert rows[(A, "coreml_fp16/all")]["baseline"] == pytest.approx(1.5, rel=0.05)
    assert "iPhone15,2" in res.output and "unchanged" in res.output


def test_a_20_percent_slowdown_on_the_device_is_slower(
    client: TestClient, store: Path, tmp_path: Path
) -> None:
    for night in (3, 2, 1):
        post_night(client, A, night)
    post_night(client, A, 0, slowdown=1.2)
    res, doc = compare(store, tmp_path, "--variant", "lite")
    assert res.exit_code == 1, res.output
    assert doc is not None and doc["regressions"] == 1
    (row,) = doc["rows"]
    assert (row["device"], row["variant"], row["verdict"]) == (A, "lite", "slower")
    assert row["ratio"] == pytest.approx(1.2, rel=0.03)


def test_another_devices_results_are_never_mixed_in(client: TestClient, store: Path, tmp_path: Path) -> None:
    for night in (3, 2, 1, 0):
        post_night(client, A, night)
    # a slower phone that first reported tonight, on another OS
    post_night(client, B, 0, speed=1.3, os="iOS 18.2")
    res, doc = compare(store, tmp_path)
    assert res.exit_code == 0, res.output
    assert doc is not None
    rows = rows_by_key(doc)
    for variant in ("lite", "coreml_fp16/cpuOnly", "coreml_fp16/all"):
        a, b = rows[(A, variant)], rows[(B, variant)]
        assert a["verdict"] == "unchanged" and a["n_candidate"] == 6, a
        assert b["verdict"] == "unknown" and (b["n_baseline"], b["n_candidate"]) == (0, 6), b
        assert b["note"] == "no baseline runs of this benchmark on iPhone16,1"
    assert "iPhone16,1: no nights before its newest 1" in res.output

    # B's earlier night, posted late, becomes B's baseline, and only B's
    post_night(client, B, 1, speed=1.3 / 1.2, os="iOS 18.2")
    res, doc = compare(store, tmp_path, "--device", B, "--baseline-nights", "1", "--variant", "lite")
    assert doc is not None and res.exit_code == 1, res.output
    (row,) = doc["rows"]
    assert (row["device"], row["verdict"], row["n_baseline"]) == (B, "slower", 6)
    assert row["ratio"] == pytest.approx(1.2, rel=0.03)

    res, _ = compare(store, tmp_path, "--device", "iPhone99,9")
    assert res.exit_code == 2
    assert "no results of device 'iPhone99,9'" in res.output and "iPhone15,2, iPhone16,1" in res.output


def test_an_os_update_is_reported_beside_the_verdict(client: TestClient, store: Path, tmp_path: Path) -> None:
    for night in (3, 2, 1):
        post_night(client, A, night)
    post_night(client, A, 0, os="iOS 18.2")
    res, doc = compare(store, tmp_path, "--variant", "lite")
    assert res.exit_code == 0, res.output
    assert doc is not None
    (row,) = doc["rows"]
    assert row["verdict"] == "unchanged"
    assert row["note"].endswith("OS changed: baseline iOS 18.1, candidate iOS 18.2")
    assert "OS changed" in res.output


def test_a_device_run_without_a_device_identity_is_refused(
    client: TestClient, store: Path, tmp_path: Path
) -> None:
    for device, expected in (
        (None, "a device run needs 'device'"),
        ({"model": "", "os": "iOS 18.1"}, "model"),
    ):
        run = device_run("ios-nodevice-0001") | {"device": device}
        r = client.put("/api/v1/runs/ios-nodevice-0001", json=run, headers=AUTH)
        assert r.status_code == 422 and expected in r.json()["reason"], r.text
    assert client.get("/api/v1/runs", headers=AUTH).json()["total"] == 0

    # a store whose device run lost its device model (written by other means) is refused by name
    for night in (3, 2, 1, 0):
        post_night(client, A, night, runs=3)
    with sqlite3.connect(store) as db:
        run_id = db.execute("SELECT run_id FROM runs ORDER BY created_utc DESC LIMIT 1").fetchone()[0]
        db.execute("UPDATE runs SET device_model = NULL WHERE run_id = ?", (run_id,))
    res, _ = compare(store, tmp_path)
    assert res.exit_code == 2
    assert run_id in res.output and "name no device model" in res.output

    res, _ = compare(store, tmp_path, "--device", " ")
    assert res.exit_code == 2 and "--device is empty" in res.output


def test_no_device_results_tonight_skips_with_the_reason(
    client: TestClient, store: Path, tmp_path: Path
) -> None:
    res, _ = compare(store, tmp_path)
    assert res.exit_code == 2 and "holds no successful device results" in res.output
    res, _ = compare(store, tmp_path, "--candidate-within", "24")
    assert res.exit_code == 0 and "nothing compared" in res.output, res.output
    assert "holds no successful device results" in res.output

    for night in (4, 3, 2):  # nothing posted last night
        post_night(client, A, night, runs=3)
    md = tmp_path / "compare-device.md"
    res, doc = compare(store, tmp_path, "--candidate-within", "24", "--markdown", str(md))
    assert res.exit_code == 0, res.output
    assert (
        doc is None and "iPhone15,2: newest results" in res.output and "none in the last 24 h" in res.output
    )
    assert "nothing compared" in md.read_text()
    res, doc = compare(store, tmp_path, "--candidate-within", "72")
    assert res.exit_code == 0 and doc is not None and {r["device"] for r in doc["rows"]} == {A}


def test_device_options_are_checked(store: Path, tmp_path: Path, client: TestClient) -> None:
    runner = CliRunner()
    res = runner.invoke(compare_command, ["--device", A, "a.json", "b.json"])
    assert res.exit_code == 2 and "--device and --candidate-within need --source device" in res.output
    base = ["--source", "device", "--store", str(store), "--baseline-nights", "3"]
    res = runner.invoke(compare_command, [*base, "--candidate-nights", "1", "--clock", "cpu"])
    assert res.exit_code == 2 and "wall-clock samples only" in res.output
    res = runner.invoke(compare_command, [*base, "--candidate", str(tmp_path / "x.json")])
    assert res.exit_code == 2 and "--source device compares nights of the store" in res.output


def test_device_history_is_one_devices_nights(client: TestClient, store: Path, tmp_path: Path) -> None:
    from parbench.cli.regress import history_command

    for night in (3, 2, 1, 0):
        post_night(client, A, night, runs=3)
    post_night(client, B, 0, runs=3, speed=1.3)
    out = tmp_path / "history"
    args = ["tiny_net", "--source", "device", "--store", str(store), "--out", str(out)]
    res = CliRunner().invoke(history_command, args)
    assert res.exit_code == 2 and "2 devices (iPhone15,2, iPhone16,1); choose one with --device" in res.output
    res = CliRunner().invoke(history_command, [*args, "--device", A, "--variant", "coreml_fp16/cpuOnly"])
    assert res.exit_code == 0, res.output
    assert "tiny_net-coreml_fp16/cpuOnly-64: 4 nights" in res.output
    assert (out / "history_tiny_net_coreml_fp16-cpuOnly_64.png").stat().st_size > 0
    (series,) = json.loads((out / "history_tiny_net.json").read_text())
    assert series["centers_ms"][-1] == pytest.approx(6.0, rel=0.05)  # B's 7.8 ms runs stay out
    res = CliRunner().invoke(history_command, ["tiny_net", "--device", A, "--store", str(store)])
    assert res.exit_code == 2 and "--device needs --source device" in res.output
