"""Benchmark 1: cache hits per second through gunicorn, against a bare Flask view
returning the same bytes under the same gunicorn settings (goal: ratio >= 0.9).

    python bench/hits.py [--seconds 5] [--rounds 3] [--connections 32]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import requests
from common import AUTH_HEADER, gunicorn, sandbox_process, table, wrk


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--worker-class", default="gthread")
    args = parser.parse_args()
    model = {"workers": args.workers, "threads": args.threads, "worker_class": args.worker_class}

    with sandbox_process() as sessionm, tempfile.NamedTemporaryFile(suffix=".json") as body:
        proxy_env = {"SESSIONM_CONNECT_URL": sessionm, "WALLET_PROXY_CACHE_TTL": 3600}
        with (
            gunicorn("wsgi:app", **model, **proxy_env) as proxy,
            gunicorn(
                "bench.bare_app:app", **model, **proxy_env, BENCH_BODY_FILE=body.name
            ) as bare,
        ):
            path = "/v1/wallets/demo-alice"
            name, _, value = AUTH_HEADER.partition(": ")
            first = requests.get(proxy + path, headers={name: value}, timeout=5)
            first.raise_for_status()
            body.write(first.content)
            body.flush()
            for url in (proxy, bare):  # both warm: caches filled, connections open
                wrk(url + path, connections=args.connections, seconds=1)
            rates = {"wallet-proxy (cache hit)": [], "bare Flask, same bytes": []}
            results = {}
            for _ in range(args.rounds):
                for label, url in zip(rates, (proxy, bare), strict=True):
                    result = wrk(url + path, connections=args.connections, seconds=args.seconds)
                    assert result["non2xx"] == 0 and result["errors"] == 0, result
                    rates[label].append(result["rate"])
                    results[label] = result
            hit = requests.get(proxy + path, headers={name: value}, timeout=5)
            assert hit.headers["X-Cache"] == "HIT" and hit.content == first.content

    rows = []
    for label, values in rates.items():
        rows.append(
            [label, statistics.median(values), min(values), max(values), results[label]["p99_ms"]]
        )
    ratio = statistics.median(rates["wallet-proxy (cache hit)"]) / statistics.median(
        rates["bare Flask, same bytes"]
    )
    print(
        table(
            f"Cache hits: {args.workers} {args.worker_class} workers x {args.threads} threads, "
            f"{args.connections} connections, {args.rounds} rounds of {args.seconds:g}s",
            ["server", "median req/s", "min", "max", "p99 ms (last round)"],
            rows,
        )
    )
    print(f"ratio wallet-proxy / bare Flask: {ratio:.2f} (goal >= 0.90)")


if __name__ == "__main__":
    main()
