"""Device results between machines: `parbench device export` (store -> result documents) and
`parbench device fetch` (the device workflow's artifacts, through a fake of GitHub's REST API)."""

from __future__ import annotations

import datetime as dt
import io
import json
import zipfile
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from parbench.cli.device import device_group
from parbench.device.artifacts import export_results, fetch_artifacts
from parbench.errors import DeviceError
from parbench.history.ingest import import_results
from parbench.history.store import Store

NOW = dt.datetime(2026, 12, 1, 6, 0, tzinfo=dt.UTC)


def _doc(run_id: str, created: str, cases: list[str]) -> dict:
    return {
        "run_id": run_id,
        "run": {
            "source": "device",
            "created_utc": created,
            "device": {"model": "iPhone15,2", "os": "iOS 18.1", "name": "lab phone"},
            "runtime": {"name": "parbench-ios", "version": "0.1.0", "bundle": "lite"},
            "commit": "abc123",
            "env": {"ios": "18.1"},
        },
        "results": [
            {
                "model": "mobilenet_v2",
                "variant": "lite",
                "size": 256,
                "case": case,
                "executor": "lite_interpreter",
                "load_ms": 12.5,
                "first_run_ms": 30.25,
                "samples_ns": [9_000_000 + i for i in range(5)],
                "warmup_rounds": 2,
                "threads": 1,
                "thermal_state_before": "nominal",
                "metrics": {"output": {"cosine": 0.99999, "max_abs": 0.001}},
            }
            for case in cases
        ],
    }


def _store_with(tmp_path: Path, *docs: dict, open_runs: tuple[str, ...] = ()) -> Path:
    src = tmp_path / "docs"
    src.mkdir()
    for doc in docs:
        (src / f"{doc['run_id']}.json").write_text(json.dumps(doc))
    store = tmp_path / "lab.sqlite"
    import_results(src, store)
    for doc in docs:
        if doc["run_id"] in open_runs:  # a run the phone never finished: left open in the store
            with Store(store) as s:
                s.put_run({"run_id": doc["run_id"] + "-open", **doc["run"]})
                s.put_results(doc["run_id"] + "-open", doc["results"])
    return store


def _comparable(results: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "received_utc"} for r in results]


def test_export_writes_documents_that_import_to_the_same_results(tmp_path: Path) -> None:
    tonight = _doc("ios-night2-lite", "2026-12-01T01:30:00Z", ["mobilenet_v2/256/0", "mobilenet_v2/256/1"])
    last_night = _doc("ios-night1-lite", "2026-11-30T01:30:00Z", ["mobilenet_v2/256/0"])
    lab = _store_with(tmp_path, tonight, last_night, open_runs=("ios-night2-lite",))

    out = tmp_path / "out"
    written = export_results(lab, out, since_hours=24, now=NOW)
    # the open run and the run older than 24 h are left out
    assert [p.name for p in written] == ["ios-night2-lite.json"]

    everything = export_results(lab, tmp_path / "all", now=NOW)
    assert sorted(p.name for p in everything) == ["ios-night1-lite.json", "ios-night2-lite.json"]

    # on the other machine: the same runs and results, field for field
    hosted = tmp_path / "hosted.sqlite"
    reports = import_results(tmp_path / "all", hosted)
    assert sorted((r.run_id, r.stored) for r in reports) == [("ios-night1-lite", 1), ("ios-night2-lite", 2)]
    with Store(lab) as a, Store(hosted) as b:
        for run_id in ("ios-night1-lite", "ios-night2-lite"):
            ra, rb = a.get_run(run_id), b.get_run(run_id)
            assert ra is not None and rb is not None
            for key in ("created_utc", "device", "runtime", "commit", "env", "status", "n_results"):
                assert ra[key] == rb[key], key
            assert _comparable(a.run_results(run_id)) == _comparable(b.run_results(run_id))
    # importing the same documents again stores nothing
    again = import_results(tmp_path / "all", hosted)
    assert all(r.stored == 0 and not r.created for r in again)


def test_export_errors_say_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="does not exist"):
        export_results(tmp_path / "none.sqlite", tmp_path / "out")
    lab = _store_with(tmp_path, _doc("ios-a-lite", "2026-12-01T01:00:00Z", ["m/256/0"]))
    with pytest.raises(DeviceError, match="no device run ios-b-lite; its device runs: ios-a-lite"):
        export_results(lab, tmp_path / "out", run_ids=("ios-b-lite",))
    assert [p.name for p in export_results(lab, tmp_path / "out", run_ids=("ios-a-lite",))] == [
        "ios-a-lite.json"
    ]

    cli = CliRunner().invoke(
        device_group, ["export", "--store", str(lab), "--out", str(tmp_path / "o2"), "--since-hours", "0.001"]
    )
    assert cli.exit_code == 1
    assert "holds no complete device run created in the last 0.001 h" in cli.output


# ---------------------------------------------------------------------------------------------
# fetch, against a fake of GitHub's API


