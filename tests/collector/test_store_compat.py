"""Stores written before the record types validated runs and results stay usable, and retries stay
idempotent across the change: the same run or result gets the same content hash, so a retry of
something the older store holds is a duplicate, never a conflict.

``tests/data/store-v1/`` was written by parbench 0.1.0 (hand-written validation in the store):
``store-v1.sqlite`` holds a device run posted through the collector (``collector-posts.json``: the
bodies as sent, several fields left to their defaults), a run stored directly from the device
runner's result document (``device-doc.json``, as ``parbench device import`` does) and a host run
ingested from a pytest-benchmark file (``bench.json``).
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from parbench.collector.app import create_app
from parbench.history.ingest import import_results, ingest_benchmark_json
from parbench.history.store import Store

DATA = Path(__file__).parents[1] / "data" / "store-v1"
TOKEN = "compat-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
POSTS = json.loads((DATA / "collector-posts.json").read_text())
DOC = json.loads((DATA / "device-doc.json").read_text())
HOST_RUN = "host-b9eb9f28364d039a3a5ec6e1"


def _hashes(path: Path) -> tuple[dict[str, str], dict[tuple, str]]:
    """meta_sha256 by run id, content_sha256 by result key."""
    with sqlite3.connect(path) as conn:
        runs = dict(conn.execute("SELECT run_id, meta_sha256 FROM runs"))
        results = {
            tuple(row[:-1]): row[-1]
            for row in conn.execute(
                'SELECT run_id, model, variant, size, "case", compute_units, run_index, content_sha256 '
                "FROM results"
            )
        }
    return runs, results


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    path = tmp_path / "store-v1.sqlite"
    shutil.copyfile(DATA / "store-v1.sqlite", path)
    return path


@pytest.fixture
def client(old_store: Path) -> Iterator[TestClient]:
    with TestClient(create_app(old_store, TOKEN)) as c:
        yield c


def test_content_hashes_are_those_of_the_older_store(tmp_path: Path) -> None:
    """The same runs and results, stored afresh through both paths (collector and direct), get the
    hashes the older store computed."""
    fresh = tmp_path / "fresh.sqlite"
    with TestClient(create_app(fresh, TOKEN)) as c:
        assert c.put(f"/api/v1/runs/{POSTS['run_id']}", json=POSTS["run"], headers=AUTH).status_code == 201
        r = c.post(
            f"/api/v1/runs/{POSTS['run_id']}/results", json={"results": POSTS["results"]}, headers=AUTH
        )
        assert r.json() == {"stored": len(POSTS["results"]), "duplicates": 0}
    [report] = import_results(DATA / "device-doc.json", fresh)
    assert (report.created, report.stored) == (True, len(DOC["results"]))
    with Store(fresh) as store:
        assert ingest_benchmark_json(store, DATA / "bench.json") == HOST_RUN
    old_runs, old_results = _hashes(DATA / "store-v1.sqlite")
    new_runs, new_results = _hashes(fresh)
    assert new_results == old_results and len(new_results) == 11
    device_runs = {POSTS["run_id"], DOC["run_id"]}
    assert {k: new_runs[k] for k in device_runs} == {k: old_runs[k] for k in device_runs}
    # The host run's env now holds strings only (the record's rule), so its metadata hash moved:
    # re-ingesting the file into the older store is covered below.
    assert new_runs[HOST_RUN] != old_runs[HOST_RUN]


def test_collector_retries_into_an_older_store_are_duplicates(client: TestClient, old_store: Path) -> None:
    run_id = POSTS["run_id"]
    put = client.put(f"/api/v1/runs/{run_id}", json=POSTS["run"], headers=AUTH)
    assert put.status_code == 200 and put.json()["status"] == "complete"
    r = client.post(f"/api/v1/runs/{run_id}/results", json={"results": POSTS["results"]}, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"stored": 0, "duplicates": len(POSTS["results"])}
    changed = dict(POSTS["results"][0], load_ms=99.0)
    r = client.post(f"/api/v1/runs/{run_id}/results", json={"results": [changed]}, headers=AUTH)
    assert r.status_code == 409 and "different values" in r.json()["reason"]
    # Rows stored by the older store read back through the API.
    got = client.get(f"/api/v1/runs/{run_id}", headers=AUTH).json()
    assert len(got["results"]) == len(POSTS["results"])
    first = next(x for x in got["results"] if x["run_index"] == 1 and x["size"] == 64)
    assert (first["load_ms"], first["first_run_ms"], first["peak_memory_mb"]) == (12.0, 9.0, 48.0)
    assert _hashes(old_store) == _hashes(DATA / "store-v1.sqlite")


def test_device_import_and_bench_ingestion_into_an_older_store_store_nothing(old_store: Path) -> None:
    [report] = import_results(DATA / "device-doc.json", old_store)
    assert (report.created, report.stored, report.duplicates) == (False, 0, len(DOC["results"]))
    with Store(old_store) as store:
        assert ingest_benchmark_json(store, DATA / "bench.json") == HOST_RUN
        # the run keeps the metadata the older parbench stored for this file
        assert store.get_run(HOST_RUN)["env"]["commit_dirty"] is False
        assert len(store.results(run_id=HOST_RUN)) == 2
        # an explicit run id is a new run, with today's metadata
        assert ingest_benchmark_json(store, DATA / "bench.json", run_id="bench-again-01") == "bench-again-01"
        assert store.get_run("bench-again-01")["env"]["commit_dirty"] == "false"
    assert _hashes(old_store)[1].items() >= _hashes(DATA / "store-v1.sqlite")[1].items()
    assert len(_hashes(old_store)[1]) == 13


def test_older_store_reads_as_tables(old_store: Path) -> None:
    with Store(old_store) as store:
        df = store.results()
        runs = store.runs()
    assert len(df) == 11 and set(df["run_id"]) == {POSTS["run_id"], DOC["run_id"], HOST_RUN}
    assert list(runs["run_id"]) == [HOST_RUN, POSTS["run_id"], DOC["run_id"]]
    assert runs.set_index("run_id").loc[POSTS["run_id"], "device_name"] == "QA iPhone 14 Pro"
