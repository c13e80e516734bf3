"""Benchmark 8: a webhook campaign to a segment, through the queued tags relay.

First the intake: webhooks stored per second by one instance (2 gunicorn workers, the
outbox in SQLite), closed-loop with wrk. Then the campaign: N webhooks (counter tags,
one customer each, each with its Idempotency-Key) offered open-loop at the delivery rate
`wallet-proxy plan --webhooks N` recommends, against a SessionM Core budget of 50/s.
Passes when none is refused, none is lost, p99 accept is under 2 s, each tagging is
applied exactly once, and the queue is drained within 1.1 x N / (the budget's paced
rate x the bulk share: the tags worker's priority, BULK).

    python bench/webhooks.py [--webhooks 20000] [--core-latency 0.05]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import requests
from common import API_KEY, POST_PROLOGUE, gunicorn, sandbox_process, table, wrk

from wallet_proxy.budget import PROMISE, paced_rate
from wallet_proxy.bulk.plan import INTAKE_PER_SECOND, INTAKE_SHARE, make_webhook_plan
from wallet_proxy.config import Settings
from wallet_proxy.sandbox import DEMO_CORE_API_KEY, DEMO_CORE_API_SECRET
from wallet_proxy.tags.model import TAGS
from wallet_proxy.tags.worker import WORKER_PRIORITY
from wallet_proxy.triggers.model import DEAD, QUEUED, SENDING, SENT, UNKNOWN
from wallet_proxy.triggers.sqlite_outbox import SqliteOutbox

CORE_RATE = 50
ACCEPT_P99_LIMIT = 2.0
TAG = "bench_visit"
INTAKE_SCRIPT = (
    POST_PROLOGUE
    + """
request = function()
  counter = counter + 1
  local path = "/v1/users/intake-RUN-" .. tostring(tid) .. "-" .. tostring(counter) .. "/tags"
  return wrk.format(nil, path, nil, '{"tags": ["bench_intake"], "ttl": 2592000}')
