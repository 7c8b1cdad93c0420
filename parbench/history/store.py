"""Results history: host benchmark runs and device runs, with every raw timing sample.

One SQLite file in WAL mode.  Several processes may write at once (the collector, a host
`pytest bench/` session, `parbench history`): every write is one short ``BEGIN IMMEDIATE``
transaction and connections wait (``busy_timeout``) instead of failing when another writer
holds the lock.

Two tables: ``runs`` (one row per run: who, where, which runtime, which commit) and
``results`` (one row per measured model x variant x size x case x compute units, with the
raw samples as a JSON list of nanoseconds).  Writes are idempotent: a retried identical run or
result stores nothing and is reported as such; the same id with different content is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import sqlite3
import statistics
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from parbench.errors import RunConflictError, RunNotFoundError, StoreError, StoreVersionError
from parbench.history.ingest import benchmark_doc_to_run

if TYPE_CHECKING:
    import pandas as pd

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000

RUN_ID_RE = re.compile(r"^[A-Za-z0-9._-]{8,128}$")
ID_RE = re.compile(r"^[a-z0-9_]+$")
SOURCES = ("host", "device")
COMPUTE_UNITS = ("cpuOnly", "cpuAndGPU", "cpuAndNeuralEngine", "all")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id          TEXT PRIMARY KEY,
    source          TEXT NOT NULL CHECK (source IN ('host', 'device')),
    created_utc     TEXT NOT NULL,
    received_utc    TEXT NOT NULL,
    machine         TEXT NOT NULL,
    device          TEXT,
    device_model    TEXT,
    device_os       TEXT,
    device_name     TEXT,
    runtime         TEXT NOT NULL,
    runtime_name    TEXT,
    runtime_version TEXT,
    "commit"        TEXT,
    env             TEXT NOT NULL,
    fixture_set     TEXT,
    meta_sha256     TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'complete', 'failed')),
    status_message  TEXT,
    completed_utc   TEXT
);
CREATE TABLE IF NOT EXISTS results (
    id                   INTEGER PRIMARY KEY,
    run_id               TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    model                TEXT NOT NULL,
    variant              TEXT NOT NULL,
    size                 INTEGER NOT NULL,
    "case"               TEXT NOT NULL,
    compute_units        TEXT,
    run_index            INTEGER NOT NULL DEFAULT 0,
    threads              INTEGER,
    executor             TEXT,
    load_ms              REAL,
    compile_ms           REAL,
    first_run_ms         REAL,
    samples_ns           TEXT NOT NULL,
    n_samples            INTEGER NOT NULL,
    median_ms            REAL,
    mean_ms              REAL,
    min_ms               REAL,
    warmup_rounds        INTEGER NOT NULL DEFAULT 0,
    peak_memory_mb       REAL,
    thermal_state_before TEXT,
    thermal_state_after  TEXT,
    metrics              TEXT,
    xctest               TEXT,
    error                TEXT,
    extra                TEXT,
    content_sha256       TEXT NOT NULL,
    received_utc         TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS results_key ON results
    (run_id, model, variant, size, "case", COALESCE(compute_units, ''), run_index);
CREATE INDEX IF NOT EXISTS results_mvs ON results (model, variant, size);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_utc);
"""

