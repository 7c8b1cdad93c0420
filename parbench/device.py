"""Host side of the device runner: build the C++ core, replay a fixture set against a collector,
import results an iPhone attached to an .xcresult bundle, and check that .ptl artifacts will load
in the lite-interpreter runtime the app links (backporting their bytecode where torch can).

The runner itself lives in ``device_runner/core`` (C++17); see ``device_runner/README.md``.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import click

REPO_ROOT = Path(__file__).resolve().parents[1]
CORE_DIR = REPO_ROOT / "device_runner" / "core"
DEFAULT_BUILD_DIR = CORE_DIR / "build"
BINARY_NAME = "parbench-device-runner"
TEST_BINARY_NAME = "parbench-core-tests"
SYSTEM_PACKAGES = "cmake ninja-build g++ nlohmann-json3-dev libcurl4-openssl-dev libssl-dev"


class DeviceError(RuntimeError):
    """A device-runner operation failed; the message says why and what to do."""


class DeviceBuildError(DeviceError):
    """The C++ core could not be configured or built."""


# ---------------------------------------------------------------------------------------------
# building the core


def missing_build_tools() -> list[str]:
    """What this machine lacks to build the core (empty when it can try)."""
    missing = [tool for tool in ("cmake", "ninja") if shutil.which(tool) is None]
    if not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        missing.append("a C++17 compiler (g++ or clang++)")
    if not CORE_DIR.joinpath("CMakeLists.txt").is_file():
        missing.append(f"the core sources ({CORE_DIR} is missing: parbench must run from its repository)")
    try:
        prefix = torch_cmake_prefix()
        if not Path(prefix, "Torch", "TorchConfig.cmake").is_file():
            missing.append(f"libtorch's CMake config (no Torch/TorchConfig.cmake under {prefix})")
    except ImportError:
        missing.append("torch (the wheel ships libtorch)")
    return missing


def torch_cmake_prefix() -> str:
    import torch

    return str(torch.utils.cmake_prefix_path)


def _build_jobs() -> str:
    return os.environ.get("PARBENCH_BUILD_JOBS") or str(min(os.cpu_count() or 2, 4))


def _run_tool(cmd: Sequence[str], what: str) -> str:
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        tail = "\n".join(out.strip().splitlines()[-40:])
        hint = ""
        for needle, pkg in (("nlohmann_json", "nlohmann-json3-dev"), ("CURL", "libcurl4-openssl-dev"),
                            ("OpenSSL", "libssl-dev"), ("Ninja", "ninja-build")):
            if f"Could NOT find {needle}" in out or f"find_package({needle}" in out or \
                    f"Could not find a package configuration file provided by \"{needle}\"" in out:
                hint = f"\ninstall the missing system package: apt-get install -y {pkg}  (all: {SYSTEM_PACKAGES})"
                break
        raise DeviceBuildError(f"{what} failed (exit {proc.returncode}):\n{tail}{hint}")
    return out


@dataclasses.dataclass
class BuildResult:
    binary: Path
    test_binary: Path
    build_dir: Path
    configured: bool  # cmake ran its configure step this time
    rebuilt: bool  # something was compiled or linked this time
    seconds: float


def build_core(build_dir: Path | str | None = None, *, reconfigure: bool = False) -> BuildResult:
    """Configure (once) and build the core with cmake + ninja; an up-to-date build is reused.

    Raises DeviceBuildError with the compiler's or cmake's own words, and the package to install.
    """
    missing = missing_build_tools()
    if missing:
        raise DeviceBuildError("cannot build the device runner core: missing " + "; ".join(missing) +
                               f" (Debian: apt-get install -y {SYSTEM_PACKAGES})")
    build = Path(build_dir) if build_dir else DEFAULT_BUILD_DIR
    prefix = torch_cmake_prefix()
    start = time.perf_counter()
    build.mkdir(parents=True, exist_ok=True)
    # One build at a time in a folder (parallel test workers, two shells).
    with open(build / ".parbench-build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cache = build / "CMakeCache.txt"
        configured = False
        if reconfigure or not (build / "build.ninja").is_file() or prefix not in cache.read_text(errors="replace"):
            _run_tool(["cmake", "-G", "Ninja", "-S", str(CORE_DIR), "-B", str(build),
                       "-DCMAKE_BUILD_TYPE=Release", f"-DCMAKE_PREFIX_PATH={prefix}"],
                      "configuring the core (cmake)")
            configured = True
        out = _run_tool(["cmake", "--build", str(build), "--", "-j", _build_jobs()], "building the core")
    binary, tests = build / BINARY_NAME, build / TEST_BINARY_NAME
    for path in (binary, tests):
        if not path.is_file():
            raise DeviceBuildError(f"the build finished but {path} is missing; rerun with reconfigure=True")
    return BuildResult(binary, tests, build, configured, "no work to do" not in out,
                       time.perf_counter() - start)


def run_core_tests(build: BuildResult) -> subprocess.CompletedProcess[str]:
    """The core's C++ unit tests through ctest (one process per test group)."""
    return subprocess.run(["ctest", "--test-dir", str(build.build_dir), "--output-on-failure"],
                          capture_output=True, text=True)


