"""The fleet's SessionM budget: GCRA in Redis, priorities, the 429 pause, the fallback.

The arithmetic is proved on the in-process budget with time moved by hand; the same
rules in the Lua script against a real redis-server; the behaviour over real HTTP
(the sandbox counting what reaches it, and its `rate_limit` playing SessionM's own).
The limiter across two gunicorn masters sharing one redis-server is the last (slow) test.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
import requests

from tests.helpers import (
    API_KEY,
    CI_ALLOWANCE,
    CI_RATE_FACTOR,
    GunicornInstance,
    LiveServer,
    free_port,
    wait_until,
)
from wallet_proxy.budget import (
    REDIS_STALLED,
    Claim,
    Fleet,
    LocalBudget,
    Priority,
    SharedBudget,
    paced_rate,
)
from wallet_proxy.config import ConfigError, Settings
from wallet_proxy.container import services
from wallet_proxy.errors import UpstreamBusy
from wallet_proxy.redis_clients import RENDER, RedisHealth, RedisNotConnected, connect
from wallet_proxy.sandbox import (
    DEMO_CORE_API_KEY,
    DEMO_CORE_API_SECRET,
)

AUTH = {"Authorization": f"Bearer {API_KEY}"}
ROOT = Path(__file__).resolve().parent.parent
SHARES = {Priority.WAITING: 1.0, Priority.BULK: 0.8, Priority.REFRESH: 0.5}
PACED = paced_rate(20)  # what a budget of 20/s sustains: 22 in any 1.2 s


class Timeline:
    """Time moved by hand, for callers taking turns: each `arrive`s at `now`, and what it
    sleeps moves its own clock only, so a crowd can arrive at the same moment."""

    def __init__(self):
        self.now = 1000.0
        self.slept: list[float] = []  # the current caller's sleeps

    def arrive(self) -> None:
        self.slept = []

    def __call__(self) -> float:
        return self.now + sum(self.slept)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def local(rate: float, timeline: Timeline) -> LocalBudget:
    return LocalBudget(rate, SHARES, timer=timeline, sleep=timeline.sleep)


def admitted(budget, claim: Claim) -> bool:
    try:
        budget.acquire(claim)
    except UpstreamBusy:
        return False
    return True


def ask(budget, timeline: Timeline, priority: Priority, patience: float | None = None):
    """The instant a caller arriving now sends its request; None if it is refused."""
    timeline.arrive()
    wait_until = None if patience is None else timeline.now + patience
    return timeline() if admitted(budget, Claim(priority, wait_until)) else None


def busiest_second(instants: list[float]) -> int:
    ordered = sorted(instants)
    start, most = 0, 0
    for end, moment in enumerate(ordered):
        while ordered[start] <= moment - 1.0:
            start += 1
        most = max(most, end - start + 1)
    return most


# --- the arithmetic, on the in-process budget --------------------------------------


def test_waiting_requests_queue_to_their_deadline_and_no_second_sees_more_than_1_1x():
    timeline = Timeline()
    budget = local(20, timeline)
    sent = []
    for _ in range(400):  # a crowd arriving every 10 ms, 5 x the rate, for 4 s
        moment = ask(budget, timeline, Priority.WAITING, patience=1.4)
        if moment is not None:
            assert moment <= timeline.now + 1.4 + 1e-9  # within its deadline
            sent.append(moment)
        timeline.now += 0.01
    assert busiest_second(sent) <= 22  # 1.1 x 20
    assert PACED == 22 / 1.2
    assert len(sent) >= PACED * (4 + 1.4) - 2  # the rest were told to come back


def test_a_render_refused_is_told_when_the_queue_has_room():
    timeline = Timeline()
    budget = local(20, timeline)
    while ask(budget, timeline, Priority.WAITING, patience=1.4) is not None:
        pass  # 1.4 s of queue, all booked at once
    timeline.arrive()
    with pytest.raises(UpstreamBusy) as refused:
        budget.acquire(Claim(Priority.WAITING, timeline.now + 1.4))
    assert refused.value.status == 503
    assert refused.value.code == "upstream_unavailable"
    assert refused.value.retry_after == 2  # the queue is 1.4 s and a bit long


def test_a_waiting_render_beats_bulk_and_refreshes():
    timeline = Timeline()
    budget = local(20, timeline)
    renders, others = [], []
    for step in range(1000):  # 10 s: renders want 14/s, warm and refreshes 100/s each
        if step % 100 < 98 and step % 7 == 0:
            renders.append(ask(budget, timeline, Priority.WAITING, patience=1.4))
        others.append(ask(budget, timeline, Priority.BULK))
        others.append(ask(budget, timeline, Priority.REFRESH))
        timeline.now += 0.01
    assert None not in renders  # every render served, within its deadline
    went = [moment for moment in others if moment is not None]
    # The rest of the budget goes to the others, and never more than the whole of it.
    assert busiest_second(renders + went) <= 22
    assert len(renders) + len(went) >= 0.9 * PACED * 10


def test_bulk_and_refreshes_are_capped_at_their_share_when_alone():
    for priority, share in ((Priority.BULK, 0.8), (Priority.REFRESH, 0.5)):
        timeline = Timeline()
        budget = local(20, timeline)
        went = 0
        for _ in range(10_000):  # 10 s, asking every millisecond
            went += ask(budget, timeline, priority) is not None
            timeline.now += 0.001
        # At most its share; a little less, as each ask lands a little after a slot.
        assert 0.9 * PACED * share * 10 <= went <= PACED * share * 10 + 2, (priority, went)


def test_bulk_waits_for_room_instead_of_queueing_ahead_of_renders():
    timeline = Timeline()
    budget = local(20, timeline)
    while ask(budget, timeline, Priority.WAITING, patience=1.0) is not None:
        pass
    # Nothing left now: a refresh is skipped at once; bulk work books nothing but sleeps
    # until the renders' queue has gone, then goes.
    assert ask(budget, timeline, Priority.REFRESH) is None
    went = ask(budget, timeline, Priority.BULK, patience=5)
    assert went is not None
    assert len(timeline.slept) == 1
    assert timeline.now + 1.0 <= went <= timeline.now + 1.15
    assert ask(budget, timeline, Priority.BULK, patience=0.01) is None


def test_a_pause_holds_every_priority_back():
    timeline = Timeline()
    budget = local(20, timeline)
    budget.pause(5)
    timeline.arrive()
    with pytest.raises(UpstreamBusy) as refused:
        budget.acquire(Claim(Priority.WAITING, timeline.now + 1.4))
    assert refused.value.retry_after == 5
    assert ask(budget, timeline, Priority.BULK) is None
    assert ask(budget, timeline, Priority.WAITING, patience=6) == timeline.now + 5


def test_threads_waking_late_do_not_go_out_in_a_bunch():
    # 28 renders book 1.5 s of queue at 20/s (paced: 18.3/s); the threads of the first 21
    # all wake at the same moment, 1 s on (a busy machine): checking in as they go, no
    # second sees more than 22 of them go, and none is lost. Each may wait for the queue and
    # what a loaded machine adds to starting 28 threads and booking.
    queue = 28 / PACED
    budget = LocalBudget(20, SHARES)
    started = time.monotonic()
    woken = threading.Semaphore(21)
    sent: list[float] = []
    lock = threading.Lock()

    def late_for_some(seconds: float) -> None:
        if time.monotonic() - started < 0.5 and woken.acquire(blocking=False):
            time.sleep(max(0.0, started + 1.0 - time.monotonic()))
        else:
            time.sleep(seconds)

    budget.sleep = late_for_some

    def render(_: int) -> None:
        assert admitted(budget, Claim(Priority.WAITING, started + queue + CI_ALLOWANCE))
        with lock:
            sent.append(time.monotonic())

    with ThreadPoolExecutor(28) as pool:
        list(pool.map(render, range(28)))
    assert len(sent) == 28
    assert busiest_second(sent) <= 23  # 22, and one for this test's own threads


# --- the same rules in Redis -------------------------------------------------------


@pytest.fixture
def prefix() -> str:
    """Keys of this test alone (earlier tests' fleets may still be reporting)."""
    return f"test-budget:{uuid.uuid4().hex}"


def shared(redis_url: str, prefix: str, rate: float, **kwargs) -> SharedBudget:
    """A budget with its own connection, standing for one process."""
    client = connect(redis_url, RENDER)
    fleet = Fleet(client, configured=kwargs.pop("fleet_size", None), prefix=prefix)
    health = RedisHealth(timer=kwargs.get("timer", time.monotonic))
    return SharedBudget(
        client, "connect", rate, SHARES, fleet, health=health, prefix=prefix, **kwargs
    )


def test_the_redis_budget_is_one_budget_for_several_processes(redis_url, prefix):
    # Two budgets with their own connections stand for two processes.
    budgets = [shared(redis_url, prefix, 20) for _ in range(2)]
    sent: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + 2.5

    def render(n: int) -> None:
        while time.monotonic() < stop:
            if admitted(budgets[n % 2], Claim(Priority.WAITING, time.monotonic() + 1.4)):
                with lock:
                    sent.append(time.monotonic())

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(render, range(16)))
    assert busiest_second(sent) <= 22  # 1.1 x 20
    # The budget's own count, kept in Redis for monitoring, of what it let go in a second.
    assert PACED - 1 <= int(budgets[0].client.get(budgets[0].peak_key)) <= 22
    assert len(sent) >= PACED * 2.5  # the budget is granted, not just refused


