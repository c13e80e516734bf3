"""Benchmark 9: loyalty attributes to Braze profiles (`wallet-proxy attributes sync`), cold
and after a warm-up.

N customers (default 100,000; `ext-N` in Braze for SessionM's `user-N`), the sandbox in its
own process as SessionM (100-200 ms an answer) and as Braze's /users/track, one
redis-server (the shared cache, the fleet's budget, what was written), SessionM's budget
at 50/s and WALLET_PROXY_BRAZE_TRACK_RATE at its default of 10/s. Three steps:

1. cold: `attributes sync` with nothing cached: every wallet from SessionM, at the
   budget's bulk share; `plan --sync` says how long;
2. `wallet-proxy warm` of the same file (`--fresh-for 4h`), then the record of what was
   written is dropped, so that the next sync writes every profile again;
3. warmed: `attributes sync` again: no SessionM call, bound by the Braze rate alone
   (N / 75 / rate per second).

Each step is one run of the real command, as an operator runs it; its time, the requests
Braze got and took, the SessionM calls and busiest second, the profiles written, and the
command's peak memory (RSS) are printed, with `plan --sync`'s figures beside them.

    python bench/attributes.py [--customers 100000] [--budget 50] [--track-rate 10]

About 95 minutes with the defaults (the cold sync and the warm-up each take N / 36.7 s).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import requests
from common import redis_process, sandbox_process, sandbox_reset_counts, sandbox_stats, table

from wallet_proxy.bulk.durations import spoken
from wallet_proxy.bulk.plan import make_plan, make_sync_plan
from wallet_proxy.config import Settings
from wallet_proxy.sandbox import DEMO_BRAZE_API_KEY, DEMO_CONNECT_AUTH, DEMO_RETAILER_ID

LATENCY, SPREAD = 0.1, 0.1  # SessionM answers in 100-200 ms
OURS = ("SESSIONM_", "WALLET_PROXY_", "BRAZE_")  # settings from this shell are left out
BATCH = 75


def export(folder: Path, customers: int) -> Path:
    path = folder / "loyalty.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["external_id", "user_id"])
        writer.writerows([f"ext-{n:06d}", f"user-{n:06d}"] for n in range(customers))
    return path


# The command in a fresh interpreter that writes its own peak memory (VmHWM, kB) last on
# standard error. Not wait4's maxrss: Linux counts in it the memory of the process it was
# forked from (this script's, which holds what it read from the sandbox) before it ran
# Python anew.
MEASURED = """
import re, sys
from pathlib import Path
from wallet_proxy.cli import main
try:
    main(sys.argv[1:])
finally:
    status = Path("/proc/self/status").read_text()
    print("VmHWM", re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1), file=sys.stderr)
"""


def command(env: dict, *args: str) -> tuple[float, int, str]:
    """(seconds, peak RSS in MB, the summary line) of one run of `wallet-proxy ARGS`."""
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-c", MEASURED, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    lines = process.stderr.splitlines()
    if process.returncode != 0 or not lines or not lines[-1].startswith("VmHWM "):
        sys.exit(f"wallet-proxy {' '.join(args)} failed:\n" + "\n".join(lines[-20:]))
    rss_mb = int(lines[-1].split()[1]) // 1024
    return seconds, rss_mb, lines[-2] if len(lines) > 1 else ""


def braze(url: str, what: str) -> dict | list:
    return requests.get(f"{url}/_sandbox/braze/{what}", timeout=120).json()


def measured(name: str, url: str, env: dict, args: list[str], planned: float | None) -> list:
    sandbox_reset_counts(url)  # also empties Braze's calls and profiles
    seconds, rss_mb, summary = command(env, *args)
    print(f"{name}: {summary}", flush=True)
    sessionm = sandbox_stats(url)
    calls = [c for c in braze(url, "stats")["braze_calls"] if c["kind"] == "track"]
    taken = [c for c in calls if c["status"] == 201]
    objects = sum(len(c["body"]["attributes"]) for c in taken)
    return [
        name,
        spoken(seconds),
        spoken(planned) if planned is not None else "-",
        f"{len(taken):,} / {len(calls):,}",
        objects,
        len(braze(url, "profiles")) if name != "warm-up" else "-",
        sessionm["calls"],
        sessionm["busiest_second"],
        sessionm["rate_limited"],
        rss_mb,
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--budget", type=float, default=50.0, help="SessionM requests/s")
    parser.add_argument("--track-rate", type=float, default=10.0, help="Braze requests/s")
    args = parser.parse_args()
    with (
        sandbox_process(latency=LATENCY, latency_spread=SPREAD) as url,
        redis_process() as redis_url,
        tempfile.TemporaryDirectory() as folder,
    ):
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(OURS)},
            "SESSIONM_CONNECT_URL": url,
            "SESSIONM_CONNECT_AUTH": DEMO_CONNECT_AUTH,
            "SESSIONM_RETAILER_ID": DEMO_RETAILER_ID,
            "BRAZE_REST_URL": url,
            "BRAZE_TRACK_API_KEY": DEMO_BRAZE_API_KEY,
            "WALLET_PROXY_REDIS_URL": redis_url,
            "WALLET_PROXY_SESSIONM_RATE": f"{args.budget:g}",
            "WALLET_PROXY_BRAZE_TRACK_RATE": f"{args.track_rate:g}",
            "WALLET_PROXY_DATA_DIR": str(Path(folder) / "data"),
            "WALLET_PROXY_LOG_HASH_KEY": "bench-log-hash-key",
        }
        settings = Settings.from_env(env, ())
        plan = make_sync_plan(settings, args.customers)
        warm_seconds = make_plan(settings, args.customers, 2, None).warm_seconds
        path = export(Path(folder), args.customers)
        print(
            f"{args.customers:,} customers, SessionM budget {args.budget:g}/s "
            f"({LATENCY * 1000:.0f}-{(LATENCY + SPREAD) * 1000:.0f} ms), Braze "
            f"{args.track_rate:g} requests/s of {BATCH}: plan --sync says cold "
            f"{spoken(plan.cold_seconds or 0)}, warmed {spoken(plan.warmed_seconds)}",
            flush=True,
        )
        sync = ["attributes", "sync", str(path)]
        rows = [measured("cold sync", url, env, sync, plan.cold_seconds)]
        warm = ["warm", str(path), "--id-column", "user_id", "--fresh-for", "4h"]
        rows.append(measured("warm-up", url, env, warm, warm_seconds))
        # What the cold sync wrote is forgotten: the warmed sync writes every profile again.
        shared = redis.Redis.from_url(redis_url)
        for key in shared.scan_iter("wallet-proxy:attributes:*", count=10_000):
            shared.delete(key)
        rows.append(measured("warmed sync", url, env, sync, plan.warmed_seconds))
    print()
    print(
        table(
            f"Attributes sync: {args.customers:,} customers, SessionM budget {args.budget:g}/s "
            f"at {LATENCY * 1000:.0f}-{(LATENCY + SPREAD) * 1000:.0f} ms, Braze "
            f"{args.track_rate:g} requests/s of {BATCH} profiles, one Redis",
            [
                "step",
                "time",
                "plan --sync",
                "Braze requests taken / sent",
                "profiles in them",
                "profiles in Braze",
                "SessionM calls",
                "SessionM busiest second",
                "SessionM 429s",
                "peak RSS MB",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