# ---------------------------------------------------------------------------------------------
# replay


@dataclasses.dataclass
class ReplayOutcome:
    returncode: int
    doc: dict[str, Any] | None  # {"run_id", "run", "results", ...} as the runner wrote it
    seconds: float
    stdout: str
    stderr: str

    @property
    def run_id(self) -> str | None:
        return None if self.doc is None else self.doc.get("run_id")

    @property
    def results(self) -> list[dict[str, Any]]:
        return [] if self.doc is None else list(self.doc.get("results", []))


def tier_models(tier: str) -> list[str]:
    from parbench import zoo

    return [s.name for s in zoo.select(zoo.registry(None), tier)]


def replay_command_line(binary: Path, *, collector: str | None = None,
                        fixtures_dir: str | Path | None = None, models: Sequence[str] = (),
                        variants: Sequence[str] = (), sizes: Sequence[int] = (), rounds: int = 10,
                        warmup: int = 3, threads: int = 1, run_id: str | None = None,
                        commit: str | None = None, out: Path | None = None, cache_dir: Path | None = None,
                        dump_outputs: Path | None = None, retries: int | None = None) -> list[str]:
    cmd = [str(binary)]
    if collector:
        cmd += ["--collector", collector]
    if fixtures_dir:
        cmd += ["--fixtures-dir", str(fixtures_dir)]
    for flag, values in (("--models", models), ("--variants", variants), ("--sizes", [str(s) for s in sizes])):
        if values:
            cmd += [flag, ",".join(values)]
    cmd += ["--rounds", str(rounds), "--warmup", str(warmup), "--threads", str(threads)]
    for flag, value in (("--run-id", run_id), ("--commit", commit), ("--out", out), ("--cache-dir", cache_dir),
                        ("--dump-outputs", dump_outputs), ("--retries", retries)):
        if value is not None:
            cmd += [flag, str(value)]
    return cmd


def run_replay(binary: Path, *, token: str | None = None, on_line: Callable[[str], None] | None = None,
               **options: Any) -> ReplayOutcome:
    """Runs the core binary (see replay_command_line for the options); the token goes through
    the environment, not the command line. Streams its progress lines to `on_line`."""
    out = options.pop("out", None)
    tmp = None
    if out is None:
        tmp = tempfile.NamedTemporaryFile(prefix="parbench-replay-", suffix=".json", delete=False)
        tmp.close()
        out = Path(tmp.name)
    cmd = replay_command_line(binary, out=Path(out), **options)
    env = dict(os.environ)
    if token:
        env["PARBENCH_TOKEN"] = token
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    err_lines = []
    assert proc.stderr is not None and proc.stdout is not None
    for line in proc.stderr:
        err_lines.append(line)
        if on_line:
            on_line(line.rstrip("\n"))
    stdout = proc.stdout.read()
    code = proc.wait()
    seconds = time.perf_counter() - start
    doc = None
    try:
        text = Path(out).read_text()
        doc = json.loads(text) if text.strip() else None
    except (OSError, json.JSONDecodeError):
        doc = None
    finally:
        if tmp is not None:
            Path(tmp.name).unlink(missing_ok=True)
    return ReplayOutcome(code, doc, seconds, stdout, "".join(err_lines))