def test_priorities_in_the_lua_script(redis_url, prefix):
    # Renders book 1.2 s of queue, then sleep behind a gate until the checks are done.
    gate, sleeping = threading.Event(), []
    booking = shared(redis_url, prefix, 20, sleep=lambda _: sleeping.append(1) or gate.wait(10))
    other = shared(redis_url, prefix, 20)  # another process sees the same queue
    with ThreadPoolExecutor(30) as pool:
        renders = [
            pool.submit(admitted, booking, Claim(Priority.WAITING, time.monotonic() + 1.2))
            for _ in range(30)
        ]
        wait_until(lambda: sum(f.done() for f in renders) + len(sleeping) >= 30, timeout=10)
        assert not admitted(other, Claim(Priority.REFRESH))
        assert not admitted(other, Claim(Priority.BULK))
        with pytest.raises(UpstreamBusy) as refused:
            other.acquire(Claim(Priority.WAITING, time.monotonic() + 0.5))
        assert refused.value.retry_after in (1, 2)
        gate.set()
    assert sum(f.result() for f in renders) >= 20  # 1.2 s of queue at 20/s, and the first


def test_the_pause_is_seen_by_every_process(redis_url, prefix):
    first, second = shared(redis_url, prefix, 20), shared(redis_url, prefix, 20)
    first.pause(3)
    with pytest.raises(UpstreamBusy) as refused:
        second.acquire(Claim(Priority.WAITING, time.monotonic() + 1.0))
    assert 2 <= refused.value.retry_after <= 3
    assert not admitted(second, Claim(Priority.BULK))


