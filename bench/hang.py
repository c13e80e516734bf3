"""Benchmark 4: SessionM misbehaving (hanging, trickling bytes, answering in 5 s) under 64
concurrent distinct users: the share of answers out within WALLET_PROXY_DEADLINE
(goal 100 %), against a healthy SessionM in the same run as the baseline.

"Within the deadline" is measured at the client, allowing 100 ms for the loopback
trip and gunicorn's own accept and parse; the share within Braze's 2 s is shown too.

    python bench/hang.py [--requests 384] [--deadline 1.5] [--workers 2] [--threads 64]
"""

from __future__ import annotations

import argparse
import uuid

import loadgen
from common import API_KEY, gunicorn, sandbox_configure, sandbox_process, table

ALLOWANCE = 0.1
BRAZE_LIMIT = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=384)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--deadline", type=float, default=1.5)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    cases = [
        ("healthy, 100 ms (baseline)", {"latency": 0.1}),
        ("hangs (never answers)", {"hang": True}),
        ("trickles one byte every 50 ms", {"trickle": 0.05}),
        ("answers after 5 s", {"latency": 5}),
    ]
    rows = []
    with sandbox_process() as sessionm:
        for label, knobs in cases:
            # A fresh server per case: the breaker opened by one case would answer the next.
            sandbox_configure(sessionm, **{"hang": False, "trickle": 0, "latency": 0, **knobs})
            with gunicorn(
                "wsgi:app",
                workers=args.workers,
                threads=args.threads,
                SESSIONM_CONNECT_URL=sessionm,
                WALLET_PROXY_DEADLINE=args.deadline,
            ) as proxy:
                run = uuid.uuid4().hex[:8]
                paths = [f"/v1/wallets/user-{run}-{i}" for i in range(args.requests)]
                outcomes, _, _ = loadgen.run(
                    proxy,
                    paths,
                    connections=args.connections,
                    headers={"Authorization": f"Bearer {API_KEY}"},
                )
                seconds = [o.seconds for o in outcomes]
                within = sum(s <= args.deadline + ALLOWANCE for s in seconds) / len(seconds)
                statuses = sorted({o.status for o in outcomes})
            rows.append(
                [
                    label,
                    len(outcomes),
                    within,
                    sum(s <= BRAZE_LIMIT for s in seconds) / len(seconds),
                    loadgen.percentile(seconds, 0.99) * 1000,
                    max(seconds) * 1000,
                    " ".join(map(str, statuses)),
                ]
            )
        sandbox_configure(sessionm, hang=False)
    print(
        table(
            f"SessionM misbehaving: {args.connections} concurrent distinct users, deadline "
            f"{args.deadline:g} s, {args.workers} gthread workers x {args.threads} threads",
            [
                "SessionM",
                "requests",
                f"share within {args.deadline:g} s (+0.1)",
                "share within 2 s",
                "p99 ms",
                "max ms",
                "statuses",
            ],
            rows,
        )
    )
    worst = min(row[2] for row in rows[1:])
    print(
        f"worst share within the deadline: {worst:.2%} (goal 100 %); "
        f"ratio to healthy baseline: {worst / rows[0][2]:.2f}"
    )


if __name__ == "__main__":
    main()