# Result fields that make up its content (compared on retries); order is the column order.
RESULT_FIELDS: tuple[str, ...] = (
    "model",
    "variant",
    "size",
    "case",
    "compute_units",
    "run_index",
    "threads",
    "executor",
    "load_ms",
    "compile_ms",
    "first_run_ms",
    "samples_ns",
    "warmup_rounds",
    "peak_memory_mb",
    "thermal_state_before",
    "thermal_state_after",
    "metrics",
    "xctest",
    "error",
    "extra",
)
_JSON_RESULT_FIELDS = ("metrics", "xctest", "extra")
RUN_FIELDS: tuple[str, ...] = (
    "source",
    "created_utc",
    "machine",
    "device",
    "runtime",
    "commit",
    "env",
    "fixture_set",
)


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dumps(value: Any) -> str:
    """Canonical JSON: sorted keys, no NaN/Infinity (they are not JSON)."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise StoreError(f"value is not valid JSON (NaN or Infinity are not allowed): {exc}") from exc
    except TypeError as exc:
        raise StoreError(f"value cannot be stored as JSON: {exc}") from exc


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _check_ms(name: str, value: Any, where: str, required: bool = False) -> float | None:
    if value is None:
        if required:
            raise StoreError(f"{where}: {name} is required for a result without error")
        return None
    if not _is_number(value) or not math.isfinite(value) or not 0 <= value < 1e7:
        raise StoreError(f"{where}: {name} must be a number of milliseconds in [0, 1e7), got {value!r}")
    return float(value)


def normalize_run(run: Mapping[str, Any]) -> dict[str, Any]:
    """Check a run's metadata and return it with defaults filled; raises StoreError."""
    if not isinstance(run, Mapping):
        raise StoreError(f"a run must be a dict, got {type(run).__name__}")
    unknown = set(run) - set(RUN_FIELDS) - {"run_id"}
    if unknown:
        raise StoreError(f"run has unknown fields {sorted(unknown)}; known: {list(RUN_FIELDS)}")
    run_id = run.get("run_id")
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise StoreError(f"run_id must be 8-128 characters of [A-Za-z0-9._-], got {run_id!r}")
    source = run.get("source", "device")
    if source not in SOURCES:
        raise StoreError(f"run {run_id}: source must be one of {SOURCES}, got {source!r}")
    created = run.get("created_utc")
    if not isinstance(created, str):
        raise StoreError(f"run {run_id}: created_utc must be an ISO 8601 string, got {created!r}")
    try:
        datetime.fromisoformat(created.upper().replace("Z", "+00:00"))
    except ValueError as exc:
        raise StoreError(f"run {run_id}: created_utc {created!r} is not ISO 8601") from exc
    machine = run.get("machine") or {}
    env = run.get("env") or {}
    device = run.get("device")
    runtime = run.get("runtime")
    for name, value, optional in (
        ("machine", machine, False),
        ("env", env, False),
        ("device", device, True),
        ("runtime", runtime, False),
        ("fixture_set", run.get("fixture_set"), True),
    ):
        if not isinstance(value, dict) and not (optional and value is None):
            raise StoreError(
                f"run {run_id}: {name} must be a dict{' or None' if optional else ''}, got {value!r}"
            )
    if device is not None:
        for key in ("model", "os"):
            if not isinstance(device.get(key), str) or not device[key]:
                raise StoreError(
                    f"run {run_id}: device.{key} must be a non-empty string "
                    f"(e.g. model 'iPhone15,2', os 'iOS 18.1')"
                )
    elif source == "device":
        raise StoreError(f"run {run_id}: a device run needs device={{'model': ..., 'os': ...}}")
    if not isinstance(runtime.get("name"), str) or not runtime["name"]:
        raise StoreError(f"run {run_id}: runtime.name must be a non-empty string (e.g. 'libtorch-lite')")
    commit = run.get("commit")
    if commit is not None and not isinstance(commit, str):
        raise StoreError(f"run {run_id}: commit must be a string or None, got {commit!r}")
    out = {
        "run_id": run_id,
        "source": source,
        "created_utc": created,
        "machine": machine,
        "device": device,
        "runtime": runtime,
        "commit": commit,
        "env": env,
        "fixture_set": run.get("fixture_set"),
    }
    _dumps(out)  # refuse NaN / non-JSON values early, with the run id in context
    return out


