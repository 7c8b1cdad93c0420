"""Results history: host benchmark runs and device runs, with every raw timing sample.

One SQLite file in WAL mode.  Several processes may write at once (the collector, a host
`pytest bench/` session, `parbench history`): every write is one short ``BEGIN IMMEDIATE``
transaction and connections wait (``busy_timeout``) instead of failing when another writer
holds the lock.

Two tables: ``runs`` (one row per run: who, where, which runtime, which commit) and
``results`` (one row per measured model x variant x size x case x compute units, with the
raw samples as a JSON list of nanoseconds).  What a run or a result may hold is the record types'
rule (:class:`~parbench.records.device.StoredRun`, :class:`~parbench.records.device.ResultIn`), and
the tables' columns follow their fields.  Writes are idempotent: a retried identical run or result
stores nothing and is reported as such; the same id with different content is refused.  Content is
compared by the sha256 of the record's canonical JSON (sorted keys, every field, defaults filled).
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ValidationError

from parbench._util.clock import utc_now
from parbench._util.hashing import sha256_text
from parbench.errors import RunConflictError, RunNotFoundError, StoreError, StoreVersionError
from parbench.records._base import describe
from parbench.records.device import RESULT_FIELDS, RUN_FIELDS, ResultIn, StoredRun

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "SCHEMA_VERSION",
    "RunConflictError",
    "RunNotFoundError",
    "Store",
    "StoreError",
    "StoreVersionError",
]

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 30_000

# ---------------------------------------------------------------------------------------------
# columns, from the record types


def _columns(model: type[BaseModel], fields: tuple[str, ...]) -> tuple[str, set[str]]:
    """Column declarations for a record's fields (their SQL types, from the record's JSON Schema),
    and the fields kept as JSON text.  Columns carry no rules of their own (NOT NULL, CHECK): the
    record type is the one rule, applied before every write, so a record whose rules change later
    needs no new tables."""
    props = model.model_json_schema()["properties"]
    decls, json_fields = [], set()
    for name in fields:
        kinds = {o.get("type", "object") for o in props[name].get("anyOf", [props[name]])} - {"null"}
        (kind,) = kinds  # a $ref (a nested record) has no "type": an object
        if kind in ("array", "object"):
            json_fields.add(name)
        decls.append(f'"{name}" {_SQL_TYPES.get(kind, "TEXT")}')
    return ",\n    ".join(decls), json_fields


_SQL_TYPES = {"integer": "INTEGER", "number": "REAL"}
_RUN_COLUMNS, _RUN_JSON = _columns(StoredRun, RUN_FIELDS)
_RESULT_COLUMNS, _RESULT_JSON = _columns(ResultIn, RESULT_FIELDS)

# Run columns that flatten the device and runtime objects, for queries and tables.
_RUN_FLAT = ("device_model", "device_os", "device_name", "runtime_name", "runtime_version")
# What the store adds to a result: summary statistics of its samples, and when it arrived.
_RESULT_STATS = ("n_samples", "median_ms", "mean_ms", "min_ms", "received_utc")
# The run's columns that results() joins to every result row (and its status, as run_status).
_RUN_VIEW = ("source", "created_utc", *_RUN_FLAT, "commit")
# The columns of Store.results() and Store.runs().
RESULTS_TABLE_COLUMNS = ("run_id", *_RUN_VIEW, "run_status", *RESULT_FIELDS, *_RESULT_STATS)
RUNS_TABLE_COLUMNS = (
    "run_id",
    "source",
    "created_utc",
    "status",
    "completed_utc",
    "n_results",
    *_RUN_FLAT,
    "commit",
    "machine",
    "env",
    "fixture_set",
)
_RUN_FLAT_COLUMNS = ",\n    ".join(f"{c} TEXT" for c in _RUN_FLAT)
_N_RESULTS = "(SELECT COUNT(*) FROM results WHERE results.run_id = runs.run_id) AS n_results"
# A result's key within its run.  compute_units may be NULL, which must not defeat uniqueness.
_KEY = ("model", "variant", "size", "case", "compute_units", "run_index")
_KEY_SQL = ", ".join(f"COALESCE({k}, '')" if k == "compute_units" else f'"{k}"' for k in _KEY)

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS schema_version (
    version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id          TEXT PRIMARY KEY,
    {_RUN_COLUMNS},
    {_RUN_FLAT_COLUMNS},
    received_utc    TEXT NOT NULL,
    meta_sha256     TEXT NOT NULL,
    status          TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'complete', 'failed')),
    status_message  TEXT,
    completed_utc   TEXT
);
CREATE TABLE IF NOT EXISTS results (
    id              INTEGER PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    {_RESULT_COLUMNS},
    n_samples       INTEGER NOT NULL,
    median_ms       REAL,
    mean_ms         REAL,
    min_ms          REAL,
    content_sha256  TEXT NOT NULL,
    received_utc    TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS results_key ON results (run_id, {_KEY_SQL});
CREATE INDEX IF NOT EXISTS results_mvs ON results (model, variant, size);
CREATE INDEX IF NOT EXISTS runs_created ON runs (created_utc);
"""


