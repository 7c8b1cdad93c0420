"""Ingestion into the history store: pytest-benchmark files (host runs), and the result documents of
the device runner (its ``--out`` file, the iOS runner's attachments, an ``.xcresult`` bundle).

Files are read through their record types (:mod:`parbench.records.bench`,
:mod:`parbench.records.device`); the store knows no file format.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from parbench._util.hashing import sha256_file
from parbench.errors import DeviceError, RecordError, StoreError
from parbench.history.store import Store
from parbench.records import bench
from parbench.records._base import describe
from parbench.records.device import ResultIn, StoredRun

# ---------------------------------------------------------------------------------------------
# host runs: pytest-benchmark files

# extra_info keys that become result columns; the rest is kept under the result's "extra".
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
    "peak_rss_mb",
    "source",
}


def benchmark_run(doc: bench.BenchDocument, run_id: str) -> StoredRun:
    """The host run a benchmark document describes (machine, Python, commit)."""
    machine_info = doc.machine_info
    cpu = machine_info.get("cpu") or {}
    created = doc.datetime
    if created is None:
        raise RecordError("no 'datetime' field; is it a pytest-benchmark JSON file?")
    if created.endswith("+00:00"):
        created = created.removesuffix("+00:00") + "Z"
    python = machine_info.get("python_version")
    env = {
        "python": python,
        "pytest-benchmark": doc.version,
        "commit_dirty": None if "dirty" not in doc.commit_info else str(doc.commit_info["dirty"]).lower(),
        "branch": doc.commit_info.get("branch"),
    }
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
            "python": python,
            "machine_info": machine_info,
        },
        "device": None,
        "runtime": {"name": "host", "version": python or "unknown"},
        "commit": doc.commit,
        "env": {k: str(v) for k, v in env.items() if v is not None},
        "fixture_set": None,
    }
    try:
        return StoredRun.model_validate(run)
    except ValidationError as exc:
        raise RecordError(f"its run metadata cannot be stored ({describe(exc)})") from None


def benchmark_results(doc: bench.BenchDocument) -> list[dict[str, Any]]:
    """One result per benchmark, every one written by parbench's bench suite."""
    cases = list(doc.cases())
    if len(cases) != len(doc.benchmarks):
        known = {id(entry) for entry, _ in cases}
        entry = next(e for e in doc.benchmarks if id(e) not in known)
        raise RecordError(
            f"benchmark {entry.fullname or entry.name} has no model/variant/size in extra_info and "
            "its name is not test_...[MODEL-VARIANT-SIZE]; it was not written by parbench's bench/"
        )
    results = []
    for entry, extra in cases:
        given = entry.extra_info
        kept = {k: v for k, v in given.items() if k not in _EXTRA_TO_COLUMN}
        kept["benchmark"] = entry.fullname or entry.name
        results.append(
            {
                "model": extra.model,
                "variant": extra.variant,
                "size": extra.size,
                "case": given.get("case", "all"),
                "run_index": extra.run_index,
                "threads": extra.threads,
                "executor": extra.executor,
                "load_ms": extra.load_ms,
                "compile_ms": given.get("compile_ms"),
                "first_run_ms": extra.first_run_ms,
                # parbench's own samples as written, else pytest-benchmark's (seconds, rounded)
                "samples_ns": extra.samples_ns or [max(1, round(s)) for s in entry.samples()],
                "warmup_rounds": entry.warmup_rounds(),
                "peak_memory_mb": extra.peak_rss_mb,
                "extra": kept,
            }
        )
    return results


def ingest_benchmark_json(store: Store, path: str | Path, run_id: str | None = None) -> str:
    """Store a pytest-benchmark JSON file (``--benchmark-json``) as one host run; returns its id.

    Each benchmark's ``extra_info`` carries parbench's fields (model, variant, size, threads,
    executor, load_ms, first_run_ms, peak_rss_mb, samples_ns, run_index, ...); the fields the
    store has no column for are kept under the result's ``extra``.  The default run id derives from
    the file's bytes, so ingesting a file twice stores nothing new; a file that an older parbench
    already stored under that id keeps the run metadata stored then.
    """
    path = Path(path)
    try:
        doc = bench.read(path)
        derived = "host-" + sha256_file(path)[:24]
        run = benchmark_run(doc, run_id or derived)
        results = benchmark_results(doc)
    except RecordError as exc:
        raise StoreError(f"{path}: {exc}" if str(path) not in str(exc) else str(exc)) from exc
    if run_id is None and store.get_run(derived) is not None:
        # The id names this file's bytes: it is stored already, whatever metadata mapping made it.
        store.put_results(derived, results)
        return derived
    store.put_run(run)
    store.put_results(run.run_id, results)
    return run.run_id


# ---------------------------------------------------------------------------------------------
# device runs: result documents, from files, folders of attachments and .xcresult bundles


@dataclasses.dataclass
class ResultDocument:
    """What the device runner writes (``--out FILE``) and the iOS runner attaches: one run and
    some of its results."""

    origin: str
    run: StoredRun
    results: list[ResultIn]


