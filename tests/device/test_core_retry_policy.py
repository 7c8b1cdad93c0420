"""The device runner binary's retry policy over real HTTP (curl), against a stand-in collector that
answers every request the same way: a store fault (500/507, code "store") is not retried, and a
busy store (503 with Retry-After) is retried after the wait the collector asks for."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from parbench.device.build import BuildResult


class _Stub:
    """Answers every request with `status`, a collector-style JSON error and `headers`."""

    def __init__(self, status: int, error: str, reason: str, headers: dict[str, str] | None = None) -> None:
        self.times: list[float] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                stub.times.append(time.monotonic())
                body = json.dumps({"error": error, "reason": reason}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub_factory() -> Iterator:
    stubs: list[_Stub] = []

    def make(*args, **kwargs) -> _Stub:
        stubs.append(_Stub(*args, **kwargs))
        return stubs[-1]

    yield make
    for s in stubs:
        s.close()


def _run(binary: Path, url: str, retries: int, cache: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(binary),
        "--collector",
        url,
        "--token",
        "t",
        "--retries",
        str(retries),
        "--cache-dir",
        str(cache),
    ]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("status", [500, 507])
def test_store_fault_is_not_retried(
    core_build: BuildResult, stub_factory, tmp_path: Path, status: int
) -> None:
    reason = (
        "results store failed (disk I/O error); do not retry: the collector's operator must fix the store"
    )
    stub = stub_factory(status, "store", reason)
    proc = _run(core_build.binary, stub.url, 5, tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert len(stub.times) == 1, f"{len(stub.times)} requests for one store fault: {proc.stderr}"
    assert f"HTTP {status}" in proc.stderr and "store: results store failed" in proc.stderr
    assert "not retried" in proc.stderr


def test_busy_is_retried_after_the_wait_asked_for(
    core_build: BuildResult, stub_factory, tmp_path: Path
) -> None:
    stub = stub_factory(503, "unavailable", "results store is busy; retry shortly", {"Retry-After": "1"})
    proc = _run(core_build.binary, stub.url, 3, tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert len(stub.times) == 3, proc.stderr
    # The client's own back-off would wait 0.25 s, then 0.5 s.
    gaps = [b - a for a, b in zip(stub.times, stub.times[1:], strict=False)]
    assert all(g >= 0.95 for g in gaps), f"waits between retries: {gaps} s, Retry-After asked for 1 s"
    assert "HTTP 503" in proc.stderr and "busy" in proc.stderr
