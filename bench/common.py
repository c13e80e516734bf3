"""Shared pieces of the benchmarks: servers to start, wrk to drive, tables to print.

Everything runs on loopback. Results are ratios against a baseline measured in
the same run, because the machines are shared and absolute numbers drift.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from wallet_proxy.sandbox import DEMO_CONNECT_AUTH, DEMO_RETAILER_ID
from wallet_proxy.serving import gunicorn_command

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "bench-api-key-1"
AUTH_HEADER = f"Authorization: Bearer {API_KEY}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            if time.monotonic() > deadline:
                raise SystemExit(f"nothing answered at {url}") from None
            time.sleep(0.05)


def _stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@contextmanager
def sandbox_process(**knobs):
    """The SessionM sandbox in its own process, so it doesn't share our GIL."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "wallet_proxy.cli", "sandbox", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        cwd=ROOT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/_sandbox/stats")
        if knobs:
            requests.post(f"{url}/_sandbox/config", json=knobs, timeout=5).raise_for_status()
        yield url
    finally:
        _stop(process)


def sandbox_stats(url: str) -> dict:
    return requests.get(f"{url}/_sandbox/stats", timeout=5).json()


def sandbox_reset_counts(url: str) -> None:
    """Zero the call counters; the reset also clears knobs, so they are put back."""
    knobs = requests.get(f"{url}/_sandbox/config", timeout=5).json()
    requests.post(f"{url}/_sandbox/reset", timeout=5).raise_for_status()
    sandbox_configure(url, **knobs)


def sandbox_configure(url: str, **knobs) -> None:
    requests.post(f"{url}/_sandbox/config", json=knobs, timeout=5).raise_for_status()


@contextmanager
def redis_process():
    binary = shutil.which("redis-server") or sys.exit("redis-server is not installed")
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            if time.monotonic() > deadline:
                sys.exit("redis-server did not start")
            time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop(process)


@contextmanager
def gunicorn(
    app: str,
    *,
    workers: int,
    threads: int,
    worker_class: str = "gthread",
    options: tuple[str, ...] = (),
    **env,
):
    """gunicorn with the packaged config, overriding the worker model and any `options`."""
    port = free_port()
    environment = {
        **os.environ,
        "SESSIONM_CONNECT_AUTH": DEMO_CONNECT_AUTH,
        "SESSIONM_RETAILER_ID": DEMO_RETAILER_ID,
        "WALLET_PROXY_API_KEYS": API_KEY,
        "WALLET_PROXY_LOG_HASH_KEY": "bench-log-hash-key",  # one key for all: no warning
        # No SessionM budget unless a benchmark sets one (campaign.py): the others measure
        # the service itself, and a budget would cap what they measure.
        "WALLET_PROXY_SESSIONM_RATE": "0",
        **{k: str(v) for k, v in env.items()},
    }
    process = subprocess.Popen(
        gunicorn_command(
            bind=f"127.0.0.1:{port}",
            options=[
                *("--workers", str(workers), "--threads", str(threads)),
                *("--worker-class", worker_class),
                *("--log-level", "warning"),
                *options,
            ],
            app=app,
        ),
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,  # the request lines (wallet_proxy/request_log.py)
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/healthz")
        time.sleep(1)  # every worker booted
        yield url
    finally:
        _stop(process)


# The start of a wrk script that POSTs JSON: each thread numbered (`tid`), each request
# counted (`counter`), so a script's `request` can make every body or path unique.
POST_PROLOGUE = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local counter = 0
"""

DONE_SCRIPT = """
done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests": %d, "seconds": %f, "errors": %d, "non2xx": %d,' ..
    ' "p50_ms": %f, "p99_ms": %f, "max_ms": %f}\\n',
    summary.requests, summary.duration / 1e6,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout,
    summary.errors.status, latency:percentile(50) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000))
end
"""


def wrk(
    url: str,
    *,
    connections: int,
    seconds: float,
    threads: int = 2,
    script: str = "",
    headers: tuple[str, ...] = (AUTH_HEADER,),
    args: tuple[str, ...] = (),
) -> dict:
    """Run wrk; returns requests, rate per second, errors and latency percentiles."""
    binary = shutil.which("wrk") or sys.exit("wrk is not installed (make system-deps)")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script + DONE_SCRIPT)
    command = [
        binary,
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        lua.name,
    ]
    for header in headers:
        command += ["-H", header]
    output = subprocess.run(
        [*command, url, *args], capture_output=True, text=True, check=True
    ).stdout
    os.unlink(lua.name)
    result = json.loads(output.strip().splitlines()[-1])
    result["rate"] = result["requests"] / result["seconds"]
    return result


def table(title: str, columns: list[str], rows: list[list]) -> str:
    cells = [[str(c) for c in columns]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = [f"## {title}", ""]
    for index, row in enumerate(cells):
        lines.append(
            "| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |"
        )
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
