#!/usr/bin/env python3
"""Compile check of the iOS bridge on Linux, without Xcode.

Every Objective-C and Objective-C++ file of device_runner/ios, and every core source the test
bundles compile, is run through ``clang -fsyntax-only`` with warnings as errors, against:

* Debian's GNUstep Foundation headers (Objective-C syntax, ARC, blocks, C++ in blocks);
* the declaration-only Apple headers in ``shim/`` (Core ML, Core Video, XCTest, UIKit,
  CommonCrypto, Mach, libdispatch, NSURLSession...), written from Apple's documented signatures,
  so a wrong selector, enum, argument label or type is an error;
* ExecuTorch's own headers from the installed ``executorch`` wheel (when it ships
  ``extension/module/module.h``), and torch's headers for the LibTorch-Lite runner.

Each file is compiled the way each test bundle builds it: the LibTorch-Lite bundle
(``PARBENCH_WITH_LIBTORCH_LITE``) and the ExecuTorch bundle (``PARBENCH_WITH_EXECUTORCH``). The
core's sources are also compiled with the Apple branches on (``__APPLE__``: CommonCrypto, Mach).

What this cannot see: header search order inside Xcode, CocoaPods/SwiftPM integration,
linking, signing and XCTest's runtime behaviour. ``.github/workflows/ios-build.yml`` builds both
bundles on a macOS runner for those.

Usage: check_bridge.py [--ios-dir DIR] [--core-dir DIR] [--executorch-include auto|none|DIR]
                       [--torch-include auto|none|DIR] [--jobs N] [--only NAME] [--json] [--list]
Exit status: 0 every unit compiled cleanly, 1 some did not, 2 the toolchain is missing.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHIM = HERE / "shim"
IOS_DIR = HERE.parent
CORE_DIR = IOS_DIR.parent / "core"
DEBIAN_PACKAGES = "clang libgnustep-base-dev libblocksruntime-dev nlohmann-json3-dev"

# What the xcconfigs pass (Config/*.xcconfig); tests/device/test_ios_project.py keeps them in step.
LITE_DEFINES = ["PARBENCH_WITH_LIBTORCH_LITE=1", "PARBENCH_LITE_ONLY=1", "PARBENCH_LIBTORCH_VERSION=2.1.0"]
EXECUTORCH_DEFINES = [
    "PARBENCH_WITH_EXECUTORCH=1",
    "PARBENCH_EXECUTORCH_VERSION=1.5.1",
    # ExecuTorch's build defines this for its c10 headers; the xcframework's headers have it
    # written in, the wheel's (used here) do not.
    "C10_USING_CUSTOM_GENERATED_MACROS",
]


class ToolchainMissing(RuntimeError):
    pass


@dataclasses.dataclass
class Unit:
    name: str
    source: Path
    lang: str  # objective-c | objective-c++ | c++ (Apple branches) | c++-torch
    defines: list[str]
    includes: list[Path] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Outcome:
    name: str
    source: str
    ok: bool
    seconds: float
    command: list[str]
    diagnostics: list[str]  # "file:line:col: error: ..." lines
    output: str


@dataclasses.dataclass
class Environment:
    gnustep: Path
    objc_runtime: Path  # private, ARC-clean copy of GCC's objc/ headers
    nlohmann: Path  # folder holding json.hpp (what SwiftPM's nlohmann-json product exposes)
    executorch: Path | None
    torch: list[Path]
    notes: list[str]


def _run(cmd: list[str]) -> str:
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip()


def _package_dir(name: str) -> Path | None:
    """Where an installed package lives, without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    return Path(locations[0]) if locations else (Path(spec.origin).parent if spec.origin else None)


