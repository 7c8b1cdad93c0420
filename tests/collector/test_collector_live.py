"""The collector as a real `parbench serve` process on 127.0.0.1: concurrent devices, a collector
killed with SIGKILL in the middle of a run, and requests no HTTP library would send."""

from __future__ import annotations

import random
import socket
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from support.collector_helpers import LiveCollector, device_request, device_run, make_result

from parbench.history.store import Store

N_DEVICES = 8
RESULTS_PER_DEVICE = 100
BATCH = 10


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, fixture_set: Path):
    """One collector for the module: serves the fixture set, 1 MiB body limit, made-up token."""
    store = tmp_path_factory.mktemp("live") / "collector.sqlite"
    collector = LiveCollector(store, fixtures=fixture_set, max_body_mb=1, token=None).start()
    yield collector
    collector.stop()


def test_serve_prints_url_and_generated_token(server: LiveCollector) -> None:
    log = server.log.read_text()
    assert f"parbench collector: http://127.0.0.1:{server.port}/api/v1" in log
    assert server.token and len(server.token) >= 24
    assert httpx.get(f"{server.url}/api/v1/runs", headers=server.auth).status_code == 200
    assert httpx.get(f"{server.url}/api/v1/runs", headers={"Authorization": "Bearer x"}).status_code == 401


def _device(url: str, auth: dict, run_id: str, model: str) -> dict:
    """A device: create its run, post its results in batches, complete the run."""
    stored = dups = 0
    variants = ["lite", "coreml_fp16"]
    with httpx.Client(base_url=url, headers=auth, timeout=30) as c:
        r = device_request(c, "PUT", f"/api/v1/runs/{run_id}", json=device_run(run_id, model))
        assert r.status_code in (200, 201), r.text
        results = [make_result(i, variant=variants[i % 2]) for i in range(RESULTS_PER_DEVICE)]
        for b in range(0, RESULTS_PER_DEVICE, BATCH):
            r = device_request(
                c, "POST", f"/api/v1/runs/{run_id}/results", json={"results": results[b : b + BATCH]}
            )
            assert r.status_code == 200, r.text
            stored += r.json()["stored"]
            dups += r.json()["duplicates"]
    return {"stored": stored, "duplicates": dups}


def test_eight_devices_post_concurrently_nothing_lost_nothing_doubled(server: LiveCollector) -> None:
    # Each device has a twin posting the same run and results at the same time (a retry racing
    # the original): every result must be stored exactly once, by one of the two.
    jobs = [(f"conc-dev-{d:04d}", f"iPhone1{d % 3 + 4},{d % 2 + 1}") for d in range(N_DEVICES)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=2 * N_DEVICES) as pool:
        futures = [
            pool.submit(_device, server.url, server.auth, run_id, model)
            for run_id, model in jobs
            for _twin in range(2)
        ]
        outcomes = [f.result(timeout=120) for f in futures]
    elapsed = time.perf_counter() - t0
    total = N_DEVICES * RESULTS_PER_DEVICE
    print(
        f"\n{N_DEVICES} devices x {RESULTS_PER_DEVICE} results (+ racing twins, "
        f"{2 * N_DEVICES * RESULTS_PER_DEVICE // BATCH} posts): {elapsed:.2f} s, "
        f"{2 * total / elapsed:.0f} results/s offered"
    )
    assert sum(o["stored"] for o in outcomes) == total
    assert sum(o["duplicates"] for o in outcomes) == total
    with httpx.Client(base_url=server.url, headers=server.auth, timeout=30) as c:
        for run_id, model in jobs:
            r = c.post(f"/api/v1/runs/{run_id}/complete", json={"expected_results": RESULTS_PER_DEVICE})
            assert r.status_code == 200 and r.json()["status"] == "complete", r.text
            got = c.get(f"/api/v1/runs/{run_id}").json()
            assert got["run"]["device"]["model"] == model
            assert sorted(x["run_index"] for x in got["results"]) == list(range(RESULTS_PER_DEVICE))
            sample = got["results"][17]
            assert sample["samples_ns"] == make_result(sample["run_index"])["samples_ns"]
    with sqlite3.connect(server.store) as conn:
        n = conn.execute("SELECT COUNT(*) FROM results WHERE run_id LIKE 'conc-dev-%'").fetchone()[0]
        distinct = conn.execute(
            "SELECT COUNT(*) FROM (SELECT DISTINCT run_id, variant, run_index FROM results "
            "WHERE run_id LIKE 'conc-dev-%')"
        ).fetchone()[0]
    assert n == distinct == total


