"""Device results between machines: ``parbench device export`` and ``parbench device fetch``.

The phones run on a lab Mac; the nightly runs on a hosted runner that cannot reach it. So the Mac
writes its night's device runs out of its store as result documents (:func:`export_results`, the
format ``parbench device import`` reads) and uploads them as an artifact of the ``device``
workflow; the nightly downloads the artifacts of the last hours (:func:`fetch_artifacts`, GitHub's
REST API) into the folder it imports from. Importing is idempotent, so an artifact fetched on two
nights stores nothing twice.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from parbench._util import clock
from parbench.errors import DeviceError
from parbench.history.ingest import result_document
from parbench.history.store import Store
from parbench.records.device import RESULT_FIELDS, RUN_FIELDS

DEFAULT_ARTIFACT = "device-results"
GITHUB_API = "https://api.github.com"


# ---------------------------------------------------------------------------------------------
# export: a store's device runs as result documents


def export_results(
    store_path: Path | str,
    out_dir: Path | str,
    since_hours: float | None = None,
    run_ids: tuple[str, ...] = (),
    now: dt.datetime | None = None,
) -> list[Path]:
    """Writes ``<run_id>.json`` under ``out_dir`` for each complete device run of the store (those
    in ``run_ids`` if given; those created in the last ``since_hours`` if given). Each document is
    read back through the importer's own check before it is written, so what is written imports."""
    store_path = Path(store_path)
    if not store_path.is_file():
        raise DeviceError(
            f"{store_path} does not exist: give the store the device runs were imported into (--store)"
        )
    now = now or clock.now()
    with Store(store_path) as store:
        _, runs = store.list_runs(source="device")
        if run_ids:
            known = {r["run_id"] for r in runs}
            missing = [r for r in run_ids if r not in known]
            if missing:
                raise DeviceError(
                    f"{store_path} has no device run {', '.join(missing)}; its device runs: "
                    f"{', '.join(sorted(known)) or 'none'}"
                )
            runs = [r for r in runs if r["run_id"] in run_ids]
        if since_hours is not None:
            cutoff = now - dt.timedelta(hours=since_hours)
            runs = [r for r in runs if clock.parse_utc(r["created_utc"]) >= cutoff]
        runs = [r for r in runs if r["status"] == "complete"]
        documents = [
            {
                "run_id": run["run_id"],
                "run": {k: run[k] for k in RUN_FIELDS},
                "results": [
                    {k: v for k, v in result.items() if k in RESULT_FIELDS and v is not None}
                    for result in store.run_results(run["run_id"])
                ],
            }
            for run in runs
        ]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for doc in documents:
        path = out_dir / f"{doc['run_id']}.json"
        text = json.dumps(doc, indent=1) + "\n"
        result_document(json.loads(text), str(path))  # raises DeviceError if it would not import
        path.write_text(text)
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------
# fetch: the device workflow's artifacts of the last hours


@dataclasses.dataclass
class FetchedArtifact:
    artifact_id: int
    created_at: str
    path: Path
    documents: int


def _github_error(response: httpx.Response, what: str) -> DeviceError:
    try:
        message = response.json().get("message", "")
    except (ValueError, AttributeError):
        message = response.text[:200]
    hint = {
        401: "the token was refused: set GH_TOKEN (in a workflow: ${{ github.token }})",
        403: "the token may not read Actions artifacts: give the job `permissions: actions: read`",
        404: "no such repository, or the token cannot see it: check --repo",
    }.get(response.status_code, "GitHub's API answered with an error")
    return DeviceError(f"{what}: HTTP {response.status_code} {message!r}; {hint}")


def fetch_artifacts(
    repo: str,
    token: str,
    out_dir: Path | str,
    artifact: str = DEFAULT_ARTIFACT,
    within_hours: float = 24,
    api_url: str = GITHUB_API,
    now: dt.datetime | None = None,
    transport: httpx.BaseTransport | None = None,
    echo: Callable[[str], None] = lambda _: None,
) -> list[FetchedArtifact]:
    """Downloads every unexpired artifact named ``artifact`` of ``repo`` created in the last
    ``within_hours`` as ``<out_dir>/<artifact>-<id>.zip`` (``parbench device import`` reads the
    result documents inside zips). Returns what was fetched; none is not an error."""
    if repo.count("/") != 1 or not all(repo.split("/")):
        raise DeviceError(f"--repo must be OWNER/NAME, got {repo!r}")
    if not token:
        raise DeviceError(
            "no GitHub token: set GH_TOKEN or GITHUB_TOKEN (in a workflow: GH_TOKEN: ${{ github.token }}, "
            "with `permissions: actions: read`)"
        )
    now = now or clock.now()
    cutoff = now - dt.timedelta(hours=within_hours)
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
    }
    out_dir = Path(out_dir)
    fetched: list[FetchedArtifact] = []
    with httpx.Client(
        base_url=api_url.rstrip("/"), headers=headers, timeout=60, follow_redirects=True, transport=transport
    ) as client:
        try:
            listing = client.get(
                f"/repos/{repo}/actions/artifacts", params={"name": artifact, "per_page": 100}
            )
        except httpx.HTTPError as exc:
            raise DeviceError(f"listing the artifacts of {repo}: {exc}") from exc
        if listing.status_code != 200:
            raise _github_error(listing, f"listing the artifacts of {repo}")
        try:
            found: list[dict[str, Any]] = listing.json()["artifacts"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DeviceError(
                f"listing the artifacts of {repo}: the answer has no 'artifacts' list ({exc})"
            ) from exc
        recent = [
            a
            for a in found
            if a.get("name") == artifact
            and not a.get("expired")
            and clock.parse_utc(a["created_at"]) >= cutoff
        ]
        echo(
            f"{repo}: {len(found)} artifact(s) named {artifact!r}, {len(recent)} created since "
            f"{cutoff:%Y-%m-%d %H:%M} UTC and not expired"
        )
        for a in sorted(recent, key=lambda a: a["created_at"]):
            path = out_dir / f"{artifact}-{a['id']}.zip"
            try:
                response = client.get(a["archive_download_url"])
            except httpx.HTTPError as exc:
                raise DeviceError(f"downloading artifact {a['id']} of {repo}: {exc}") from exc
            if response.status_code != 200:
                raise _github_error(response, f"downloading artifact {a['id']} of {repo}")
            try:
                with zipfile.ZipFile(io.BytesIO(response.content)) as z:
                    documents = sum(1 for n in z.namelist() if n.endswith(".json"))
            except zipfile.BadZipFile as exc:
                raise DeviceError(
                    f"artifact {a['id']} of {repo} is not a zip archive ({exc}); it was not kept"
                ) from exc
            out_dir.mkdir(parents=True, exist_ok=True)
            path.write_bytes(response.content)
            echo(f"  artifact {a['id']} ({a['created_at']}): {documents} JSON file(s) -> {path}")
            fetched.append(FetchedArtifact(int(a["id"]), a["created_at"], path, documents))
    return fetched


def github_token() -> str:
    return os.environ.get("GH_TOKEN") or os.environ.get("GITHUB_TOKEN") or ""
