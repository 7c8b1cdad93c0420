"""The Xcode project's spec, Podfile and xcconfigs hold the settings that decide whether the iOS
build gets through (they cannot be built here; .github/workflows/ios-build.yml builds them on
macOS). These tests pin each fix so a later edit cannot quietly undo it."""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path

import pytest
import yaml
from support.ios_check import IOS, REPO, load_check_bridge

from parbench.device import mac

CONFIG = IOS / "Config"
SPEC = yaml.safe_load((IOS / "project.yml").read_text())
PODFILE = (IOS / "Podfile").read_text()
BUNDLES = {"ParbenchLiteTests": "LiteTests", "ParbenchExecuTorchTests": "ExecuTorchTests"}


def lines(path: Path) -> list[str]:
    """Directives and assignments of an xcconfig, comments and blank lines dropped."""
    out = []
    for line in path.read_text().splitlines():
        line = line.split("//", 1)[0].strip()
        if line:
            out.append(line)
    return out


def test_ios_17_everywhere() -> None:
    assert SPEC["options"]["deploymentTarget"]["iOS"] == "17.0"
    assert re.search(r"^platform :ios, '17\.0'$", PODFILE, re.M)
    for target in SPEC["targets"].values():
        assert "deploymentTarget" not in target  # no target overrides the project's


def test_project_format_cocoapods_can_read() -> None:
    assert SPEC["options"]["projectFormat"] == "xcode15_3"  # objectVersion 63: CocoaPods 1.15 and 1.16


def test_one_runtime_per_test_bundle() -> None:
    targets = SPEC["targets"]
    lite, et = targets["ParbenchLiteTests"], targets["ParbenchExecuTorchTests"]
    assert not [d for d in lite["dependencies"] if d.get("package") == "executorch"]
    assert {d["product"] for d in et["dependencies"] if d.get("package") == "executorch"} == {
        "executorch",
        "backend_xnnpack",
        "backend_coreml",
        "kernels_optimized",
        "kernels_quantized",
    }
    core = [s for s in et["sources"] if isinstance(s, dict) and s["path"] == "../core/src"][0]
    assert "libtorch/**" in core["excludes"]
    # CocoaPods: LibTorch-Lite in the lite bundle only
    blocks = dict(re.findall(r"^target '(\w+)' do$(.*?)^end$", PODFILE, re.S | re.M))
    assert "LibTorch-Lite" in blocks["ParbenchLiteTests"]
    assert (
        "LibTorch-Lite" not in blocks["ParbenchExecuTorchTests"]
        and "LibTorch-Lite" not in blocks["ParbenchHost"]
    )
    # and each scheme builds one bundle, into its own derived data (see project.yml)
    schemes = SPEC["schemes"]
    assert schemes["ParbenchLite"]["test"]["targets"] == ["ParbenchLiteTests"]
    assert schemes["ParbenchExecuTorch"]["test"]["targets"] == ["ParbenchExecuTorchTests"]
    assert "ParbenchExecuTorchTests" not in schemes["ParbenchLite"]["build"]["targets"]
    assert "ParbenchLiteTests" not in schemes["ParbenchExecuTorch"]["build"]["targets"]


@pytest.mark.parametrize("target", sorted(BUNDLES))
@pytest.mark.parametrize("config", ["Debug", "Release"])
def test_pods_xcconfig_applies_then_cxx17_wins(target: str, config: str) -> None:
    files = SPEC["targets"][target]["configFiles"]
    assert files[config] == f"Config/{BUNDLES[target]}-{config}.xcconfig"
    first, second = lines(IOS / files[config])
    pods = f"Pods-{target}"
    assert first == f'#include? "../Pods/Target Support Files/{pods}/{pods}.{config.lower()}.xcconfig"'
    assert second == f'#include "{BUNDLES[target]}.xcconfig"'
    shared = lines(CONFIG / f"{BUNDLES[target]}.xcconfig")
    assert shared[0] == '#include "Common.xcconfig"'
    common = lines(CONFIG / "Common.xcconfig")
    assert "CLANG_CXX_LANGUAGE_STANDARD = c++17" in common
    for setting in ("HEADER_SEARCH_PATHS", "GCC_PREPROCESSOR_DEFINITIONS", "OTHER_LDFLAGS"):
        for line in common + shared:
            if line.startswith(setting + " ") or line.startswith(setting + "["):
                assert "$(inherited)" in line, f"{line}: would drop what the Pods file set"
    # the target's own settings in project.yml would outrank the xcconfig: none are set there
    assert "settings" not in SPEC["targets"][target]


