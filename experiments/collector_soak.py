"""The collector under concurrent maximal posts: peak memory of the `parbench serve` process and the
latency of `GET /api/v1/health` while the posts run.

It starts `parbench serve` (this interpreter, this checkout) on a free loopback port with a fresh store,
builds the largest results body that collector accepts (its body limit, and its per-request sample cap
when it has one, both read from `/health` or else from its 413 answer), and has ``--clients`` threads
each post it ``--posts`` times (each post to its own run, so every one is stored) while another thread
asks for `/health` every ``--health-every`` seconds.  The server's resident memory is read from
``/proc/PID/status`` (Linux): before, its peak (VmHWM) and a few seconds after the posts.

\b
    python experiments/collector_soak.py [--clients 4] [--posts 2] [--max-body-mb N] [--json FILE]
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import click
import httpx

TOKEN = "soak-token-2d9f4c1a7b3e5d6f8a0c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MAX_SAMPLES_PER_RESULT = 1_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status_kib(pid: int, field: str) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def _limits(url: str) -> tuple[int, int | None]:
    """(body limit in bytes, samples per request or None): from /health when the collector says,
    else the body limit from its 413 answer to a request declaring a huge body."""
    health = httpx.get(f"{url}/api/v1/health", timeout=10).json()
    limits = health.get("limits") or {}
    if "max_body_bytes" in limits:
        return int(limits["max_body_bytes"]), limits.get("max_samples_per_request")
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as s:
        s.sendall(
            b"POST /api/v1/runs/soak-probe-0000/results HTTP/1.1\r\nHost: x\r\n"
            + f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n".encode()
            + b"Content-Length: 999999999999\r\nConnection: close\r\n\r\n"
        )
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    found = re.search(rb"limit of (\d+) bytes", answer)
    if not found:
        raise click.ClickException(f"cannot tell the collector's body limit: {answer[:300]!r}")
    return int(found.group(1)), None


def _body(run_index: int, limit: int, max_samples: int | None) -> bytes:
    """Results whose samples fill the body limit: as many samples as allowed, each as short as fits."""
    room = int(limit * 0.97) - 2048
    n = room // 2 if max_samples is None else min(max_samples, room // 2)
    digits = max(1, room // n - 1)
    value = 10 ** (digits - 1)
    results = []
    left, i = n, 0
    while left > 0:
        k = min(left, MAX_SAMPLES_PER_RESULT)
        results.append(
            {
                "model": "tiny_net",
                "variant": "lite",
                "size": 64 + 16 * i,
                "run_index": run_index,
                "executor": "soak",
                "load_ms": 1.0,
                "first_run_ms": 1.0,
                "samples_ns": [value + (j % 7) for j in range(k)],
            }
        )
        left -= k
        i += 1
    return json.dumps({"results": results}, separators=(",", ":")).encode()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@click.command(help=__doc__, context_settings={"max_content_width": 110})
@click.option("--clients", default=4, show_default=True, type=click.IntRange(1, 64))
@click.option("--posts", default=2, show_default=True, type=click.IntRange(1, 100), help="posts per client")
@click.option("--max-body-mb", type=click.IntRange(1, 4096), help="passed to serve (default: its own)")
@click.option("--health-every", default=0.02, show_default=True, type=click.FloatRange(0.001, 10))
@click.option("--settle", default=3.0, show_default=True, help="seconds to wait before the 'after' RSS")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="write figures")
def main(
    clients: int,
    posts: int,
    max_body_mb: int | None,
    health_every: float,
    settle: float,
    json_out: Path | None,
) -> None:
    if not Path("/proc/self/status").exists():
        raise click.ClickException("this script reads the server's memory from /proc: run it on Linux")
    work = Path(tempfile.mkdtemp(prefix="parbench-soak-"))
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [
        sys.executable,
        "-m",
        "parbench.cli",
        "serve",
        "--port",
        str(port),
        "--store",
        str(work / "s.sqlite"),
    ]
    cmd += ["--log-level", "warning"] + (["--max-body-mb", str(max_body_mb)] if max_body_mb else [])
    log = (work / "serve.log").open("wb")
    env = {**os.environ, "PARBENCH_COLLECTOR_TOKEN": TOKEN}
    server = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/v1/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise click.ClickException(f"collector did not start:\n{(work / 'serve.log').read_text()}")
            time.sleep(0.1)
        limit, max_samples = _limits(url)
        bodies = {c: [_body(c * posts + p, limit, max_samples) for p in range(posts)] for c in range(clients)}
        size = len(bodies[0][0])
        n_samples = sum(len(r["samples_ns"]) for r in json.loads(bodies[0][0])["results"])
        click.echo(
            f"collector body limit {limit} B, samples cap {max_samples or 'none'}; each post {size} B, "
            f"{n_samples} samples; {clients} clients x {posts} posts"
        )
        rss_before = _status_kib(server.pid, "VmRSS")
        runs = [f"soak-run-{c:04d}" for c in range(clients)]
        with httpx.Client(base_url=url, headers=AUTH, timeout=120) as c:
            for run_id in runs:
                run = {
                    "source": "host",
                    "created_utc": "2026-11-23T12:00:00Z",
                    "runtime": {"name": "soak", "version": "1"},
                }
                c.put(f"/api/v1/runs/{run_id}", json=run).raise_for_status()

        latencies: list[float] = []
        health_errors: list[str] = []
        rss_samples: list[int] = []
        statuses: list[int] = []
        post_times: list[float] = []
        done = threading.Event()

        def health() -> None:
            with httpx.Client(base_url=url, timeout=60) as c:
                while not done.is_set():
                    t0 = time.perf_counter()
                    try:
                        r = c.get("/api/v1/health")
                        if r.status_code != 200:
                            health_errors.append(str(r.status_code))
                    except httpx.HTTPError as exc:
                        health_errors.append(type(exc).__name__)
                    latencies.append((time.perf_counter() - t0) * 1000)
                    try:
                        rss_samples.append(_status_kib(server.pid, "VmRSS"))
                    except (OSError, AttributeError):
                        pass
                    time.sleep(health_every)

        def client(i: int) -> None:
            with httpx.Client(base_url=url, headers=AUTH, timeout=600) as c:
                for body in bodies[i]:
                    t0 = time.perf_counter()
                    r = c.post(
                        f"/api/v1/runs/{runs[i]}/results",
                        content=body,
                        headers={"Content-Type": "application/json"},
                    )
                    post_times.append(time.perf_counter() - t0)
                    statuses.append(r.status_code)

        prober = threading.Thread(target=health)
        prober.start()
        time.sleep(0.5)
        t0 = time.perf_counter()
        workers = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        elapsed = time.perf_counter() - t0
        done.set()
        prober.join()
        peak = _status_kib(server.pid, "VmHWM")
        time.sleep(settle)
        rss_after = _status_kib(server.pid, "VmRSS")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)
    figures: dict[str, Any] = {
        "clients": clients,
        "posts_per_client": posts,
        "post_bytes": size,
        "post_samples": n_samples,
        "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "elapsed_s": round(elapsed, 2),
        "posts_per_s": round(len(statuses) / elapsed, 2),
        "post_s_p99": round(_percentile(post_times, 0.99), 2),
        "post_s_median": round(statistics.median(post_times), 2),
        "rss_mib_before": round(rss_before / 1024),
        "rss_mib_peak": round(peak / 1024),
        "rss_mib_after": round(rss_after / 1024),
        "health_requests": len(latencies),
        "health_errors": len(health_errors),
        "health_ms_p50": round(_percentile(latencies, 0.5), 1),
        "health_ms_p99": round(_percentile(latencies, 0.99), 1),
        "health_ms_max": round(max(latencies), 1),
    }
    click.echo(
        f"posts: {figures['statuses']} in {elapsed:.1f} s ({figures['posts_per_s']} posts/s; per post "
        f"p50 {figures['post_s_median']} s, p99 {figures['post_s_p99']} s)\n"
        f"server RSS MiB: before {figures['rss_mib_before']}, peak {figures['rss_mib_peak']}, "
        f"{settle:g} s after {figures['rss_mib_after']} "
        f"(growth {figures['rss_mib_after'] - figures['rss_mib_before']} MiB over {len(statuses)} posts)\n"
        f"/health while posting: {len(latencies)} requests, {len(health_errors)} failed; "
        f"p50 {figures['health_ms_p50']} ms, p99 {figures['health_ms_p99']} ms, max {figures['health_ms_max']} ms"
    )
    if json_out:
        json_out.write_text(json.dumps(figures, indent=1))
        click.echo(f"wrote {json_out}")


if __name__ == "__main__":
    main()
