"""Benchmark 5: SessionM-triggered Braze messages. Accepted triggers per second through
gunicorn (each stored durably before its 202) against a bare Flask POST parsing the same
body under the same gunicorn settings; then end-to-end latency, from the POST to the
sandbox's Braze receiving the message, at a steady rate.

    python bench/triggers.py [--seconds 5] [--connections 32] [--rate 100]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager

import requests
from common import POST_PROLOGUE, free_port, gunicorn, sandbox_process, table, wrk

from wallet_proxy.sandbox import DEMO_BRAZE_API_KEY

TRIGGER_KEY = "bench-trigger-key-1"
PATH = "/v1/braze/triggers"
POST_SCRIPT = (
    POST_PROLOGUE
    + """
request = function()
  counter = counter + 1
  local n = "RUN-" .. tostring(tid) .. "-" .. tostring(counter)
  local body = '{"braze_campaign_id": "bench-campaign", "customer": {"external_id": "b-' .. n ..
    '"}, "offer": {"offer_id": "' .. n .. '", "title": "10 % off", "terms": "One per visit",' ..
    ' "expires_at": "2030-01-01T00:00:00Z"}, "points": {"award_amount": 100,' ..
    ' "account_name": "Loyalty"}, "campaign": {"id": "c-1", "name": "Bench"}}'
  return wrk.format(nil, nil, nil, body)