def summary_rows(results: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per result: ids, median/first/load ms, worst cosine over outputs, error."""
    import statistics

    rows = []
    for r in results:
        samples = r.get("samples_ns") or []
        cos = [m.get("cosine") for m in (r.get("metrics") or {}).values() if m.get("cosine") is not None]
        rows.append({
            "id": f"{r['model']}-{r['variant']}-{r['size']}" + (f"-{r['compute_units']}" if r.get("compute_units")
                                                                else ""),
            "case": r["case"],
            "median_ms": statistics.median(samples) / 1e6 if samples else None,
            "first_run_ms": r.get("first_run_ms"),
            "load_ms": r.get("load_ms"),
            "rounds": len(samples),
            "min_cosine": min(cos) if cos else None,
            "error": r.get("error"),
        })
    return rows


def format_rows(rows: Sequence[Mapping[str, Any]]) -> str:
    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lines = [f"{'id':<34} {'case':<24} {'median ms':>10} {'first ms':>9} {'load ms':>8} {'cosine':>10}  error"]
    for r in rows:
        lines.append(f"{r['id']:<34} {r['case']:<24} {num(r['median_ms'], '.3f'):>10} "
                     f"{num(r['first_run_ms'], '.3f'):>9} {num(r['load_ms'], '.2f'):>8} "
                     f"{num(r['min_cosine'], '.7f'):>10}  {r['error'] or ''}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# import from an .xcresult bundle (or its exported attachments)


def _is_result_doc(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("run_id"), str) and isinstance(doc.get("run"), dict) \
        and isinstance(doc.get("results"), list)


def _export_xcresult(bundle: Path, dest: Path) -> None:
    if platform.system() != "Darwin" or shutil.which("xcrun") is None:
        raise DeviceError(
            f"{bundle} is an .xcresult bundle: reading it needs xcrun (Xcode on macOS), which this machine "
            "does not have. On the Mac, export its attachments with\n"
            f"  xcrun xcresulttool export attachments --path {bundle.name} --output-path attachments/\n"
            "and import that folder (or one of its .json files) here.")
    proc = subprocess.run(["xcrun", "xcresulttool", "export", "attachments", "--path", str(bundle),
                           "--output-path", str(dest)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise DeviceError(f"xcrun xcresulttool could not export the attachments of {bundle} "
                          f"(Xcode 16 or newer is needed): {proc.stderr.strip() or proc.stdout.strip()}")


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
    if path.is_dir() and (path / "manifest.json").is_file():  # xcresulttool export attachments
        from parbench.device_mac import DeviceRunError, result_docs_from_export

        try:
            return result_docs_from_export(path)
        except DeviceRunError as exc:
            raise DeviceError(str(exc)) from exc
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
        raise DeviceError(f"no parbench result documents in {path} (looked at {len(candidates)} JSON files; "
                          "a result document has run_id, run and results)")
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
    from parbench.store import Store, StoreError

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


# ---------------------------------------------------------------------------------------------
# "will the phone load it?": lite-interpreter bytecode versions


@dataclasses.dataclass(frozen=True)
class LiteRuntime:
    name: str
    min_bytecode: int
    max_bytecode: int
    max_file_format: int  # operator versioning: the archive's `version` record
    source: str


# Bounds compiled into each runtime (caffe2/serialize/versions.h of that release:
# kMin/kMaxSupportedBytecodeVersion, kMaxSupportedFileFormatVersion).
RUNTIMES: dict[str, LiteRuntime] = {
    "LibTorch-Lite 2.1.0": LiteRuntime("LibTorch-Lite 2.1.0", 4, 9, 10,
                                       "torch 2.1 caffe2/serialize/versions.h: bytecode 4..9, file format <= 10"),
}
DEFAULT_RUNTIME = "LibTorch-Lite 2.1.0"


def ptl_info(path: Path | str) -> dict[str, Any]:
    """Bytecode version, file-format (operator) version, contained types and operators of a .ptl."""
    from torch.jit.mobile import (
        _get_mobile_model_contained_types,
        _get_model_bytecode_version,
        _get_model_ops_and_info,
    )

    path = str(path)
    try:
        bytecode = int(_get_model_bytecode_version(path))
    except RuntimeError as exc:
        raise DeviceError(f"{path} is not a lite-interpreter model: {exc}") from exc
    file_format = None
    with zipfile.ZipFile(path) as z:
        for name in z.namelist():
            if name.count("/") == 1 and name.endswith("/version"):
                file_format = int(z.read(name).decode().strip())
    ops = _get_model_ops_and_info(path)
    return {
        "bytecode_version": bytecode,
        "file_format_version": file_format,
        "types": sorted(_get_mobile_model_contained_types(path)),
        "ops": {name: int(info.num_schema_args) for name, info in sorted(ops.items())},
    }


def _lite_outputs(path: Path, inputs: Sequence[Any]) -> dict[str, Any]:
    import torch
    from torch.jit.mobile import _load_for_lite_interpreter

    from parbench.backends.base import flatten_outputs

    module = _load_for_lite_interpreter(str(path))
    with torch.inference_mode():
        return dict(flatten_outputs(module(*inputs)))


def check_and_backport(fixture_dir: Path | str, max_bytecode: int | None = None, *,
                       runtime: str = DEFAULT_RUNTIME, backport: bool = True) -> list[dict[str, Any]]:
    """For every .ptl artifact of the fixture set: will `runtime` load it? Backport it where its
    bytecode is too new and torch can, check that the backported file loads and gives the very
    same outputs on the set's cases, and point the manifest at it (meta.backported_from keeps
    the original). Returns one report row per artifact; a row's status is ok, backported or
    failed (with the reason). The manifest is saved when something was backported.

    `max_bytecode` overrides the runtime's upper bound (e.g. 7 for an older app).
    """
    import numpy as np
    import torch
    from torch.jit.mobile import _backport_for_mobile, _get_model_bytecode_version

    from parbench.backends.base import sha256_path
    from parbench.fixtures import FixtureError, FixtureSet

    if runtime not in RUNTIMES:
        raise DeviceError(f"unknown runtime {runtime!r}; known: {', '.join(RUNTIMES)} (or give max_bytecode)")
    rt = RUNTIMES[runtime]
    upper = rt.max_bytecode if max_bytecode is None else int(max_bytecode)
    lower = rt.min_bytecode
    if upper < lower:
        raise DeviceError(f"max bytecode {upper} is below the lowest version {runtime} reads ({lower})")
    try:
        fs = FixtureSet.open(fixture_dir)
    except FixtureError as exc:
        raise DeviceError(str(exc)) from exc
    rows: list[dict[str, Any]] = []
    changed = False
    for model in fs.models():
        entry = fs.model(model)
        for variant, artifacts in entry.get("artifacts", {}).items():
            for art in artifacts:
                if art.get("format") != "ptl":
                    continue
                path = fs.root / art["path"]
                row: dict[str, Any] = {"model": model, "variant": variant, "path": art["path"],
                                       "runtime": runtime, "max_bytecode": upper, "status": "ok", "reason": ""}
                rows.append(row)
                if not path.is_file():
                    row.update(status="failed", reason=f"{art['path']} is listed in the manifest but missing")
                    continue
                if sha256_path(path) != art["sha256"]:
                    row.update(status="failed", reason=f"refused {art['path']}: sha256 does not match the manifest")
                    continue
                info = ptl_info(path)
                row.update(bytecode_version=info["bytecode_version"], file_format_version=info["file_format_version"],
                           types=info["types"], n_ops=len(info["ops"]))
                bc = info["bytecode_version"]
                if info["file_format_version"] is not None and info["file_format_version"] > rt.max_file_format:
                    row.update(status="failed", reason=(
                        f"file format (operator) version {info['file_format_version']} > {rt.max_file_format}, "
                        f"the newest {runtime} reads: an operator changed semantics since; re-export with an "
                        "older torch or avoid the operator"))
                    continue
                if bc < lower:
                    row.update(status="failed", reason=f"bytecode {bc} is older than {runtime} reads ({lower}..): "
                                                       "re-export it with this torch")
                    continue
                if bc <= upper:
                    continue
                if not backport:
                    row.update(status="failed", reason=f"bytecode {bc} > {upper}: {runtime} refuses it "
                                                       "(backport disabled)")
                    continue
                new_rel = str(Path(art["path"]).with_suffix("")) + f".bc{upper}.ptl"
                new_path = fs.root / new_rel
                try:
                    ok = _backport_for_mobile(str(path), str(new_path), upper)
                except RuntimeError as exc:
                    ok, why = False, str(exc).splitlines()[0]
                else:
                    why = "torch returned False"
                if not ok or not new_path.is_file():
                    new_path.unlink(missing_ok=True)
                    row.update(status="failed", reason=(
                        f"bytecode {bc} > {upper} and torch {torch.__version__} cannot backport it to {upper} "
                        f"({why}); export with an older torch or upgrade the app's runtime"))
                    continue
                got = int(_get_model_bytecode_version(str(new_path)))
                if got != upper:
                    new_path.unlink(missing_ok=True)
                    row.update(status="failed", reason=f"backport wrote bytecode {got}, not {upper}")
                    continue
                # Same outputs as the original on every case this artifact serves.
                worst = 0.0
                try:
                    for case in fs.cases(model):
                        if art.get("sizes") is not None and case.size not in art["sizes"]:
                            continue
                        inputs = [torch.from_numpy(np.ascontiguousarray(v)) for v in case.inputs.values()]
                        before = _lite_outputs(path, inputs)
                        after = _lite_outputs(new_path, inputs)
                        if list(before) != list(after):
                            raise DeviceError(f"outputs {list(after)} instead of {list(before)}")
                        for name in before:
                            diff = (before[name].double() - after[name].double()).abs()
                            worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
                except (RuntimeError, DeviceError) as exc:
                    new_path.unlink(missing_ok=True)
                    row.update(status="failed", reason=f"the backported file does not load or run: {exc}")
                    continue
                if worst != 0.0:
                    new_path.unlink(missing_ok=True)
                    row.update(status="failed", reason=f"the backported file's outputs differ (max abs {worst:g})")
                    continue
                old = {"path": art["path"], "sha256": art["sha256"], "bytecode_version": bc}
                art.update(path=new_rel, sha256=sha256_path(new_path), bytes=new_path.stat().st_size)
                art.setdefault("meta", {})
                art["meta"]["backported_from"] = old
                art["meta"]["bytecode_version"] = upper
                row.update(status="backported", path=new_rel, backported_from=bc, bytecode_version=upper,
                           max_abs_diff=worst)
                changed = True
    if changed:
        fs.save()
    return rows


# ---------------------------------------------------------------------------------------------
# CLI


@click.group("device")
def device_group() -> None:
    """The device runner: build its C++ core, replay fixtures against a collector, import
    iPhone results, check .ptl artifacts against the app's runtime."""