def asked_for_5_seconds(budget: SharedBudget, timeline: Timeline) -> int:
    """Requests granted to one asking every millisecond (without waiting) for 5 s, Redis
    refusing connections: the process takes its own share at once."""
    went = 0
    for _ in range(5000):
        went += admitted(budget, Claim(Priority.WAITING))
        timeline.now += 0.001
    return went


def test_redis_down_each_process_takes_rate_over_the_fleet_size(redis_url, redis_server, prefix):
    fleet = [shared(redis_url, prefix, 40) for _ in range(4)]
    for budget in fleet:
        budget.fleet.touch()  # four processes have reported themselves
    wait_until(lambda: fleet[0].fleet.report() or fleet[0].fleet.size == 4, timeout=5)
    timeline = Timeline()
    budget = fleet[0]
    budget.timer, budget.sleep = timeline, timeline.sleep
    budget.health.timer = timeline
    redis_server.kill()
    paced = paced_rate(40 / 4)
    assert 0.9 * paced * 5 <= asked_for_5_seconds(budget, timeline) <= paced * 5 + 1


def test_a_refused_connection_falls_back_at_once(redis_server, redis_url, prefix):
    """Nothing was sent, so nothing can have been booked: no render is refused for a Redis
    that is plainly gone."""
    timeline = Timeline()
    budget = shared(redis_url, prefix, 40, timer=timeline, sleep=timeline.sleep)
    assert ask(budget, timeline, Priority.WAITING) is not None
    redis_server.kill()
    for _ in range(3):
        assert ask(budget, timeline, Priority.WAITING, patience=1) is not None
        timeline.now += 0.5


