"""Benchmark 3: a Braze-like burst. N recipients (default 2,000), each requested 3 times
close together (HTML, plain text and AMP renders), as fast as the load generator goes
(the "sent over s" column: the target is within one second),
across 4 gunicorn workers: SessionM calls per recipient (goal: exactly 1.00) and p99
latency, with the shared Redis cache, against per-process caches as the baseline.

    python bench/burst.py [--recipients 2000] [--latency 0.1]
"""

from __future__ import annotations

import argparse
import uuid

import loadgen
from common import (
    API_KEY,
    gunicorn,
    redis_process,
    sandbox_configure,
    sandbox_process,
    sandbox_reset_counts,
    sandbox_stats,
    table,
)


def burst_paths(recipients: int) -> list[str]:
    """Blocks of 10 recipients whose 30 requests go out together, so each recipient's three
    renders arrive within milliseconds of each other, often at different workers."""
    run = uuid.uuid4().hex[:8]
    paths = []
    for block in range(0, recipients, 10):
        recipients_in_block = range(block, min(block + 10, recipients))
        for _render in range(3):
            paths += [f"/v1/wallets/user-{run}-{r}" for r in recipients_in_block]
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--connections", type=int, default=256)
    args = parser.parse_args()
    rows = []
    with sandbox_process() as sessionm, redis_process() as redis_url:
        setups = [
            ("per-process caches (baseline)", {}),
            ("shared Redis cache", {"WALLET_PROXY_REDIS_URL": redis_url}),
        ]
        for label, extra in setups:
            sandbox_configure(sessionm, latency=args.latency)
            with gunicorn(
                "wsgi:app",
                workers=args.workers,
                threads=32,
                SESSIONM_CONNECT_URL=sessionm,
                **extra,
            ) as proxy:
                sandbox_reset_counts(sessionm)
                outcomes, seconds, sending = loadgen.run(
                    proxy,
                    burst_paths(args.recipients),
                    connections=args.connections,
                    headers={"Authorization": f"Bearer {API_KEY}"},
                )
                stats = sandbox_stats(sessionm)
            latencies = [o.seconds * 1000 for o in outcomes]
            ok = sum(o.status == 200 for o in outcomes)
            rows.append(
                [
                    label,
                    len(outcomes),
                    sending,
                    len(outcomes) / seconds,
                    stats["calls"] / args.recipients,
                    ok / len(outcomes),
                    loadgen.percentile(latencies, 0.5),
                    loadgen.percentile(latencies, 0.99),
                    max(latencies),
                    stats["peak_concurrency"],
                ]
            )
    print(
        table(
            f"Burst: {args.recipients:,} recipients x 3 renders, {args.workers} workers, "
            f"SessionM latency {args.latency * 1000:g} ms",
            [
                "cache",
                "requests",
                "sent over s",
                "req/s",
                "SessionM calls per recipient",
                "share 200",
                "p50 ms",
                "p99 ms",
                "max ms",
                "SessionM peak concurrency",
            ],
            rows,
        )
    )
    print(
        f"SessionM calls per recipient with Redis: {rows[1][4]:.2f} (goal 1.00); "
        f"baseline without: {rows[0][4]:.2f}"
    )


if __name__ == "__main__":
    main()
