"""The fixture set a collector serves: its manifest (the typed :class:`FixtureManifest`), which
paths may be served, which results it knows, and zips of folder artifacts (.mlpackage), made once
and cached by content."""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path

from parbench.errors import ConfigError, FixtureError, ParbenchError
from parbench.records import manifest as records_manifest
from parbench.records.manifest import MANIFEST, FixtureManifest

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class FixtureServeError(ParbenchError):
    """A fixture set cannot be served, or a requested path cannot; `status` is the HTTP code."""

    def __init__(self, message: str, status: int = 404, code: str = "not_found") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def default_cache_dir() -> Path:
    """Zips of folder artifacts: in the user's own cache folder, never a shared temp folder."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "parbench" / "collector"


def private_dir(path: Path) -> Path:
    """`path` created 0700 if missing; ConfigError unless it is a folder of this user that no one
    else may write to or read (another user could otherwise plant the zips served to devices)."""
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = path.lstat()
    except OSError as exc:
        raise ConfigError(f"cannot create the zip cache folder {path}: {exc}; give --cache-dir") from exc
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"zip cache {path} is not a folder (a symlink?); give --cache-dir a private folder")
    if st.st_uid != os.getuid():
        raise ConfigError(
            f"zip cache folder {path} is owned by uid {st.st_uid}, not by this user ({os.getuid()}); "
            "give --cache-dir a private folder of your own"
        )
    if st.st_mode & 0o077:
        raise ConfigError(
            f"zip cache folder {path} has mode {stat.S_IMODE(st.st_mode):04o}, open to other users; "
            f"run `chmod 700 {path}` or give --cache-dir a private folder"
        )
    return path


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
        self.cache_dir = private_dir(Path(cache_dir) if cache_dir else default_cache_dir())
        self._zip_sha: dict[Path, str] = {}
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
            zpath, sha = self._zip_folder(path, rel)
            return ServedFile(zpath, sha, "application/zip", True)
        if not path.is_file():
            raise FixtureServeError(
                f"{rel!r} is listed in the manifest but missing on disk (rebuild the fixture set)"
            )
        return ServedFile(path, self._sha256(path), "application/octet-stream", False)

    def _folder_files(self, folder: Path, rel: str) -> list[Path]:
        """The files of a folder artifact; 400 bad_path for a symlink leaving the set or to a folder."""
        files = []
        for dirpath, dirnames, filenames in os.walk(folder):
            for name in dirnames + filenames:
                p = Path(dirpath) / name
                inner = f"{rel}/{p.relative_to(folder).as_posix()}"
                if p.is_symlink() and (p.is_dir() or not p.resolve().is_relative_to(self.root)):
                    raise FixtureServeError(
                        f"{inner!r} is a symlink to {'a folder' if p.is_dir() else 'a file outside the set'} "
                        f"({os.readlink(p)}): the folder artifact is refused; replace the link by the file",
                        400,
                        "bad_path",
                    )
                if name in filenames and p.is_file():
                    files.append(p)
        return sorted(files)

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

    def _zip_folder(self, folder: Path, rel: str) -> tuple[Path, str]:
        """A deterministic zip of `folder` (entries relative to its parent) and its sha256, cached by
        content stamp.  A cached zip is served only when its bytes still hash to what this process
        wrote; otherwise (another process's zip, or a changed file) it is rebuilt."""
        files = self._folder_files(folder, rel)
        stamp = hashlib.sha256()
        for p in files:
            st = p.stat()
            stamp.update(
                f"{p.relative_to(folder.parent).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode()
            )
        target = self.cache_dir / f"{folder.name}-{stamp.hexdigest()[:32]}.zip"
        with self._lock:
            known = self._zip_sha.get(target)
        if known is not None and target.is_file() and _file_sha256(target) == known:
            return target, known
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
            sha = _file_sha256(Path(tmp))
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        with self._lock:
            self._zip_sha[target] = sha
        return target, sha


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
