"""Benchmark 7: a campaign send against SessionM's budget, as Braze would make it.

N recipients (default 2,000) through two service instances (separate gunicorn masters,
2 workers each) sharing one redis-server, with a SessionM sandbox that answers in
100-200 ms and enforces SessionM's own limit at twice the budget over a sliding second
(429 above it). A Braze-like sender delivers the messages at a delivery rate, renders
each one twice at once (2 s per render), follows `:retry` as Braze documents it (a
failed message goes to the back of the queue, retried up to 5 times after 2, 4, 8, 16,
32 s, Retry-After ignored, then aborted) and Braze's unhealthy-host rule (over 3,000
failures at over 90 % in a minute: no calls to the host for a minute).

Four set-ups x two delivery rates (the one `wallet-proxy plan` recommends, and 3 x the
budget): Braze straight to SessionM (the partner page's way), the service with the
budget off, with the budget, and with the budget after `wallet-proxy warm`.

    python bench/campaign.py [--recipients 2000] [--budget 20] [--setups budget warmed]

About 15 minutes with the defaults: each cold send of 2,000 at 20 requests/s takes at
least 100 s, and the warm-up 2 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import redis
from common import (
    API_KEY,
    ROOT,
    gunicorn,
    redis_process,
    sandbox_process,
    sandbox_reset_counts,
    sandbox_stats,
    table,
)

from wallet_proxy.bulk.plan import make_plan
from wallet_proxy.config import Settings
from wallet_proxy.sandbox import DEMO_CONNECT_AUTH, DEMO_RETAILER_ID

RENDER_TIMEOUT = 2.0  # Braze drops a Connected Content answer slower than this
RETRY_BACKOFF = (2, 4, 8, 16, 32)  # :retry, seconds before each retry
UNHEALTHY_FAILURES, UNHEALTHY_SHARE, UNHEALTHY_PAUSE = 3000, 0.9, 60.0
FAILURE_STATUSES = {0, 408, 429, 502, 503, 504, 529}  # 0: no answer in time
PEAK_KEY = "wallet-proxy:budget:{connect}:peak"  # the busiest second the budget let go
SETUPS = ["straight", "off", "budget", "warmed"]


@dataclass(frozen=True)
class Rendered:
    ok: bool
    status: int
    age: int = 0  # seconds since SessionM answered, for a wallet shown


async def http(url: str, method: str, path: str, headers: dict, body: bytes = b""):
    """(status, headers, body) over a new connection, as Braze's senders do; 0 on failure."""
    parts = urlsplit(url)
    head = [f"{method} {path} HTTP/1.1", f"Host: {parts.netloc}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    if body:
        head.append(f"Content-Length: {len(body)}")
    request = ("\r\n".join(head) + "\r\n\r\n").encode() + body

    async def exchange():
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        try:
            writer.write(request)
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            fields = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if value:
                    fields[name.strip().lower()] = value.strip()
            data = await reader.readexactly(int(fields.get("content-length", 0)))
            return int(lines[0].split(" ", 2)[1]), fields, data
        finally:
            writer.close()

    try:
        return await asyncio.wait_for(exchange(), RENDER_TIMEOUT)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
        return 0, {}, b""


def through_the_service(instances: list[str]) -> Callable[[str], Awaitable[Rendered]]:
    headers = {"Authorization": f"Bearer {API_KEY}", "Accept": "*/*"}

    async def render(user_id: str) -> Rendered:
        url = random.choice(instances)  # the load balancer
        status, fields, _ = await http(url, "GET", f"/v1/wallets/{user_id}", headers)
        return Rendered(status == 200, status, int(fields.get("age", 0)))

    return render


def straight_to_sessionm(sessionm: str) -> Callable[[str], Awaitable[Rendered]]:
    """Connected Content POSTing get_user_offers itself, with the Connect key in Braze."""
    headers = {
        "Authorization": f"Basic {DEMO_CONNECT_AUTH}",
        "Content-Type": "application/json",
    }

    async def render(user_id: str) -> Rendered:
        body = {"retailer_id": DEMO_RETAILER_ID, "user_id": user_id, "culture": "en-US"}
        status, _, data = await http(
            sessionm,
            "POST",
            "/offers/api/2.0/offers/get_user_offers",
            headers,
            json.dumps(body).encode(),
        )
        ok = status == 200 and json.loads(data or b"{}").get("status") == "ok"
        return Rendered(ok, status)

    return render


@dataclass
class Message:
    user_id: str
    attempts: int = 0
    eligible_at: float = 0.0


@dataclass
class Outcome:
    rendered: int = 0
    retried: int = 0  # messages that failed at least once
    aborted: int = 0
    ages: list[int] = field(default_factory=list)
    unhealthy_pauses: int = 0
    seconds: float = 0.0


class BrazeSender:
    """Delivery at `per_second` messages a second (each second's batch at once), `renders`
    renders per message, `:retry`, and the unhealthy-host rule."""

    def __init__(self, render: Callable[[str], Awaitable[Rendered]], per_second: int, renders):
        self.render = render
        self.per_second = per_second
        self.renders = renders
        self.outcome = Outcome()
        self.queue: deque[Message] = deque()
        self.window: deque[tuple[float, bool]] = deque()  # the last minute's renders
        self.unhealthy_until = 0.0
        self.running: set[asyncio.Task] = set()

    async def send(self, user_ids: list[str]) -> Outcome:
        loop = asyncio.get_running_loop()
        self.queue.extend(Message(user_id) for user_id in user_ids)
        started = tick = self.finished_at = loop.time()
        while self.queue or self.running:
            now = loop.time()
            skipped: deque[Message] = deque()
            taken = 0
            while self.queue and taken < self.per_second:
                message = self.queue.popleft()
                if message.eligible_at > now:
                    skipped.append(message)
                    continue
                task = asyncio.create_task(self._deliver(message))
                self.running.add(task)
                task.add_done_callback(self.running.discard)
                taken += 1
            self.queue.extendleft(reversed(skipped))
            tick += 1
            await asyncio.sleep(max(0.0, tick - loop.time()))
        self.outcome.seconds = self.finished_at - started
        return self.outcome

    async def _deliver(self, message: Message) -> None:
        loop = asyncio.get_running_loop()
        results = await asyncio.gather(
            *(self._render_once(message.user_id) for _ in range(self.renders))
        )
        self.finished_at = loop.time()
        if all(result.ok for result in results):
            self.outcome.rendered += 1
            self.outcome.ages.append(max(result.age for result in results))
            return
        message.attempts += 1
        if message.attempts == 1:
            self.outcome.retried += 1
        if message.attempts > len(RETRY_BACKOFF):
            self.outcome.aborted += 1
            return
        message.eligible_at = loop.time() + RETRY_BACKOFF[message.attempts - 1]
        self.queue.append(message)  # the back of the queue

    async def _render_once(self, user_id: str) -> Rendered:
        now = asyncio.get_running_loop().time()
        if now < self.unhealthy_until:
            return Rendered(False, 598)  # Braze's own answer: the host is not called
        result = await self.render(user_id)
        self._count(now, not result.ok and result.status in FAILURE_STATUSES)
        return result

    def _count(self, now: float, failed: bool) -> None:
        self.window.append((now, failed))
        while self.window and self.window[0][0] < now - 60:
            self.window.popleft()
        failures = sum(1 for _, bad in self.window if bad)
        if failures > UNHEALTHY_FAILURES and failures / len(self.window) > UNHEALTHY_SHARE:
            self.unhealthy_until = now + UNHEALTHY_PAUSE
            self.outcome.unhealthy_pauses += 1
            self.window.clear()


def recipients(count: int) -> list[str]:
    run = uuid.uuid4().hex[:8]
    return [f"user-{run}-{n}" for n in range(count)]


def warm_up(user_ids: list[str], env: dict) -> float:
    """`wallet-proxy warm` over a CSV of the recipients; its wall-clock seconds."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "campaign.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["user_id"])
            writer.writerows([user_id] for user_id in user_ids)
        started = time.monotonic()
        subprocess.run(
            [sys.executable, "-m", "wallet_proxy.cli", "warm", str(path), "--fresh-for", "1h"],
            cwd=ROOT,
            env=env,
            check=True,
            stderr=subprocess.DEVNULL,
        )
        return time.monotonic() - started


def service_env(sessionm: str, redis_url: str, budget: float) -> dict:
    return {
        "SESSIONM_CONNECT_URL": sessionm,
        "WALLET_PROXY_REDIS_URL": redis_url,
        "WALLET_PROXY_SESSIONM_RATE": str(budget),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipients", type=int, default=2000)
    parser.add_argument("--budget", type=float, default=20.0, help="SessionM requests/s")
    parser.add_argument("--renders", type=int, default=2)
    parser.add_argument(
        "--setups",
        nargs="+",
        choices=SETUPS,
        default=SETUPS,
        help="which set-ups to run (default: all four)",
    )
    args = parser.parse_args()
    settings = Settings.from_env(
        {
            "SESSIONM_CONNECT_URL": "http://sandbox",
            "SESSIONM_CONNECT_AUTH": DEMO_CONNECT_AUTH,
            "SESSIONM_RETAILER_ID": DEMO_RETAILER_ID,
            "WALLET_PROXY_API_KEYS": API_KEY,
            "WALLET_PROXY_SESSIONM_RATE": str(args.budget),
        }
    )
    plan = make_plan(settings, args.recipients, args.renders, None)
    rates = [
        ("plan's", round(plan.cold_per_minute / 60)),
        ("3 x budget", min(200, round(3 * args.budget))),
    ]
    knobs = {"latency": 0.1, "latency_spread": 0.1, "rate_limit": round(2 * args.budget)}
    rows = []

    def run(setup: str, render, users: list[str], sessionm: str, cold: bool, budgeted: bool):
        for label, per_second in rates:
            sandbox_reset_counts(sessionm)
            shared.delete(PEAK_KEY)
            sent = users if not cold else recipients(args.recipients)
            sender = BrazeSender(render, per_second, args.renders)
            outcome = asyncio.run(sender.send(sent))
            stats = sandbox_stats(sessionm)
            limit = args.recipients / per_second
            if cold:
                limit = max(limit, args.recipients / args.budget)
            ages = outcome.ages or [0]
            rows.append(
                [
                    setup,
                    f"{per_second}/s ({label})",
                    f"{100 * outcome.rendered / args.recipients:.1f} %",
                    outcome.retried,
                    outcome.aborted,
                    stats["calls"],
                    f"{int(shared.get(PEAK_KEY) or 0) if budgeted else '-'} / "
                    f"{stats['busiest_second']}",
                    stats["rate_limited"],
                    f"{outcome.seconds:.0f} s / {limit:.0f} s",
                    f"{statistics.median(ages):.0f} s / {max(ages)} s",
                    outcome.unhealthy_pauses,
                ]
            )
            print(" | ".join(str(cell) for cell in rows[-1]), flush=True)

    with sandbox_process(**knobs) as sessionm, redis_process() as redis_url:
        shared = redis.Redis.from_url(redis_url)
        if "straight" in args.setups:
            render = straight_to_sessionm(sessionm)
            run("Braze straight to SessionM", render, [], sessionm, True, False)
        for setup, budget in (("off", 0.0), ("budget", args.budget)):
            if setup not in args.setups and not (budget and "warmed" in args.setups):
                continue
            with ExitStack() as stack:
                instances = [
                    stack.enter_context(
                        gunicorn(
                            "wsgi:app",
                            workers=2,
                            threads=64,
                            **service_env(sessionm, redis_url, budget),
                        )
                    )
                    for _ in range(2)
                ]
                render = through_the_service(instances)
                name = "service, budget" if budget else "service, budget off (0)"
                if setup in args.setups:
                    run(name, render, [], sessionm, True, bool(budget))
                if budget and "warmed" in args.setups:
                    users = recipients(args.recipients)
                    env = {
                        **os.environ,
                        "SESSIONM_CONNECT_AUTH": DEMO_CONNECT_AUTH,
                        "SESSIONM_RETAILER_ID": DEMO_RETAILER_ID,
                        "WALLET_PROXY_API_KEYS": API_KEY,
                        **service_env(sessionm, redis_url, budget),
                    }
                    sandbox_reset_counts(sessionm)
                    shared.delete(PEAK_KEY)
                    seconds = warm_up(users, env)
                    warm_stats = sandbox_stats(sessionm)
                    print(
                        f"warm-up: {args.recipients:,} wallets in {seconds:.0f} s "
                        f"(plan said {plan.warm_seconds:.0f} s), busiest second (budget / "
                        f"SessionM) {int(shared.get(PEAK_KEY) or 0)} / "
                        f"{warm_stats['busiest_second']}, 429s {warm_stats['rate_limited']}",
                        flush=True,
                    )
                    run(f"{name} after warm-up", render, users, sessionm, False, True)
    print()
    print(
        table(
            f"Campaign: {args.recipients:,} recipients x {args.renders} renders, SessionM budget "
            f"{args.budget:g}/s (its own limit {knobs['rate_limit']}/s, 100-200 ms), "
            "2 instances x 2 workers, one Redis",
            [
                "set-up",
                "Braze delivery",
                "rendered",
                "retried",
                "aborted",
                "SessionM calls",
                "busiest second (budget / SessionM)",
                "429s",
                "send time / limit",
                "wallet age median / max",
                "unhealthy-host pauses",
            ],
            rows,
        )
    )


if __name__ == "__main__":
    main()