def test_a_redis_stall_refuses_requests_naming_redis_and_waits_on_it_no_more(
    redis_server, redis_url, prefix
):
    """The script may have run on a connection that then stalled: refused, Retry-After 1,
    and Redis not asked again for a second, so no render waits on it meanwhile."""
    timeline = Timeline()
    budget = shared(redis_url, prefix, 40, timer=timeline, sleep=timeline.sleep)
    assert ask(budget, timeline, Priority.WAITING) is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        for _ in range(3):
            timeline.arrive()
            started = time.monotonic()
            with pytest.raises(UpstreamBusy) as refused:
                budget.acquire(Claim(Priority.WAITING, timeline.now + 1))
            assert refused.value.retry_after == 1
            assert refused.value.message == REDIS_STALLED
            timeline.now += 0.3
        assert time.monotonic() - started < RENDER.answer_timeout  # the last: not asked
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)


def test_redis_health_falls_back_at_once_on_never_sent_else_after_two_seconds():
    now = [0.0]
    health = RedisHealth(timer=lambda: now[0])
    health.failed(redis.TimeoutError("Timeout reading from socket"))
    assert not health.usable() and not health.down  # a stall: not asked, not down
    now[0] += 1.0
    assert health.usable()
    health.failed(redis.ConnectionError("Connection closed by server."))
    assert not health.down  # failing for 1 s
    now[0] += 1.0
    health.failed(redis.TimeoutError("Timeout reading from socket"))
    assert health.down  # failing for 2 s: the local share
    health.succeeded()
    assert health.usable() and not health.down
    health.failed(RedisNotConnected("Error 111 connecting to localhost:6379."))
    assert health.down  # nothing was sent: at once


def test_redis_down_without_a_report_uses_the_fleet_size_setting(redis_server, redis_url, prefix):
    redis_server.kill()
    timeline = Timeline()
    budget = shared(redis_url, prefix, 40, fleet_size=5, timer=timeline, sleep=timeline.sleep)
    paced = paced_rate(40 / 5)
    assert 0.9 * paced * 5 <= asked_for_5_seconds(budget, timeline) <= paced * 5 + 1


# --- over HTTP ---------------------------------------------------------------------


@pytest.fixture
def budget_app(make_app):
    """The app factory with a SessionM budget: 20 calls a second unless a test says."""
    return lambda **settings: make_app(**{"WALLET_PROXY_SESSIONM_RATE": 20, **settings})


def test_a_render_without_budget_gets_503_with_retry_after_not_a_call(sandbox, budget_app):
    app = budget_app(WALLET_PROXY_SESSIONM_RATE=1, WALLET_PROXY_DEADLINE=1)
    sandbox.configure(latency=0.05)
    with LiveServer(app) as server, ThreadPoolExecutor(8) as pool:
        responses = list(
            pool.map(
                lambda n: requests.get(
                    f"{server.url}/v1/wallets/user-{n}", headers=AUTH, timeout=10
                ),
                range(8),
            )
        )
    served = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code == 503]
    assert len(served) + len(refused) == 8
    assert 1 <= len(served) <= 2  # one a second, for a 1 s deadline
    for response in refused:
        assert response.json()["error"]["code"] == "upstream_unavailable"
        assert int(response.headers["Retry-After"]) >= 1
    assert sandbox.stats()["calls"] == len(served)