end
"""
)


def core_settings(sandbox: str, **extra: object) -> dict[str, object]:
    return {
        "SESSIONM_CONNECT_URL": sandbox,
        "SESSIONM_CORE_URL": sandbox,
        "SESSIONM_CORE_API_KEY": DEMO_CORE_API_KEY,
        "SESSIONM_CORE_API_SECRET": DEMO_CORE_API_SECRET,
        "WALLET_PROXY_SESSIONM_CORE_RATE": CORE_RATE,
        **extra,
    }


@contextmanager
def instance(sandbox: str) -> Iterator[tuple[str, str]]:
    """One instance as deployed (2 gthread workers x 64 threads), its outbox in SQLite in a
    fresh data folder: (its URL, the folder)."""
    with (
        tempfile.TemporaryDirectory() as folder,
        gunicorn(
            "wsgi:app",
            workers=2,
            threads=64,
            **core_settings(sandbox),
            WALLET_PROXY_DATA_DIR=folder,
        ) as url,
    ):
        yield url, folder


def measure_intake(sandbox: str, *, connections: int, seconds: float) -> dict:
    """Webhooks stored per second by a fresh instance, as many as wrk can send."""
    with instance(sandbox) as (url, _):
        script = INTAKE_SCRIPT.replace("RUN", uuid.uuid4().hex[:8])
        result = wrk(url, connections=connections, seconds=seconds, script=script)
    assert result["errors"] == 0 and result["non2xx"] == 0, result
    return result


def offer(url: str, webhooks: int, per_second: float) -> tuple[list[float], Counter]:
    """Open loop: webhook i is sent at start + i / per_second whatever the answers before
    it; (each accept's seconds, answers by status)."""
    latencies: list[float] = []
    statuses: Counter = Counter()
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": "bench-dispatch"}

    def one(n: int) -> None:
        begin = time.monotonic()
        try:
            answer = requests.post(
                f"{url}/v1/users/user-bench-{n}/tags",
                json={"tags": [TAG]},
                headers=headers,
                timeout=90,  # Braze's own timeout for a webhook
            )
            status = answer.status_code
        except requests.RequestException:
            status = 0
        with lock:
            latencies.append(time.monotonic() - begin)
            statuses[status] += 1

    threads = []
    start = time.monotonic()
    for n in range(webhooks):
        time.sleep(max(0.0, start + n / per_second - time.monotonic()))
        thread = threading.Thread(target=one, args=(n,), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    return latencies, statuses


def queue_counts(folder: str) -> dict[str, int]:
    outbox = SqliteOutbox(folder).for_queue(TAGS)
    try:
        return outbox.counts()
    finally:
        outbox.close()


def busiest_second(calls: list[dict]) -> int:
    """The most Core calls that arrived in any one-second window."""
    times = sorted(call["at"] for call in calls)
    busiest, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= 1.0:
            first += 1
        busiest = max(busiest, last - first + 1)
    return busiest


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--webhooks", type=int, default=20_000)
    parser.add_argument("--core-latency", type=float, default=0.05, help="SessionM Core's, s")
    parser.add_argument("--intake-seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    settings = Settings.from_env(
        {k: str(v) for k, v in core_settings("http://sandbox.invalid").items()}, needs=()
    )
    plan = make_webhook_plan(settings, args.webhooks)
    per_second = plan.per_minute / 60
    drain_limit = 1.1 * args.webhooks / (paced_rate(CORE_RATE) * settings.bulk_share)
    with sandbox_process(latency=args.core_latency) as sandbox:
        intake = measure_intake(sandbox, connections=args.connections, seconds=args.intake_seconds)
        requests.post(f"{sandbox}/_sandbox/reset", timeout=5).raise_for_status()
        requests.post(
            f"{sandbox}/_sandbox/config", json={"latency": args.core_latency}, timeout=5
        ).raise_for_status()
        with instance(sandbox) as (url, folder):
            started = time.monotonic()
            latencies, statuses = offer(url, args.webhooks, per_second)
            offered_for = time.monotonic() - started
            while True:
                counts = queue_counts(folder)
                if counts[QUEUED] + counts[SENDING] == 0:
                    break
                if time.monotonic() - started > 3 * drain_limit:
                    break
                time.sleep(0.5)
            drained = time.monotonic() - started
            calls = requests.get(f"{sandbox}/_sandbox/stats", timeout=120).json()["core_calls"]
    per_customer = Counter(call["user_id"] for call in calls)
    applied_once = sum(1 for n in range(args.webhooks) if per_customer[f"user-bench-{n}"] == 1)
    refused = args.webhooks - statuses[202]
    lost = args.webhooks - counts[SENT] - counts[UNKNOWN] - counts[DEAD]
    p99 = percentile(latencies, 0.99)
    print(
        table(
            f"Intake: one instance (2 gthread workers x 64 threads, SQLite outbox), "
            f"{args.connections} connections, {args.intake_seconds:g} s",
            ["webhooks stored/s", "p99 ms", "plan counts with", "plan's rate uses"],
            [
                [
                    intake["rate"],
                    intake["p99_ms"],
                    f"{INTAKE_PER_SECOND}/s",
                    f"{INTAKE_SHARE:.0%} of it: {per_second:,.0f}/s",
                ]
            ],
        )
    )
    print(
        table(
            f"A webhook campaign of {args.webhooks:,} (counter tags, one customer each), "
            f"open-loop at plan's {plan.per_minute:,}/min, Core budget {CORE_RATE}/s, "
            f"Core latency {args.core_latency * 1000:g} ms",
            [
                "offered in",
                "202",
                "refused",
                "accept p50 / p99 ms",
                "applied / unknown / dead",
                "lost",
                "applied exactly once",
                "drained in (limit)",
                f"Core's busiest second (<= {PROMISE * CORE_RATE:g})",
            ],
            [
                [
                    f"{offered_for:.0f} s",
                    statuses[202],
                    refused,
                    f"{percentile(latencies, 0.5) * 1000:.0f} / {p99 * 1000:.0f}",
                    f"{counts[SENT]:,} / {counts[UNKNOWN]} / {counts[DEAD]}",
                    lost,
                    f"{applied_once:,}",
                    f"{drained:.0f} s ({drain_limit:.0f} s)",
                    busiest_second(calls),
                ]
            ],
        )
    )
    print(
        f"drain limit: 1.1 x {args.webhooks:,} / ({paced_rate(CORE_RATE):.3g}/s paced x "
        f"{settings.bulk_share:.0%}, the {WORKER_PRIORITY.value} share)"
    )
    failures = [
        f"{refused} refused" if refused else "",
        f"{lost} lost" if lost else "",
        f"p99 accept {p99:.2f} s" if p99 >= ACCEPT_P99_LIMIT else "",
        f"{args.webhooks - applied_once} not applied exactly once"
        if applied_once < args.webhooks
        else "",
        f"drained in {drained:.0f} s" if drained > drain_limit else "",
        "intake below plan's" if intake["rate"] < INTAKE_PER_SECOND else "",
    ]
    failures = [failure for failure in failures if failure]
    if failures:
        sys.exit("FAILED: " + "; ".join(failures))


if __name__ == "__main__":
    main()
