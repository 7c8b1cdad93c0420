"""The collector's HTTP API in process (FastAPI TestClient): auth, validation, idempotency,
body limits and fixture serving.  Every refused request is checked to have stored nothing."""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.collector_helpers import AUTH, TOKEN, device_run, make_result

from parbench.collector.app import create_app
from parbench.collector.fixtures_view import FixtureServeError, check_relative_path
from parbench.history.store import Store

RUN = "dev-run-0001"


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "collector.sqlite"


@pytest.fixture
def client(store_path: Path, fixture_set: Path, tmp_path: Path) -> Iterator[TestClient]:
    app = create_app(
        store_path, TOKEN, fixtures_dir=fixture_set, max_body_bytes=256 * 1024, cache_dir=tmp_path / "zips"
    )
    with TestClient(app, raise_server_exceptions=True) as c:
        yield c


@pytest.fixture
def bare_client(store_path: Path) -> Iterator[TestClient]:
    """A collector that serves no fixture set."""
    with TestClient(create_app(store_path, TOKEN), raise_server_exceptions=True) as c:
        yield c


def _stored(store_path: Path) -> tuple[int, int]:
    store = Store(store_path)
    try:
        return len(store.runs()), len(store.results())
    finally:
        store.close()


def _open_run(c: TestClient, run_id: str = RUN) -> None:
    r = c.put(f"/api/v1/runs/{run_id}", json=device_run(run_id), headers=AUTH)
    assert r.status_code == 201, r.text


def test_health_and_openapi_need_no_token(client: TestClient) -> None:
    health = client.get("/api/v1/health").json()
    assert health["status"] == "ok" and health["api_version"] == 1 and health["fixtures"] is True
    schema = client.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {
        "/api/v1/health",
        "/api/v1/fixtures/manifest",
        "/api/v1/fixtures/files/{path}",
        "/api/v1/runs/{run_id}",
        "/api/v1/runs/{run_id}/results",
        "/api/v1/runs/{run_id}/complete",
        "/api/v1/runs",
    } <= paths
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert "security" not in schema["paths"]["/api/v1/health"]["get"]
    assert "security" in schema["paths"]["/api/v1/runs/{run_id}/results"]["post"]


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing 'Authorization: Bearer <token>'"),
        ({"Authorization": f"Basic {TOKEN}"}, "must be 'Bearer <token>'"),
        ({"Authorization": "Bearer"}, "must be 'Bearer <token>'"),
        ({"Authorization": "Bearer not-the-token"}, "wrong token"),
        ({"Authorization": f"Bearer {TOKEN}x"}, "wrong token"),
    ],
)
def test_missing_or_wrong_token_is_401_and_stores_nothing(
    client: TestClient, store_path: Path, headers: dict, reason: str
) -> None:
    calls = [
        client.put(f"/api/v1/runs/{RUN}", json=device_run(RUN), headers=headers),
        client.post(f"/api/v1/runs/{RUN}/results", json={"results": [make_result(0)]}, headers=headers),
        client.post(f"/api/v1/runs/{RUN}/complete", json={}, headers=headers),
        client.get("/api/v1/runs", headers=headers),
        client.get("/api/v1/fixtures/manifest", headers=headers),
        client.get("/api/v1/fixtures/files/artifacts/tiny_net/lite.ptl", headers=headers),
    ]
    for r in calls:
        assert r.status_code == 401, r.text
        assert r.json() == {"error": "unauthorized", "reason": pytest.approx(r.json()["reason"])}
        assert reason in r.json()["reason"]
        assert r.headers["www-authenticate"] == "Bearer"
    assert _stored(store_path) == (0, 0)


