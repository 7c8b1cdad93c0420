"""Defects found by the collector probe (issue 15): each test reproduces one and checks the fix."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sqlite3
import stat
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.collector_helpers import AUTH, TOKEN, device_run, make_result

from parbench.collector.app import create_app
from parbench.errors import ConfigError, StoreError
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


# -- 2. symlinks leaving the set inside folder artifacts -----------------------------------------

PKG = "artifacts/tiny_net/coreml_fp16-64.mlpackage"


@pytest.fixture
def own_set(fixture_set: Path, tmp_path: Path) -> Path:
    root = tmp_path / "set"
    shutil.copytree(fixture_set, root)
    (tmp_path / "outside.txt").write_text("TOP SECRET")
    return root


@pytest.mark.parametrize(
    "target", ["outside_file", "/etc/passwd", "outside_dir"], ids=["file", "absolute", "folder"]
)
def test_symlink_leaving_the_set_inside_a_folder_artifact_is_refused(own_set, tmp_path, target) -> None:
    link = own_set / PKG / "Data" / "leak"
    if target == "outside_file":
        link.symlink_to(tmp_path / "outside.txt")
    elif target == "outside_dir":
        link.symlink_to(tmp_path, target_is_directory=True)
    else:
        link.symlink_to(target)
    app = create_app(tmp_path / "s.sqlite", TOKEN, fixtures_dir=own_set, cache_dir=tmp_path / "zips")
    with TestClient(app) as c:
        r = c.get(f"/api/v1/fixtures/files/{PKG}", headers=AUTH)
    assert r.status_code == 400, r.content[:200]
    assert r.json()["error"] == "bad_path" and "Data/leak" in r.json()["reason"]


def test_symlink_inside_the_set_is_served(own_set, tmp_path) -> None:
    (own_set / PKG / "Data" / "again.json").symlink_to(own_set / PKG / "Manifest.json")
    app = create_app(tmp_path / "s.sqlite", TOKEN, fixtures_dir=own_set, cache_dir=tmp_path / "zips")
    with TestClient(app) as c:
        r = c.get(f"/api/v1/fixtures/files/{PKG}", headers=AUTH)
    assert r.status_code == 200
    names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
    assert "coreml_fp16-64.mlpackage/Data/again.json" in names


# -- 3. the zip cache: private, checked, verified --------------------------------------------------


def test_default_zip_cache_is_private_and_not_in_tmp(own_set, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    app = create_app(tmp_path / "s.sqlite", TOKEN, fixtures_dir=own_set)
    with TestClient(app) as c:
        assert c.get(f"/api/v1/fixtures/files/{PKG}", headers=AUTH).status_code == 200
    cache = tmp_path / "xdg" / "parbench" / "collector"
    assert len(list(cache.glob("*.zip"))) == 1
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert not any((tmp_path / "tmp").rglob("*.zip"))


@pytest.mark.parametrize("problem", ["mode", "owner"])
def test_shared_or_foreign_cache_dir_is_refused(own_set, tmp_path, problem) -> None:
    cache = tmp_path / "zips"
    cache.mkdir()
    if problem == "mode":
        cache.chmod(0o777)
    else:
        if os.getuid() != 0:
            pytest.skip("changing a folder's owner needs root")
        cache.chmod(0o700)
        os.chown(cache, 65534, 65534)
    with pytest.raises(ConfigError, match=rf"{cache}.*(mode 0777|owned by uid 65534).*--cache-dir"):
        create_app(tmp_path / "s.sqlite", TOKEN, fixtures_dir=own_set, cache_dir=cache)


def test_planted_zip_in_the_cache_is_not_served(own_set, tmp_path) -> None:
    cache = tmp_path / "zips"
    app = create_app(tmp_path / "s.sqlite", TOKEN, fixtures_dir=own_set, cache_dir=cache)
    with TestClient(app) as c:
        first = c.get(f"/api/v1/fixtures/files/{PKG}", headers=AUTH)
        (cached,) = cache.glob("*.zip")
        st = cached.stat()
        cached.write_bytes(b"PK planted model".ljust(st.st_size, b"\0"))
        os.utime(cached, ns=(st.st_atime_ns, st.st_mtime_ns))
        again = c.get(f"/api/v1/fixtures/files/{PKG}", headers=AUTH)
    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers["X-Parbench-Sha256"] == first.headers["X-Parbench-Sha256"]
    assert again.headers["X-Parbench-Sha256"] == hashlib.sha256(again.content).hexdigest()


# -- 5. created_utc: only forms every reader of the store parses -----------------------------------


@pytest.mark.parametrize(
    "created",
    [
        "2026-W48-1T12:00:00",
        "2026-11-23x12:00:00",
        "2026-11-23 12:00:00Z",
        "2026-13-01T00:00:00Z",
        "2026-11-23t12:00:00z",
    ],
)
def test_created_utc_outside_rfc3339_is_refused(client, store_path, created) -> None:
    r = client.put(f"/api/v1/runs/{RUN}", json={**device_run(RUN), "created_utc": created}, headers=AUTH)
    assert r.status_code == 422, r.text
    assert (
        "created_utc: must be an RFC 3339" in r.json()["reason"]
        and "2026-11-23T12:00:00Z" in r.json()["reason"]
    )
    assert _stored(store_path) == (0, 0)


@pytest.mark.parametrize(
    "created",
    [
        "2026-11-23T12:00:00Z",
        "2026-11-23T12:00:00.123456789+14:00",
        "2026-11-23T12:00:00",
    ],
)
def test_accepted_created_utc_forms_are_read_back(client, store_path, created) -> None:
    r = client.put(f"/api/v1/runs/{RUN}", json={**device_run(RUN), "created_utc": created}, headers=AUTH)
    assert r.status_code == 201, r.text
    with Store(store_path) as store:
        assert store.runs()["created_utc"].notna().all()


def test_readers_skip_rows_with_unreadable_dates(store_path) -> None:
    with Store(store_path) as store:
        for i, created in enumerate(["2026-11-23T12:00:00Z", "2026-W48-1T12:00:00"]):
            run_id = f"{RUN}{i}"
            store.put_run({"run_id": run_id, **device_run(run_id)})
            store.put_results(run_id, [make_result(0)])
            store._connect().execute("UPDATE runs SET created_utc = ? WHERE run_id = ?", (created, run_id))
        with pytest.warns(UserWarning, match=r"skipped.*2026-W48-1T12:00:00"):
            runs = store.runs()
        assert list(runs["run_id"]) == [f"{RUN}0"]
        with pytest.warns(UserWarning, match="skipped"):
            assert len(store.results()) == 1


# -- 7. a clean stop leaves a self-contained store file -----------------------------------------


def test_clean_stop_checkpoints_the_store_into_its_main_file(store_path, tmp_path) -> None:
    with TestClient(create_app(store_path, TOKEN)) as c:
        assert c.put(f"/api/v1/runs/{RUN}", json=device_run(RUN), headers=AUTH).status_code == 201
        assert c.post(
            f"/api/v1/runs/{RUN}/results", json={"results": [make_result(0)]}, headers=AUTH
        ).is_success
    copy = tmp_path / "copy.sqlite"
    shutil.copyfile(store_path, copy)  # the main file alone, as a naive backup would
    conn = sqlite3.connect(copy)
    try:
        assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 1
        assert conn.execute("SELECT COUNT(*) FROM results").fetchone()[0] == 1
    finally:
        conn.close()


# -- 8. only a busy store is worth a retry -----------------------------------------------------


@pytest.mark.parametrize(
    ("message", "status", "retry"),
    [
        ("database is locked", 503, True),
        ("attempt to write a readonly database", 500, False),
        ("database or disk is full", 507, False),
        ("disk I/O error", 500, False),
    ],
)
def test_store_errors_other_than_busy_are_not_retryable(client, monkeypatch, message, status, retry) -> None:
    def fail(*a, **k):
        raise sqlite3.OperationalError(message)

    monkeypatch.setattr(Store, "put_run", fail)
    r = client.put(f"/api/v1/runs/{RUN}", json=device_run(RUN), headers=AUTH)
    assert r.status_code == status
    assert ("Retry-After" in r.headers) is retry
    assert message in r.json()["reason"]
    if not retry:
        assert "do not retry" in r.json()["reason"]


# -- 9. bounded request size by default ----------------------------------------------------------


def test_default_body_limit_is_8_mib(store_path) -> None:
    with TestClient(create_app(store_path, TOKEN)) as c:
        r = c.post(
            f"/api/v1/runs/{RUN}/results",
            content=b" " * ((8 << 20) + 1),
            headers={**JSON, "Content-Length": str((8 << 20) + 1)},
        )
        assert r.status_code == 413 and str(8 << 20) in r.json()["reason"]
        assert c.get("/api/v1/health").json()["limits"]["max_body_bytes"] == 8 << 20


def test_samples_per_request_are_capped(store_path) -> None:
    with TestClient(create_app(store_path, TOKEN, max_body_bytes=64 << 20)) as c:
        assert c.put(f"/api/v1/runs/{RUN}", json=device_run(RUN), headers=AUTH).status_code == 201
        results = [make_result(i, n_samples=1, samples_ns=[1] * 700_000) for i in range(3)]
        r = c.post(f"/api/v1/runs/{RUN}/results", json={"results": results}, headers=AUTH)
        assert r.status_code == 422
        assert "2100000 samples" in r.json()["reason"] and "at most 2000000" in r.json()["reason"]
    assert _stored(store_path) == (1, 0)


# -- 11. low: clear answers for what the docs refuse ---------------------------------------------


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"results": [' + b"[" * 100_000 + b"]" * 100_000 + b"]}", "nested too deeply"),
        (b'{"results": [{"run_index": ' + b"7" * 5000 + b"}]}", "number with more than"),
        (b"\xef\xbb\xbf" + json.dumps({"results": [make_result(0)]}).encode(), "byte-order mark"),
        (json.dumps({"results": [make_result(0)]}).encode("utf-16"), "UTF-8"),
    ],
    ids=["deep", "long-number", "bom", "utf-16"],
)
def test_unreadable_bodies_are_refused_with_their_real_cause(client, store_path, body, reason) -> None:
    assert client.put(f"/api/v1/runs/{RUN}", json=device_run(RUN), headers=AUTH).status_code == 201
    r = client.post(f"/api/v1/runs/{RUN}/results", content=body, headers=JSON)
    assert r.status_code == 422, r.text
    assert reason in r.json()["reason"]
    assert _stored(store_path) == (1, 0)


def test_json_suffix_media_types_are_refused(client, store_path) -> None:
    assert client.put(f"/api/v1/runs/{RUN}", json=device_run(RUN), headers=AUTH).status_code == 201
    r = client.post(
        f"/api/v1/runs/{RUN}/results",
        content=json.dumps({"results": [make_result(0)]}),
        headers={**AUTH, "Content-Type": "application/vnd.x+json"},
    )
    assert r.status_code == 422 and "Content-Type: application/json" in r.json()["reason"]
    assert _stored(store_path) == (1, 0)


def test_broken_fixture_set_is_503_unavailable(own_set, tmp_path) -> None:
    app = create_app(tmp_path / "s.sqlite", TOKEN, fixtures_dir=own_set, cache_dir=tmp_path / "zips")
    with TestClient(app) as c:
        (own_set / "manifest.json").write_text("{not json")
        r = c.get("/api/v1/fixtures/manifest", headers=AUTH)
    assert r.status_code == 503 and r.json()["error"] == "unavailable"


def test_store_path_problems_are_store_errors(tmp_path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError, match="cannot create the folder"):
        Store(tmp_path / "file" / "sub" / "s.sqlite")
    (tmp_path / "junk.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="is it an SQLite file"):
        Store(tmp_path / "junk.sqlite")


def test_new_store_files_are_private(store_path) -> None:
    with Store(store_path) as store:
        store.put_run({"run_id": RUN, **device_run(RUN)})
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in store_path.parent.glob("collector.sqlite*")}
    assert modes and set(modes.values()) == {0o600}, modes