def test_a_stale_copy_is_served_and_its_refresh_skipped_while_budget_is_short(
    clock, sandbox, budget_app
):
    app = budget_app(WALLET_PROXY_SESSIONM_RATE=0.5)
    client = app.test_client()
    assert client.get("/v1/wallets/demo-alice", headers=AUTH).status_code == 200
    assert sandbox.stats()["calls"] == 1  # the budget's next slot is 2 s away
    clock.advance(seconds=61)
    stale = client.get("/v1/wallets/demo-alice", headers=AUTH)
    assert stale.headers["X-Cache"] == "STALE"
    assert stale.get_json()["stale"] is True
    time.sleep(0.3)  # what a background refresh would have needed
    assert sandbox.stats()["calls"] == 1  # skipped: no room now
    # Later there is room again: the next stale answer's refresh goes through.
    wait_until(
        lambda: client.get("/v1/wallets/demo-alice", headers=AUTH).headers["X-Cache"] == "HIT",
        timeout=10,
    )
    assert sandbox.stats()["calls"] == 2


def test_sessionms_429_pauses_the_other_instance_too(sandbox, redis_url, budget_app):
    apps = [
        budget_app(
            WALLET_PROXY_REDIS_URL=redis_url,
            WALLET_PROXY_DEADLINE=0.5,
            WALLET_PROXY_BREAKER_THRESHOLD=100,
        )
        for _ in range(2)
    ]
    with LiveServer(apps[0]) as first, LiveServer(apps[1]) as second:
        sandbox.configure(status=429, retry_after=3)
        answer = requests.get(f"{first.url}/v1/wallets/user-1", headers=AUTH, timeout=5)
        assert answer.status_code == 503
        sandbox.configure(status=None)
        held = requests.get(f"{second.url}/v1/wallets/user-2", headers=AUTH, timeout=5)
        assert held.status_code == 503
        assert int(held.headers["Retry-After"]) >= 1
        assert sandbox.stats()["calls"] == 1  # the second instance did not call
        wait_until(
            lambda: (
                requests.get(
                    f"{second.url}/v1/wallets/user-2", headers=AUTH, timeout=5
                ).status_code
                == 200
            ),
            timeout=10,
        )
    assert sandbox.stats()["calls"] == 2


def test_a_429_without_retry_after_pauses_for_5_seconds(sandbox, budget_app):
    app = budget_app(WALLET_PROXY_DEADLINE=0.5)
    sandbox.configure(status=429, retry_after=None)
    client = app.test_client()
    assert client.get("/v1/wallets/user-1", headers=AUTH).status_code == 503
    sandbox.configure(status=None)
    held = client.get("/v1/wallets/user-2", headers=AUTH)
    assert held.status_code == 503
    assert 4 <= int(held.headers["Retry-After"]) <= 5
    assert sandbox.stats()["calls"] == 1


def test_the_tags_relay_refuses_with_retry_after_and_releases_the_key(sandbox, budget_app):
    app = budget_app(
        SESSIONM_CORE_URL=sandbox.url,
        SESSIONM_CORE_API_KEY=DEMO_CORE_API_KEY,
        SESSIONM_CORE_API_SECRET=DEMO_CORE_API_SECRET,
        WALLET_PROXY_SESSIONM_CORE_RATE=0.5,
        WALLET_PROXY_CORE_TIMEOUT=1,  # the relay waits half of it for budget
        WALLET_PROXY_TAGS_MODE="direct",
    )
    client = app.test_client()

    def tag(user_id: str):
        return client.post(
            f"/v1/users/{user_id}/tags",
            json={"tags": ["braze_visit"]},
            headers={**AUTH, "Idempotency-Key": f"key-{user_id}"},
        )

    assert tag("user-1").status_code == 200
    refused = tag("user-2")  # Core's next slot is 2 s away, past half the timeout
    assert refused.status_code == 503
    assert refused.get_json()["error"]["code"] == "upstream_unavailable"
    assert refused.headers["Retry-After"] in ("1", "2")
    assert len(sandbox.stats()["core_calls"]) == 1
    # The key was released: the retry is sent, not answered "in progress" or replayed.
    wait_until(lambda: tag("user-2").status_code == 200, timeout=10)
    assert [call["user_id"] for call in sandbox.stats()["core_calls"]] == ["user-1", "user-2"]


