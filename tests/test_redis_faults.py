"""Redis dying or stalling under real gunicorn workers: what Braze gets meanwhile.

A refused connection means nothing was sent, so every process falls back at once to its
own cache and its share of the SessionM budget: no render is refused for a Redis that is
plainly gone. A stall after a command was sent may have booked a budget slot: those
renders are refused in a message that names Redis, and none waits on Redis past its
deadline. Wallets a worker has read from Redis are kept locally, and served from there.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.helpers import CI_ALLOWANCE, GunicornInstance, RedisServer
from wallet_proxy.budget import OVER_BUDGET, REDIS_STALLED

pytestmark = pytest.mark.slow

DEADLINE = 1.5  # WALLET_PROXY_DEADLINE's default
BUDGETED = {"WALLET_PROXY_SESSIONM_RATE": 20}


@pytest.fixture
def own_redis():
    """A redis-server of this test alone: it is killed or stopped."""
    server = RedisServer().start()
    yield server
    if server.process.poll() is None:
        os.kill(server.process.pid, signal.SIGCONT)
    server.kill()


def timed(instance: GunicornInstance, user_id: str) -> tuple[int, str, float]:
    started = time.monotonic()
    answer = instance.get(user_id)
    message = (
        answer.json().get("error", {}).get("message", "") if answer.status_code != 200 else ""
    )
    return answer.status_code, message, time.monotonic() - started


def test_redis_killed_cold_wallets_are_fetched_at_once_by_every_worker(sandbox, own_redis):
    with GunicornInstance(
        sandbox.url, workers=4, WALLET_PROXY_REDIS_URL=own_redis.url, **BUDGETED
    ) as instance:
        for n in range(16):  # every worker has used Redis (pooled connections, the fleet)
            assert instance.get(f"user-warm-{n}").status_code == 200
        own_redis.kill()
        answers = [timed(instance, f"user-cold-{n}") for n in range(10)]
    assert [status for status, _, _ in answers] == [200] * 10, answers
    assert not [message for _, message, _ in answers if message == OVER_BUDGET]
    assert max(seconds for _, _, seconds in answers) < DEADLINE + CI_ALLOWANCE


def test_redis_stopped_wallets_read_from_redis_are_served_and_nothing_waits_on_it(
    sandbox, own_redis
):
    """One worker per instance, so which worker read what is known: instance A fetches the
    wallets from SessionM into Redis, instance B reads them from Redis, Redis stops."""
    shared = {"WALLET_PROXY_REDIS_URL": own_redis.url, **BUDGETED}
    wallets = [f"user-shared-{n}" for n in range(5)]
    with (
        GunicornInstance(sandbox.url, workers=1, **shared) as fetcher,
        GunicornInstance(sandbox.url, workers=1, **shared) as reader,
    ):
        for user_id in wallets:
            assert fetcher.get(user_id).headers["X-Cache"] == "MISS"
            assert reader.get(user_id).headers["X-Cache"] == "HIT"  # read from Redis
        calls = sandbox.stats()["calls"]
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        try:
            served = [timed(reader, user_id) for user_id in wallets * 2]
            cold = [timed(reader, f"user-new-{n}") for n in range(3)]
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)
    assert [status for status, _, _ in served] == [200] * len(served), served
    assert sandbox.stats()["calls"] - calls <= len(cold)  # the shared wallets: no new call
    for status, message, _ in cold:
        assert status == 200 or (status == 503 and message == REDIS_STALLED), cold
    assert max(seconds for _, _, seconds in served + cold) < DEADLINE + CI_ALLOWANCE
