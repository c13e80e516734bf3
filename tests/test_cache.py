"""Shielding SessionM, in one process and across app instances sharing a real Redis.

The sandbox is real HTTP; its knobs make SessionM slow, failing or hanging, and
its stats count the calls it received and the most it saw at once.
"""

from __future__ import annotations

import gc
import time
import weakref
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import API_KEY, CI_ALLOWANCE, UNHURRIED, Clock, wait_until
from wallet_proxy import coordination
from wallet_proxy.answers import MEMO_OVERHEAD, AnswerMemo
from wallet_proxy.cache import Entry, MemoryCache, WalletKey
from wallet_proxy.container import services
from wallet_proxy.errors import UpstreamUnavailable
from wallet_proxy.redis_clients import RedisHealth
from wallet_proxy.sandbox import SandboxServer
from wallet_proxy.wallet import Offer, Wallet
from wallet_proxy.wallet_service import HIT, JITTER, Lookup

AUTH = {"Authorization": f"Bearer {API_KEY}"}


def get(app, user_id="demo-alice", **params):
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return app.test_client().get(f"/v1/wallets/{user_id}?{query}", headers=AUTH)


def at_once(count, fn):
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda i: fn(i), range(count)))


class Ticks:
    """A monotonic timer that tests move by hand: no sleeping out a cooldown."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_concurrent_cold_requests_make_one_call(sandbox, make_app):
    app = make_app()
    sandbox.configure(latency=0.3)
    responses = at_once(20, lambda _: get(app))
    assert [r.status_code for r in responses] == [200] * 20
    assert {r.headers["X-Cache"] for r in responses} == {"MISS"}
    assert sandbox.stats()["calls"] == 1


def test_waiters_are_woken_when_the_call_lands_not_by_polling(sandbox, make_app):
    # Not woken, they would sit out their deadline: it is set far past the call and what a
    # loaded machine adds, so the two can't be mistaken for each other.
    latency = 0.2
    app = make_app(WALLET_PROXY_DEADLINE=latency + 2 * CI_ALLOWANCE)
    sandbox.configure(latency=latency)
    started = time.monotonic()
    at_once(10, lambda _: get(app))
    assert time.monotonic() - started < latency + CI_ALLOWANCE


def test_a_failure_is_handed_to_every_waiter(sandbox, make_app):
    app = make_app()
    sandbox.configure(latency=0.2, status=500)
    responses = at_once(10, lambda _: get(app))
    assert {r.status_code for r in responses} == {502}
    assert sandbox.stats()["calls"] == 1


def test_stale_is_served_at_once_and_refreshed_once(clock, sandbox, make_app):
    # The refresh hangs until released, and a render that waited for it would answer at
    # its deadline, set far past what a loaded machine adds: "at once" is unmistakable.
    app = make_app(WALLET_PROXY_CACHE_TTL=60, WALLET_PROXY_DEADLINE=3 * CI_ALLOWANCE)
    first = get(app).get_json()
    clock.advance(seconds=61)
    sandbox.configure(hang=True)
    started = time.monotonic()
    stale = at_once(10, lambda _: get(app))
    assert time.monotonic() - started < CI_ALLOWANCE
    assert {r.headers["X-Cache"] for r in stale} == {"STALE"}
    assert all(r.get_json()["stale"] is True for r in stale)
    wait_until(lambda: sandbox.stats()["calls"] == 2, timeout=3)
    sandbox.configure(hang=False)
    wait_until(lambda: get(app).headers["X-Cache"] == "HIT", timeout=3)
    fresh = get(app)
    assert fresh.get_json()["stale"] is False
    assert fresh.get_json()["fetched_at"] > first["fetched_at"]
    assert sandbox.stats()["calls"] == 2


def test_stale_is_served_while_sessionm_is_down_until_too_old(clock, sandbox, make_app):
    app = make_app(WALLET_PROXY_CACHE_TTL=60, WALLET_PROXY_STALE_TTL=600)
    get(app)
    sandbox.configure(status=503)
    clock.advance(seconds=300)
    assert get(app).headers["X-Cache"] == "STALE"
    clock.advance(seconds=400)  # past fresh + stale: nothing left to serve
    gone = get(app)
    assert gone.status_code == 502


def test_stale_rescues_a_forced_refresh_that_fails(clock, sandbox, make_app):
    app = make_app()
    get(app)
    clock.advance(seconds=61)
    sandbox.configure(status=500)
    lookup = services(app).wallet_service.lookup("demo-alice", "en-US", refresh=True)
    assert lookup.stale


def test_not_found_is_cached_briefly(clock, sandbox, make_app):
    app = make_app(WALLET_PROXY_NEGATIVE_TTL=30)
    assert [get(app, "nobody").status_code for _ in range(3)] == [404, 404, 404]
    assert sandbox.stats()["calls"] == 1
    clock.advance(seconds=31)
    assert get(app, "nobody").status_code == 404
    assert sandbox.stats()["calls"] == 2


DEADLINE = 0.5


# Each holds the answer far past the deadline and what a loaded machine adds to it.
@pytest.mark.parametrize("knob", [{"hang": True}, {"trickle": 0.05}, {"latency": 3}])
def test_deadline_holds_whatever_sessionm_does(sandbox, knob, make_app):
    app = make_app(WALLET_PROXY_DEADLINE=DEADLINE)
    sandbox.configure(**knob)
    started = time.monotonic()
    response = get(app)
    elapsed = time.monotonic() - started
    sandbox.configure(hang=False)
    assert response.status_code == 504
    assert response.get_json()["error"]["code"] == "upstream_timeout"
    assert elapsed < DEADLINE + CI_ALLOWANCE


def test_deadline_serves_stale_when_sessionm_hangs(clock, sandbox, make_app):
    app = make_app(WALLET_PROXY_DEADLINE=DEADLINE)
    get(app)
    clock.advance(seconds=61)
    sandbox.configure(hang=True)
    started = time.monotonic()
    response = services(app).wallet_service.lookup("demo-alice", "en-US", refresh=True)
    sandbox.configure(hang=False)
    assert response.stale
    assert time.monotonic() - started < DEADLINE + CI_ALLOWANCE


def test_slow_answer_past_the_deadline_still_fills_the_cache(sandbox, make_app):
    app = make_app(WALLET_PROXY_DEADLINE=0.3, WALLET_PROXY_UPSTREAM_TIMEOUT=2)
    sandbox.configure(latency=0.6)
    assert get(app).status_code == 504
    service = services(app).wallet_service
    wait_until(lambda: service.peek("demo-alice", "en-US"), timeout=3)
    retried = get(app)  # Braze's :retry, or the next render of the same message
    assert (retried.status_code, retried.headers["X-Cache"]) == (200, "HIT")
    assert sandbox.stats()["calls"] == 1


def test_concurrency_cap_is_never_exceeded(make_app):
    # Time for each slot to serve three calls by the deadline, on a loaded machine too, and
    # more requests than the slots could serve by then even on an idle one (24).
    latency = 0.2
    deadline = 3 * latency + CI_ALLOWANCE
    with SandboxServer() as own:  # no calls left over from other tests in its counts
        app = make_app(
            SESSIONM_CONNECT_URL=own.url,
            WALLET_PROXY_UPSTREAM_CONCURRENCY=3,
            WALLET_PROXY_DEADLINE=deadline,
        )
        own.configure(latency=latency)
        responses = at_once(40, lambda i: get(app, f"user-{i}"))
        assert own.stats()["peak_concurrency"] == 3
    assert services(app).wallet_service.guard.peak == 3
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) >= 9  # the three slots, each used three times at least
    assert set(statuses) <= {200, 503, 504}
    # Those still queued for a slot at their deadline: 503, come back soon.
    queued = [r for r in responses if r.status_code == 503]
    assert queued
    for response in queued:
        assert response.get_json()["error"]["code"] == "upstream_unavailable"
        assert int(response.headers["Retry-After"]) >= 1


def test_breaker_opens_answers_fast_and_closes_after_a_probe(sandbox, make_app):
    app = make_app(WALLET_PROXY_BREAKER_THRESHOLD=3, WALLET_PROXY_BREAKER_COOLDOWN=0.3)
    breaker = services(app).wallet_service.guard.breaker
    breaker.timer = ticks = Ticks()
    sandbox.configure(status=500)
    assert [get(app, f"user-{i}").status_code for i in range(3)] == [502] * 3
    assert breaker.state == "open"
    refused = get(app, "user-99")
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert sandbox.stats()["calls"] == 3
    ticks.advance(0.35)
    assert breaker.state == "half-open"
    sandbox.configure(status=None)
    assert get(app, "user-100").status_code == 200
    assert breaker.state == "closed"
    assert app.test_client().get("/readyz").get_json()["checks"]["sessionm_circuit"] == "closed"


def test_breaker_ignores_not_found(sandbox, make_app):
    app = make_app(WALLET_PROXY_BREAKER_THRESHOLD=2)
    for i in range(5):
        assert get(app, f"nobody-{i}").status_code == 404
    assert services(app).wallet_service.guard.breaker.state == "closed"


def test_fresh_lifetime_has_jitter(clock, sandbox, make_app):
    app = make_app(WALLET_PROXY_CACHE_TTL=100)
    service = services(app).wallet_service
    lifetimes = set()
    for value in (0.0, 0.5, 1.0):
        service.rng = lambda v=value: v
        service.lookup(f"user-{value}", "en-US")
        entry = service.peek(f"user-{value}", "en-US")
        lifetimes.add(round(entry.fresh_until - clock().timestamp(), 6))
    assert lifetimes == {100.0, 100 * (1 - JITTER / 2), 100 * (1 - JITTER)}


def test_entry_survives_serialisation(sandbox, make_app):
    app = make_app()
    get(app)
    service = services(app).wallet_service
    entry = service.peek("demo-alice", "en-US")
    assert Entry.loads(entry.dumps()) == entry


# Shared cache: two app instances stand for two workers or two machines.


def test_instances_share_the_redis_cache(sandbox, redis_url, make_app):
    one = make_app(WALLET_PROXY_REDIS_URL=redis_url)
    two = make_app(WALLET_PROXY_REDIS_URL=redis_url)
    assert get(one).headers["X-Cache"] == "MISS"
    assert get(two).headers["X-Cache"] == "HIT"
    assert get(two, "nobody").status_code == 404
    assert get(one, "nobody").status_code == 404
    assert sandbox.stats()["calls"] == 2


def test_the_cache_can_have_a_redis_of_its_own(sandbox, redis_url, make_app):
    """Issue 19 item 1: wallets (and their locks) go to WALLET_PROXY_CACHE_REDIS_URL, so
    large ones never fill the Redis of the outbox and the budget."""
    import redis

    cache_url = redis_url.rsplit("/", 1)[0] + "/1"
    redis.Redis.from_url(cache_url).flushdb()
    settings = {"WALLET_PROXY_REDIS_URL": redis_url, "WALLET_PROXY_CACHE_REDIS_URL": cache_url}
    one, two = (make_app(**settings) for _ in range(2))
    assert get(one).headers["X-Cache"] == "MISS"
    assert get(two).headers["X-Cache"] == "HIT"
    assert sandbox.stats()["calls"] == 1
    assert redis.Redis.from_url(cache_url).keys("wallet-proxy:v2:wallet:*")
    assert not redis.Redis.from_url(redis_url).keys("wallet-proxy:v2:*")


def test_single_flight_holds_across_instances(sandbox, redis_url, monkeypatch, make_app):
    # The other instances' poll, a safety net under pub/sub, is put past the deadline, and
    # the deadline past the call and what a loaded machine adds: only pub/sub wakes them
    # in time.
    monkeypatch.setattr(coordination, "POLL_INTERVAL", 60.0)
    latency = 0.3
    apps = [
        make_app(
            WALLET_PROXY_REDIS_URL=redis_url,
            WALLET_PROXY_DEADLINE=latency + 2 * CI_ALLOWANCE,
        )
        for _ in range(3)
    ]
    sandbox.configure(latency=latency)
    started = time.monotonic()
    responses = at_once(30, lambda i: get(apps[i % 3]))
    assert [r.status_code for r in responses] == [200] * 30
    assert sandbox.stats()["calls"] == 1
    assert time.monotonic() - started < latency + CI_ALLOWANCE  # woken by pub/sub


def test_failure_is_shared_across_instances(sandbox, redis_url, make_app):
    apps = [make_app(WALLET_PROXY_REDIS_URL=redis_url) for _ in range(2)]
    sandbox.configure(latency=0.2, status=500)
    responses = at_once(10, lambda i: get(apps[i % 2]))
    assert {r.status_code for r in responses} == {502}
    assert sandbox.stats()["calls"] == 1


def test_a_shared_failure_keeps_its_class_even_a_new_one(redis_url, monkeypatch, make_app):
    class SessionMOnFire(UpstreamUnavailable):  # a class the service never names
        pass

    calls = []

    def fetch_wallet(user_id, culture, *, deadline, claim):
        calls.append(user_id)
        time.sleep(0.2)  # a slow failure, so the other instance is waiting on it
        raise SessionMOnFire()

    apps = [make_app(WALLET_PROXY_REDIS_URL=redis_url) for _ in range(2)]
    for app in apps:
        monkeypatch.setattr(services(app).wallet_service.client, "fetch_wallet", fetch_wallet)
    responses = at_once(2, lambda i: get(apps[i]))
    assert [r.status_code for r in responses] == [503, 503]  # not a generic 502
    assert len(calls) == 1


def test_service_survives_losing_redis(sandbox, redis_url, redis_server, make_app):
    app = make_app(WALLET_PROXY_REDIS_URL=redis_url, **UNHURRIED)
    services(app).redis_health.timer = ticks = Ticks()
    assert get(app).status_code == 200
    redis_server.kill()
    started = time.monotonic()
    assert get(app).status_code == 200  # the in-process copy
    assert get(app, "demo-bob").status_code == 200  # straight to SessionM
    assert time.monotonic() - started < CI_ALLOWANCE  # at once: no wait on Redis
    ready = app.test_client().get("/readyz")
    assert ready.status_code == 200
    assert ready.get_json()["status"] == "degraded"
    assert ready.get_json()["checks"]["redis"].startswith("unreachable")
    redis_server.start()
    ticks.advance(RedisHealth.RETRY_INTERVAL)  # Redis is tried again after a second
    assert app.test_client().get("/readyz").get_json()["status"] == "ok"
    assert get(app, "demo-carol", limit=1).status_code == 200


def test_an_unreadable_shared_entry_is_a_miss_not_an_error(sandbox, redis_url, make_app):
    import redis

    app = make_app(WALLET_PROXY_REDIS_URL=redis_url)
    assert get(app).status_code == 200
    client = redis.Redis.from_url(redis_url)
    (name,) = client.keys("*:wallet:*")
    client.set(name, b'{"written by": "another release"}')
    fresh_instance = make_app(WALLET_PROXY_REDIS_URL=redis_url)
    again = get(fresh_instance)
    assert (again.status_code, again.headers["X-Cache"]) == (200, "MISS")


def test_a_new_flight_is_not_answered_with_the_last_ones_failure(sandbox, redis_url, make_app):
    one, two = (make_app(WALLET_PROXY_REDIS_URL=redis_url) for _ in range(2))
    sandbox.configure(status=500)
    assert get(one).status_code == 502  # leaves its failure for waiters, for a second
    sandbox.configure(status=None, latency=0.3)
    responses = at_once(2, lambda i: get((one, two)[i]))
    assert [r.status_code for r in responses] == [200, 200]
    assert sandbox.stats()["calls"] == 2


# What a process keeps of wallets: bytes, not entries (issue 19 item 1).


def large_wallet(user_id: str, offers: int, text: str) -> Wallet:
    made = Offer(f"{user_id}-o", "o", "manual_fulfillment", text, text, "", "", "", 0, True, None)
    return Wallet(user_id, "en-US", 0, 0, (made,) * offers, Clock().now)


def test_the_process_cache_is_bounded_in_bytes_least_recently_used_first():
    memory = MemoryCache(max_bytes=3_000_000, unix_time=lambda: 0.0)
    entries = {n: Entry(large_wallet(f"u{n}", 1, "x" * 400_000), 0, 10, 20) for n in range(4)}
    keys = {n: WalletKey("r", "en-US", f"u{n}") for n in entries}
    for n in (0, 1, 2):
        memory.put(keys[n], entries[n])
    assert memory.get(keys[0]) is entries[0]  # 0 is now used more recently than 1
    memory.put(keys[3], entries[3])
    assert [n for n in keys if memory.get(keys[n]) is not None] == [0, 2, 3]
    assert memory.held_bytes == sum(entries[n].held_bytes() for n in (0, 2, 3)) <= 3_000_000


def test_an_entry_larger_than_the_bound_is_not_kept_nor_its_older_copy():
    memory = MemoryCache(max_bytes=1_000_000, unix_time=lambda: 0.0)
    key = WalletKey("r", "en-US", "u")
    memory.put(key, Entry(large_wallet("u", 1, "small"), 0, 10, 20))
    memory.put(key, Entry(large_wallet("u", 1, "x" * 1_000_000), 0, 10, 20))
    assert memory.get(key) is None
    assert memory.held_bytes == 0


def test_a_wallet_is_measured_by_its_memory_not_its_json():
    """One emoji makes a text take 4 bytes a character in memory: JSON would say 1."""
    ascii_only = large_wallet("u", 10, "x" * 100_000)
    with_emoji = large_wallet("u", 10, "x" * 100_000 + "\N{GRINNING FACE}")
    assert with_emoji.held_bytes() > 3.9 * ascii_only.held_bytes()


def test_the_answer_memo_keeps_no_wallet_alive_and_is_bounded_in_bytes(clock):
    memo = AnswerMemo(max_bytes=100_000)
    wallet = large_wallet("u", 2, "y" * 10_000)
    first = memo.render(Lookup(wallet, HIT), clock.now, None)
    assert memo.render(Lookup(wallet, HIT), clock.now, None) is first  # memoised
    assert memo.held_bytes == MEMO_OVERHEAD + len(first)
    gone = weakref.ref(wallet)
    del wallet
    gc.collect()
    assert gone() is None
    for n in range(20):  # 20 answers of 20 KB: only the newest fit in 100 KB
        memo.render(Lookup(large_wallet(f"v{n}", 2, "z" * 10_000), HIT), clock.now, None)
    assert memo.held_bytes <= 100_000


def test_a_hit_on_the_shared_cache_reads_a_stamp_not_the_wallet(sandbox, redis_url, make_app):
    """Only a version this process has not decoded yet is read whole from Redis."""
    import redis

    one, two = (make_app(WALLET_PROXY_REDIS_URL=redis_url) for _ in range(2))
    get(one, "demo-carol")
    assert get(two, "demo-carol").headers["X-Cache"] == "HIT"  # read whole, decoded once
    client = redis.Redis.from_url(redis_url)
    client.config_resetstat()
    for _ in range(5):
        assert get(two, "demo-carol").headers["X-Cache"] == "HIT"
    stats = client.info("commandstats")
    assert stats["cmdstat_getrange"]["calls"] == 5
    assert "cmdstat_get" not in stats
