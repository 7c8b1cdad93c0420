"""Defects found by the collector probe (issue 15): each test reproduces one and checks the fix."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.collector_helpers import AUTH, TOKEN, device_run, make_result

from parbench.collector.app import create_app
from parbench.errors import StoreError
from parbench.history.store import Store

RUN = "hard-run-0001"
JSON = {**AUTH, "Content-Type": "application/json"}


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "collector.sqlite"


@pytest.fixture
def client(store_path: Path, fixture_set: Path, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(store_path, TOKEN, fixtures_dir=fixture_set, cache_dir=tmp_path / "zips")
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _stored(store_path: Path) -> tuple[int, int]:
    with Store(store_path) as store:
        return len(store.runs()), len(store.results())


def _raw(obj: object) -> bytes:
    """JSON text as a client would send it: ensure_ascii writes a lone surrogate as \\ud800."""
    return json.dumps(obj).encode()


# -- 1. lone UTF-16 surrogates -------------------------------------------------------------------

SURROGATE_RUN_FIELDS = [
    ("machine", lambda r: r["machine"].update(cpu="\ud800")),
    ("machine", lambda r: r["machine"].update({"k\udfff": 1})),
    ("fixture_set", lambda r: r["fixture_set"].update(note=["\udfff"])),
    ("device", lambda r: r["device"].update(extra_key="\ud800")),
    ("runtime", lambda r: r["runtime"].update(flavour="\ud800")),
]


@pytest.mark.parametrize(("field", "spoil"), SURROGATE_RUN_FIELDS)
def test_lone_surrogate_in_run_metadata_is_refused(client, store_path, field, spoil) -> None:
    run = device_run(RUN)
    spoil(run)
    r = client.put(f"/api/v1/runs/{RUN}", content=_raw(run), headers=JSON)
    assert r.status_code == 422, r.text
    assert field in r.json()["reason"] and "surrogate" in r.json()["reason"]
    assert _stored(store_path) == (0, 0)
    assert client.get("/api/v1/runs", headers=AUTH).status_code == 200


@pytest.mark.parametrize("field", ["extra", "xctest"])
def test_lone_surrogate_in_result_json_is_refused(client, store_path, field) -> None:
    assert client.put(f"/api/v1/runs/{RUN}", json=device_run(RUN), headers=AUTH).status_code == 201
    body = {"results": [make_result(0, **{field: {"k": "\ud800"}})]}
    r = client.post(f"/api/v1/runs/{RUN}/results", content=_raw(body), headers=JSON)
    assert r.status_code == 422, r.text
    assert field in r.json()["reason"] and "surrogate" in r.json()["reason"]
    assert _stored(store_path) == (1, 0)
    assert client.get(f"/api/v1/runs/{RUN}", headers=AUTH).status_code == 200


def test_store_refuses_lone_surrogates_from_python_callers(store_path) -> None:
    # device import and bench ingestion hand the store Python dicts, not JSON text
    with Store(store_path) as store:
        run = {"run_id": RUN, **device_run(RUN)}
        run["machine"]["cpu"] = "A16 \ud800"
        with pytest.raises(StoreError, match=r"machine.*cpu.*surrogate"):
            store.put_run(run)
        run = {"run_id": RUN, **device_run(RUN)}
        run["device"]["name"] = "lab \ud800"
        with pytest.raises(StoreError, match=r"device\.name"):
            store.put_run(run)
        store.put_run({"run_id": RUN, **device_run(RUN)})
        with pytest.raises(StoreError, match=r"extra.*surrogate"):
            store.put_results(RUN, [make_result(0, extra={"note": "\udc00"})])
        with pytest.raises(StoreError, match="executor"):
            store.put_results(RUN, [make_result(0, executor="lite\udc00")])
        with pytest.raises(StoreError, match="metrics"):
            store.put_results(RUN, [make_result(0, metrics={"out\ud800": {"cosine": 1.0}})])
        assert len(store.results()) == 0
        assert len(store.runs()) == 1


def test_unexpected_errors_are_answered_with_json(client, monkeypatch) -> None:
    def boom(*a, **k):
        raise RuntimeError("kaput")

    monkeypatch.setattr(Store, "list_runs", boom)
    r = client.get("/api/v1/runs", headers=AUTH)
    assert r.status_code == 500
    assert r.headers["content-type"] == "application/json"
    assert r.json()["error"] == "internal" and "kaput" not in r.json()["reason"]