def _insert(table: str, row: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
    columns = ", ".join(f'"{c}"' for c in row)
    return f"INSERT INTO {table} ({columns}) VALUES ({', '.join('?' * len(row))})", tuple(row.values())


# ---------------------------------------------------------------------------------------------
# values


def _dumps(value: Any, where: str = "value") -> str:
    """Canonical JSON: sorted keys, no NaN/Infinity (they are not JSON)."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise StoreError(f"{where} is not valid JSON (NaN or Infinity are not allowed): {exc}") from exc
    except TypeError as exc:
        raise StoreError(f"{where} cannot be stored as JSON: {exc}") from exc


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


_M = TypeVar("_M", bound=BaseModel)


def _validate(model: type[_M], value: Any, where: str) -> _M:
    """The record, or StoreError naming the field and what was wrong with it."""
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        raise StoreError(f"{where}: {describe(exc)}") from None


def _encode(values: Mapping[str, Any], json_fields: set[str], where: str) -> dict[str, Any]:
    return {
        k: (None if v is None else _dumps(v, f"{where}: {k}")) if k in json_fields else v
        for k, v in values.items()
    }


def _decode(row: sqlite3.Row, fields: Iterable[str], json_fields: set[str]) -> dict[str, Any]:
    return {k: _loads(row[k]) if k in json_fields else row[k] for k in fields}


def _result_where(i: int, result: Any) -> str:
    where = f"results[{i}]"
    if isinstance(result, Mapping) and all(k in result for k in ("model", "variant", "size")):
        where += f" ({result['model']}-{result['variant']}-{result['size']})"
    return where


def _hint(exc: Exception) -> str:
    return " (is it an SQLite file?)" if "not a database" in str(exc) else ""


def _with_dates(df: Any, what: str) -> Any:
    """`created_utc` parsed; rows whose date no reader can parse (stored by an older collector)
    are dropped with a warning rather than failing every report over the whole store."""
    import pandas as pd

    parsed = pd.to_datetime(df["created_utc"], utc=True, format="ISO8601", errors="coerce")
    bad = parsed.isna() & df["created_utc"].notna()
    if bad.any():
        runs = sorted(set(df.loc[bad, "run_id"]))
        warnings.warn(
            f"{what}: {len(runs)} run(s) skipped, their created_utc is not an RFC 3339 date-time: "
            + ", ".join(
                f"{r} ({c})" for r, c in df.loc[bad, ["run_id", "created_utc"]].drop_duplicates().values[:5]
            )
            + "; fix them with `UPDATE runs SET created_utc = ... WHERE run_id = ...`",
            stacklevel=3,
        )
    return df.assign(created_utc=parsed)[~bad].reset_index(drop=True)


class Store:
    """The results history in one SQLite file (created with its schema if missing).

    Safe to share between threads (one connection per thread) and processes (WAL).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise StoreError(f"store path {self.path} is a folder; give a file name like results.sqlite")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the folder of store {self.path}: {exc}") from exc
        try:
            # A new store is readable by its owner only; SQLite gives its -wal and -shm the same mode.
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
        except OSError as exc:
            raise StoreError(f"cannot create store {self.path}: {exc}") from exc
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
                raise StoreError(f"cannot open store {self.path}: {exc}{_hint(exc)}") from exc
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

    def close(self, checkpoint: bool = False) -> None:
        """Close every connection; `checkpoint` first moves the WAL into the main file."""
        if checkpoint:
            try:
                self._connect().execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.DatabaseError:
                pass  # another process holds the store; its last close checkpoints
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
            raise StoreError(f"cannot open store {self.path}: {exc}{_hint(exc)}") from exc

    def schema_version(self) -> int:
        return int(self._connect().execute("SELECT MAX(version) FROM schema_version").fetchone()[0])

    # -- runs --------------------------------------------------------------------------------
    def put_run(self, run: Mapping[str, Any] | StoredRun) -> bool:
        """Store a run's metadata (a :class:`StoredRun` or its fields as a dict).  True when
        created, False when already stored identically.

        Raises StoreError when the run breaks the record's rules, RunConflictError when the id
        exists with different metadata.
        """
        where = f"run {run.get('run_id')!r}" if isinstance(run, Mapping) else "run"
        r = _validate(StoredRun, run, where)
        where = f"run {r.run_id}"
        meta = r.model_dump(include=set(RUN_FIELDS))
        meta_sha = sha256_text(_dumps(meta, where))
        device = meta["device"] or {}
        with self._write() as conn:
            row = conn.execute("SELECT * FROM runs WHERE run_id = ?", (r.run_id,)).fetchone()
            if row is not None:
                if row["meta_sha256"] == meta_sha:
                    return False
                old = self._run_from_row(row)
                diff = [k for k in RUN_FIELDS if old[k] != meta[k]]
                raise RunConflictError(
                    f"run {r.run_id} already exists with different metadata (fields {diff}); "
                    "choose a new run id for a new run"
                )
            row = {
                "run_id": r.run_id,
                **_encode(meta, _RUN_JSON, where),
                "device_model": device.get("model"),
                "device_os": device.get("os"),
                "device_name": device.get("name"),
                "runtime_name": r.runtime.name,
                "runtime_version": r.runtime.version,
                "received_utc": utc_now(precise=True),
                "meta_sha256": meta_sha,
            }
            conn.execute(*_insert("runs", row))
            return True

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """A run's metadata and state (with n_results), or None."""
        row = (
            self._connect()
            .execute(f"SELECT runs.*, {_N_RESULTS} FROM runs WHERE run_id = ?", (run_id,))
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
            f"SELECT runs.*, {_N_RESULTS} FROM runs {where} ORDER BY created_utc DESC, run_id LIMIT ? OFFSET ?",
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
                    (status, message, utc_now(precise=True), run_id),
                )
            elif row["status"] != status:
                raise RunConflictError(f"run {run_id} is already marked {row['status']!r}, not {status!r}")
        run = self.get_run(run_id)
        assert run is not None
        return run

    @staticmethod
    def _run_from_row(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "run_id": row["run_id"],
            **_decode(row, RUN_FIELDS, _RUN_JSON),
            "received_utc": row["received_utc"],
            "completed_utc": row["completed_utc"],
            "status": row["status"],
            "status_message": row["status_message"],
            "n_results": row["n_results"] if "n_results" in row.keys() else None,
        }

    # -- results -----------------------------------------------------------------------------
    def put_results(self, run_id: str, results: Iterable[Mapping[str, Any] | ResultIn]) -> tuple[int, int]:
        """Store results of a run (:class:`ResultIn` or their fields as dicts) in one
        transaction: all or nothing.

        Returns (stored, duplicates); a duplicate is a result whose key is already stored with
        the same content.  Raises StoreError for a result that breaks the record's rules,
        RunNotFoundError for an unknown run, RunConflictError when a key is stored with different
        content or the run is already completed.
        """
        prepared = []
        seen: dict[tuple, str] = {}
        for i, res in enumerate(results):
            where = _result_where(i, res)
            content = _validate(ResultIn, res, where).model_dump()
            sha = sha256_text(_dumps(content, where))
            key = tuple(content[k] for k in _KEY)
            if key in seen and seen[key] != sha:
                raise RunConflictError(
                    f"results[{i}] repeats the key {key} of an earlier result in the "
                    "same batch with different values; give it another run_index"
                )
            seen[key] = sha
            prepared.append((_encode(content, _RESULT_JSON, where), content["samples_ns"], key, sha))
        stored = duplicates = 0
        now = utc_now(precise=True)
        with self._write() as conn:
            row = conn.execute("SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            if row is None:
                raise RunNotFoundError(f"run {run_id} does not exist; create it first (put_run / PUT run)")
            for i, (columns, samples, key, sha) in enumerate(prepared):
                old = conn.execute(
                    f"SELECT content_sha256 FROM results WHERE (run_id, {_KEY_SQL}) = (?{', ?' * len(key)})",
                    (run_id, *("" if v is None else v for v in key)),
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
                stats = {
                    "n_samples": len(samples),
                    "median_ms": statistics.median(samples) / 1e6 if samples else None,
                    "mean_ms": statistics.fmean(samples) / 1e6 if samples else None,
                    "min_ms": min(samples) / 1e6 if samples else None,
                    "received_utc": now,
                }
                conn.execute(
                    *_insert("results", {"run_id": run_id, **columns, **stats, "content_sha256": sha})
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
        return [_decode(r, RESULT_FIELDS + _RESULT_STATS, _RESULT_JSON) for r in rows]

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
        columns = [
            "r.run_id",
            *(f'u."{c}"' for c in _RUN_VIEW),
            "u.status AS run_status",
            *(f'r."{c}"' for c in RESULT_FIELDS + _RESULT_STATS),
        ]
        sql = (
            f"SELECT {', '.join(columns)} "
            "FROM results r JOIN runs u ON u.run_id = r.run_id"
            + (" WHERE " + " AND ".join(where) if where else "")
            + " ORDER BY u.created_utc, r.run_id, r.id"
        )
        rows = self._connect().execute(sql, args).fetchall()
        # JSON decoded before the frame is built: pandas would read a column of text and NULLs as
        # strings with NaN for the NULLs
        df = pd.DataFrame(
            [_decode(r, RESULTS_TABLE_COLUMNS, _RESULT_JSON) for r in rows], columns=RESULTS_TABLE_COLUMNS
        )
        return _with_dates(df, "results")

    def runs(self, source: str | None = None) -> pd.DataFrame:
        """One row per run (newest first) with flattened device/runtime columns and n_results."""
        import pandas as pd

        where, args = ("WHERE source = ?", [source]) if source else ("", [])
        columns = [f'"{c}"' if c != "n_results" else _N_RESULTS for c in RUNS_TABLE_COLUMNS]
        rows = (
            self._connect()
            .execute(f"SELECT {', '.join(columns)} FROM runs {where} ORDER BY created_utc DESC, run_id", args)
            .fetchall()
        )
        df = pd.DataFrame(
            [_decode(r, RUNS_TABLE_COLUMNS, _RUN_JSON) for r in rows], columns=RUNS_TABLE_COLUMNS
        )
        return _with_dates(df, "runs")