def test_run_lifecycle_and_idempotent_retries(client: TestClient, store_path: Path) -> None:
    body = device_run(RUN)
    first = client.put(f"/api/v1/runs/{RUN}", json=body, headers=AUTH)
    assert first.status_code == 201 and first.json()["status"] == "open"
    again = client.put(f"/api/v1/runs/{RUN}", json=body, headers=AUTH)
    assert again.status_code == 200 and again.json()["received_utc"] == first.json()["received_utc"]
    changed = client.put(f"/api/v1/runs/{RUN}", json={**body, "commit": "deadbeef"}, headers=AUTH)
    assert changed.status_code == 409 and "fields ['commit']" in changed.json()["reason"]

    batch = {"results": [make_result(i) for i in range(10)]}
    assert client.post(f"/api/v1/runs/{RUN}/results", json=batch, headers=AUTH).json() == {
        "stored": 10,
        "duplicates": 0,
    }
    assert client.post(f"/api/v1/runs/{RUN}/results", json=batch, headers=AUTH).json() == {
        "stored": 0,
        "duplicates": 10,
    }
    mixed = {"results": batch["results"][5:] + [make_result(10, size=128, case="tiny_net/128/1")]}
    assert client.post(f"/api/v1/runs/{RUN}/results", json=mixed, headers=AUTH).json() == {
        "stored": 1,
        "duplicates": 5,
    }
    conflicting = {"results": [dict(batch["results"][0], first_run_ms=1.0)]}
    r = client.post(f"/api/v1/runs/{RUN}/results", json=conflicting, headers=AUTH)
    assert r.status_code == 409 and "different values" in r.json()["reason"]

    r = client.post(f"/api/v1/runs/{RUN}/complete", json={"expected_results": 12}, headers=AUTH)
    assert r.status_code == 409 and "11 results stored but 12 were expected" in r.json()["reason"]
    r = client.post(f"/api/v1/runs/{RUN}/complete", json={"expected_results": 11}, headers=AUTH)
    assert r.status_code == 200 and r.json()["status"] == "complete" and r.json()["n_results"] == 11
    assert client.post(f"/api/v1/runs/{RUN}/complete", headers=AUTH).status_code == 200  # no body: default
    r = client.post(f"/api/v1/runs/{RUN}/results", json={"results": [make_result(11)]}, headers=AUTH)
    assert r.status_code == 409 and "already complete" in r.json()["reason"]

    got = client.get(f"/api/v1/runs/{RUN}", headers=AUTH).json()
    assert got["run"]["device"]["model"] == "iPhone15,2" and len(got["results"]) == 11
    sent = make_result(3)
    stored = next(x for x in got["results"] if x["run_index"] == 3)
    assert {k: stored[k] for k in sent} == sent
    assert stored["n_samples"] == 20 and stored["median_ms"] > 0
    assert _stored(store_path) == (1, 11)


def test_list_runs_filters_and_pages(bare_client: TestClient) -> None:
    for i in range(5):
        run_id = f"dev-run-{i:04d}"
        body = {**device_run(run_id), "created_utc": f"2026-11-2{i}T10:00:00Z"}
        assert bare_client.put(f"/api/v1/runs/{run_id}", json=body, headers=AUTH).status_code == 201
    host = {
        "source": "host",
        "created_utc": "2026-11-10T00:00:00Z",
        "machine": {"cpu": "x86"},
        "runtime": {"name": "host", "version": "3.11"},
    }
    assert bare_client.put("/api/v1/runs/host-run-0001", json=host, headers=AUTH).status_code == 201
    page = bare_client.get(
        "/api/v1/runs", params={"source": "device", "limit": 2, "offset": 1}, headers=AUTH
    ).json()
    assert page["total"] == 5 and [r["run_id"] for r in page["runs"]] == ["dev-run-0003", "dev-run-0002"]
    assert bare_client.get("/api/v1/runs", params={"source": "host"}, headers=AUTH).json()["total"] == 1
    assert bare_client.get("/api/v1/runs", params={"limit": 0}, headers=AUTH).status_code == 422
    typo = bare_client.get("/api/v1/runs", params={"sorce": "host"}, headers=AUTH)
    assert typo.status_code == 422 and typo.json()["reason"] == "query.sorce: Extra inputs are not permitted"
    wrong_method = bare_client.delete("/api/v1/runs/dev-run-0001", headers=AUTH)
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "GET, PUT"
    assert bare_client.get("/api/v1/runs/dev-run-0404", headers=AUTH).status_code == 404


