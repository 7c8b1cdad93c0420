"""The compile check has teeth: one-token API mistakes planted in copies of the bridge files
(a wrong selector, a wrong enum, a missing `error:` argument, a Swift name in Objective-C, a
property that does not exist, XCTFail in a class method) are each reported as an error, and so
are the two bugs the check was built to catch: a block writing to a captured std::map (B5) and
a generic lambda capturing a structured binding (B6), which GCC accepts and clang refuses."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from support.ios_check import copy_sources, load_check_bridge, require_objc_toolchain, unavailable


@dataclass(frozen=True)
class Plant:
    name: str
    file: str  # relative to the ios/ (or core/) copy
    old: str
    new: str
    unit: str  # the check's unit that must fail
    expect: str  # a piece of the compiler's error


PLANTS = [
    Plant(
        "wrong selector",
        "Bridge/PBCoreMLRunner.mm",
        "[MLModel compileModelAtURL:",
        "[MLModel compileModelAtPath:",
        "Bridge/PBCoreMLRunner.mm [both bundles]",
        "compileModelAtPath:completionHandler:",
    ),
    Plant(
        "wrong enum",
        "Bridge/PBCoreMLRunner.mm",
        "return MLComputeUnitsCPUAndNeuralEngine;",
        "return MLComputeUnitsNeuralEngine;",
        "Bridge/PBCoreMLRunner.mm [both bundles]",
        "MLComputeUnitsNeuralEngine",
    ),
    Plant(
        "missing error: argument",
        "Bridge/PBCoreMLRunner.mm",
        "[MLModel modelWithContentsOfURL:compiled_ configuration:config error:&error]",
        "[MLModel modelWithContentsOfURL:compiled_ configuration:config]",
        "Bridge/PBCoreMLRunner.mm [both bundles]",
        "modelWithContentsOfURL:configuration:",
    ),
    Plant(
        "missing error: argument (dictionary provider)",
        "Bridge/PBCoreMLRunner.mm",
        "initWithDictionary:features error:&error]",
        "initWithDictionary:features]",
        "Bridge/PBCoreMLRunner.mm [both bundles]",
        "initWithDictionary:",
    ),
    Plant(
        "deprecated API (R2)",
        "Bridge/PBCoreMLRunner.mm",
        "const uint8_t* base = static_cast<const uint8_t*>(bytes);",
        "const uint8_t* base = static_cast<const uint8_t*>(a.dataPointer);",
        "Bridge/PBCoreMLRunner.mm [both bundles]",
        "'dataPointer' is deprecated",
    ),
    Plant(
        "wrong pixel format constant",
        "Bridge/PBCoreMLRunner.mm",
        "format != kCVPixelFormatType_32BGRA &&",
        "format != kCVPixelFormatType_BGRA32 &&",
        "Bridge/PBCoreMLRunner.mm [both bundles]",
        "kCVPixelFormatType_BGRA32",
    ),
    Plant(
        "wrong property",
        "Tests/PBDeviceTests.m",
        "options.iterationCount =",
        "options.iterations =",
        "Tests/PBDeviceTests.m",
        "iterations",
    ),
    Plant(
        "wrong enum (XCTest)",
        "Tests/PBDeviceTests.m",
        "XCTAttachmentLifetimeKeepAlways",
        "XCTAttachmentLifetimeKeep",
        "Tests/PBDeviceTests.m",
        "XCTAttachmentLifetimeKeep",
    ),
    Plant(
        "XCTFail in a class method (T2)",
        "Tests/PBDeviceTests.m",
        "- (void)failConfiguration {",
        "+ (void)failConfiguration {",
        "Tests/PBDeviceTests.m",
        "XCTestCase *",
    ),
    Plant(
        "Swift name in Objective-C",
        "Bridge/PBRunner.mm",
        "UIDevice *device = UIDevice.currentDevice;",
        "UIDevice *device = UIDevice.current;",
        "Bridge/PBRunner.mm [lite bundle]",
        "current",
    ),
    Plant(
        "wrong property (NSURLSession)",
        "Bridge/PBURLSessionTransport.mm",
        "config.waitsForConnectivity = NO;",
        "config.waitForConnectivity = NO;",
        "Bridge/PBURLSessionTransport.mm [both bundles]",
        "waitForConnectivity",
    ),
    Plant(
        "wrong selector (download task)",
        "Bridge/PBURLSessionTransport.mm",
        "downloadTaskWithRequest:request",
        "downloadTaskWithURLRequest:request",
        "Bridge/PBURLSessionTransport.mm [both bundles]",
        "downloadTaskWithURLRequest:completionHandler:",
    ),
    Plant(
        "wrong struct field (Mach)",
        "../core/src/replay.cpp",
        "static_cast<uint64_t>(info.phys_footprint)",
        "static_cast<uint64_t>(info.physical_footprint)",
        "core/src/replay.cpp [Apple branches]",
        "physical_footprint",
    ),
    Plant(
        "B5 revert: a block writing to a captured std::map",
        "Bridge/PBURLSessionTransport.mm",
        "  fill_response(out, response, failure);\n  if (out.status != 0 && data.length)",
        "  fill_response(out, response, failure);\n"
        "  [((NSHTTPURLResponse*)response).allHeaderFields enumerateKeysAndObjectsUsingBlock:^(id key, id value, BOOL*) {\n"
        "    out.headers[[[key description] lowercaseString].UTF8String] = [[value description] UTF8String];\n"
        "  }];\n  if (out.status != 0 && data.length)",
        "Bridge/PBURLSessionTransport.mm [both bundles]",
        "no viable overloaded operator[]",
    ),
    Plant(
        "B6 revert: structured binding captured by a generic lambda",
        "../core/src/replay.cpp",
        "[&wanted_name](const auto& o) { return o.first == wanted_name; }",
        "[&](const auto& o) { return o.first == name; }",
        "core/src/replay.cpp [Apple branches]",
        "reference to local binding 'name'",
    ),
]
ET_PLANT = Plant(
    "wrong enum (ExecuTorch)",
    "Bridge/PBExecuTorchRunner.mm",
    "Module::LoadMode::Mmap",
    "Module::LoadMode::MemoryMap",
    "Bridge/PBExecuTorchRunner.mm [executorch bundle]",
    "MemoryMap",
)


def _check_one(check, env, plant: Plant, root: Path):
    """Plants `plant` in a private copy and compiles the unit it must break."""
    ios, core = copy_sources(root)
    target = (ios / plant.file).resolve()
    text = target.read_text()
    assert text.count(plant.old) == 1, (
        f"{plant.name}: the text to replace is not in {plant.file} exactly once"
    )
    target.write_text(text.replace(plant.old, plant.new))
    unit = next(u for u in check.units(ios, core, env) if u.name == plant.unit)
    return check.compile_unit(unit, ios, core, env)


def test_planted_mistakes_are_errors(tmp_path: Path) -> None:
    require_objc_toolchain()
    check = load_check_bridge()
    with tempfile.TemporaryDirectory() as work:
        env = check.prepare_environment(Path(work), "auto", "none")
        plants = PLANTS + ([ET_PLANT] if env.executorch is not None else [])
        # the unplanted copy is clean, so each failure below is the plant's
        ios, core = copy_sources(tmp_path / "clean")
        clean_units = {u.name: u for u in check.units(ios, core, env)}
        with ThreadPoolExecutor(max_workers=2) as pool:
            clean = list(
                pool.map(
                    lambda name: check.compile_unit(clean_units[name], ios, core, env),
                    sorted({p.unit for p in plants}),
                )
            )
            results = list(
                pool.map(
                    lambda ip: _check_one(check, env, ip[1], tmp_path / f"plant{ip[0]}"), enumerate(plants)
                )
            )
    assert all(o.ok for o in clean), [(o.name, o.diagnostics) for o in clean if not o.ok]
    report = []
    for plant, outcome in zip(plants, results, strict=True):
        errors = [d for d in outcome.diagnostics if ": error: " in d or "fatal error" in d]
        report.append((plant.name, outcome.ok, errors[:2]))
        assert not outcome.ok, f"{plant.name}: the check passed {plant.unit} with the mistake planted"
        assert any(plant.expect in e for e in errors), (plant.name, outcome.diagnostics)
    print("\n".join(f"{name}: {errs[0] if errs else '(no error line)'}" for name, _ok, errs in report))


def test_gcc_accepts_what_clang_refuses(tmp_path: Path) -> None:
    """Why the core is built with clang too: B6 compiles with GCC, even pedantic, and not with clang."""
    if shutil.which("g++") is None or shutil.which("clang++") is None:
        unavailable("comparing compilers needs g++ and clang++ (Debian: apt-get install -y g++ clang)")
    _ios, core = copy_sources(tmp_path)
    plant = PLANTS[-1]
    src = core / "src" / "replay.cpp"
    src.write_text(src.read_text().replace(plant.old, plant.new))
    flags = [
        "-std=c++17",
        "-fsyntax-only",
        "-Wall",
        "-Wextra",
        "-Wpedantic",
        f"-I{core / 'include'}",
        str(src),
    ]
    gcc = subprocess.run(["g++", *flags], capture_output=True, text=True, timeout=300)
    clang = subprocess.run(["clang++", *flags], capture_output=True, text=True, timeout=300)
    assert gcc.returncode == 0, gcc.stderr
    assert clang.returncode != 0 and "reference to local binding 'name'" in clang.stderr, clang.stderr


@pytest.mark.parametrize("plant", [p for p in PLANTS if p.file.startswith("Bridge/")], ids=lambda p: p.name)
def test_plants_are_one_place_in_the_sources(plant: Plant) -> None:
    """Each plant's original text exists once in the real sources (so no plant silently tests nothing)."""
    from support.ios_check import IOS

    assert (IOS / plant.file).read_text().count(plant.old) == 1
