"""What was last written to each Braze profile, in Redis or SQLite: kept, found by SessionM
customer, and forgotten KEEP after its last write, so the store is bounded."""

from __future__ import annotations

import pytest
import redis

from wallet_proxy.attributes.values import Loyalty, attributes_of, changed
from wallet_proxy.attributes.written import (
    DATABASE,
    KEEP,
    SYNC,
    TRIGGER,
    RedisWritten,
    SqliteWritten,
    Written,
    WrittenStoreError,
    written_store,
)
from wallet_proxy.braze_users import EMAIL, EXTERNAL_ID, USER_ALIAS, BrazeUser


class Clock:
    def __init__(self):
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", "redis"])
def store(request, tmp_path, clock):
    if request.param == "sqlite":
        return SqliteWritten(tmp_path / DATABASE, unix_time=clock)
    client = redis.Redis.from_url(request.getfixturevalue("redis_url"))
    return RedisWritten(client, unix_time=clock)


ANA = BrazeUser(EXTERNAL_ID, "ext-ana")
ALIAS = BrazeUser(USER_ALIAS, "ana", "loyalty")
MAIL = BrazeUser(EMAIL, "Ana@Example.com", prioritization=("identified",))


def test_kept_per_profile_and_found_by_sessionm_customer(store, clock):
    now = clock()
    first = Written(ANA, "sm-ana", {"sessionm_available_points": 1}, now, SYNC)
    store.put_many([first, Written(ALIAS, "sm-other", {"a": 2}, now, SYNC)])
    assert store.get(ANA) == first
    assert store.get(MAIL) is None
    later = Written(MAIL, "sm-ana", {"sessionm_available_points": 3}, now + 5, TRIGGER)
    store.put_many([later])
    assert store.get(MAIL) == later
    assert store.latest_for("sm-ana") == later  # the newest write for that customer
    assert store.latest_for("sm-nobody") is None


def test_forgotten_keep_after_the_last_write(store, clock):
    store.put_many([Written(ANA, "sm-ana", {"x": 1}, clock(), SYNC)])
    if isinstance(store, RedisWritten):
        ttl = store.client.ttl(f"{store.prefix}:user:{ANA.index}")
        assert KEEP - 5 <= ttl <= KEEP
        return
    clock.now += KEEP + 1
    assert store.get(ANA) is None and store.latest_for("sm-ana") is None
    store.put_many([Written(ALIAS, "sm-b", {"x": 1}, clock(), SYNC)])  # purges
    with store._connect() as db:
        assert db.execute("SELECT count(*) FROM written").fetchone()[0] == 1


def test_a_store_that_fails_says_so(tmp_path):
    dead = redis.Redis(port=1, socket_connect_timeout=0.2)
    with pytest.raises(WrittenStoreError):
        RedisWritten(dead, unix_time=Clock()).get(ANA)
    (tmp_path / "file").write_text("")
    with pytest.raises(WrittenStoreError):
        written_store(None, str(tmp_path / "file" / "data"), Clock())


def test_only_what_changed_and_a_null_when_nothing_is_known():
    now = attributes_of(Loyalty(10, 20, 0, None))
    assert changed(now, None) == now  # a null too: Braze may hold a value from before
    assert changed(now, now) == {}
    assert changed(now, {**now, "sessionm_offer_count": 2}) == {"sessionm_offer_count": 0}
    assert changed(now, {"sessionm_available_points": 10}) == {
        k: v for k, v in now.items() if k != "sessionm_available_points"
    }