_BAD_RESULTS = [
    ({"size": "64"}, "results[1].size: Input should be a valid integer"),
    ({"size": 8}, "results[1].size: Input should be greater than or equal to 16"),
    ({"size": 9000}, "results[1].size: Input should be less than or equal to 8192"),
    ({"samples_ns": [1.5e6, 2e6]}, "results[1].samples_ns[0]: Input should be a valid integer"),
    ({"samples_ns": [0]}, "results[1].samples_ns[0]: Input should be greater than 0"),
    ({"samples_ns": [10**13]}, "results[1].samples_ns[0]: Input should be less than 10000000000000"),
    ({"samples_ns": []}, "needs samples_ns (non-empty)"),
    ({"load_ms": None}, "needs load_ms"),
    ({"load_ms": -0.5}, "results[1].load_ms: Input should be greater than or equal to 0"),
    ({"load_ms": 1e7}, "results[1].load_ms: Input should be less than 10000000"),
    ({"load_ms": "12"}, "results[1].load_ms: Input should be a valid number"),
    ({"threads": 0}, "results[1].threads: Input should be greater than or equal to 1"),
    ({"compute_units": "gpu"}, "results[1].compute_units: Input should be 'cpuOnly'"),
    ({"thermal_state_after": "hot"}, "results[1].thermal_state_after: Input should be 'nominal'"),
    (
        {"metrics": {"output": {"cosine": "high"}}},
        "results[1].metrics.output.cosine: Input should be a valid number",
    ),
    ({"model": "Tiny Net"}, "results[1].model: String should match pattern"),
    ({"shoe_size": 44}, "results[1].shoe_size: Extra inputs are not permitted"),
    (
        {"model": "resnet_9000"},
        "results[1]: model 'resnet_9000' is not in the served fixture set (it has: tiny_net)",
    ),
    ({"variant": "onnx"}, "results[1]: variant 'onnx' has no artifact for 'tiny_net'"),
    ({"size": 256}, "results[1]: size 256 is not a fixture size of 'tiny_net' (sizes: [64, 128])"),
    ({"variant": "coreml_fp16", "size": 128}, "no 'coreml_fp16' artifact of 'tiny_net' serves size 128"),
    ({"case": "tiny_net/64/7"}, "case 'tiny_net/64/7' is not a case of 'tiny_net'"),
    ({"case": "tiny_net/128/0"}, "case 'tiny_net/128/0' has size 128, not 64"),
]


@pytest.mark.parametrize(("over", "reason"), _BAD_RESULTS, ids=[str(o)[:40] for o, _ in _BAD_RESULTS])
def test_bad_results_are_422_with_reason_and_store_nothing(
    client: TestClient, store_path: Path, over: dict, reason: str
) -> None:
    _open_run(client)
    body = {"results": [make_result(0), make_result(1, **over)]}
    r = client.post(f"/api/v1/runs/{RUN}/results", json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "validation" and reason in r.json()["reason"], r.json()["reason"]
    assert _stored(store_path) == (1, 0)


def test_nan_and_infinity_are_refused(client: TestClient, store_path: Path) -> None:
    _open_run(client)
    bodies = [  # json.dumps writes NaN / Infinity, which Python's JSON reader accepts: pydantic must not
        (
            json.dumps({"results": [make_result(0, metrics={"output": {"cosine": float("nan")}})]}),
            "metrics.output.cosine: Input should be a finite number",
        ),
        (
            json.dumps({"results": [make_result(0, xctest={"clock": [1.0, float("inf")]})]}),
            "xctest: clock[1] is inf: only finite numbers are allowed",
        ),
        (
            json.dumps({"results": [make_result(0, first_run_ms=12345.5)]}).replace("12345.5", "1e400"),
            "first_run_ms: Input should be a finite number",
        ),
    ]
    for body, reason in bodies:
        r = client.post(
            f"/api/v1/runs/{RUN}/results", content=body, headers={**AUTH, "Content-Type": "application/json"}
        )
        assert r.status_code == 422 and reason in r.json()["reason"], r.text
    assert _stored(store_path) == (1, 0)


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b'{"results": [', "application/json", "body is not valid JSON (Expecting value at character 13)"),
        (
            b"results=1",
            "application/x-www-form-urlencoded",
            "must be JSON sent with 'Content-Type: application/json'",
        ),
        (json.dumps({"results": [make_result(0)]}).encode(), None, "must be JSON sent with"),
        (b"[]", "application/json", "body: Input should be a valid dictionary"),
        (b'{"results": []}', "application/json", "results: List should have at least 1 item"),
        (b'{"results": {"model": "tiny_net"}}', "application/json", "results: Input should be a valid list"),
        (b"\xff\xfe\x00", "application/json", "body is not valid JSON: it must be UTF-8 encoded JSON"),
    ],
)
def test_malformed_bodies_are_422(
    client: TestClient, store_path: Path, body: bytes, content_type: str | None, reason: str
) -> None:
    _open_run(client)
    headers = dict(AUTH)
    if content_type:
        headers["Content-Type"] = content_type
    r = client.post(f"/api/v1/runs/{RUN}/results", content=body, headers=headers)
    assert r.status_code == 422, r.text
    assert reason in r.json()["reason"], r.json()["reason"]
    assert _stored(store_path) == (1, 0)