@device_group.command("build")
@click.option("--build-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"build folder (default {DEFAULT_BUILD_DIR.relative_to(REPO_ROOT)})")
@click.option("--reconfigure", is_flag=True, help="run cmake's configure step again")
@click.option("--test", "run_tests", is_flag=True, help="also run the core's C++ unit tests (ctest)")
def build_command(build_dir: Path | None, reconfigure: bool, run_tests: bool) -> None:
    """Configure and build device_runner/core (cmake + ninja); an up-to-date build is reused."""
    try:
        res = build_core(build_dir, reconfigure=reconfigure)
    except DeviceBuildError as exc:
        raise click.ClickException(str(exc)) from exc
    state = "built" if res.rebuilt else "up to date"
    click.echo(f"{res.binary} ({state}, {res.seconds:.1f} s)")
    if run_tests:
        proc = run_core_tests(res)
        click.echo(proc.stdout.rstrip())
        if proc.returncode != 0:
            raise click.ClickException("the core's unit tests failed (output above)")


def _csv(value: str | None) -> list[str]:
    return [v for v in (value or "").split(",") if v]


@device_group.command("replay")
@click.option("--collector", required=True, help="collector base URL, e.g. http://127.0.0.1:8765")
@click.option("--token", envvar="PARBENCH_TOKEN", required=True, help="bearer token (env PARBENCH_TOKEN)")
@click.option("--tier", type=click.Choice(["smoke", "default", "full"]), default=None,
              help="replay this tier's models (those the collector serves)")
@click.option("--models", help="comma-separated models (default: every model served)")
@click.option("--variants", help="comma-separated forms (default: every form the runner can run: lite, torchscript)")
@click.option("--sizes", help="comma-separated sizes")
@click.option("--rounds", default=10, show_default=True, type=click.IntRange(1))
@click.option("--warmup", default=3, show_default=True, type=click.IntRange(0))
@click.option("--threads", default=1, show_default=True, type=click.IntRange(1))
@click.option("--run-id", help="reuse a run id (default: a new one)")
@click.option("--commit", envvar="PARBENCH_COMMIT", help="commit recorded with the run")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="also keep the results JSON here")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), help="where fixtures are downloaded")
@click.option("--binary", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              help="use this runner binary instead of building the core")
def replay_command(collector: str, token: str, tier: str | None, models: str | None, variants: str | None,
                   sizes: str | None, rounds: int, warmup: int, threads: int, run_id: str | None,
                   commit: str | None, out: Path | None, cache_dir: Path | None, binary: Path | None) -> None:
    """Replay the collector's fixture set with the C++ core (LibTorch) and post the results."""
    model_list = _csv(models)
    if tier and not model_list:
        import httpx

        wanted = tier_models(tier)
        try:
            resp = httpx.get(collector.rstrip("/") + "/api/v1/fixtures/manifest",
                             headers={"Authorization": f"Bearer {token}"}, timeout=30)
            resp.raise_for_status()
            served = set(resp.json().get("models", {}))
        except (httpx.HTTPError, ValueError) as exc:
            raise click.ClickException(f"could not read the collector's manifest at {collector}: {exc}") from exc
        model_list = [m for m in wanted if m in served]
        if not model_list:
            raise click.ClickException(f"the collector serves none of the {tier} tier's models "
                                       f"({', '.join(wanted)}); it serves: {', '.join(sorted(served)) or 'none'}")
    if binary is None:
        try:
            res = build_core()
        except DeviceBuildError as exc:
            raise click.ClickException(str(exc)) from exc
        if res.rebuilt:
            click.echo(f"built {res.binary} in {res.seconds:.1f} s", err=True)
        binary = res.binary
    try:
        size_list = [int(s) for s in _csv(sizes)]
    except ValueError as exc:
        raise click.BadParameter(f"sizes must be integers: {sizes}") from exc
    outcome = run_replay(binary, token=token, collector=collector, models=model_list, variants=_csv(variants),
                         sizes=size_list, rounds=rounds, warmup=warmup, threads=threads, run_id=run_id,
                         commit=commit, out=out, cache_dir=cache_dir,
                         on_line=lambda line: click.echo(line, err=True))
    if outcome.results:
        click.echo(format_rows(summary_rows(outcome.results)))
    click.echo(f"run {outcome.run_id or '?'}: {len(outcome.results)} results in {outcome.seconds:.1f} s")
    if outcome.returncode == 1:
        raise click.ClickException("some cases failed (their error is in the table and stored with the run)")
    if outcome.returncode != 0:
        meaning = {2: "bad usage or fixture set", 3: "the collector refused or could not be reached"}
        raise click.ClickException(f"the runner stopped: {meaning.get(outcome.returncode, 'crashed')} "
                                   f"(exit {outcome.returncode}); see its message above")