def normalize_result(result: Mapping[str, Any], where: str = "result") -> dict[str, Any]:
    """Check one result and return it with defaults filled; raises StoreError."""
    if not isinstance(result, Mapping):
        raise StoreError(f"{where} must be a dict, got {type(result).__name__}")
    unknown = set(result) - set(RESULT_FIELDS)
    if unknown:
        raise StoreError(f"{where} has unknown fields {sorted(unknown)}; put extra data under 'extra'")
    r: dict[str, Any] = {f: result.get(f) for f in RESULT_FIELDS}
    for key in ("model", "variant"):
        if not isinstance(r[key], str) or not ID_RE.match(r[key]):
            raise StoreError(f"{where}: {key} must match [a-z0-9_]+, got {r[key]!r}")
    where = f"{where} ({r['model']}-{r['variant']}-{r['size']})"
    if not isinstance(r["size"], int) or isinstance(r["size"], bool) or not 16 <= r["size"] <= 8192:
        raise StoreError(f"{where}: size must be an int in 16..8192, got {r['size']!r}")
    r["case"] = "all" if r["case"] is None else r["case"]
    if not isinstance(r["case"], str) or not r["case"]:
        raise StoreError(f"{where}: case must be a non-empty string, got {r['case']!r}")
    if r["compute_units"] is not None and r["compute_units"] not in COMPUTE_UNITS:
        raise StoreError(f"{where}: compute_units must be one of {COMPUTE_UNITS} or None")
    for key in ("run_index", "warmup_rounds"):
        r[key] = 0 if r[key] is None else r[key]
        if not isinstance(r[key], int) or isinstance(r[key], bool) or r[key] < 0:
            raise StoreError(f"{where}: {key} must be an int >= 0, got {r[key]!r}")
    if r["threads"] is not None and (not isinstance(r["threads"], int) or r["threads"] < 1):
        raise StoreError(f"{where}: threads must be an int >= 1 or None, got {r['threads']!r}")
    if r["executor"] is not None and not isinstance(r["executor"], str):
        raise StoreError(f"{where}: executor must be a string, got {r['executor']!r}")
    if r["error"] is not None and not isinstance(r["error"], str):
        raise StoreError(f"{where}: error must be a string or None")
    ok = r["error"] is None
    r["load_ms"] = _check_ms("load_ms", r["load_ms"], where, required=ok)
    r["first_run_ms"] = _check_ms("first_run_ms", r["first_run_ms"], where, required=ok)
    r["compile_ms"] = _check_ms("compile_ms", r["compile_ms"], where)
    r["peak_memory_mb"] = _check_ms("peak_memory_mb", r["peak_memory_mb"], where)
    samples = [] if r["samples_ns"] is None else r["samples_ns"]
    if not isinstance(samples, list | tuple):
        raise StoreError(f"{where}: samples_ns must be a list of ints (ns)")
    samples = list(samples)
    for s in samples:
        if not isinstance(s, int) or isinstance(s, bool) or not 0 < s < 10**13:
            raise StoreError(f"{where}: every sample must be an int of nanoseconds in (0, 1e13), got {s!r}")
    if ok and not samples:
        raise StoreError(f"{where}: samples_ns must not be empty for a result without error")
    r["samples_ns"] = samples
    for key in ("thermal_state_before", "thermal_state_after"):
        if r[key] is not None and not isinstance(r[key], str):
            raise StoreError(f"{where}: {key} must be a string or None")
    for key in _JSON_RESULT_FIELDS:
        if r[key] is not None and not isinstance(r[key], dict):
            raise StoreError(f"{where}: {key} must be a dict or None, got {type(r[key]).__name__}")
    return r