def _zip(docs: dict[str, dict]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, doc in docs.items():
            z.writestr(name, json.dumps(doc))
    return buf.getvalue()


class FakeGitHub:
    """The two endpoints fetch uses: the artifact list, and downloads that redirect to blob storage
    (another host, which must not see the token)."""

    def __init__(self, artifacts: list[dict], blobs: dict[int, bytes], status: int = 200) -> None:
        self.artifacts, self.blobs, self.status = artifacts, blobs, status
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.host == "blobs.example":
            return httpx.Response(200, content=self.blobs[int(request.url.path.rsplit("/", 1)[1])])
        if request.headers.get("Authorization") != "Bearer T0KEN":
            return httpx.Response(401, json={"message": "Bad credentials"})
        if request.url.path == "/repos/lab/parbench/actions/artifacts":
            if self.status != 200:
                return httpx.Response(self.status, json={"message": "Resource not accessible by integration"})
            name = request.url.params["name"]
            listed = [a for a in self.artifacts if a["name"] == name]
            return httpx.Response(200, json={"total_count": len(listed), "artifacts": listed})
        if request.url.path.endswith("/zip"):
            artifact_id = int(request.url.path.split("/")[-2])
            return httpx.Response(302, headers={"Location": f"https://blobs.example/blob/{artifact_id}"})
        return httpx.Response(404, json={"message": "Not Found"})


def _artifact(artifact_id: int, created: str, name: str = "device-results", expired: bool = False) -> dict:
    return {
        "id": artifact_id,
        "name": name,
        "expired": expired,
        "created_at": created,
        "archive_download_url": f"https://api.github.example/repos/lab/parbench/actions/artifacts/{artifact_id}/zip",
    }


def test_fetch_downloads_the_recent_artifacts_and_import_reads_them(tmp_path: Path) -> None:
    tonight = _doc("ios-night2-lite", "2026-12-01T01:30:00Z", ["mobilenet_v2/256/0"])
    tonight_et = _doc("ios-night2-executorch", "2026-12-01T01:40:00Z", ["mobilenet_v2/256/0"])
    fake = FakeGitHub(
        [
            _artifact(11, "2026-12-01T02:00:00Z"),
            _artifact(10, "2026-11-29T02:00:00Z"),  # older than 24 h
            _artifact(12, "2026-12-01T03:00:00Z", expired=True),
            _artifact(13, "2026-12-01T03:00:00Z", name="other"),
        ],
        {11: _zip({"ios-night2-lite.json": tonight, "ios-night2-executorch.json": tonight_et})},
    )
    lines: list[str] = []
    fetched = fetch_artifacts(
        "lab/parbench",
        "T0KEN",
        tmp_path / "device-results",
        api_url="https://api.github.example",
        now=NOW,
        transport=httpx.MockTransport(fake),
        echo=lines.append,
    )
    assert [(f.artifact_id, f.documents, f.path.name) for f in fetched] == [(11, 2, "device-results-11.zip")]
    assert "3 artifact(s) named 'device-results', 1 created since 2026-11-30 06:00 UTC" in lines[0]
    # the token goes to the API, never to the blob host the download redirects to
    blob = [r for r in fake.requests if r.url.host == "blobs.example"]
    assert len(blob) == 1 and "Authorization" not in blob[0].headers
    reports = import_results(tmp_path / "device-results", tmp_path / "hosted.sqlite")
    assert sorted((r.run_id, r.stored) for r in reports) == [
        ("ios-night2-executorch", 1),
        ("ios-night2-lite", 1),
    ]


def test_fetch_errors_name_the_cause_and_keep_nothing_broken(tmp_path: Path) -> None:
    def fetch(fake: FakeGitHub, token: str = "T0KEN", repo: str = "lab/parbench") -> list:
        return fetch_artifacts(
            repo,
            token,
            tmp_path / "out",
            api_url="https://api.github.example",
            now=NOW,
            transport=httpx.MockTransport(fake),
        )

    recent = [_artifact(11, "2026-12-01T02:00:00Z")]
    with pytest.raises(DeviceError, match="no GitHub token: set GH_TOKEN"):
        fetch(FakeGitHub(recent, {}), token="")
    with pytest.raises(DeviceError, match="--repo must be OWNER/NAME"):
        fetch(FakeGitHub(recent, {}), repo="parbench")
    with pytest.raises(DeviceError, match="HTTP 401 'Bad credentials'; the token was refused"):
        fetch(FakeGitHub(recent, {}), token="wrong")
    with pytest.raises(DeviceError, match="HTTP 403 .*permissions: actions: read"):
        fetch(FakeGitHub(recent, {}, status=403))
    with pytest.raises(DeviceError, match="artifact 11 of lab/parbench is not a zip archive"):
        fetch(FakeGitHub(recent, {11: b"<html>not a zip</html>"}))
    assert not list((tmp_path / "out").glob("*"))  # the broken download was not kept
    assert fetch(FakeGitHub([_artifact(10, "2026-11-29T02:00:00Z")], {})) == []


def test_fetch_without_a_repository_fetches_nothing_and_says_so(tmp_path: Path) -> None:
    out = CliRunner(env={"GITHUB_REPOSITORY": None}).invoke(
        device_group, ["fetch", "--out", str(tmp_path / "o")]
    )
    assert out.exit_code == 0, out.output
    assert "no repository (--repo, or GITHUB_REPOSITORY on GitHub Actions): nothing fetched" in out.output
    assert not (tmp_path / "o").exists()
    out = CliRunner(env={"GH_TOKEN": None, "GITHUB_TOKEN": None}).invoke(
        device_group, ["fetch", "--repo", "lab/parbench", "--out", str(tmp_path / "o")]
    )
    assert out.exit_code == 1 and "no GitHub token" in out.output
