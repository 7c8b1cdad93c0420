"""USB mode without a phone: the relay (parbench device relay) dials a listener through a stand-in
for iproxy and carries its requests to a live collector. The listener is first a hand-written
fake phone speaking the protocol, then the real C++ core (`--usb-port`, the same transport the
iOS test bundle uses) replaying the tiny fixture set end to end."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from support.device_helpers import MODELS, LiveCollector

from parbench.device import relay as usb
from parbench.device.build import BuildResult
from parbench.errors import DeviceError

FAKE_IPROXY = Path(__file__).parents[1] / "support" / "fake_iproxy.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fake_iproxy(tmp_path: Path) -> str:
    wrapper = tmp_path / "iproxy"
    wrapper.write_text(
        f"#!{sys.executable}\nimport runpy, sys\nsys.argv[0] = {str(FAKE_IPROXY)!r}\n"
        f"runpy.run_path({str(FAKE_IPROXY)!r}, run_name='__main__')\n"
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    return str(wrapper)


def test_relay_carries_frames_to_the_collector(collector: LiveCollector, tiny_set: Path) -> None:
    phone = socket.socket()
    phone.bind(("127.0.0.1", 0))
    phone.listen(2)
    port = phone.getsockname()[1]
    logs: list[str] = []
    stop = threading.Event()
    relay = usb.UsbRelay(
        collector.url, lambda: socket.create_connection(("127.0.0.1", port), timeout=5), log=logs.append
    )
    worker = threading.Thread(target=relay.serve, args=(stop,), daemon=True)
    worker.start()
    never = threading.Event()
    try:
        conn, _ = phone.accept()
        conn.sendall(usb.RELAY_GREETING)
        usb.write_frame(conn, {"method": "GET", "path": "/api/v1/health", "headers": []}, b"")
        head, body = usb.read_frame(conn, never)
        assert head["status"] == 200 and "ok" in json.loads(body).get("status", "ok")
        usb.write_frame(
            conn,
            {
                "method": "GET",
                "path": "/api/v1/fixtures/manifest",
                "headers": [["Authorization", f"Bearer {collector.token}"]],
            },
            b"",
        )
        head, body = usb.read_frame(conn, never)
        assert head["status"] == 200
        assert (
            json.loads(body)["models"].keys()
            == json.loads((tiny_set / "manifest.json").read_text())["models"].keys()
        )
        usb.write_frame(
            conn,
            {
                "method": "GET",
                "path": "/api/v1/fixtures/manifest",
                "headers": [["Authorization", "Bearer wrong"]],
            },
            b"",
        )
        head, _ = usb.read_frame(conn, never)
        assert head["status"] == 401  # the collector's answer, passed through
        conn.close()
        # the phone's side went away: the relay dials again and the next listener gets through
        conn2, _ = phone.accept()
        conn2.sendall(usb.RELAY_GREETING)
        usb.write_frame(conn2, {"method": "GET", "path": "/api/v1/health", "headers": []}, b"")
        assert usb.read_frame(conn2, never)[0]["status"] == 200
        conn2.close()
    finally:
        stop.set()
        worker.join(10)
        phone.close()
    assert relay.exchanges == 4 and relay.connections == 2
    assert any("closed the connection" in line for line in logs)


def test_relay_reports_an_unreachable_collector() -> None:
    relay = usb.UsbRelay(
        f"http://127.0.0.1:{free_port()}", lambda: socket.socket(), log=lambda _: None, timeout=5
    )
    head, body = relay.forward({"method": "GET", "path": "/api/v1/health", "headers": []}, b"")
    assert (
        head["status"] == 0
        and "the relay could not reach the collector at http://127.0.0.1:" in head["error"]
    )
    assert body == b""


def test_iproxy_missing_or_failing(tmp_path: Path) -> None:
    with pytest.raises(DeviceError, match="brew install libimobiledevice"):
        usb.run_relay("0000", 1, free_port(), "http://127.0.0.1:1", iproxy=str(tmp_path / "no-iproxy"))
    failing = tmp_path / "iproxy"
    failing.write_text("#!/bin/sh\necho 'No device found.' >&2\nexit 1\n")
    failing.chmod(0o755)
    with pytest.raises(DeviceError, match=r"iproxy exited \(1\): No device found"):
        usb.run_relay("0000", 1, free_port(), "http://127.0.0.1:1", iproxy=str(failing))
    assert usb.iproxy_command("00008110-001A", 8767, 8766) == [
        "iproxy",
        "8767:8766",
        "-u",
        "00008110-001A",
    ]


def test_usb_mode_end_to_end_with_the_core(
    core_build: BuildResult, collector: LiveCollector, tmp_path: Path
) -> None:
    device_port, local_port = free_port(), free_port()
    env = dict(os.environ, PARBENCH_TOKEN=collector.token)
    runner = subprocess.Popen(
        [
            str(core_build.binary),
            "--usb-port",
            str(device_port),
            "--relay-wait",
            "60",
            "--rounds",
            "3",
            "--warmup",
            "1",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--out",
            str(tmp_path / "out.json"),
            "--run-id",
            "usb-relay-e2e",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    stop = threading.Event()
    box: dict[str, object] = {}
    logs: list[str] = []

    def relay_thread() -> None:
        try:
            box["relay"] = usb.run_relay(
                "0000",
                device_port,
                local_port,
                collector.url,
                iproxy=fake_iproxy(tmp_path),
                stop=stop,
                log=logs.append,
            )
        except Exception as exc:  # surfaced below
            box["error"] = exc

    worker = threading.Thread(target=relay_thread, daemon=True)
    worker.start()
    try:
        out, err = runner.communicate(timeout=600)
    finally:
        stop.set()
        worker.join(20)
        if runner.poll() is None:
            runner.kill()
    assert "error" not in box, box.get("error")
    assert runner.returncode == 0, err
    assert f"USB mode: listening on 127.0.0.1:{device_port}" in err
    relay = box["relay"]
    # health, manifest, fixture files, the run, its results and its completion
    assert isinstance(relay, usb.UsbRelay) and relay.exchanges > 10
    # everything arrived through the relay, exactly once
    resp = httpx.get(
        f"{collector.url}/api/v1/runs/usb-relay-e2e", headers={"Authorization": f"Bearer {collector.token}"}
    )
    assert resp.status_code == 200
    body = resp.json()
    assert body["run"]["status"] == "complete"
    n_cases = sum(n for _task, _cls, _outs, per_size in MODELS.values() for n in per_size.values()) * 2
    assert len(body["results"]) == n_cases
    assert all(r["error"] is None and len(r["samples_ns"]) == 3 for r in body["results"])
    assert any("the phone is connected" in line for line in logs)
