"""The shared store behind staff sessions, history, login counts and Idempotency-Key
records: one contract, Redis and SQLite."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

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


def test_a_value_is_added_only_where_none_is_and_deleted_only_while_unchanged(store, clock):
    assert store.add("k", "first", ttl=60) is None
    assert store.add("k", "second", ttl=60) == "first"
    store.delete_if("k", "second")
    assert store.get("k") == "first"
    store.delete_if("k", "first")
    assert store.add("k", "third", ttl=0.2) is None
    clock.advance(seconds=1)
    wait_until(lambda: store.add("k", "fourth", ttl=60) is None, timeout=5)  # "third" expired
    assert store.get("k") == "fourth"


def test_of_many_adding_at_once_one_wins(tmp_path, clock):
    """Workers are processes: each opens the SQLite file itself."""
    path = tmp_path / "shared.sqlite3"
    stores = [SqliteSharedStore(path, unix_time=lambda: clock().timestamp()) for _ in range(8)]
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda n: stores[n].add("k", f"v{n}", ttl=60), range(8)))
    (winner,) = [n for n, value in enumerate(found) if value is None]
    assert set(found) == {None, f"v{winner}"}


def test_counters_count_expire_a_window_after_their_last_count_and_can_be_deleted(store, clock):
    assert store.counted("c") == (0, 0.0)
    assert [store.count("c", ttl=60) for _ in range(3)] == [1, 2, 3]
    count, left = store.counted("c")
    assert count == 3 and 59 <= left <= 60
    store.delete("c")
    assert store.counted("c") == (0, 0.0)
    store.count("short", ttl=0.2)
    clock.advance(seconds=1)
    wait_until(lambda: store.counted("short") == (0, 0.0), timeout=5)
    assert store.count("short", ttl=60) == 1  # a new count, not the expired one's 2


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
        lambda: unreachable.add("k", "v", ttl=1),
        lambda: unreachable.delete_if("k", "v"),
        lambda: unreachable.count("k", ttl=1),
        lambda: unreachable.counted("k"),
    ):
        with pytest.raises(StoreUnavailable):
            call()
    broken = SqliteSharedStore(tmp_path / "s.sqlite3", unix_time=lambda: 0.0)
    (tmp_path / "s.sqlite3").write_bytes(b"not a database" * 100)
    with pytest.raises(StoreUnavailable):
        broken.get("k")