@device_group.command("import")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--store", "store_path", default="results.sqlite", show_default=True,
              type=click.Path(dir_okay=False, path_type=Path))
@click.option("--no-complete", is_flag=True, help="leave imported runs open")
def import_command(source: Path, store_path: Path, no_complete: bool) -> None:
    """Load device results into the store: SOURCE is an .xcresult bundle (macOS, needs xcrun),
    a folder of its exported attachments, or a runner results JSON file."""
    try:
        reports = import_results(source, store_path, complete=not no_complete)
    except DeviceError as exc:
        raise click.ClickException(str(exc)) from exc
    for r in reports:
        click.echo(f"run {r.run_id}: {'new' if r.created else 'known'}, {r.stored} results stored, "
                   f"{r.duplicates} already there")


@device_group.command("check")
@click.argument("fixtures_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--runtime", default=DEFAULT_RUNTIME, show_default=True, type=click.Choice(sorted(RUNTIMES)),
              help="the lite-interpreter runtime the app links")
@click.option("--runtime-bytecode", type=click.IntRange(1), default=None,
              help="highest bytecode version the app's runtime loads (default: the runtime's own bound)")
@click.option("--no-backport", is_flag=True, help="only check; do not backport or change the manifest")
@click.option("--json", "as_json", is_flag=True, help="print the report rows as JSON")
def check_command(fixtures_dir: Path, runtime: str, runtime_bytecode: int | None, no_backport: bool,
                  as_json: bool) -> None:
    """Will the phone load it? Checks every .ptl artifact's bytecode against the app's runtime
    and backports (and re-verifies) where needed."""
    try:
        rows = check_and_backport(fixtures_dir, runtime_bytecode, runtime=runtime, backport=not no_backport)
    except DeviceError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(rows, indent=1))
    else:
        for r in rows:
            bc = r.get("bytecode_version", "?")
            extra = f" (from bytecode {r['backported_from']})" if r["status"] == "backported" else ""
            click.echo(f"{r['status']:<10} {r['model']}-{r['variant']} {r['path']}: bytecode {bc}{extra}"
                       + (f" -- {r['reason']}" if r["reason"] else ""))
        if not rows:
            click.echo("no .ptl artifacts in this fixture set")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        raise click.ClickException(f"{len(failed)} artifact(s) will not load in {runtime}"
                                   + (f" (bytecode <= {runtime_bytecode})" if runtime_bytecode else ""))
