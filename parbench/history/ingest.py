"""Ingestion into the history store: pytest-benchmark files, device result documents and .xcresult bundles."""

from __future__ import annotations

import dataclasses
import json
import platform
import re
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from parbench.errors import DeviceError, StoreError

# ---------------------------------------------------------------------------------------------
# import from an .xcresult bundle (or its exported attachments)


def _is_result_doc(doc: Any) -> bool:
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("run_id"), str)
        and isinstance(doc.get("run"), dict)
        and isinstance(doc.get("results"), list)
    )


def _export_xcresult(bundle: Path, dest: Path) -> None:
    if platform.system() != "Darwin" or shutil.which("xcrun") is None:
        raise DeviceError(
            f"{bundle} is an .xcresult bundle: reading it needs xcrun (Xcode on macOS), which this machine "
            "does not have. On the Mac, export its attachments with\n"
            f"  xcrun xcresulttool export attachments --path {bundle.name} --output-path attachments/\n"
            "and import that folder (or one of its .json files) here."
        )
    proc = subprocess.run(
        ["xcrun", "xcresulttool", "export", "attachments", "--path", str(bundle), "--output-path", str(dest)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise DeviceError(
            f"xcrun xcresulttool could not export the attachments of {bundle} "
            f"(Xcode 16 or newer is needed): {proc.stderr.strip() or proc.stdout.strip()}"
        )


def load_result_docs(path: Path | str) -> list[dict[str, Any]]:
    """Result documents from a runner JSON file, a folder of exported attachments (JSON files,
    searched recursively; zips are opened), or an .xcresult bundle (macOS: via xcresulttool)."""
    path = Path(path)
    if not path.exists():
        raise DeviceError(f"{path} does not exist")
    if path.suffix == ".xcresult":
        with tempfile.TemporaryDirectory(prefix="parbench-xcresult-") as tmp:
            _export_xcresult(path, Path(tmp))
            return load_result_docs(Path(tmp))
    candidates: list[tuple[str, bytes]] = []
    if path.is_file():
        candidates.append((str(path), path.read_bytes()))
    else:
        for p in sorted(path.rglob("*")):
            if p.suffix == ".json" and p.is_file():
                candidates.append((str(p), p.read_bytes()))
            elif p.suffix == ".zip" and p.is_file():
                with zipfile.ZipFile(p) as z:
                    candidates += [(f"{p}!{n}", z.read(n)) for n in z.namelist() if n.endswith(".json")]
    docs = []
    for name, data in candidates:
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if path.is_file():
                raise DeviceError(f"{name} is not JSON ({exc})") from exc
            continue
        if _is_result_doc(doc):
            docs.append(doc)
    if not docs:
        raise DeviceError(
            f"no parbench result documents in {path} (looked at {len(candidates)} JSON files; "
            "a result document has run_id, run and results)"
        )
    return docs


@dataclasses.dataclass
class ImportReport:
    run_id: str
    created: bool
    stored: int
    duplicates: int


def import_results(source: Path | str, store_path: Path | str, complete: bool = True) -> list[ImportReport]:
    """Loads result documents (see load_result_docs) into the store; documents of one run are
    merged (their run metadata must agree). Idempotent: importing twice stores nothing new."""
    from parbench.history.store import Store, StoreError

    by_run: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
    for doc in load_result_docs(source):
        run_id = doc["run_id"]
        if run_id in by_run and by_run[run_id][0] != doc["run"]:
            raise DeviceError(f"{source}: two documents of run {run_id} disagree on the run's metadata")
        by_run.setdefault(run_id, (doc["run"], []))[1].extend(doc["results"])
    reports = []
    with Store(store_path) as store:
        for run_id, (run, results) in by_run.items():
            try:
                created = store.put_run({"run_id": run_id, **run})
                stored, dups = store.put_results(run_id, results)
                if complete:
                    store.complete_run(run_id)
            except StoreError as exc:
                raise DeviceError(f"importing run {run_id} from {source}: {exc}") from exc
            reports.append(ImportReport(run_id, created, stored, dups))
    return reports


_NAME_RE = re.compile(r"\[(?P<model>[a-z0-9_]+)-(?P<variant>[a-z0-9_]+)-(?P<size>\d+)\]$")
# extra_info keys that become result columns; the rest is kept under "extra".
_EXTRA_TO_COLUMN = {
    "model",
    "variant",
    "size",
    "threads",
    "executor",
    "load_ms",
    "first_run_ms",
    "samples_ns",
    "run_index",
    "compile_ms",
    "warmup_rounds",
    "case",
}


def benchmark_doc_to_run(
    doc: Mapping[str, Any], run_id: str, origin: str = "benchmark JSON"
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Map a parsed pytest-benchmark document to (run, results) for the store."""
    machine_info = doc.get("machine_info") or {}
    commit_info = doc.get("commit_info") or {}
    cpu = machine_info.get("cpu") or {}
    created = doc.get("datetime")
    if not isinstance(created, str):
        raise StoreError(f"{origin}: no 'datetime' field; is it a pytest-benchmark JSON file?")
    if created.endswith("+00:00"):
        created = created[: -len("+00:00")] + "Z"
    run = {
        "run_id": run_id,
        "source": "host",
        "created_utc": created,
        "machine": {
            "cpu": cpu.get("brand_raw") or machine_info.get("processor"),
            "os": " ".join(str(x) for x in (machine_info.get("system"), machine_info.get("release")) if x),
            "threads": cpu.get("count"),
            "node": machine_info.get("node"),
            "arch": machine_info.get("machine"),
            "python": machine_info.get("python_version"),
            "machine_info": machine_info,
        },
        "device": None,
        "runtime": {"name": "host", "version": machine_info.get("python_version")},
        # pytest-benchmark writes id "unversioned" outside a repository
        "commit": None if commit_info.get("id") in (None, "", "unversioned") else commit_info["id"],
        "env": {
            "python": machine_info.get("python_version"),
            "pytest-benchmark": doc.get("version"),
            "commit_dirty": commit_info.get("dirty"),
            "branch": commit_info.get("branch"),
        },
        "fixture_set": None,
    }
    results = []
    for i, bench in enumerate(doc["benchmarks"]):
        name = bench.get("fullname") or bench.get("name") or f"benchmarks[{i}]"
        extra = dict(bench.get("extra_info") or {})
        m = _NAME_RE.search(bench.get("name") or "")
        for key in ("model", "variant", "size"):
            if key not in extra and m:
                extra[key] = int(m[key]) if key == "size" else m[key]
            if key not in extra:
                raise StoreError(
                    f"{origin}: benchmark {name} has no extra_info[{key!r}] and its name is "
                    "not test_...[model-variant-size]; it was not written by parbench's bench/"
                )
        samples = extra.get("samples_ns")
        if samples is None:
            data = (bench.get("stats") or {}).get("data")
            if not data:
                raise StoreError(
                    f"{origin}: benchmark {name} has no extra_info['samples_ns'] and no "
                    "stats.data (run with --benchmark-save-data); raw samples are needed"
                )
            samples = [max(1, round(s * 1e9)) for s in data]
        options = bench.get("options") or {}
        warmup = extra.get("warmup_rounds")
        if warmup is None:
            warmup = int(options.get("warmup_iterations") or 0) if options.get("warmup") else 0
        kept = {
            k: v for k, v in extra.items() if k not in _EXTRA_TO_COLUMN and k not in ("peak_rss_mb", "source")
        }
        kept["benchmark"] = bench.get("fullname") or bench.get("name")
        results.append(
            {
                "model": extra["model"],
                "variant": extra["variant"],
                "size": int(extra["size"]),
                "case": extra.get("case", "all"),
                "compute_units": None,
                "run_index": int(extra.get("run_index") or 0),
                "threads": extra.get("threads"),
                "executor": extra.get("executor"),
                "load_ms": extra.get("load_ms"),
                "compile_ms": extra.get("compile_ms"),
                "first_run_ms": extra.get("first_run_ms"),
                "samples_ns": [int(s) for s in samples],
                "warmup_rounds": warmup,
                "peak_memory_mb": extra.get("peak_rss_mb"),
                "thermal_state_before": None,
                "thermal_state_after": None,
                "metrics": None,
                "xctest": None,
                "error": None,
                "extra": kept,
            }
        )
    return run, results