def _looks_like_result_doc(doc: Any) -> bool:
    return isinstance(doc, dict) and {"run_id", "run", "results"} <= doc.keys()


def result_document(doc: dict[str, Any], origin: str) -> ResultDocument:
    run, results = doc["run"], doc["results"]
    if not isinstance(run, dict) or not isinstance(results, list):
        raise DeviceError(f"{origin}: a result document has 'run' (an object) and 'results' (a list)")
    try:
        stored = StoredRun.model_validate({**run, "run_id": doc["run_id"]})
    except ValidationError as exc:
        raise DeviceError(f"{origin}: run: {describe(exc)}") from None
    checked = []
    for i, result in enumerate(results):
        try:
            checked.append(ResultIn.model_validate(result))
        except ValidationError as exc:
            raise DeviceError(f"{origin}: results[{i}]: {describe(exc)}") from None
    return ResultDocument(origin, stored, checked)


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


def _json_files(folder: Path) -> list[tuple[str, bytes]]:
    """(name, bytes) of every JSON file under ``folder``, zips opened."""
    found: list[tuple[str, bytes]] = []
    for p in sorted(folder.rglob("*")):
        if p.suffix == ".json" and p.is_file():
            found.append((str(p), p.read_bytes()))
        elif p.suffix == ".zip" and p.is_file():
            with zipfile.ZipFile(p) as z:
                found += [(f"{p}!{n}", z.read(n)) for n in z.namelist() if n.endswith(".json")]
    return found


def _export_files(folder: Path) -> tuple[list[tuple[str, bytes]], int]:
    """(name, bytes) of the files of an ``xcresulttool export attachments`` folder, and how many its
    manifest.json lists. The exported files are named by UUID; the manifest (a list of tests, each
    with ``attachments``) maps each ``exportedFileName`` to its test and the name the test gave it.
    The listed files come first, in its order, then every other file: each is tried as JSON
    whatever its extension."""
    manifest_path = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DeviceError(f"{manifest_path} is not JSON ({exc})") from exc
    if not isinstance(manifest, list):
        raise DeviceError(
            f"{manifest_path} is not a list of tests; was {folder} written by "
            "`xcrun xcresulttool export attachments` (Xcode 16 or newer)?"
        )
    listed: list[Path] = []
    for test in manifest:
        for att in (test.get("attachments") or []) if isinstance(test, dict) else []:
            name = att.get("exportedFileName") if isinstance(att, dict) else None
            # a bare file name of this folder, never a path out of it
            if isinstance(name, str) and name and Path(name).name == name and (folder / name).is_file():
                listed.append(folder / name)
    seen = {*listed, manifest_path}
    rest = [p for p in sorted(folder.rglob("*")) if p.is_file() and p not in seen]
    return [(str(p), p.read_bytes()) for p in listed + rest], len(listed)


def load_result_docs(path: Path | str) -> list[ResultDocument]:
    """Result documents from a runner JSON file, a folder of exported attachments, or an .xcresult
    bundle (macOS: via xcresulttool). A folder with the manifest.json of ``xcresulttool export
    attachments`` is read through it (see _export_files); in any other folder, JSON files are
    searched recursively and zips opened. Files that are not result documents are passed over."""
    path = Path(path)
    if not path.exists():
        raise DeviceError(f"{path} does not exist")
    if path.suffix == ".xcresult":
        with tempfile.TemporaryDirectory(prefix="parbench-xcresult-") as tmp:
            _export_xcresult(path, Path(tmp))
            return load_result_docs(Path(tmp))
    listed = None
    if path.is_file():
        candidates = [(str(path), path.read_bytes())]
    elif (path / "manifest.json").is_file():
        candidates, listed = _export_files(path)
    else:
        candidates = _json_files(path)
    docs = []
    for name, data in candidates:
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            if path.is_file():
                raise DeviceError(f"{name} is not JSON ({exc})") from exc
            continue
        if _looks_like_result_doc(doc):
            docs.append(result_document(doc, name))
    if not docs:
        looked = (
            f"{len(candidates)} JSON files"
            if listed is None
            else f"{len(candidates)} attachments, {listed} listed by its manifest.json"
        )
        raise DeviceError(
            f"no parbench result documents in {path} (looked at {looked}; "
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
    by_run: dict[str, tuple[StoredRun, list[ResultIn]]] = {}
    for doc in load_result_docs(source):
        run_id = doc.run.run_id
        if run_id in by_run and by_run[run_id][0] != doc.run:
            raise DeviceError(f"{source}: two documents of run {run_id} disagree on the run's metadata")
        by_run.setdefault(run_id, (doc.run, []))[1].extend(doc.results)
    reports = []
    with Store(store_path) as store:
        for run_id, (run, results) in by_run.items():
            try:
                created = store.put_run(run)
                stored, dups = store.put_results(run_id, results)
                if complete:
                    store.complete_run(run_id)
            except StoreError as exc:
                raise DeviceError(f"importing run {run_id} from {source}: {exc}") from exc
            reports.append(ImportReport(run_id, created, stored, dups))
    return reports
