"""Helpers for the collector and store tests: a collector run as a real `parbench serve`
process on a free loopback port, a device-like HTTP client that retries the way
docs/collector-api.md tells devices to, and plausible device runs and results."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

TOKEN = "test-token-5f1e2d3c4b5a69788796"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveCollector:
    """`python -m parbench.cli serve ...` in a subprocess on 127.0.0.1."""

    def __init__(
        self,
        store: Path,
        fixtures: Path | None = None,
        port: int | None = None,
        max_body_mb: int | None = None,
        token: str | None = TOKEN,
    ) -> None:
        """token=None lets `parbench serve` make one up; it is then read from its output."""
        self.store, self.fixtures, self.max_body_mb, self.token = store, fixtures, max_body_mb, token
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = store.with_suffix(f".{self.port}.log")

    def start(self, timeout: float = 60.0) -> LiveCollector:
        cmd = [
            sys.executable,
            "-m",
            "parbench.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--store",
            str(self.store),
            "--log-level",
            "warning",
        ]
        if self.token is not None:
            cmd += ["--token", self.token]
        if self.fixtures is not None:
            cmd += ["--fixtures", str(self.fixtures)]
        if self.max_body_mb is not None:
            cmd += ["--max-body-mb", str(self.max_body_mb)]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"collector exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/api/v1/health", timeout=1.0).status_code == 200:
                    if self.token is None:
                        self.token = self.log.read_text().split("token: ")[-1].split()[0]
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"collector did not answer within {timeout} s:\n{self.log.read_text()}")

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, open transactions are cut."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


# the answers the device core retries (is_retryable in device_runner/core/src/collector.cpp):
# 500 and 507 are faults the same request meets again, so a device does not retry them
RETRY_STATUSES = frozenset({408, 425, 429, 502, 503, 504})


def device_request(
    client: httpx.Client, method: str, url: str, *, tries: int = 60, **kwargs: Any
) -> httpx.Response:
    """A device's request: retry the same request, with backoff, on connection errors and on the
    answers the device core retries (:data:`RETRY_STATUSES`)."""
    delay = 0.05
    for attempt in range(tries):
        try:
            r = client.request(method, url, **kwargs)
            if r.status_code not in RETRY_STATUSES:
                return r
        except httpx.TransportError:
            if attempt == tries - 1:
                raise
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    return r


def device_run(run_id: str, model: str = "iPhone15,2") -> dict[str, Any]:
    return {
        "source": "device",
        "created_utc": "2026-11-23T12:00:00Z",
        "machine": {"cpu": "Apple A16", "os": "iOS 18.1", "threads": 6},
        "device": {"model": model, "os": "iOS 18.1", "name": f"lab-{run_id[-4:]}"},
        "runtime": {"name": "libtorch-lite", "version": "2.13.0"},
        "commit": "3f2a9c1",
        "env": {"xcode": "16.1"},
        "fixture_set": {"manifest_sha256": "0" * 64},
    }


def make_result(
    i: int, model: str = "tiny_net", variant: str = "lite", size: int = 64, n_samples: int = 20, **over: Any
) -> dict[str, Any]:
    """A plausible device result; `i` makes it unique (run_index) and seeds its samples."""
    rng = np.random.default_rng(i)
    samples = (rng.lognormal(np.log(4e6), 0.05, n_samples)).astype(np.int64).tolist()
    result = {
        "model": model,
        "variant": variant,
        "size": size,
        "case": "all",
        "compute_units": None,
        "run_index": i,
        "threads": 2,
        "executor": "lite_interpreter",
        "load_ms": 12.5 + i % 7,
        "compile_ms": None,
        "first_run_ms": 9.25,
        "samples_ns": samples,
        "warmup_rounds": 3,
        "peak_memory_mb": 48.0,
        "thermal_state_before": "nominal",
        "thermal_state_after": "fair",
        "metrics": {"output": {"max_abs": 1.5e-6, "cosine": 0.9999999}},
        "xctest": None,
        "error": None,
        "extra": {"artifact_bytes": 1234},
    }
    result.update(over)
    return result


def write_file(root: Path, rel: str, data: bytes) -> str:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def build_fixture_set(root: Path) -> Path:
    """A small fixture set written as docs/fixture-format.md describes: one model at two sizes,
    a file artifact serving every size, and a folder artifact (.mlpackage) serving one size."""
    from parbench._util.hashing import sha256_path

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    tensors: dict[str, Any] = {}
    cases = []
    for size in (64, 128):
        for index in range(2):
            stem = f"tensors/tiny_net/{size}-{index}"
            x = rng.standard_normal((1, 3, size, size)).astype("<f4")
            y = rng.standard_normal((1, 10)).astype("<f4")
            ins = {"image": f"{stem}.input.image.bin"}
            gold = {"output": f"{stem}.golden.output.bin"}
            tensors[ins["image"]] = {
                "dtype": "float32",
                "shape": list(x.shape),
                "sha256": write_file(root, ins["image"], x.tobytes()),
            }
            tensors[gold["output"]] = {
                "dtype": "float32",
                "shape": list(y.shape),
                "sha256": write_file(root, gold["output"], y.tobytes()),
            }
            cases.append(
                {
                    "id": f"tiny_net/{size}/{index}",
                    "size": size,
                    "index": index,
                    "inputs": ins,
                    "golden": gold,
                }
            )
    lite_bytes = rng.bytes(50_000)
    lite_sha = write_file(root, "artifacts/tiny_net/lite.ptl", lite_bytes)
    pkg = root / "artifacts/tiny_net/coreml_fp16-64.mlpackage"
    write_file(pkg, "Manifest.json", json.dumps({"fileFormatVersion": "1.0.0"}).encode())
    write_file(pkg, "Data/com.apple.CoreML/model.mlmodel", rng.bytes(3000))
    write_file(pkg, "Data/com.apple.CoreML/weights/weight.bin", rng.bytes(20_000))
    manifest = {
        "format": "parbench-fixtures",
        "format_version": 1,
        "created_utc": "2026-11-23T12:00:00Z",
        "generator": {"parbench": "0.1.0"},
        "tensors": tensors,
        "models": {
            "tiny_net": {
                "task": "classification",
                "spec_hash": "0" * 64,
                "example_size": 64,
                "inputs": [{"name": "image", "shape": [1, 3, "size", "size"], "dtype": "float32"}],
                "outputs": ["output"],
                "artifacts": {
                    "lite": [
                        {
                            "path": "artifacts/tiny_net/lite.ptl",
                            "format": "ptl",
                            "sha256": lite_sha,
                            "bytes": len(lite_bytes),
                            "sizes": None,
                            "meta": {},
                        }
                    ],
                    "coreml_fp16": [
                        {
                            "path": "artifacts/tiny_net/coreml_fp16-64.mlpackage",
                            "format": "mlpackage",
                            "sha256": sha256_path(pkg),
                            "bytes": 23_000,
                            "sizes": [64],
                            "meta": {},
                        }
                    ],
                },
                "cases": cases,
            }
        },
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    # A file next to the set that traversal attempts aim at.
    (root.parent / "secret.txt").write_text("outside the fixture set")
    return root