def _nested(depth: int) -> dict:
    d: dict = {}
    for _ in range(depth):
        d = {"k": d}
    return d


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"device": None}, "a device run needs 'device'"),
        ({"created_utc": "last tuesday"}, "created_utc: must be an RFC 3339"),
        ({"runtime": {"name": "Core ML", "version": "8"}}, "runtime.name: String should match pattern"),
        ({"env": {"torch": 2.13}}, "env.torch: Input should be a valid string"),
        ({"source": "cloud"}, "source: Input should be 'device' or 'host'"),
        ({"machine": _nested(20)}, "nested deeper than 16 levels"),
    ],
)
def test_bad_runs_are_422(client: TestClient, store_path: Path, over: dict, reason: str) -> None:
    r = client.put(f"/api/v1/runs/{RUN}", json={**device_run(RUN), **over}, headers=AUTH)
    assert r.status_code == 422, r.text
    assert reason in r.json()["reason"], r.json()["reason"]
    assert _stored(store_path) == (0, 0)


@pytest.mark.parametrize("run_id", ["short", "has space in it", "x" * 129, "semi;colon-id"])
def test_bad_run_ids_are_422(client: TestClient, store_path: Path, run_id: str) -> None:
    r = client.put(f"/api/v1/runs/{run_id}", json=device_run("dev-run-0001"), headers=AUTH)
    assert r.status_code == 422 and "run_id: String should match pattern" in r.json()["reason"]
    assert _stored(store_path) == (0, 0)


def test_results_for_an_unknown_run_are_404(client: TestClient, store_path: Path) -> None:
    r = client.post("/api/v1/runs/dev-run-0404/results", json={"results": [make_result(0)]}, headers=AUTH)
    assert r.status_code == 404 and "create it first" in r.json()["reason"]
    assert client.post("/api/v1/runs/dev-run-0404/complete", json={}, headers=AUTH).status_code == 404
    assert _stored(store_path) == (0, 0)