def prepare_environment(work: Path, executorch: str, torch: str) -> Environment:
    """Find the headers and make the private copies the check needs (in `work`)."""
    missing = [tool for tool in ("clang", "clang++", "gnustep-config") if shutil.which(tool) is None]
    if missing:
        raise ToolchainMissing(f"missing {', '.join(missing)}; Debian: apt-get install -y {DEBIAN_PACKAGES}")
    gnustep = Path(_run(["gnustep-config", "--variable=GNUSTEP_SYSTEM_HEADERS"]))
    if not (gnustep / "Foundation" / "Foundation.h").is_file():
        raise ToolchainMissing(
            f"no GNUstep Foundation headers under {gnustep}; apt-get install -y libgnustep-base-dev"
        )
    if not Path("/usr/include/Block.h").is_file():
        raise ToolchainMissing("no <Block.h> (the blocks runtime); apt-get install -y libblocksruntime-dev")
    nlohmann = Path("/usr/include/nlohmann")
    if not (nlohmann / "json.hpp").is_file():
        raise ToolchainMissing("no nlohmann/json.hpp; apt-get install -y nlohmann-json3-dev")
    # GNUstep on Debian is built for GCC's Objective-C runtime, whose objc/runtime.h is not
    # ARC-clean: a private copy with the two ARC problems written the ARC way.
    gcc_objc = Path(_run(["gcc", "-print-file-name=include"])) / "objc"
    if not (gcc_objc / "runtime.h").is_file():
        raise ToolchainMissing(f"no GCC Objective-C runtime headers at {gcc_objc}; apt-get install -y gobjc")
    runtime = work / "objc-runtime"
    shutil.copytree(gcc_objc, runtime / "objc")
    rt = runtime / "objc" / "runtime.h"
    text = rt.read_text()
    text = text.replace("return object->class_pointer;", "return *(Class *)(__bridge void *)object;")
    text = text.replace("Protocol **", "Protocol * __unsafe_unretained *")
    rt.write_text(text)

    notes: list[str] = []
    et_dir: Path | None = None
    if executorch == "auto":
        root = _package_dir("executorch")
        candidate = root / "include" if root else None
        if candidate is None:
            notes.append(
                "executorch is not installed: PBExecuTorchRunner.mm is checked in its stub branch only"
            )
        elif (candidate / "executorch" / "extension" / "module" / "module.h").is_file():
            et_dir = candidate
        else:
            notes.append(
                "the installed executorch wheel has no extension/module/module.h: "
                "PBExecuTorchRunner.mm is checked in its stub branch only"
            )
    elif executorch != "none":
        et_dir = Path(executorch)
        if not (et_dir / "executorch" / "extension" / "module" / "module.h").is_file():
            raise ToolchainMissing(
                f"--executorch-include {et_dir} has no executorch/extension/module/module.h"
            )
    torch_dirs: list[Path] = []
    if torch == "auto":
        root = _package_dir("torch")
        if root is not None and (root / "include" / "torch").is_dir():
            torch_dirs = [root / "include", root / "include" / "torch" / "csrc" / "api" / "include"]
        else:
            notes.append("torch (with its headers) is not installed: the LibTorch-Lite runner is not checked")
    elif torch != "none":
        torch_dirs = [Path(torch), Path(torch) / "torch" / "csrc" / "api" / "include"]
    return Environment(gnustep, runtime, nlohmann, et_dir, torch_dirs, notes)


def units(ios: Path, core: Path, env: Environment) -> list[Unit]:
    """Every file, in every configuration a test bundle compiles it in."""
    out: list[Unit] = []
    for m in sorted([*ios.glob("App/*.m"), *ios.glob("Tests/*.m")]):
        out.append(Unit(f"{m.parent.name}/{m.name}", m, "objective-c", []))
    for mm in sorted(ios.glob("Bridge/*.mm")):
        rel = f"Bridge/{mm.name}"
        et_includes = [] if env.executorch is None else [env.executorch]
        if mm.name == "PBExecuTorchRunner.mm":
            out.append(Unit(f"{rel} [lite bundle: stub]", mm, "objective-c++", LITE_DEFINES))
            if env.executorch is not None:
                c10 = env.executorch / "executorch/runtime/core/portable_type/c10"
                out.append(
                    Unit(
                        f"{rel} [executorch bundle]",
                        mm,
                        "objective-c++",
                        EXECUTORCH_DEFINES,
                        [env.executorch, c10],
                    )
                )
        elif "PARBENCH_WITH_" in mm.read_text():  # compiled differently in each bundle
            out.append(Unit(f"{rel} [lite bundle]", mm, "objective-c++", LITE_DEFINES))
            out.append(
                Unit(f"{rel} [executorch bundle]", mm, "objective-c++", EXECUTORCH_DEFINES, et_includes)
            )
        else:
            out.append(Unit(f"{rel} [both bundles]", mm, "objective-c++", LITE_DEFINES))
    for cpp in sorted(core.glob("src/*.cpp")):
        if cpp.name == "main.cpp":
            continue
        out.append(Unit(f"core/src/{cpp.name} [Apple branches]", cpp, "c++", []))
    lite = core / "src" / "libtorch" / "libtorch_runner.cpp"
    if env.torch and lite.is_file():
        out.append(
            Unit(
                "core/src/libtorch/libtorch_runner.cpp [lite bundle]",
                lite,
                "c++-torch",
                LITE_DEFINES,
                env.torch,
            )
        )
    return out


