"""The shared store behind staff sessions and history: one contract, Redis and SQLite."""

from __future__ import annotations

import pytest
import redis

from tests.helpers import wait_until
from wallet_proxy.errors import StoreUnavailable
from wallet_proxy.stores import RedisSharedStore, SharedStore, SqliteSharedStore


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path, clock) -> SharedStore:
    def unix_time() -> float:
        return clock().timestamp()

    if request.param == "redis":
        client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
        return RedisSharedStore(client, unix_time=unix_time)
    return SqliteSharedStore(tmp_path / "store.sqlite3", unix_time=unix_time)


def test_values_can_be_read_replaced_and_deleted(store):
    assert store.get("a") is None
    store.put("a", "one", ttl=60)
    store.put("a", "two", ttl=60)
    assert store.get("a") == "two"
    store.delete("a")
    store.delete("a")
    assert store.get("a") is None


def test_values_expire(store, clock):
    store.put("short", "x", ttl=0.2)
    store.put("long", "y", ttl=3600)
    clock.advance(seconds=1)  # SQLite's expiry follows the app's clock, Redis's its own
    wait_until(lambda: store.get("short") is None, timeout=5)
    assert store.get("long") == "y"


def test_logs_keep_the_newest_items_of_their_window(store, clock):
    for n in range(25):
        store.append("log", f"item {n}", keep=20, ttl=3600)
        clock.advance(seconds=1)
    store.append("other", "same text", keep=20, ttl=3600)
    store.append("other", "same text", keep=20, ttl=3600)
    assert store.recent("log", ttl=3600) == [f"item {n}" for n in range(24, 4, -1)]
    assert store.recent("other", ttl=3600) == ["same text", "same text"]
    clock.advance(seconds=3600 - 10)
    assert store.recent("log", ttl=3600) == [f"item {n}" for n in range(24, 14, -1)]
    assert store.recent("nothing", ttl=3600) == []


def test_a_log_forgets_what_is_older_than_its_window(store, clock):
    store.append("log", "old", keep=20, ttl=60)
    clock.advance(seconds=61)
    store.append("log", "new", keep=20, ttl=60)
    assert store.recent("log", ttl=3600) == ["new"]  # gone, not only hidden


def test_sqlite_is_shared_by_every_opener(tmp_path, clock):
    def unix_time() -> float:
        return clock().timestamp()

    path = tmp_path / "shared.sqlite3"
    first = SqliteSharedStore(path, unix_time=unix_time)
    second = SqliteSharedStore(path, unix_time=unix_time)
    first.put("k", "v", ttl=60)
    assert second.get("k") == "v"
    assert path.stat().st_mode & 0o777 == 0o600
    second.delete("k")
    assert first.get("k") is None


def test_an_unreachable_store_says_so(tmp_path, clock):
    client = redis.Redis.from_url("redis://127.0.0.1:9/0", socket_connect_timeout=0.2)
    unreachable = RedisSharedStore(client, unix_time=lambda: 0.0)
    for call in (
        lambda: unreachable.get("k"),
        lambda: unreachable.put("k", "v", ttl=1),
        lambda: unreachable.append("k", "v", keep=1, ttl=1),
    ):
        with pytest.raises(StoreUnavailable):
            call()
    broken = SqliteSharedStore(tmp_path / "s.sqlite3", unix_time=lambda: 0.0)
    (tmp_path / "s.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(StoreUnavailable):
        broken.get("k")
