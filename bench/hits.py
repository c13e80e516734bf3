"""Benchmark 1: cache hits per second through gunicorn, against what a team would write
instead: a bare Flask view returning the same bytes under the same gunicorn settings with
no request log (goal: ratio >= 1.0, by answers per second and by CPU per answer), while
wallet-proxy still writes its JSON request line and metrics for every request. The floor
is a raw WSGI callable returning the same bytes: a hit should cost at most the floor +
100 us of CPU, and at most 0.9 x the bare Flask view's. Two more rows show what logging
costs a bare view: the same request line, and gunicorn's text access log.

Each round runs every server once, in turn (interleaved); the table shows medians. CPU
time per answer is the servers' own (master and workers), which other processes on a
shared machine move far less than they move answers per second.

    python bench/hits.py [--seconds 5] [--rounds 9] [--connections 64] [--threads 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import requests
from common import AUTH_HEADER, gunicorn, sandbox_process, table, wrk

PROXY = "wallet-proxy (cache hit), request line"
BARE_NO_LOG = "bare Flask, same bytes, no log"
FLOOR = "raw WSGI, same bytes, no log (the floor)"
BARE = "bare Flask, same bytes, request line"
BARE_TEXT_LOG = "bare Flask, same bytes, gunicorn's text access log"
# The access log format the service used before its request line.
ACCESS_FORMAT = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms "%(a)s"'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--worker-class", default="gthread")
    args = parser.parse_args()
    model = {"workers": args.workers, "threads": args.threads, "worker_class": args.worker_class}

    with sandbox_process() as sessionm, tempfile.NamedTemporaryFile(suffix=".json") as body:
        proxy_env = {
            "SESSIONM_CONNECT_URL": sessionm,
            "WALLET_PROXY_CACHE_TTL": 3600,
            "WALLET_PROXY_LOG_HASH_KEY": "bench-log-hash-key-0001",
        }
        bare_env = {**proxy_env, "BENCH_BODY_FILE": body.name}
        path = "/v1/wallets/demo-alice"
        name, _, value = AUTH_HEADER.partition(": ")
        with gunicorn("wsgi:app", **model, **proxy_env) as proxy:
            first = requests.get(proxy + path, headers={name: value}, timeout=5)
            first.raise_for_status()
            # Written before the bare servers start: their workers read it when they boot.
            body.write(first.content)
            body.flush()
            unlogged_env = {**bare_env, "BENCH_REQUEST_LOG": "off"}
            access_log = ("--logger-class", "gunicorn.glogging.Logger")
            access_log += ("--access-logfile", "/dev/null", "--access-logformat", ACCESS_FORMAT)
            with (
                gunicorn("bench.bare_app:app", **model, **unlogged_env) as unlogged,
                gunicorn("bench.bare_wsgi:app", **model, **unlogged_env) as floor,
                gunicorn("bench.bare_app:app", **model, **bare_env) as bare,
                gunicorn(
                    "bench.bare_app:app", **model, **unlogged_env, options=access_log
                ) as text_logged,
            ):
                for url in (unlogged, floor, bare, text_logged):
                    assert requests.get(url + path, timeout=5).content == first.content
                servers = {
                    PROXY: proxy,
                    BARE_NO_LOG: unlogged,
                    FLOOR: floor,
                    BARE: bare,
                    BARE_TEXT_LOG: text_logged,
                }
                for url in servers.values():  # all warm: caches filled, connections open
                    wrk(url + path, connections=args.connections, seconds=1)
                rates: dict[str, list[float]] = {label: [] for label in servers}
                cpu: dict[str, list[float]] = {label: [] for label in servers}
                results = {}
                for _ in range(args.rounds):
                    for label, url in servers.items():
                        before = cpu_seconds(url)
                        result = wrk(
                            url + path, connections=args.connections, seconds=args.seconds
                        )
                        assert result["non2xx"] == 0 and result["errors"] == 0, result
                        rates[label].append(result["rate"])
                        cpu[label].append((cpu_seconds(url) - before) / result["requests"] * 1e6)
                        results[label] = result
                hit = requests.get(proxy + path, headers={name: value}, timeout=5)
                # Each worker has its own cache and fetch time (`fetched_at`): same size only.
                assert hit.headers["X-Cache"] == "HIT" and len(hit.content) == len(first.content)

    rows = []
    for label, values in rates.items():
        rows.append(
            [
                label,
                statistics.median(values),
                min(values),
                max(values),
                results[label]["p99_ms"],
                statistics.median(cpu[label]),
            ]
        )
    median = {label: statistics.median(values) for label, values in rates.items()}
    per_answer = {label: statistics.median(values) for label, values in cpu.items()}
    print(
        table(
            f"Cache hits: {args.workers} {args.worker_class} workers x {args.threads} threads, "
            f"{args.connections} connections, {args.rounds} rounds of {args.seconds:g}s",
            ["server", "median req/s", "min", "max", "p99 ms (last round)", "CPU us/answer"],
            rows,
        )
    )
    proxy_cpu, bare_cpu, floor_cpu = (per_answer[k] for k in (PROXY, BARE_NO_LOG, FLOOR))
    print(
        f"ratio wallet-proxy / bare Flask (no log): {median[PROXY] / median[BARE_NO_LOG]:.2f} "
        f"(goal >= 1.0); by CPU per answer: {bare_cpu / proxy_cpu:.2f} (goal >= 1.0)"
    )
    print(
        f"CPU per hit: {proxy_cpu:.0f} us = the floor + {proxy_cpu - floor_cpu:.0f} us "
        f"(goal <= +100) = {proxy_cpu / bare_cpu:.2f} x bare Flask's (goal <= 0.90)"
    )
    for other, name in ((BARE_TEXT_LOG, "gunicorn's access log"), (BARE_NO_LOG, "no log")):
        print(
            f"bare Flask, request line / {name}: {median[BARE] / median[other]:.2f} "
            f"(by CPU per answer {per_answer[other] / per_answer[BARE]:.2f})"
        )


def cpu_seconds(url: str) -> float:
    """CPU time used so far by the gunicorn serving `url` (master and workers, found by their
    command line). On a shared machine, CPU per answer moves far less with other processes'
    load than answers per second do."""
    bind = b"--bind\0" + url.removeprefix("http://").encode() + b"\0"
    ticks = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if bind not in (proc / "cmdline").read_bytes():
                continue
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


if __name__ == "__main__":
    main()