def test_oversized_bodies_are_413_and_store_nothing(client: TestClient, store_path: Path) -> None:
    _open_run(client)
    big = {"results": [make_result(i, n_samples=2000) for i in range(20)]}  # ~600 kB > 256 kiB limit
    payload = json.dumps(big).encode()
    r = client.post(
        f"/api/v1/runs/{RUN}/results", content=payload, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert r.status_code == 413 and r.json()["error"] == "body_too_large"
    assert f"body of {len(payload)} bytes is over the collector's limit of 262144 bytes" in r.json()["reason"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed size is what is bounded
        for i in range(0, len(payload), 16384):
            yield payload[i : i + 16384]

    r = client.post(
        f"/api/v1/runs/{RUN}/results", content=chunks(), headers={**AUTH, "Content-Type": "application/json"}
    )
    assert r.status_code == 413 and "over the collector's limit of 262144 bytes" in r.json()["reason"]
    # The same results in batches under the limit go through.
    for i in range(0, 20, 5):
        part = {"results": big["results"][i : i + 5]}
        assert client.post(f"/api/v1/runs/{RUN}/results", json=part, headers=AUTH).status_code == 200
    assert _stored(store_path) == (1, 20)


def test_no_fixture_set_accepts_any_ids(bare_client: TestClient) -> None:
    r = bare_client.get("/api/v1/fixtures/manifest", headers=AUTH)
    assert r.status_code == 404 and "serves no fixture set" in r.json()["reason"]
    assert bare_client.get("/api/v1/fixtures/files/tensors/a.bin", headers=AUTH).status_code == 404
    _open_run(bare_client)
    body = {"results": [make_result(0, model="anything_else", variant="coreml_fp32", size=512)]}
    assert bare_client.post(f"/api/v1/runs/{RUN}/results", json=body, headers=AUTH).json()["stored"] == 1


def test_manifest_and_tensor_files_are_served(client: TestClient, fixture_set: Path) -> None:
    r = client.get("/api/v1/fixtures/manifest", headers=AUTH)
    raw = (fixture_set / "manifest.json").read_bytes()
    assert r.status_code == 200 and r.content == raw
    assert r.headers["etag"] == f'"{hashlib.sha256(raw).hexdigest()}"'
    manifest = json.loads(raw)
    for rel, info in list(manifest["tensors"].items())[:3]:
        f = client.get(f"/api/v1/fixtures/files/{rel}", headers=AUTH)
        assert f.status_code == 200 and hashlib.sha256(f.content).hexdigest() == info["sha256"]
        assert f.headers["x-parbench-sha256"] == info["sha256"]
        assert len(f.content) == 4 * math.prod(info["shape"])  # float32
    lite = manifest["models"]["tiny_net"]["artifacts"]["lite"][0]
    part = client.get(f"/api/v1/fixtures/files/{lite['path']}", headers={**AUTH, "Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == (fixture_set / lite["path"]).read_bytes()[100:200]


def test_mlpackage_folders_are_served_as_deterministic_zips(
    client: TestClient, fixture_set: Path, tmp_path: Path
) -> None:
    from parbench._util.hashing import sha256_path

    entry = json.loads((fixture_set / "manifest.json").read_text())["models"]["tiny_net"]["artifacts"][
        "coreml_fp16"
    ][0]
    first = client.get(f"/api/v1/fixtures/files/{entry['path']}", headers=AUTH)
    assert first.status_code == 200 and first.headers["content-type"] == "application/zip"
    assert first.headers["x-parbench-archive"] == "zip"
    assert first.headers["x-parbench-sha256"] == hashlib.sha256(first.content).hexdigest()
    with zipfile.ZipFile(io.BytesIO(first.content)) as zf:
        names = zf.namelist()
        assert names == sorted(names) and all(n.startswith("coreml_fp16-64.mlpackage/") for n in names)
        zf.extractall(tmp_path / "unzipped")
    assert sha256_path(tmp_path / "unzipped" / "coreml_fp16-64.mlpackage") == entry["sha256"]
    # A fresh collector with an empty cache builds byte-identical zips.
    other = TestClient(create_app(tmp_path / "o.sqlite", TOKEN, fixture_set, cache_dir=tmp_path / "zips2"))
    second = other.get(f"/api/v1/fixtures/files/{entry['path']}", headers=AUTH)
    assert second.content == first.content
    assert len(list((tmp_path / "zips2").glob("*.zip"))) == 1


@pytest.mark.parametrize(
    "path",
    [
        "../secret.txt",
        "tensors/../../secret.txt",
        "./manifest.json",
        "/etc/passwd",
        "a//b",
        "a\\..\\b",
        "",
        "a/\x00/b",
        "tensors/.",
        "..",
        "x/..",
    ],
)
def test_relative_path_check(path: str) -> None:
    # HTTP clients remove literal dot segments before sending; tests against a live server
    # send them raw (test_collector_live.py).  The check itself is tested here on its own.
    with pytest.raises(FixtureServeError) as info:
        check_relative_path(path)
    assert info.value.status == 400 and "give a relative path exactly as listed" in str(info.value)
    check_relative_path("tensors/tiny_net/64-0.input.image.bin")  # a listed-style path passes


@pytest.mark.parametrize(
    ("path", "status", "reason"),
    [
        ("%2e%2e/secret.txt", 400, "no '..'"),
        ("tensors/%2E%2E/%2e%2e/secret.txt", 400, "no '..'"),
        ("tensors/tiny_net/%2e%2e/%2e%2e/%2e%2e/secret.txt", 400, "no '..'"),
        ("/etc/passwd", 400, "leading '/'"),
        ("tensors//tiny_net/64-0.input.image.bin", 400, "empty segments"),
        ("tensors\\..\\..\\secret.txt", 400, "backslashes"),
        ("tensors/%2e/tiny_net/64-0.input.image.bin", 400, "'.'"),
        ("manifest.json", 404, "not a tensor or artifact listed"),
        ("artifacts/tiny_net/coreml_fp16-64.mlpackage/Manifest.json", 404, "not a tensor or artifact listed"),
        ("tensors/tiny_net/64-9.input.image.bin", 404, "not a tensor or artifact listed"),
    ],
)
def test_path_traversal_and_unlisted_files_are_refused(
    client: TestClient, path: str, status: int, reason: str
) -> None:
    r = client.get(f"/api/v1/fixtures/files/{path}", headers=AUTH)
    assert r.status_code == status, (path, r.status_code, r.text)
    assert reason in r.json()["reason"]
    assert b"outside the fixture set" not in r.content


def test_symlink_out_of_the_set_is_refused(fixture_set: Path, tmp_path: Path) -> None:
    copy = tmp_path / "set"
    shutil.copytree(fixture_set, copy)
    (copy / "artifacts/tiny_net/lite.ptl").unlink()
    (copy / "artifacts/tiny_net/lite.ptl").symlink_to(fixture_set.parent / "secret.txt")
    with TestClient(create_app(tmp_path / "s.sqlite", TOKEN, copy)) as c:
        r = c.get("/api/v1/fixtures/files/artifacts/tiny_net/lite.ptl", headers=AUTH)
    assert r.status_code == 400 and "points outside the fixture set" in r.json()["reason"]


def test_listed_but_missing_file_is_404(fixture_set: Path, tmp_path: Path) -> None:
    copy = tmp_path / "set"
    shutil.copytree(fixture_set, copy)
    (copy / "artifacts/tiny_net/lite.ptl").unlink()
    with TestClient(create_app(tmp_path / "s.sqlite", TOKEN, copy)) as c:
        r = c.get("/api/v1/fixtures/files/artifacts/tiny_net/lite.ptl", headers=AUTH)
    assert r.status_code == 404 and "missing on disk" in r.json()["reason"]


def test_unknown_fixture_format_version_is_refused(fixture_set: Path, tmp_path: Path) -> None:
    copy = tmp_path / "set"
    shutil.copytree(fixture_set, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["format_version"] = 2
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FixtureServeError, match="format_version 2"):
        create_app(tmp_path / "s.sqlite", TOKEN, copy)


def test_manifest_changes_are_picked_up(fixture_set: Path, tmp_path: Path, store_path: Path) -> None:
    copy = tmp_path / "set"
    shutil.copytree(fixture_set, copy)
    with TestClient(create_app(store_path, TOKEN, copy)) as c:
        _open_run(c)
        body = {"results": [make_result(0, variant="onnx")]}
        assert c.post(f"/api/v1/runs/{RUN}/results", json=body, headers=AUTH).status_code == 422
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["models"]["tiny_net"]["artifacts"]["onnx"] = [
            dict(manifest["models"]["tiny_net"]["artifacts"]["lite"][0], format="onnx")
        ]
        (copy / "manifest.json").write_text(json.dumps(manifest, indent=2))
        assert c.post(f"/api/v1/runs/{RUN}/results", json=body, headers=AUTH).json()["stored"] == 1


def test_create_app_refuses_bad_settings(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="non-empty ASCII string without spaces"):
        create_app(tmp_path / "s.sqlite", "two words")
    with pytest.raises(ValueError, match="non-empty"):
        create_app(tmp_path / "s.sqlite", "")
    with pytest.raises(ValueError, match="max_body_bytes must be at least 1024"):
        create_app(tmp_path / "s.sqlite", TOKEN, max_body_bytes=10)


def test_user_model_names_with_capitals_and_digits_are_stored(
    bare_client: TestClient, store_path: Path
) -> None:
    """Model names follow the records' one rule (letters, digits, '_', '.'), as in parity and report."""
    _open_run(bare_client)
    sent = make_result(0, model="MyNet2", variant="coreml_fp16", size=224, compute_units="cpuAndNeuralEngine")
    r = bare_client.post(f"/api/v1/runs/{RUN}/results", json={"results": [sent]}, headers=AUTH)
    assert r.status_code == 200 and r.json() == {"stored": 1, "duplicates": 0}
    got = bare_client.get(f"/api/v1/runs/{RUN}", headers=AUTH).json()
    [stored] = got["results"]
    assert {k: stored[k] for k in sent} == sent
    with Store(store_path) as store:
        df = store.results(model="MyNet2")
    assert list(df["model"]) == ["MyNet2"] and list(df["variant"]) == ["coreml_fp16"]
    # the rule still refuses names that would break the MODEL-VARIANT-SIZE id
    bad = make_result(1, model="My-Net2")
    r = bare_client.post(f"/api/v1/runs/{RUN}/results", json={"results": [bad]}, headers=AUTH)
    assert r.status_code == 422 and "results[0].model: String should match pattern" in r.json()["reason"]
