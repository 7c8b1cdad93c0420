"""Fixtures of the device-runner tests: the built core, the tiny fixture set, and a live
collector on 127.0.0.1."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from support.device_helpers import LiveCollector, write_tiny_set

from parbench.device.build import BuildResult, build_core, missing_build_tools


@pytest.fixture(scope="session")
def tiny_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-set")
    torch.set_num_threads(1)
    write_tiny_set(root)
    return root


@pytest.fixture(scope="session")
def core_build() -> BuildResult:
    """The core, built once per session in device_runner/core/build (reused when up to date)."""
    missing = missing_build_tools()
    if missing:
        reason = "cannot build the device runner core: missing " + "; ".join(missing)
        if os.environ.get("PARBENCH_REQUIRE_DEVICE_BUILD"):
            pytest.fail(reason + " (PARBENCH_REQUIRE_DEVICE_BUILD is set)")
        pytest.skip(reason)
    return build_core()


@pytest.fixture()
def collector(tiny_set: Path, tmp_path: Path) -> Iterator[LiveCollector]:
    """parbench's collector (create_app + uvicorn) serving the tiny set on a free loopback port."""
    import uvicorn

    from parbench.collector.app import create_app

    token = secrets.token_urlsafe(16)
    store_path = tmp_path / "results.sqlite"
    app = create_app(store_path, token, tiny_set, cache_dir=tmp_path / "collector-cache")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the collector did not start within 20 s")
        time.sleep(0.02)
    try:
        yield LiveCollector(f"http://127.0.0.1:{port}", token, store_path)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
