"""Content-keyed artifact cache under `.parbench-cache/`.

A key hashes the model's identity, the example shape(s), the form's options and the versions of
torch and the converter (inside the form's options).  Entries are written to a temporary folder and
renamed into place, so concurrent writers (pytest-xdist workers, several hosts on a shared disk)
never see a torn entry; a lock file makes the second writer wait and reuse the first one's work.
An entry whose artifact no longer matches its recorded sha256 is deleted and rebuilt, never used.
Export failures are cached too: a conversion that failed fails again from the cache, quickly.

``entry.json`` records the artifact (file, format, sizes, input and output names, meta, sha256) and
how long the export took (``export_seconds``, handed back in the artifact's meta: the one place
export time is measured).  An entry missing any of these (written by an older parbench) is
rebuilt, never guessed at.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from parbench._util.hashing import path_bytes, sha256_path, stable_json
from parbench._util.locks import file_lock
from parbench._util.stages import collect
from parbench.backends.base import Artifact
from parbench.errors import ExportError, NeedsPerSize

ENTRY = "entry.json"


@dataclasses.dataclass
class CacheOutcome:
    artifact: Artifact
    status: str  # "hit" | "exported" | "rebuilt (<why>)"


def cache_key(parts: dict[str, Any]) -> str:
    return hashlib.sha256(stable_json(parts).encode()).hexdigest()


class ArtifactCache:
    def __init__(self, root: Path | str = ".parbench-cache"):
        self.root = Path(root)
        # artifacts whose sha256 this process checked, with their files' sizes and mtimes then: an
        # unchanged file is not hashed again on every lookup (a changed one is)
        self._verified: dict[Path, tuple[str, tuple]] = {}

    def entry_dir(self, model: str, variant: str, tag: str, key: str) -> Path:
        return self.root / "artifacts" / model / f"{variant}-{tag}-{key[:16]}"

    def get_or_export(
        self,
        model: str,
        variant: str,
        tag: str,
        key_parts: dict[str, Any],
        export: Callable[[Path], Artifact],
    ) -> CacheOutcome:
        """Return the cached artifact for these key parts, exporting it (once) when absent.

        `export(out)` receives a path stem inside a fresh folder and returns the Artifact it wrote.
        """
        key = cache_key(key_parts)
        final = self.entry_dir(model, variant, tag, key)
        with file_lock(final.with_name(final.name + ".lock")):
            found, why = self._read(final, variant)
            if found is not None:
                return CacheOutcome(found, "hit")
            tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            tmp.mkdir(parents=True)
            t0 = time.perf_counter()
            with collect(as_stage="export") as stages:
                try:
                    art = export(tmp / "model")
                    record = self._record(art, tmp, key_parts)
                except ExportError as exc:
                    record = {"error": str(exc), "kind": type(exc).__name__, "key": key_parts}
                except BaseException:
                    shutil.rmtree(tmp, ignore_errors=True)
                    raise
            record["export_seconds"] = round(time.perf_counter() - t0, 3)
            record["stages"] = stages.rounded()
            record["stages_cpu"] = stages.rounded_cpu()
            (tmp / ENTRY).write_text(json.dumps(record, indent=1, default=str))
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
        status = "exported" if why is None else f"rebuilt ({why})"
        if "error" in record:
            raise _failure(record)
        found, _ = self._read(final, variant)
        assert found is not None
        return CacheOutcome(found, status)

    @staticmethod
    def _record(art: Artifact, folder: Path, key_parts: dict[str, Any]) -> dict[str, Any]:
        rel = art.path.relative_to(folder)
        return {
            "variant": art.variant,
            "file": str(rel),
            "format": art.format,
            "sizes": art.sizes,
            "input_names": list(art.input_names),
            "output_names": list(art.output_names),
            "meta": art.meta,
            "sha256": sha256_path(art.path),
            "bytes": path_bytes(art.path),
            "key": key_parts,
        }

    def _intact(self, path: Path, sha256: str) -> bool:
        stamp = (sha256, _stat_signature(path))
        if self._verified.get(path) == stamp:
            return True
        if sha256_path(path) != sha256:
            self._verified.pop(path, None)
            return False
        self._verified[path] = stamp
        return True

    def _read(self, final: Path, variant: str) -> tuple[Artifact | None, str | None]:
        """(artifact, None) for a good entry; (None, reason) for a missing or corrupt one."""
        entry = final / ENTRY
        if not entry.is_file():
            return None, None
        try:
            record = json.loads(entry.read_text())
            if "error" in record:
                raise _failure(record)
            path = final / record["file"]
            names = {k: record.get(k) for k in ("input_names", "output_names")}
            if not all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in names.values()):
                reason = "entry written by an older parbench (no input and output names)"
            elif not path.exists():
                reason = f"artifact {path.name} missing"
            elif not self._intact(path, record["sha256"]):
                reason = f"artifact {path.name} does not match its sha256"
            else:
                meta = dict(record["meta"], export_seconds=record["export_seconds"], sha256=record["sha256"])
                if "stages" in record:
                    meta["export_stages"] = record["stages"]
                return Artifact(variant, path, record["format"], record["sizes"], meta, **names), None
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            reason = f"unreadable entry: {exc}"
        shutil.rmtree(final, ignore_errors=True)
        return None, reason


def _stat_signature(path: Path) -> tuple:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    return tuple((str(f), (st := f.stat()).st_size, st.st_mtime_ns) for f in files)


def _failure(record: dict[str, Any]) -> ExportError:
    cls = NeedsPerSize if record.get("kind") == "NeedsPerSize" else ExportError
    return cls(record["error"])
