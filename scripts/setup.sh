#!/usr/bin/env bash
# Set up parbench in ./.venv on a machine that has Python 3.11.
#   bash scripts/setup.sh          the library, CLI and suites (torch 2.13 CPU, coremltools, ONNX Runtime, ExecuTorch)
#   bash scripts/setup.sh --dev    also test tools, and (as root with apt) the system packages the tests use:
#                                  a C++ toolchain for the device runner core and Chromium for the report test
set -euo pipefail
cd "$(dirname "$0")/.."

dev=0
for arg in "$@"; do
  case "$arg" in
    --dev) dev=1 ;;
    *) echo "setup.sh: unknown option $arg (use --dev)" >&2; exit 2 ;;
  esac
done

py=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    py=$candidate; break
  fi
done
[ -n "$py" ] || { echo "setup.sh: parbench needs Python 3.11 (torch 2.13 and ExecuTorch 1.5 wheels)" >&2; exit 1; }

[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
extras=coreai without=.
[ "$dev" = 1 ] && extras="coreai,dev" without=".[dev]"
# One resolution for everything.  Core AI (the `coreai` extra): its runtime (coreai-core) has wheels
# for Linux x86_64 with glibc 2.34+ and macOS arm64 only; where pip finds none, setup installs the
# rest and carries on, and the coreai_* forms skip.
# --no-compile, then compileall on every core below: pip compiles the packages' bytecode on one core.
if ! .venv/bin/python -m pip install --quiet --no-compile -e ".[$extras]" 2>.venv/install.log; then
  echo "setup.sh: installing with the Core AI packages failed ($(grep -m1 -E 'ERROR|error' .venv/install.log || echo 'see .venv/install.log')); installing without them" >&2
  .venv/bin/python -m pip install --quiet --no-compile -e "$without"
fi
# the packages' own test suites are never imported by a run
.venv/bin/python -m compileall -qq -j 0 -x '/(tests?|testing/_internal)/' .venv/lib/python3.11/site-packages >/dev/null 2>&1 || true

# what is installed, read from the package metadata (importing torch here would cost seconds)
.venv/bin/python - <<'PY'
import importlib.metadata as md
import importlib.util as iu

def version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None

if version("coreai-core") and all(iu.find_spec(m) for m in ("coreai_torch", "coreai_opt")):
    print(f"setup.sh: Core AI forms ready (coreai-core {version('coreai-core')})")
else:
    print("setup.sh: no Core AI on this machine: the coreai_fp32/coreai_fp16 forms skip and say why (parbench doctor)")
PY

if [ "$dev" = 1 ]; then
  pkgs="cmake ninja-build g++ nlohmann-json3-dev libcurl4-openssl-dev libssl-dev chromium"
  pkgs="$pkgs clang libgnustep-base-dev libblocksruntime-dev"  # the device runner's clang and iOS compile checks
  missing=""
  for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      echo "setup.sh: installing system packages:$missing"
      apt-get update -qq >/dev/null
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
    else
      echo "setup.sh: system packages missing:$missing" >&2
      echo "          install them (e.g. sudo apt-get install$missing); the tests that need them skip and say so" >&2
    fi
  fi
fi
echo "parbench is set up in .venv (torch $(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("torch"))'))"