def _raw_get(port: int, target: str, token: str) -> tuple[int, bytes]:
    """Send a request line exactly as given (clients normalise '..' away; attackers do not)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


@pytest.mark.parametrize(
    "target",
    [
        "/api/v1/fixtures/files/../../secret.txt",
        "/api/v1/fixtures/files/tensors/../../secret.txt",
        "/api/v1/fixtures/files/%2e%2e/secret.txt",
        "/api/v1/fixtures/files/tensors/tiny_net/..%2f..%2f..%2fsecret.txt",
        "/api/v1/fixtures/files//etc/passwd",
        "/api/v1/fixtures/files/./manifest.json",
    ],
)
def test_raw_path_traversal_is_refused(server: LiveCollector, target: str) -> None:
    status, data = _raw_get(server.port, target, server.token)
    assert status in (400, 404), data
    assert b"outside the fixture set" not in data and b"root:" not in data


def test_files_download_over_http(server: LiveCollector, fixture_set: Path) -> None:
    rel = "tensors/tiny_net/128-1.input.image.bin"
    status, data = _raw_get(server.port, f"/api/v1/fixtures/files/{rel}", server.token)
    assert status == 200 and data.endswith((fixture_set / rel).read_bytes())


def test_oversized_bodies_over_http(server: LiveCollector) -> None:
    with httpx.Client(base_url=server.url, headers=server.auth, timeout=30) as c:
        assert c.put("/api/v1/runs/big-run-0001", json=device_run("big-run-0001")).status_code == 201
        payload = ('{"results": [' + ",".join(['{"model": "tiny_net"}'] * 60_000) + "]}").encode()
        assert len(payload) > 1 << 20
        r = c.post(
            "/api/v1/runs/big-run-0001/results", content=payload, headers={"Content-Type": "application/json"}
        )
        assert r.status_code == 413 and "over the collector's limit of 1048576 bytes" in r.json()["reason"]

        def chunks():
            for i in range(0, len(payload), 65536):
                yield payload[i : i + 65536]

        r = c.post(
            "/api/v1/runs/big-run-0001/results",
            content=chunks(),  # chunked: no Content-Length
            headers={"Content-Type": "application/json"},
        )
        assert r.status_code == 413 and "over the collector's limit of 1048576 bytes" in r.json()["reason"]
        assert c.get("/api/v1/runs/big-run-0001").json()["results"] == []
        assert c.get("/api/v1/health").status_code == 200


def test_collector_killed_mid_run_then_restarted(tmp_path: Path, live_collector: type[LiveCollector]) -> None:
    """SIGKILL while a device posts big batches: the store holds only whole batches, and the
    device's retries against the restarted collector complete the run exactly."""
    store_path = tmp_path / "kill.sqlite"
    collector = live_collector(store_path).start()
    run_id, batch, n_batches = "kill-dev-0001", 200, 12
    results = [make_result(i, n_samples=50) for i in range(batch * n_batches)]
    progress = {"batch": -1}
    outcome: dict = {}

    def device() -> None:
        try:
            with httpx.Client(base_url=collector.url, headers=collector.auth, timeout=30) as c:
                device_request(c, "PUT", f"/api/v1/runs/{run_id}", json=device_run(run_id))
                for b in range(n_batches):
                    progress["batch"] = b
                    r = device_request(
                        c,
                        "POST",
                        f"/api/v1/runs/{run_id}/results",
                        json={"results": results[b * batch : (b + 1) * batch]},
                        tries=200,
                    )
                    assert r.status_code == 200, r.text
                r = device_request(
                    c, "POST", f"/api/v1/runs/{run_id}/complete", json={"expected_results": batch * n_batches}
                )
                outcome["complete"] = r.json()
        except BaseException as exc:  # reported by the main thread
            outcome["error"] = exc

    rng = random.Random(7)
    thread = threading.Thread(target=device)
    thread.start()
    for target in (3, 8):  # kill while the device is busy with these batches (~60 ms each)
        deadline = time.monotonic() + 60
        while progress["batch"] < target and time.monotonic() < deadline:
            time.sleep(0.002)
        assert progress["batch"] >= target, f"device stuck at batch {progress['batch']}"
        time.sleep(rng.random() * 0.05)  # somewhere inside that batch's request or transaction
        collector.kill()
        # While the collector is down, the store holds whole batches only.
        with sqlite3.connect(store_path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            n = conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        assert n % batch == 0, f"partial batch stored: {n} results"
        collector.start()
    thread.join(timeout=120)
    assert not thread.is_alive() and "error" not in outcome, outcome.get("error")
    assert outcome["complete"]["status"] == "complete"
    assert outcome["complete"]["n_results"] == batch * n_batches
    store = Store(store_path)
    df = store.results(run_id=run_id)
    assert sorted(df["run_index"]) == list(range(batch * n_batches))