def test_without_redis_the_budget_is_per_process_and_start_up_says_so(
    caplog, budget_app, fresh_warnings
):
    with caplog.at_level(logging.WARNING):
        budget_app(WALLET_PROXY_FLEET_SIZE=4)
    assert "per process without WALLET_PROXY_REDIS_URL" in caplog.text
    assert "5 requests/s to Connect" in caplog.text  # 20 / 4


def per_process_warning(caplog, make) -> str:
    """The one warning about per-process budgets that building an app (`make`) writes."""
    with caplog.at_level(logging.WARNING):
        make()
    [warning] = [r.getMessage() for r in caplog.records if "per process" in r.getMessage()]
    return warning


def test_the_per_process_warning_leaves_out_a_rate_of_0(
    caplog, budget_app, fresh_warnings, sandbox
):
    """A rate of 0 is no budget, not "may send 0 requests/s"."""
    warning = per_process_warning(
        caplog,
        lambda: budget_app(
            WALLET_PROXY_FLEET_SIZE=2,
            WALLET_PROXY_SESSIONM_RATE=0,
            WALLET_PROXY_SESSIONM_CORE_RATE=50,
            SESSIONM_CORE_URL=sandbox.url,
            SESSIONM_CORE_API_KEY=DEMO_CORE_API_KEY,
            SESSIONM_CORE_API_SECRET=DEMO_CORE_API_SECRET,
        ),
    )
    assert "may send 25 requests/s to Core (the rates" in warning
    assert "Connect" not in warning


def test_the_per_process_warning_leaves_out_core_when_it_is_not_configured(
    caplog, budget_app, fresh_warnings
):
    warning = per_process_warning(
        caplog, lambda: budget_app(WALLET_PROXY_FLEET_SIZE=2, WALLET_PROXY_SESSIONM_CORE_RATE=50)
    )
    assert "may send 10 requests/s to Connect (the rates" in warning
    assert "Core" not in warning


def test_rate_zero_is_no_budget(budget_app):
    app = budget_app(WALLET_PROXY_SESSIONM_RATE=0, WALLET_PROXY_SESSIONM_CORE_RATE=0)
    assert services(app).connect_budget.rate == 0
    assert services(app).core_budget.rate == 0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WALLET_PROXY_SESSIONM_RATE", "-1"),
        ("WALLET_PROXY_SESSIONM_RATE", "fast"),
        ("WALLET_PROXY_SESSIONM_CORE_RATE", "nan"),
        ("WALLET_PROXY_SESSIONM_BULK_SHARE", "1.5"),
        ("WALLET_PROXY_SESSIONM_REFRESH_SHARE", "0"),
        ("WALLET_PROXY_FLEET_SIZE", "0"),
    ],
)
def test_budget_settings_fail_with_one_line_naming_the_variable(env, variable, value):
    with pytest.raises(ConfigError) as error:
        Settings.from_env({**env, variable: value})
    assert error.value.variable == variable
    assert str(error.value).startswith(f"{variable}: ")
    assert "\n" not in str(error.value)


def test_the_sandbox_enforces_its_rate_limit_and_counts_the_busiest_second(sandbox):
    sandbox.configure(rate_limit=5, retry_after=2)
    url = f"{sandbox.url}/offers/api/2.0/offers/get_user_offers"
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: requests.post(url, json={}, timeout=5), range(20)))
    limited = [r for r in answers if r.status_code == 429]
    # At most 5 a second get through: 20 calls within 3 s leave at least 5 refused.
    assert len(limited) >= 5
    assert {r.headers["Retry-After"] for r in limited} == {"2"}
    stats = sandbox.stats()
    assert stats["rate_limited"] == len(limited)
    assert stats["busiest_second"] >= 7  # refused calls count as calls SessionM saw
    with pytest.raises(ValueError, match="rate_limit"):
        sandbox.configure(rate_limit=0)