class Store:
    """The results history in one SQLite file (created with its schema if missing).

    Safe to share between threads (one connection per thread) and processes (WAL).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"store path {self.path} is a folder; give a file name like results.sqlite")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all_connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._init_schema()

    # -- connections -------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = sqlite3.connect(
                    self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
                )
                conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                conn.execute("PRAGMA foreign_keys = ON")
                mode = self._switch_to_wal(conn)
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"cannot open store {self.path}: {exc} (is it an SQLite file?)") from exc
            if mode.lower() != "wal":
                raise StoreError(
                    f"store {self.path}: cannot switch to WAL mode (got {mode}); "
                    "is it on a network file system?"
                )
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.row_factory = sqlite3.Row
            self._local.conn = conn
            with self._lock:
                self._all_connections.append(conn)
        return conn

    def _switch_to_wal(self, conn: sqlite3.Connection) -> str:
        # Changing the journal mode needs an exclusive lock, and SQLite answers "database is locked"
        # at once (without its busy handler) while another process is creating the same file.
        deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        delay = 0.005
        while True:
            try:
                return conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; taken at once so writers queue instead of deadlocking."""
        conn = self._connect()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            for conn in self._all_connections:
                conn.close()
            self._all_connections.clear()
        self._local = threading.local()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _init_schema(self) -> None:
        try:
            with self._write() as conn:
                has_table = conn.execute(
                    "SELECT 1 FROM sqlite_master WHERE type='table' AND name='schema_version'"
                ).fetchone()
                version = None
                if has_table:
                    row = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
                    version = row[0]
                if version is not None and version > SCHEMA_VERSION:
                    raise StoreVersionError(
                        f"store {self.path} has schema version {version}, but this parbench knows "
                        f"versions up to {SCHEMA_VERSION}: upgrade parbench, or use another store file"
                    )
                if version is None:
                    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
                    if tables - {"schema_version"}:
                        raise StoreError(
                            f"{self.path} is an SQLite file but not a parbench store "
                            f"(tables {sorted(tables)}); give another path"
                        )
                    # statement by statement: executescript() would commit the open transaction
                    for statement in _SCHEMA.split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open store {self.path}: {exc} (is it an SQLite file?)") from exc

    def schema_version(self) -> int:
        return int(self._connect().execute("SELECT MAX(version) FROM schema_version").fetchone()[0])

    # -- runs --------------------------------------------------------------------------------
    def put_run(self, run: Mapping[str, Any]) -> bool:
        """Store a run's metadata.  True when created, False when already stored identically.

        Raises RunConflictError when the id exists with different metadata.
        """
        r = normalize_run(run)
        meta = {k: r[k] for k in RUN_FIELDS}
        meta_sha = _sha256(_dumps(meta))
        device = r["device"] or {}
        with self._write() as conn:
            row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (r["run_id"],)).fetchone()
            if row is not None:
                if row["meta_sha256"] == meta_sha:
                    return False
                old = self._run_from_row(row)
                diff = [k for k in RUN_FIELDS if old[k] != meta[k]]
                raise RunConflictError(
                    f"run {r['run_id']} already exists with different metadata (fields {diff}); "
                    "choose a new run id for a new run"
                )
            conn.execute(
                "INSERT INTO runs (run_id, source, created_utc, received_utc, machine, device, device_model, "
                'device_os, device_name, runtime, runtime_name, runtime_version, "commit", env, fixture_set, '
                "meta_sha256) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    r["run_id"],
                    r["source"],
                    r["created_utc"],
                    utc_now(),
                    _dumps(r["machine"]),
                    None if r["device"] is None else _dumps(r["device"]),
                    device.get("model"),
                    device.get("os"),
                    device.get("name"),
                    _dumps(r["runtime"]),
                    r["runtime"].get("name"),
                    None if r["runtime"].get("version") is None else str(r["runtime"]["version"]),
                    r["commit"],
                    _dumps(r["env"]),
                    None if r["fixture_set"] is None else _dumps(r["fixture_set"]),
                    meta_sha,
                ),
            )
            return True

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """A run's metadata and state (with n_results), or None."""
        row = (
            self._connect()
            .execute(
                "SELECT runs.*, (SELECT COUNT(*) FROM results WHERE results.run_id = runs.run_id) AS n_results "
                "FROM runs WHERE run_id = ?",
                (run_id,),
            )
            .fetchone()
        )
        return None if row is None else self._run_from_row(row)

    def list_runs(
        self, source: str | None = None, limit: int | None = None, offset: int = 0
    ) -> tuple[int, list[dict[str, Any]]]:
        """(total, runs newest first) with n_results."""
        where, args = ("WHERE source = ?", [source]) if source else ("", [])
        conn = self._connect()
        total = conn.execute(f"SELECT COUNT(*) FROM runs {where}", args).fetchone()[0]
        rows = conn.execute(
            "SELECT runs.*, (SELECT COUNT(*) FROM results WHERE results.run_id = runs.run_id) AS n_results "
            f"FROM runs {where} ORDER BY created_utc DESC, run_id LIMIT ? OFFSET ?",
            [*args, -1 if limit is None else limit, offset],
        ).fetchall()
        return total, [self._run_from_row(r) for r in rows]

    def complete_run(
        self,
        run_id: str,
        status: str = "complete",
        message: str | None = None,
        expected_results: int | None = None,
    ) -> dict[str, Any]:
        """Mark a run finished (idempotent for the same status); returns the run summary."""
        if status not in ("complete", "failed"):
            raise StoreError(f"status must be 'complete' or 'failed', got {status!r}")
        with self._write() as conn:
            row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFoundError(f"run {run_id} does not exist; create it first")
            n = conn.execute("SELECT COUNT(*) FROM results WHERE run_id = ?", (run_id,)).fetchone()[0]
            if expected_results is not None and n != expected_results:
                raise RunConflictError(
                    f"run {run_id} has {n} results stored but {expected_results} were expected: "
                    "re-post the missing results, then complete again"
                )
            if row["status"] == "open":
                conn.execute(
                    "UPDATE runs SET status = ?, status_message = ?, completed_utc = ? WHERE run_id = ?",
                    (status, message, utc_now(), run_id),
                )
            elif row["status"] != status:
                raise RunConflictError(f"run {run_id} is already marked {row['status']!r}, not {status!r}")
        run = self.get_run(run_id)
        assert run is not None
        return run

    @staticmethod
    def _run_from_row(row: sqlite3.Row) -> dict[str, Any]:
        keys = row.keys()
        return {
            "run_id": row["run_id"],
            "source": row["source"],
            "created_utc": row["created_utc"],
            "received_utc": row["received_utc"],
            "completed_utc": row["completed_utc"],
            "status": row["status"],
            "status_message": row["status_message"],
            "n_results": row["n_results"] if "n_results" in keys else None,
            "machine": _loads(row["machine"]),
            "device": _loads(row["device"]),
            "runtime": _loads(row["runtime"]),
            "commit": row["commit"],
            "env": _loads(row["env"]),
            "fixture_set": _loads(row["fixture_set"]),
        }

    # -- results -----------------------------------------------------------------------------
    def put_results(self, run_id: str, results: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
        """Store results of a run in one transaction: all or nothing.

        Returns (stored, duplicates); a duplicate is a result whose key is already stored with
        the same content.  Raises RunNotFoundError for an unknown run, RunConflictError when a
        key is stored with different content or the run is already completed.
        """
        prepared = []
        seen: dict[tuple, str] = {}
        for i, res in enumerate(results):
            r = normalize_result(res, where=f"results[{i}]")
            content = _dumps({k: r[k] for k in RESULT_FIELDS})
            key = (r["model"], r["variant"], r["size"], r["case"], r["compute_units"], r["run_index"])
            sha = _sha256(content)
            if key in seen and seen[key] != sha:
                raise RunConflictError(
                    f"results[{i}] repeats the key {key} of an earlier result in the "
                    "same batch with different values; give it another run_index"
                )
            seen[key] = sha
            prepared.append((r, key, sha))
        stored = duplicates = 0
        now = utc_now()
        with self._write() as conn:
            row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFoundError(f"run {run_id} does not exist; create it first (put_run / PUT run)")
            for i, (r, key, sha) in enumerate(prepared):
                old = conn.execute(
                    "SELECT content_sha256 FROM results WHERE run_id = ? AND model = ? AND variant = ? "
                    "AND size = ? AND \"case\" = ? AND COALESCE(compute_units, '') = ? AND run_index = ?",
                    (run_id, key[0], key[1], key[2], key[3], key[4] or "", key[5]),
                ).fetchone()
                if old is not None:
                    if old[0] != sha:
                        raise RunConflictError(
                            f"results[{i}]: run {run_id} already has a result for {key} with different "
                            "values; a retry must send the same result (or use another run_index)"
                        )
                    duplicates += 1
                    continue
                if row["status"] != "open":
                    raise RunConflictError(
                        f"results[{i}]: run {run_id} is already {row['status']}; new results need a new run"
                    )
                samples = r["samples_ns"]
                median = statistics.median(samples) / 1e6 if samples else None
                mean = statistics.fmean(samples) / 1e6 if samples else None
                low = min(samples) / 1e6 if samples else None
                conn.execute(
                    'INSERT INTO results (run_id, model, variant, size, "case", compute_units, run_index, '
                    "threads, executor, load_ms, compile_ms, first_run_ms, samples_ns, n_samples, "
                    "median_ms, mean_ms, min_ms, warmup_rounds, peak_memory_mb, thermal_state_before, "
                    "thermal_state_after, metrics, xctest, extra, error, content_sha256, received_utc) "
                    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (
                        run_id,
                        r["model"],
                        r["variant"],
                        r["size"],
                        r["case"],
                        r["compute_units"],
                        r["run_index"],
                        r["threads"],
                        r["executor"],
                        r["load_ms"],
                        r["compile_ms"],
                        r["first_run_ms"],
                        _dumps(samples),
                        len(samples),
                        median,
                        mean,
                        low,
                        r["warmup_rounds"],
                        r["peak_memory_mb"],
                        r["thermal_state_before"],
                        r["thermal_state_after"],
                        *(None if r[k] is None else _dumps(r[k]) for k in _JSON_RESULT_FIELDS),
                        r["error"],
                        sha,
                        now,
                    ),
                )
                stored += 1
        return stored, duplicates

    def run_results(self, run_id: str) -> list[dict[str, Any]]:
        """A run's results as dicts (fields as posted, plus summary statistics)."""
        rows = (
            self._connect()
            .execute("SELECT * FROM results WHERE run_id = ? ORDER BY id", (run_id,))
            .fetchall()
        )
        return [self._result_from_row(r) for r in rows]

    @staticmethod
    def _result_from_row(row: sqlite3.Row) -> dict[str, Any]:
        out = {k: row[k] for k in RESULT_FIELDS}
        out["samples_ns"] = json.loads(row["samples_ns"])
        for k in _JSON_RESULT_FIELDS:
            out[k] = _loads(row[k])
        for k in ("received_utc", "n_samples", "median_ms", "mean_ms", "min_ms"):
            out[k] = row[k]
        return out

    # -- tables ------------------------------------------------------------------------------
    def results(
        self,
        model: str | None = None,
        variant: str | None = None,
        size: int | None = None,
        source: str | None = None,
        run_id: str | None = None,
    ) -> pd.DataFrame:
        """One row per result, joined with its run's metadata, oldest run first."""
        import pandas as pd

        where, args = [], []
        for col, value in (
            ("r.model", model),
            ("r.variant", variant),
            ("r.size", size),
            ("u.source", source),
            ("r.run_id", run_id),
        ):
            if value is not None:
                where.append(f"{col} = ?")
                args.append(value)
        sql = (
            "SELECT r.run_id, u.source, u.created_utc, u.device_model, u.device_os, u.device_name, "
            'u.runtime_name, u.runtime_version, u."commit", u.status AS run_status, r.model, r.variant, '
            'r.size, r."case", r.compute_units, r.run_index, r.threads, r.executor, r.load_ms, '
            "r.compile_ms, r.first_run_ms, r.samples_ns, r.n_samples, r.median_ms, r.mean_ms, r.min_ms, "
            "r.warmup_rounds, r.peak_memory_mb, r.thermal_state_before, r.thermal_state_after, "
            "r.metrics, r.xctest, r.error, r.extra, r.received_utc "
            "FROM results r JOIN runs u ON u.run_id = r.run_id"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY u.created_utc, r.run_id, r.id"
        )
        rows = self._connect().execute(sql, args).fetchall()
        columns = [d for d in rows[0].keys()] if rows else _RESULT_COLUMNS
        df = pd.DataFrame([tuple(r) for r in rows], columns=columns)
        for col in ("samples_ns", "metrics", "xctest", "extra"):
            df[col] = [_loads(v) for v in df[col]]
        df["created_utc"] = pd.to_datetime(df["created_utc"], utc=True, format="ISO8601")
        return df

    def runs(self, source: str | None = None) -> pd.DataFrame:
        """One row per run (newest first) with flattened device/runtime columns and n_results."""
        import pandas as pd

        _, runs = self.list_runs(source=source)
        rows = []
        for r in runs:
            device = r["device"] or {}
            rows.append(
                {
                    "run_id": r["run_id"],
                    "source": r["source"],
                    "created_utc": r["created_utc"],
                    "status": r["status"],
                    "completed_utc": r["completed_utc"],
                    "n_results": r["n_results"],
                    "device_model": device.get("model"),
                    "device_os": device.get("os"),
                    "device_name": device.get("name"),
                    "runtime_name": r["runtime"].get("name"),
                    "runtime_version": r["runtime"].get("version"),
                    "commit": r["commit"],
                    "machine": r["machine"],
                    "env": r["env"],
                    "fixture_set": r["fixture_set"],
                }
            )
        df = pd.DataFrame(rows, columns=_RUN_COLUMNS)
        df["created_utc"] = pd.to_datetime(df["created_utc"], utc=True, format="ISO8601")
        return df

    # -- host benchmark files ----------------------------------------------------------------
    def ingest_benchmark_json(self, path: str | Path, run_id: str | None = None) -> str:
        """Store a pytest-benchmark JSON file (``--benchmark-json``) as one host run.

        Each benchmark's ``extra_info`` carries parbench's fields (model, variant, size, threads,
        executor, artifact_bytes, load_ms, first_run_ms, peak_rss_mb, samples_ns, run_index).
        The default run id derives from the file's content, so ingesting a file twice is a no-op.
        Returns the run id.
        """
        path = Path(path)
        try:
            raw = path.read_bytes()
            doc = json.loads(raw)
        except OSError as exc:
            raise StoreError(f"cannot read benchmark file {path}: {exc}") from exc
        except ValueError as exc:
            raise StoreError(f"{path} is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("benchmarks"), list):
            raise StoreError(
                f"{path} is not a pytest-benchmark JSON file (no 'benchmarks' list); "
                "write one with pytest --benchmark-json=FILE"
            )
        run_id = run_id or "host-" + hashlib.sha256(raw).hexdigest()[:24]
        run, results = benchmark_doc_to_run(doc, run_id, str(path))
        self.put_run(run)
        self.put_results(run_id, results)
        return run_id


_RESULT_COLUMNS = [
    "run_id",
    "source",
    "created_utc",
    "device_model",
    "device_os",
    "device_name",
    "runtime_name",
    "runtime_version",
    "commit",
    "run_status",
    "model",
    "variant",
    "size",
    "case",
    "compute_units",
    "run_index",
    "threads",
    "executor",
    "load_ms",
    "compile_ms",
    "first_run_ms",
    "samples_ns",
    "n_samples",
    "median_ms",
    "mean_ms",
    "min_ms",
    "warmup_rounds",
    "peak_memory_mb",
    "thermal_state_before",
    "thermal_state_after",
    "metrics",
    "xctest",
    "error",
    "extra",
    "received_utc",
]
_RUN_COLUMNS = [
    "run_id",
    "source",
    "created_utc",
    "status",
    "completed_utc",
    "n_results",
    "device_model",
    "device_os",
    "device_name",
    "runtime_name",
    "runtime_version",
    "commit",
    "machine",
    "env",
    "fixture_set",
]
