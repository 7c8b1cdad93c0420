"""USB mode of the iPhone runner: ``parbench device relay``.

The test process on the phone listens on its own loopback; iproxy (libimobiledevice) carries a
connection from the Mac to it over usbmux, and the relay forwards each request frame that comes
back through it to the collector, answering with a response frame. The phone needs neither the
Local Network permission nor a LAN. The protocol is described in
``device_runner/core/include/parbench/relay_transport.h``.
"""

from __future__ import annotations

import contextlib
import json
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from parbench.errors import DeviceError

RELAY_GREETING = b"PBRELAY1"


def _read_exact(sock: socket.socket, n: int, stop: threading.Event) -> bytes:
    """n bytes; EOFError when the peer closes, InterruptedError when `stop` is set."""
    buf = bytearray()
    while len(buf) < n:
        if stop.is_set():
            raise InterruptedError
        ready, _, _ = select.select([sock], [], [], 0.5)
        if not ready:
            continue
        chunk = sock.recv(min(n - len(buf), 1 << 16))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def read_frame(sock: socket.socket, stop: threading.Event) -> tuple[dict[str, Any], bytes]:
    (head_len,) = struct.unpack(">I", _read_exact(sock, 4, stop))
    if head_len == 0 or head_len > 1 << 20:
        raise ValueError(f"malformed frame: header of {head_len} bytes")
    head = json.loads(_read_exact(sock, head_len, stop))
    (body_len,) = struct.unpack(">Q", _read_exact(sock, 8, stop))
    return head, _read_exact(sock, body_len, stop)


def write_frame(sock: socket.socket, head: Mapping[str, Any], body: bytes) -> None:
    h = json.dumps(head).encode()
    sock.sendall(struct.pack(">I", len(h)) + h + struct.pack(">Q", len(body)) + body)


HOP_HEADERS = {"host", "content-length", "connection", "transfer-encoding", "keep-alive"}


class UsbRelay:
    """Dials the phone's listener (through `connect`, normally iproxy's local port) and relays
    each request frame it sends to the collector, answering with a response frame."""

    def __init__(
        self,
        collector: str,
        connect: Callable[[], socket.socket],
        *,
        log: Callable[[str], None] = print,
        timeout: float = 300,
    ):
        import httpx

        self.collector = collector.rstrip("/")
        self.connect = connect
        self.log = log
        self.client = httpx.Client(base_url=self.collector, timeout=timeout)
        self.exchanges = 0
        self.connections = 0

    def forward(self, head: Mapping[str, Any], body: bytes) -> tuple[dict[str, Any], bytes]:
        import httpx

        headers = [(k, v) for k, v in head.get("headers", []) if k.lower() not in HOP_HEADERS]
        try:
            r = self.client.request(head["method"], head["path"], headers=headers, content=body)
        except httpx.HTTPError as exc:
            return {
                "status": 0,
                "error": f"the relay could not reach the collector at {self.collector}: {exc}",
            }, b""
        out_headers = {k: v for k, v in r.headers.items() if k.lower() not in HOP_HEADERS}
        return {"status": r.status_code, "headers": out_headers}, r.content

    def serve(self, stop: threading.Event) -> None:
        """Until `stop`: connect, wait for the phone's greeting, relay, and dial again when it goes."""
        waiting_said = False
        while not stop.is_set():
            try:
                sock = self.connect()
            except OSError:
                stop.wait(0.5)
                continue
            try:
                greeting = _read_exact(sock, len(RELAY_GREETING), stop)
            except (EOFError, OSError):  # nothing listens on the phone yet: iproxy hung up
                sock.close()
                if not waiting_said:
                    self.log("relay: waiting for the test to listen on the phone")
                    waiting_said = True
                stop.wait(0.5)
                continue
            except InterruptedError:
                sock.close()
                break
            if greeting != RELAY_GREETING:
                self.log(
                    f"relay: the port answered {greeting!r}, not a parbench test; is --device-port right?"
                )
                sock.close()
                stop.wait(2)
                continue
            self.connections += 1
            waiting_said = False
            self.log("relay: the phone is connected")
            try:
                while not stop.is_set():
                    head, body = read_frame(sock, stop)
                    reply, data = self.forward(head, body)
                    write_frame(sock, reply, data)
                    self.exchanges += 1
            except (EOFError, OSError):
                self.log(f"relay: the phone closed the connection ({self.exchanges} requests relayed so far)")
            except InterruptedError:
                pass
            except ValueError as exc:
                self.log(f"relay: dropped a connection: {exc}")
            finally:
                sock.close()
        self.client.close()


def iproxy_command(udid: str, local_port: int, device_port: int, iproxy: str = "iproxy") -> list[str]:
    return [iproxy, f"{local_port}:{device_port}", "-u", udid]


@contextlib.contextmanager
def iproxy_running(
    cmd: Sequence[str], local_port: int, log: Callable[[str], None] = print, timeout: float = 10
) -> Iterator[subprocess.Popen[str]]:
    """Starts iproxy and waits until its local port accepts connections."""
    try:
        proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except FileNotFoundError as exc:
        raise DeviceError(
            f"{cmd[0]} not found: USB mode needs iproxy (brew install libimobiledevice)"
        ) from exc
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                out = proc.stdout.read() if proc.stdout else ""
                raise DeviceError(
                    f"iproxy exited ({proc.returncode}): {out.strip() or 'no output'}; is the phone "
                    "on USB and trusting this Mac? (`xcrun xctrace list devices` lists it)"
                )
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", local_port), timeout=1):
                break
            if time.monotonic() > deadline:
                raise DeviceError(f"iproxy did not open 127.0.0.1:{local_port} within {timeout:.0f} s")
            time.sleep(0.1)
        log(f"relay: {' '.join(cmd)} is up")
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
            if proc.poll() is None:
                proc.kill()


def run_relay(
    udid: str,
    device_port: int,
    local_port: int,
    collector: str,
    *,
    iproxy: str = "iproxy",
    stop: threading.Event | None = None,
    log: Callable[[str], None] = print,
) -> UsbRelay:
    """iproxy LOCAL:DEVICE plus the relay, until `stop` is set (or Ctrl-C)."""
    stop = stop or threading.Event()
    cmd = iproxy_command(udid, local_port, device_port, iproxy)
    with iproxy_running(cmd, local_port, log) as proc:
        relay = UsbRelay(
            collector, lambda: socket.create_connection(("127.0.0.1", local_port), timeout=5), log=log
        )
        worker = threading.Thread(target=relay.serve, args=(stop,), daemon=True)
        worker.start()
        try:
            while worker.is_alive():
                if proc.poll() is not None:
                    stop.set()
                    worker.join(5)
                    raise DeviceError(
                        f"iproxy exited ({proc.returncode}) while relaying: was the phone unplugged?"
                    )
                worker.join(0.5)
        except KeyboardInterrupt:
            stop.set()
            worker.join(5)
    return relay
