"""Benchmark 10: hits of many distinct warmed customers from a shared Redis, against a bare
Flask view that reads the same bytes from the same Redis with redis-py (goal: ratio >= 1.0).

10,000 customers are warmed into Redis (`wallet-proxy warm`), then wrk asks for them in
turn (each id about once a second at these rates), half of the connections to each of two
gunicorn masters of one worker each, at the default WALLET_PROXY_CACHE_MAX_BYTES: every
answer is a fresh hit read from Redis, as in a warmed send served by a fleet.

    python bench/redis_hits.py [--customers 10000] [--seconds 5] [--rounds 5] [--threads 64]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import redis
import requests
from common import (
    API_KEY,
    AUTH_HEADER,
    ROOT,
    gunicorn,
    redis_process,
    sandbox_process,
    table,
    wrk,
)
from hits import cpu_seconds

from wallet_proxy.sandbox import DEMO_CONNECT_AUTH, DEMO_RETAILER_ID

PROXY = "wallet-proxy, 2 masters x 1 worker, hits from Redis"
BARE = "bare Flask + redis-py, 2 masters x 1 worker, same bytes"
# Each wrk thread walks the ids from its own offset, round and round.
EVERY_CUSTOMER = """
local n = 0
setup = function(thread)
  thread:set("n", math.random(0, CUSTOMERS - 1))
end
request = function()
  n = (n + 1) % CUSTOMERS
  return wrk.format("GET", "/v1/wallets/user-" .. n)
end
"""


def warm(customers: int, env: dict) -> None:
    """`wallet-proxy warm` of user-0 ... user-N, as an operator runs it before a send."""
    with tempfile.NamedTemporaryFile("w", suffix=".csv", delete=False) as csv:
        csv.write("user_id\n" + "".join(f"user-{n}\n" for n in range(customers)))
    try:
        subprocess.run(
            [
                *(sys.executable, "-m", "wallet_proxy.cli", "warm", csv.name),
                *("--id-column", "user_id", "--fresh-for", "2h"),
                *("--concurrency", "16", "--rate", "100000"),
            ],
            env=env,
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    finally:
        Path(csv.name).unlink()
        for sidecar in Path(csv.name).parent.glob(Path(csv.name).name + ".*"):
            sidecar.unlink()


def copy_answers(proxy: str, redis_url: str, customers: int) -> None:
    """The service's answer for each customer, stored where the bare view reads it."""
    client = redis.Redis.from_url(redis_url)
    session = requests.Session()

    def copy(n: int) -> None:
        answer = session.get(
            f"{proxy}/v1/wallets/user-{n}", headers={"Authorization": f"Bearer {API_KEY}"}
        )
        assert answer.status_code == 200 and answer.headers["X-Cache"] == "HIT", answer
        client.set(f"bench:answer:user-{n}", answer.content)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(copy, range(customers)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=64)
    args = parser.parse_args()
    script = f"CUSTOMERS = {args.customers}\n" + EVERY_CUSTOMER
    model = {"workers": 1, "threads": args.threads}

    with sandbox_process() as sessionm, redis_process() as redis_url:
        env = {
            "SESSIONM_CONNECT_URL": sessionm,
            "WALLET_PROXY_REDIS_URL": redis_url,
            "WALLET_PROXY_CACHE_TTL": 3600,
        }
        warm(
            args.customers,
            {
                **os.environ,
                **{k: str(v) for k, v in env.items()},
                "SESSIONM_CONNECT_AUTH": DEMO_CONNECT_AUTH,
                "SESSIONM_RETAILER_ID": DEMO_RETAILER_ID,
                "WALLET_PROXY_API_KEYS": API_KEY,
                "WALLET_PROXY_SESSIONM_RATE": "0",
            },
        )
        bare_env = {**env, "BENCH_REDIS_URL": redis_url}  # the config checks the settings
        with (
            gunicorn("wsgi:app", **model, **env) as first,
            gunicorn("wsgi:app", **model, **env) as second,
            gunicorn("bench.bare_redis_app:app", **model, **bare_env) as bare_first,
            gunicorn("bench.bare_redis_app:app", **model, **bare_env) as bare_second,
        ):
            copy_answers(first, redis_url, args.customers)
            pairs = {PROXY: (first, second), BARE: (bare_first, bare_second)}
            rates: dict[str, list[float]] = {label: [] for label in pairs}
            cpu: dict[str, list[float]] = {label: [] for label in pairs}
            for _ in range(args.rounds):  # interleaved: both sides once a round
                for label, urls in pairs.items():
                    before = sum(cpu_seconds(url) for url in urls)
                    with ThreadPoolExecutor(2) as pool:
                        results = list(
                            pool.map(
                                lambda url: wrk(
                                    url + "/",
                                    connections=args.connections // 2,
                                    seconds=args.seconds,
                                    script=script,
                                    headers=(AUTH_HEADER,),
                                ),
                                urls,
                            )
                        )
                    for result in results:
                        assert result["non2xx"] == 0 and result["errors"] == 0, result
                    answers = sum(result["requests"] for result in results)
                    rates[label].append(sum(result["rate"] for result in results))
                    spent = sum(cpu_seconds(url) for url in urls) - before
                    cpu[label].append(spent / answers * 1e6)

    rows = [
        [label, statistics.median(values), min(values), max(values), statistics.median(cpu[label])]
        for label, values in rates.items()
    ]
    print(
        table(
            f"Hits of {args.customers:,} distinct warmed customers from Redis: "
            f"{args.connections} connections, {args.rounds} rounds of {args.seconds:g}s",
            ["server", "median req/s", "min", "max", "CPU us/answer"],
            rows,
        )
    )
    ratio = statistics.median(rates[PROXY]) / statistics.median(rates[BARE])
    by_cpu = statistics.median(cpu[BARE]) / statistics.median(cpu[PROXY])
    print(f"ratio wallet-proxy / bare Flask + redis-py: {ratio:.2f} (goal >= 1.0)")
    print(f"  by CPU per answer: {by_cpu:.2f}")


if __name__ == "__main__":
    main()
