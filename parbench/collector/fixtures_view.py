"""The fixture set a collector serves: its manifest (the typed :class:`FixtureManifest`), which
paths may be served, which results it knows, and zips of folder artifacts (.mlpackage), made once
and cached by content."""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

from parbench.errors import FixtureError, ParbenchError
from parbench.records import manifest as records_manifest
from parbench.records.manifest import MANIFEST, FixtureManifest

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class FixtureServeError(ParbenchError):
    """A fixture set cannot be served, or a requested path cannot; `status` is the HTTP code."""

    def __init__(self, message: str, status: int = 404, code: str = "not_found") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def load_manifest(root: Path) -> FixtureManifest:
    """The set's manifest, checked against the fixture format (no torch needed)."""
    try:
        return records_manifest.read(root)
    except FixtureError as exc:
        raise FixtureServeError(str(exc), 500, "fixtures") from exc


def check_relative_path(path: str) -> None:
    """Refuse anything that is not a plain relative path of the set (400 bad_path)."""
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\x00" in path
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise FixtureServeError(
            f"path {path!r} is refused: give a relative path exactly as listed in the manifest "
            "(no '..', '.', empty segments, backslashes or leading '/')",
            400,
            "bad_path",
        )


@dataclass(frozen=True)
class ServedFile:
    path: Path
    sha256: str
    media_type: str
    archive: bool


class FixtureView:
    """A served fixture set.  The manifest is re-read when its file changes on disk."""

    def __init__(self, root: str | Path, cache_dir: str | Path | None = None) -> None:
        self.root = Path(root).resolve()
        self.cache_dir = Path(cache_dir) if cache_dir else Path(tempfile.gettempdir()) / "parbench-collector"
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._sha_cache: dict[tuple[str, int, int], str] = {}
        self._reload()

    def _reload(self) -> None:
        path = self.root / MANIFEST
        try:
            st = path.stat()
        except OSError:
            st = None
        stamp = None if st is None else (st.st_mtime_ns, st.st_size)
        if stamp is not None and stamp == self._stamp:
            return
        manifest = load_manifest(self.root)
        raw = path.read_bytes()
        allowed = set(manifest.tensors) | {
            a.path
            for entry in manifest.models.values()
            for listed in entry.artifacts.values()
            for a in listed
        }
        self.manifest, self.manifest_bytes, self.allowed = manifest, raw, allowed
        self.manifest_sha256 = hashlib.sha256(raw).hexdigest()
        self._stamp = stamp

    def refresh(self) -> None:
        with self._lock:
            self._reload()

    # -- validation of posted results ------------------------------------------------------
    def check_result(self, model: str, variant: str, size: int, case: str) -> str | None:
        """None when the manifest knows this model/variant/size/case, else the reason."""
        models = self.manifest.models
        entry = models.get(model)
        if entry is None:
            return f"model {model!r} is not in the served fixture set (it has: {', '.join(sorted(models))})"
        sizes = sorted({c.size for c in entry.cases})
        if size not in sizes:
            return f"size {size} is not a fixture size of {model!r} (sizes: {sizes})"
        if variant not in entry.artifacts:
            return (
                f"variant {variant!r} has no artifact for {model!r} in the served fixture set "
                f"(variants: {', '.join(sorted(entry.artifacts)) or 'none'})"
            )
        if entry.artifact_for(variant, size) is None:
            return f"no {variant!r} artifact of {model!r} serves size {size}"
        if case != "all":
            cases = {c.id: c.size for c in entry.cases}
            if case not in cases:
                return f"case {case!r} is not a case of {model!r} (use 'all' or a case id from the manifest)"
            if cases[case] != size:
                return f"case {case!r} has size {cases[case]}, not {size}"
        return None

    # -- files -------------------------------------------------------------------------------
    def resolve(self, rel: str) -> ServedFile:
        check_relative_path(rel)
        self.refresh()
        if rel not in self.allowed:
            raise FixtureServeError(f"{rel!r} is not a tensor or artifact listed in the served manifest")
        path = (self.root / rel).resolve()
        if not path.is_relative_to(self.root):
            raise FixtureServeError(f"{rel!r} points outside the fixture set", 400, "bad_path")
        if path.is_dir():
            zpath = self._zip_folder(path)
            return ServedFile(zpath, self._sha256(zpath), "application/zip", True)
        if not path.is_file():
            raise FixtureServeError(
                f"{rel!r} is listed in the manifest but missing on disk (rebuild the fixture set)"
            )
        return ServedFile(path, self._sha256(path), "application/octet-stream", False)

    def _sha256(self, path: Path) -> str:
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        sha = self._sha_cache.get(key)
        if sha is None:
            h = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            sha = self._sha_cache[key] = h.hexdigest()
        return sha

    def _zip_folder(self, folder: Path) -> Path:
        """A deterministic zip of `folder` (entries relative to its parent), cached by content stamp."""
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        stamp = hashlib.sha256()
        for p in files:
            st = p.stat()
            stamp.update(
                f"{p.relative_to(folder.parent).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
            )
        target = self.cache_dir / f"{folder.name}-{stamp.hexdigest()[:32]}.zip"
        if target.is_file():
            return target
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as zf:
                for p in files:
                    info = zipfile.ZipInfo(p.relative_to(folder.parent).as_posix(), date_time=_ZIP_TIME)
                    info.compress_type = zipfile.ZIP_DEFLATED
                    info.external_attr = 0o644 << 16
                    with p.open("rb") as src, zf.open(info, "w") as dst:
                        for block in iter(lambda s=src: s.read(1 << 20), b""):
                            dst.write(block)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target