def command(unit: Unit, ios: Path, core: Path, env: Environment) -> list[str]:
    warn = ["-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter"]
    includes = [f"-isystem{p}" for p in unit.includes]  # third-party headers: their warnings are not ours
    cpp_common = [
        "-std=c++17",
        f"-I{ios / 'Support' / 'include'}",
        f"-I{env.nlohmann}",
        f"-I{core / 'include'}",
        f"-I{ios / 'Bridge'}",
    ]
    if unit.lang == "c++":
        # As Xcode compiles the core for iOS: the __APPLE__ branches, against the shims.
        return [
            "clang++",
            "-fsyntax-only",
            "-x",
            "c++",
            *cpp_common,
            "-U__linux__",
            "-U__linux",
            "-Ulinux",
            "-D__APPLE__",
            "-D__MACH__",
            f"-I{SHIM}",
            *warn,
            *[f"-D{d}" for d in unit.defines],
            str(unit.source),
        ]
    if unit.lang == "c++-torch":
        # torch's own headers are noisy under -Wextra: the file is checked for errors only.
        return [
            "clang++",
            "-fsyntax-only",
            "-x",
            "c++",
            *cpp_common,
            *[f"-isystem{p}" for p in unit.includes],
            "-Werror",
            *[f"-D{d}" for d in unit.defines],
            str(unit.source),
        ]
    objc = [
        "-fsyntax-only",
        "-fobjc-arc",
        "-fblocks",
        "-fobjc-runtime=gnustep-2.0",
        "-fexceptions",
        "-fobjc-exceptions",
        "-DGNUSTEP",
        "-DGNUSTEP_BASE_LIBRARY=1",
        "-DGNU_RUNTIME=1",
        f"-isystem{env.gnustep}",
        f"-isystem{env.objc_runtime}",
        f"-I{SHIM}",
        "-include",
        str(SHIM / "PBFoundationExtras.h"),
    ]
    if unit.lang == "objective-c":
        return ["clang", "-x", "objective-c", *objc, *warn, f"-I{ios / 'Bridge'}", str(unit.source)]
    return [
        "clang++",
        "-x",
        "objective-c++",
        *objc,
        *cpp_common,
        *includes,
        *warn,
        *[f"-D{d}" for d in unit.defines],
        str(unit.source),
    ]


DIAG = re.compile(r"^(?P<file>[^:\s][^:]*):(?P<line>\d+):(?P<col>\d+): (?P<kind>error|warning|fatal error): ")


def compile_unit(unit: Unit, ios: Path, core: Path, env: Environment) -> Outcome:
    cmd = command(unit, ios, core, env)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    diags = [line for line in out.splitlines() if DIAG.match(line)]
    return Outcome(
        unit.name,
        str(unit.source),
        proc.returncode == 0 and not diags,
        time.perf_counter() - start,
        cmd,
        diags,
        out,
    )


def check(
    ios: Path = IOS_DIR,
    core: Path = CORE_DIR,
    executorch: str = "auto",
    torch: str = "auto",
    jobs: int = 2,
    only: str | None = None,
) -> tuple[list[Outcome], list[str]]:
    """Compiles every unit; returns the outcomes and notes on what could not be checked."""
    with tempfile.TemporaryDirectory(prefix="parbench-bridge-check-") as tmp:
        env = prepare_environment(Path(tmp), executorch, torch)
        todo = [u for u in units(ios, core, env) if only is None or only in u.name]
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            outcomes = list(pool.map(lambda u: compile_unit(u, ios, core, env), todo))
    return outcomes, env.notes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--ios-dir", type=Path, default=IOS_DIR, help="the ios/ folder to check (default: this one)"
    )
    ap.add_argument("--core-dir", type=Path, default=CORE_DIR, help="the core/ folder (default: this one)")
    ap.add_argument(
        "--executorch-include",
        default="auto",
        help="ExecuTorch headers: auto (the installed wheel), none, or a folder",
    )
    ap.add_argument(
        "--torch-include", default="auto", help="torch headers: auto (the installed wheel), none, or a folder"
    )
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("PARBENCH_BUILD_JOBS", "2")))
    ap.add_argument("--only", help="check only units whose name contains this")
    ap.add_argument("--json", action="store_true", help="print the outcomes as JSON")
    ap.add_argument("--list", action="store_true", help="list the units and their commands, compile nothing")
    args = ap.parse_args(argv)
    ios, core = args.ios_dir.resolve(), args.core_dir.resolve()
    try:
        if args.list:
            with tempfile.TemporaryDirectory(prefix="parbench-bridge-check-") as tmp:
                env = prepare_environment(Path(tmp), args.executorch_include, args.torch_include)
                for u in units(ios, core, env):
                    print(f"{u.name}\n  {' '.join(command(u, ios, core, env))}")
            return 0
        start = time.perf_counter()
        outcomes, notes = check(ios, core, args.executorch_include, args.torch_include, args.jobs, args.only)
    except ToolchainMissing as exc:
        print(f"check_bridge: {exc}", file=sys.stderr)
        return 2
    failed = [o for o in outcomes if not o.ok]
    if args.json:
        print(json.dumps({"outcomes": [dataclasses.asdict(o) for o in outcomes], "notes": notes}, indent=1))
    else:
        for o in outcomes:
            print(f"{'ok  ' if o.ok else 'FAIL'} {o.name} ({o.seconds:.1f} s)")
            for d in o.diagnostics:
                print(f"     {d}")
            if not o.ok and not o.diagnostics:
                print("     " + "\n     ".join(o.output.strip().splitlines()[-10:]))
        for n in notes:
            print(f"note: {n}")
        print(
            f"{len(outcomes) - len(failed)}/{len(outcomes)} units clean in {time.perf_counter() - start:.1f} s"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