end
"""
)


def body(n: str) -> dict:
    return {
        "braze_campaign_id": "bench-campaign",
        "customer": {"external_id": f"b-{n}"},
        "offer": {"offer_id": n, "title": "10 % off", "expires_at": "2030-01-01T00:00:00Z"},
        "points": {"award_amount": 100},
    }


@contextmanager
def redis_with_aof():
    """redis-server as the outbox needs it: appendonly (fsync every second), noeviction."""
    binary = shutil.which("redis-server") or sys.exit("redis-server is not installed")
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        process = subprocess.Popen(
            [
                *(binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""),
                *("--dir", folder, "--appendonly", "yes", "--appendfsync", "everysec"),
            ],
            stdout=subprocess.DEVNULL,
        )
        try:
            import redis

            client = redis.Redis(port=port)
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if time.monotonic() > deadline:
                        sys.exit("redis-server did not start")
                    time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            process.wait(timeout=20)


def braze_messages(sandbox: str) -> list[dict]:
    return requests.get(f"{sandbox}/_sandbox/braze/stats", timeout=60).json()["braze_messages"]


def wait_settled(sandbox: str, at_least: int, timeout: float = 600) -> tuple[int, float]:
    """(messages, seconds) once Braze holds `at_least` and nothing more arrives for 1 s."""
    started = time.monotonic()
    seen, since = -1, time.monotonic()
    while True:
        count = len(braze_messages(sandbox))
        if count != seen:
            seen, since = count, time.monotonic()
        elif count >= at_least and time.monotonic() - since >= 1:
            return count, since - started
        if time.monotonic() - started > timeout:
            sys.exit(f"only {count} of {at_least} triggers delivered")
        time.sleep(0.1)


def steady(url: str, rate: float, seconds: float, run: str) -> tuple[dict[str, float], list]:
    """POST `rate` triggers a second for `seconds`: when each was sent, and each latency."""
    sent: dict[str, float] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    headers = {"Authorization": f"Bearer {TRIGGER_KEY}"}

    def one(n: str) -> None:
        begin = time.time()
        answer = requests.post(url + PATH, json=body(n), headers=headers, timeout=10)
        assert answer.status_code == 202, answer.text
        with lock:
            sent[n] = begin
            latencies.append(time.time() - begin)

    threads = []
    start = time.monotonic()
    for i in range(int(rate * seconds)):
        time.sleep(max(0.0, start + i / rate - time.monotonic()))
        thread = threading.Thread(target=one, args=(f"{run}-{i}",))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    return sent, latencies


def pct(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))] * 1000


def post_load(url: str, *, connections: int, seconds: float) -> dict:
    script = POST_SCRIPT.replace("RUN", uuid.uuid4().hex[:8])
    result = wrk(
        url + PATH,
        connections=connections,
        seconds=seconds,
        script=script,
        headers=(f"Authorization: Bearer {TRIGGER_KEY}",),
    )
    assert result["non2xx"] == 0 and result["errors"] == 0, result
    return result


BARE = "bare Flask POST (stores nothing)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=64)
    parser.add_argument("--rate", type=float, default=100, help="steady rate for latency")
    parser.add_argument("--latency-seconds", type=float, default=10)
    args = parser.parse_args()
    model = {"workers": args.workers, "threads": args.threads}
    rates: dict[str, list[float]] = {BARE: []}
    p99: dict[str, float] = {}
    drained, latency_rows = [], []
    with sandbox_process() as sandbox, redis_with_aof() as redis_url:
        settings = {
            "SESSIONM_CONNECT_URL": sandbox,
            "BRAZE_REST_URL": sandbox,
            "BRAZE_REST_API_KEY": DEMO_BRAZE_API_KEY,
            "WALLET_PROXY_TRIGGER_KEYS": TRIGGER_KEY,
        }
        backends = [
            ("SQLite outbox", {}),
            ("Redis outbox (AOF everysec)", {"WALLET_PROXY_REDIS_URL": redis_url}),
        ]
        with gunicorn("bench.bare_post:app", **model, **settings) as bare:
            for label, extra in backends:
                name = f"wallet-proxy, {label}"
                rates[name] = []
                requests.post(f"{sandbox}/_sandbox/reset", timeout=5).raise_for_status()
                with (
                    tempfile.TemporaryDirectory() as folder,
                    gunicorn(
                        "wsgi:app", **model, **settings, **extra, WALLET_PROXY_DATA_DIR=folder
                    ) as proxy,
                ):
                    accepted = post_load(proxy, connections=4, seconds=1)["requests"]
                    post_load(bare, connections=4, seconds=1)
                    for _ in range(args.rounds):
                        for key, url in ((name, proxy), (BARE, bare)):
                            result = post_load(
                                url, connections=args.connections, seconds=args.seconds
                            )
                            rates[key].append(result["rate"])
                            p99[key] = result["p99_ms"]
                            if key == name:
                                accepted += result["requests"]
                    delivered, seconds = wait_settled(sandbox, accepted)
                    drained.append([name, accepted, delivered, seconds])
                    requests.post(f"{sandbox}/_sandbox/reset", timeout=5).raise_for_status()
                    run = uuid.uuid4().hex[:8]
                    sent, post_latencies = steady(proxy, args.rate, args.latency_seconds, run)
                    wait_settled(sandbox, len(sent))
                    arrived = {
                        m["properties"]["offer_id"]: m["at"] for m in braze_messages(sandbox)
                    }
                    e2e = [arrived[n] - sent[n] for n in sent]
                    latency_rows.append(
                        [
                            name,
                            len(sent),
                            pct(post_latencies, 0.5),
                            pct(post_latencies, 0.99),
                            pct(e2e, 0.5),
                            pct(e2e, 0.99),
                            max(e2e) * 1000,
                        ]
                    )
    rows = [[k, statistics.median(v), min(v), max(v), p99[k]] for k, v in rates.items()]
    print(
        table(
            f"Accepted triggers: {args.workers} gthread workers x {args.threads} threads, "
            f"{args.connections} connections, {args.rounds} rounds of {args.seconds:g}s",
            ["server", "median accepted/s", "min", "max", "p99 ms (last round)"],
            rows,
        )
    )
    base = statistics.median(rates[BARE])
    for key, values in rates.items():
        if key != BARE:
            print(f"ratio {key} / bare Flask POST: {statistics.median(values) / base:.2f}")
    print()
    print(
        table(
            "Backlog of the throughput rounds (one deliverer per instance)",
            ["server", "accepted", "delivered to Braze", "s to drain after the load"],
            drained,
        )
    )
    print(
        table(
            f"End to end at {args.rate:g} triggers/s for {args.latency_seconds:g}s "
            "(batch window 250 ms)",
            [
                "server",
                "triggers",
                "POST p50 ms",
                "POST p99 ms",
                "to Braze p50 ms",
                "to Braze p99 ms",
                "max ms",
            ],
            latency_rows,
        )
    )


if __name__ == "__main__":
    main()