def test_executorch_force_load_names_what_the_xcframeworks_ship() -> None:
    cfg = lines(CONFIG / "ExecuTorchTests.xcconfig")
    assert (
        "ET_PLATFORM[sdk=iphoneos*] = ios" in cfg and "ET_PLATFORM[sdk=iphonesimulator*] = simulator" in cfg
    )
    ldflags = next(line for line in cfg if line.startswith("ET_LDFLAGS ="))
    loaded = re.findall(r"-force_load \$\(BUILT_PRODUCTS_DIR\)/lib(\w+?)_\$\(ET_PLATFORM\)\.a", ldflags)
    assert loaded and len(loaded) == ldflags.count("-force_load")
    products = {
        d["product"]
        for d in SPEC["targets"]["ParbenchExecuTorchTests"]["dependencies"]
        if d.get("package") == "executorch"
    }
    assert set(loaded) <= products and {"backend_xnnpack", "kernels_optimized"} <= set(loaded)
    assert "OTHER_LDFLAGS = $(inherited) -lc++ $(ET_LDFLAGS)" in cfg


def test_one_executorch_version_for_exporter_app_and_checks() -> None:
    rt = mac.app_runtimes()
    assert SPEC["packages"]["executorch"]["branch"] == f"swiftpm-{rt.executorch}"
    installed = metadata.version("executorch").split("+")[0]
    assert installed.split(".")[:2] == rt.executorch.split(".")[:2], (installed, rt.executorch)
    pin = re.search(r'"executorch==([\d.*]+)"', (REPO / "pyproject.toml").read_text())
    assert pin and rt.executorch.startswith(pin.group(1).rstrip("*"))
    check = load_check_bridge()
    assert f"PARBENCH_EXECUTORCH_VERSION={rt.executorch}" in check.EXECUTORCH_DEFINES
    assert f"PARBENCH_LIBTORCH_VERSION={rt.libtorch_lite}" in check.LITE_DEFINES
    assert rt.libtorch_lite == rt.podfile_libtorch_lite == "2.1.0"


def test_no_homebrew_include_tree_and_json_from_its_package() -> None:
    texts = [(IOS / "project.yml").read_text()] + [p.read_text() for p in CONFIG.glob("*.xcconfig")]
    for text in texts:
        assert "/opt/homebrew" not in text and "/usr/local/include" not in text
    assert SPEC["packages"]["nlohmann-json"]["url"] == "https://github.com/nlohmann/json"
    for target in BUNDLES:
        assert {"package": "nlohmann-json", "product": "json"} in SPEC["targets"][target]["dependencies"]
    forward = (IOS / "Support" / "include" / "nlohmann" / "json.hpp").read_text()
    assert "#include <json.hpp>" in forward


def test_bundle_ids_take_the_prefix_setting() -> None:
    assert SPEC["settings"]["base"]["PARBENCH_BUNDLE_PREFIX"] == "dev.parbench"
    host = SPEC["targets"]["ParbenchHost"]["settings"]["base"]["PRODUCT_BUNDLE_IDENTIFIER"]
    assert host == "$(PARBENCH_BUNDLE_PREFIX).ParbenchHost"
    assert "PRODUCT_BUNDLE_IDENTIFIER = $(PARBENCH_BUNDLE_PREFIX).$(TARGET_NAME)" in lines(
        CONFIG / "Common.xcconfig"
    )
    assert "bundleIdPrefix" not in SPEC["options"]


def test_macos_workflow_builds_both_bundles_unsigned() -> None:
    wf = yaml.safe_load((REPO / ".github" / "workflows" / "ios-build.yml").read_text())
    runs = "\n".join(step.get("run", "") for job in wf["jobs"].values() for step in job["steps"])
    for scheme, folder in (("ParbenchLite", "lite"), ("ParbenchExecuTorch", "executorch")):
        cmd = re.search(rf"xcodebuild build-for-testing [^\n]*-scheme {scheme}\s*\\\n[^\n]*\n[^\n]*", runs)
        assert cmd, scheme
        text = cmd.group(0)
        assert "-destination generic/platform=iOS" in text and f"-derivedDataPath build/{folder}" in text
        assert "CODE_SIGNING_ALLOWED=NO" in text
    assert "xcodegen generate" in runs and "pod install" in runs
