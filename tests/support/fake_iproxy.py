"""Stands in for libimobiledevice's iproxy in the USB-relay tests: `fake_iproxy.py LOCAL:DEVICE -u UDID`.

Like iproxy, it listens on 127.0.0.1:LOCAL and, for each connection made to it, opens one to the
"device" port (here 127.0.0.1:DEVICE instead of a port on a phone over usbmux), then copies bytes
both ways; when nothing listens on the device port it closes the connection it accepted.
"""

from __future__ import annotations

import socket
import sys
import threading


def pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while chunk := src.recv(1 << 16):
            dst.sendall(chunk)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def main() -> None:
    ports = sys.argv[1]
    if "-u" not in sys.argv[2:]:
        sys.exit("fake iproxy: expected -u UDID")
    local, device = (int(p) for p in ports.split(":"))
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", local))
    server.listen(8)
    while True:
        conn, _ = server.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", device), timeout=2)
            upstream.settimeout(None)
        except OSError:
            conn.close()
            continue
        threading.Thread(target=pipe, args=(conn, upstream), daemon=True).start()
        threading.Thread(target=pipe, args=(upstream, conn), daemon=True).start()


if __name__ == "__main__":
    main()