# --- the fleet: two gunicorn masters, one redis-server ------------------------------


class SandboxProcess:
    """The sandbox in a process of its own, as in the benchmarks: its clock for the busiest
    second is not slowed by this process's client threads."""

    def __enter__(self) -> SandboxProcess:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "wallet_proxy.cli", "sandbox", "--port", str(port)],
            stdout=subprocess.DEVNULL,
        )
        wait_until(self._ready, timeout=30)
        return self

    def _ready(self) -> bool:
        try:
            return requests.get(f"{self.url}/_sandbox/stats", timeout=5).ok
        except requests.RequestException:
            return False

    def configure(self, **knobs) -> None:
        requests.post(f"{self.url}/_sandbox/config", json=knobs, timeout=5).raise_for_status()

    def reset(self) -> None:
        requests.post(f"{self.url}/_sandbox/reset", timeout=5).raise_for_status()

    def stats(self) -> dict:
        return requests.get(f"{self.url}/_sandbox/stats", timeout=5).json()

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(timeout=30)


@pytest.mark.slow
def test_one_budget_across_two_gunicorn_masters(redis_url):
    rate = 20
    budgeted = {"WALLET_PROXY_REDIS_URL": redis_url, "WALLET_PROXY_SESSIONM_RATE": rate}
    with (
        SandboxProcess() as sessionm,
        GunicornInstance(sessionm.url, **budgeted) as first,
        GunicornInstance(sessionm.url, **budgeted) as second,
    ):
        # Every worker booted and has called SessionM once (connections made).
        for n in range(8):
            url = (first, second)[n % 2].url
            requests.get(f"{url}/v1/wallets/warm-up-{n}", headers=AUTH, timeout=10)
        sessionm.reset()
        # SessionM's own limit at twice the budget, as in the campaign benchmark.
        sessionm.configure(latency=0.1, latency_spread=0.1, rate_limit=2 * rate)
        started = time.monotonic()
        counter = iter(range(10**6))

        def render(n: int) -> list[requests.Response]:
            answers = []
            while time.monotonic() < started + 3:
                url = (first, second)[n % 2].url
                answers.append(
                    requests.get(
                        f"{url}/v1/wallets/user-{next(counter)}", headers=AUTH, timeout=10
                    )
                )
            return answers

        with ThreadPoolExecutor(24) as pool:
            answers = [a for batch in pool.map(render, range(24)) for a in batch]
        wait_until(lambda: sessionm.stats()["in_flight"] == 0, timeout=10)
        stats = sessionm.stats()
    # Four processes, each would send 20/s on its own: together they let at most 22 go in
    # their busiest second (1.1 x 20). What SessionM sees adds the scheduling of this
    # 2-core machine, shared with other suites, between the budget and the socket; the
    # exact bound at SessionM is measured by bench/campaign.py on a quiet machine
    # (docs/benchmarks.md): here it need only stay far from the 80 of four budgets and
    # under SessionM's own limit of 40.
    granted = redis.Redis.from_url(redis_url).get("wallet-proxy:budget:{connect}:peak")
    assert PACED - 1 <= int(granted) <= 1.1 * rate
    assert stats["busiest_second"] <= CI_RATE_FACTOR * rate
    assert stats["rate_limited"] == 0
    assert stats["calls"] >= 2 * rate  # the budget is used, not just refused
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) >= rate
    # Refused (503, with Retry-After), or booked too late to answer in time (the call
    # still lands in the cache, for Braze's retry).
    assert set(statuses) <= {200, 503, 504}
    assert all(int(a.headers["Retry-After"]) >= 1 for a in answers if a.status_code == 503)
