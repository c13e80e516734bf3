"""The outbox's rules, on both backends: SQLite in a folder and a real redis-server."""

from __future__ import annotations

import sqlite3
import threading

import pytest
import redis

from wallet_proxy.braze_users import EMAIL, USER_ALIAS, BrazeUser
from wallet_proxy.triggers.model import DEAD, QUEUED, SENDING, SENT, UNKNOWN, Trigger
from wallet_proxy.triggers.outbox import (
    BODY_WINDOW,
    BROADCASTS_PER_MINUTE,
    DEAD_RETENTION,
    KEY_WINDOW,
    SENT_RETENTION,
    STALE_SENDING,
    Dedupe,
    DedupeConflict,
    OutboxError,
    OutboxFull,
    Queue,
)
from wallet_proxy.triggers.redis_outbox import RedisOutbox, persistence_warnings
from wallet_proxy.triggers.sqlite_outbox import FILE_NAME, SqliteOutbox

from .triggers_helpers import trigger as make

T0 = 1_800_000_000.0
WINDOW = 0.25
LEASE = 30.0


@pytest.fixture(params=["sqlite", "redis"])
def outbox(request, tmp_path):
    if request.param == "sqlite":
        box = SqliteOutbox(tmp_path / "data")
    else:
        box = RedisOutbox.from_url(request.getfixturevalue("redis_url"))
    yield box
    box.close()


def add(outbox, trigger: Trigger, *, key: str | None = None, now: float = T0, limit=1000):
    return outbox.add(trigger, Dedupe.of(trigger, key), now=now, max_waiting=limit)


def claim(outbox, *, owner="a", now=T0 + WINDOW, limit=500):
    return outbox.claim(owner=owner, now=now, window=WINDOW, lease=LEASE, limit=limit)


def test_accepted_trigger_is_queued_and_readable(outbox):
    trigger = make(offer_id="o-1")
    accepted = add(outbox, trigger)
    assert accepted.created and accepted.state == QUEUED
    assert accepted.trigger_id.startswith("trg_")
    record = outbox.get(accepted.trigger_id)
    assert record.trigger == trigger
    assert (record.state, record.accepted_at, record.queued_at, record.attempts) == (
        QUEUED,
        T0,
        T0,
        0,
    )
    assert outbox.counts() == {QUEUED: 1, SENDING: 0, SENT: 0, UNKNOWN: 0, DEAD: 0}
    assert outbox.oldest_queued() == T0
    assert outbox.get("trg_nothing") is None


def test_idempotency_key_answers_the_same_trigger_for_seven_days(outbox):
    first = add(outbox, make(), key="k-1")
    again = add(outbox, make(), key="k-1", now=T0 + KEY_WINDOW - 1)
    assert (again.trigger_id, again.created) == (first.trigger_id, False)
    with pytest.raises(DedupeConflict):
        add(outbox, make(offer_id="other"), key="k-1", now=T0 + 5)
    later = add(outbox, make(), key="k-1", now=T0 + KEY_WINDOW + 1)
    assert later.created and later.trigger_id != first.trigger_id


def test_identical_body_without_key_is_the_same_trigger_for_ten_minutes(outbox):
    first = add(outbox, make())
    assert add(outbox, make(), now=T0 + BODY_WINDOW - 1).trigger_id == first.trigger_id
    assert add(outbox, make(recipient="cust-2")).created  # another body
    assert add(outbox, make(), now=T0 + BODY_WINDOW + 1).created  # tomorrow's schedule


def test_repeat_reports_the_current_state(outbox):
    first = add(outbox, make(), key="k")
    claimed = claim(outbox)
    outbox.move("sending", [r.id for r in claimed], now=T0 + 1, owner="a", lease_until=T0 + 60)
    outbox.move("sent", [first.trigger_id], now=T0 + 2, owner="a", dispatch_id="d-1")
    again = add(outbox, make(), key="k", now=T0 + 3)
    assert (again.trigger_id, again.state, again.created) == (first.trigger_id, SENT, False)


def test_waiting_triggers_are_bounded(outbox):
    ids = [add(outbox, make(recipient=f"c-{i}"), limit=3).trigger_id for i in range(3)]
    with pytest.raises(OutboxFull):
        add(outbox, make(recipient="c-3"), limit=3)
    # a repeat is still answered when full: it stores nothing
    assert add(outbox, make(recipient="c-0"), limit=3).trigger_id == ids[0]
    claim(outbox)
    outbox.move("sending", ids, now=T0 + 1, owner="a", lease_until=T0 + 60)
    with pytest.raises(OutboxFull):  # sending still counts as waiting
        add(outbox, make(recipient="c-3"), limit=3)
    outbox.move("sent", ids[:1], now=T0 + 2, owner="a")
    assert add(outbox, make(recipient="c-3"), limit=3).created


def test_claim_waits_for_the_batch_window_and_takes_one_target(outbox):
    a1 = add(outbox, make("c-1", "camp-a"), now=T0).trigger_id
    b1 = add(outbox, make("c-1", "camp-b"), now=T0 + 0.1).trigger_id
    a2 = add(outbox, make("c-2", "camp-a"), now=T0 + 0.2).trigger_id
    assert claim(outbox, now=T0 + WINDOW - 0.01) == []
    first = claim(outbox, now=T0 + WINDOW)
    assert [r.id for r in first] == [a1, a2]  # the late one joins its target's batch
    assert claim(outbox, now=T0 + WINDOW + 0.01) == []  # camp-b's window isn't over
    assert [r.id for r in claim(outbox, now=T0 + 0.1 + WINDOW)] == [b1]
    assert claim(outbox, now=T0 + 10) == []


def test_claim_limit_leaves_the_rest_for_the_next_claim(outbox):
    ids = [add(outbox, make(f"c-{i}"), now=T0 + i / 1000).trigger_id for i in range(7)]
    first = claim(outbox, limit=5, now=T0 + 1)
    second = claim(outbox, limit=5, now=T0 + 1)
    assert [r.id for r in first] == ids[:5] and [r.id for r in second] == ids[5:]


def test_a_dead_deliverers_claims_return_after_the_lease(outbox):
    trigger_id = add(outbox, make()).trigger_id
    assert [r.id for r in claim(outbox, owner="a")] == [trigger_id]
    assert claim(outbox, owner="b", now=T0 + LEASE) == []
    assert [r.id for r in claim(outbox, owner="b", now=T0 + WINDOW + LEASE + 1)] == [trigger_id]
    # the first owner, late, can no longer send it
    assert outbox.move("sending", [trigger_id], now=T0 + 40, owner="a", lease_until=T0 + 99) == []
    moved = outbox.move("sending", [trigger_id], now=T0 + 40, owner="b", lease_until=T0 + 99)
    assert moved == [trigger_id]


def test_sending_whose_lease_ends_becomes_unknown_never_resent(outbox):
    trigger_id = add(outbox, make()).trigger_id
    claim(outbox)
    outbox.move("sending", [trigger_id], now=T0 + 1, owner="a", lease_until=T0 + 20)
    assert claim(outbox, owner="b", now=T0 + 19) == []
    assert outbox.get(trigger_id).state == SENDING
    assert claim(outbox, owner="b", now=T0 + 21) == []
    record = outbox.get(trigger_id)
    assert (record.state, record.reason) == (UNKNOWN, STALE_SENDING)
    assert claim(outbox, owner="b", now=T0 + 999) == []
    # the slow first owner learns Braze had it after all
    assert outbox.move("sent", [trigger_id], now=T0 + 22, owner="a", dispatch_id="d") == [
        trigger_id
    ]
    assert outbox.get(trigger_id).dispatch_id == "d"


def test_moves_after_the_call(outbox):
    ids = [add(outbox, make(f"c-{i}")).trigger_id for i in range(4)]
    claim(outbox)
    outbox.move("sending", ids, now=T0 + 1, owner="a", lease_until=T0 + 60)
    outbox.move("sent", ids[:1], now=T0 + 2, owner="a", dispatch_id="disp-1")
    outbox.move("retry", ids[1:2], now=T0 + 2, owner="a", due_at=T0 + 100, reason="429")
    outbox.move("unknown", ids[2:3], now=T0 + 2, owner="a", reason="timed out")
    outbox.move("dead", ids[3:], now=T0 + 2, owner="a", reason="HTTP 404")
    sent, retried, unknown, dead = (outbox.get(i) for i in ids)
    assert (sent.state, sent.dispatch_id, sent.updated_at) == (SENT, "disp-1", T0 + 2)
    assert (retried.state, retried.attempts, retried.reason) == (QUEUED, 1, "429")
    assert (unknown.state, unknown.reason) == (UNKNOWN, "timed out")
    assert (dead.state, dead.reason) == (DEAD, "HTTP 404")
    assert outbox.counts() == {QUEUED: 1, SENDING: 0, SENT: 1, UNKNOWN: 1, DEAD: 1}
    # the retry waits for its due time (and then its batch window)
    assert claim(outbox, owner="b", now=T0 + 99) == []
    assert [r.id for r in claim(outbox, owner="b", now=T0 + 100 + WINDOW)] == ids[1:2]


def test_moves_respect_states_and_owners(outbox):
    trigger_id = add(outbox, make()).trigger_id
    # not claimed: nobody owns it
    assert outbox.move("sending", [trigger_id], now=T0, owner="a", lease_until=T0 + 9) == []
    assert outbox.move("sent", [trigger_id], now=T0, owner="a") == []
    assert outbox.move("requeue_dead", [trigger_id], now=T0) == []
    claim(outbox)
    assert outbox.move("sending", [trigger_id], now=T0, owner="b", lease_until=T0 + 9) == []
    assert outbox.move("sending", ["trg_missing"], now=T0, owner="a", lease_until=T0) == []
    assert outbox.get(trigger_id).state == QUEUED


def test_operator_moves(outbox):
    ids = [add(outbox, make(f"c-{i}")).trigger_id for i in range(3)]
    claim(outbox)
    outbox.move("sending", ids, now=T0 + 1, owner="a", lease_until=T0 + 60)
    outbox.move("dead", ids[:1], now=T0 + 2, owner="a", reason="expired")
    outbox.move("unknown", ids[1:], now=T0 + 2, owner="a", reason="timed out")
    later = T0 + 3 * 86_400
    assert outbox.move("requeue_dead", ids, now=later) == ids[:1]
    requeued = outbox.get(ids[0])
    assert (requeued.state, requeued.queued_at, requeued.attempts) == (QUEUED, later, 0)
    assert requeued.accepted_at == T0
    assert outbox.move("mark_done", ids[1:2], now=later) == ids[1:2]
    assert outbox.get(ids[1]).state == SENT
    assert outbox.move("resend_unknown", ids, now=later) == ids[2:]
    assert {r.id for r in claim(outbox, owner="b", now=later + 1)} == {ids[0], ids[2]}


def test_broadcasts_are_limited_per_minute(outbox):
    for i in range(BROADCASTS_PER_MINUTE):
        assert outbox.take_broadcast_slot(now=T0 + i * 0.01) == 0
    wait = outbox.take_broadcast_slot(now=T0 + 10)
    assert wait == pytest.approx(50.0)
    assert outbox.take_broadcast_slot(now=T0 + 60.005) == 0  # the first one left the minute


def test_purge_keeps_sent_a_week_and_dead_a_month(outbox):
    ids = [add(outbox, make(f"c-{i}")).trigger_id for i in range(3)]
    claim(outbox)
    outbox.move("sending", ids, now=T0 + 1, owner="a", lease_until=T0 + 60)
    outbox.move("sent", ids[:1], now=T0 + 2, owner="a")
    outbox.move("dead", ids[1:2], now=T0 + 2, owner="a", reason="r")
    outbox.move("unknown", ids[2:], now=T0 + 2, owner="a", reason="r")
    assert outbox.purge(now=T0 + 2 + SENT_RETENTION - 1) == 0
    assert outbox.purge(now=T0 + 2 + SENT_RETENTION + 1) == 1
    assert outbox.get(ids[0]) is None
    assert outbox.purge(now=T0 + 2 + DEAD_RETENTION + 1) == 1
    assert outbox.get(ids[1]) is None
    assert outbox.get(ids[2]).state == UNKNOWN  # waits for an operator, however long
    assert outbox.counts()[SENT] == 0 and outbox.counts()[DEAD] == 0


def test_recent_per_customer_and_listings(outbox):
    mine = [add(outbox, make("ana", f"camp-{i}"), now=T0 + i).trigger_id for i in range(3)]
    add(outbox, make("bob"), now=T0)
    assert [r.id for r in outbox.recent("ana")] == mine[::-1]
    assert [r.id for r in outbox.recent("ana", limit=2)] == mine[:0:-1]
    assert outbox.recent("nobody") == []
    queued = outbox.listed(QUEUED, limit=10)
    assert len(queued) == 4 and queued[-1].id == mine[2]  # oldest first
    assert [r.id for r in outbox.listed(QUEUED, limit=1)] == [queued[0].id]


def test_recent_finds_every_kind_of_recipient_by_its_index(outbox):
    """The index of another kind carries its name, so an external id that reads like it
    is someone else."""
    alias = BrazeUser(USER_ALIAS, "123", "loyalty_id")
    email = BrazeUser(EMAIL, "Ana@Example.com", prioritization=("identified",))
    ids = [add(outbox, make(user), now=T0).trigger_id for user in (alias, email, "123")]
    assert [r.id for r in outbox.recent(alias.index)] == ids[:1]
    assert outbox.get(ids[0]).trigger.recipient == alias
    assert [r.id for r in outbox.recent(BrazeUser(EMAIL, "ana@EXAMPLE.com").index)] == ids[1:2]
    assert [r.id for r in outbox.recent("123")] == ids[2:]


def test_concurrent_adds_and_claims_never_overlap(outbox):
    def accept(start: int) -> None:
        for i in range(start, start + 50):
            add(outbox, make(f"c-{i}"), now=T0)

    threads = [threading.Thread(target=accept, args=(n * 50,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outbox.counts()[QUEUED] == 200
    claimed: dict[str, list[str]] = {}

    def take(owner: str) -> None:
        got = []
        while batch := outbox.claim(owner=owner, now=T0 + 1, window=0, lease=60, limit=7):
            got += [r.id for r in batch]
        claimed[owner] = got

    threads = [threading.Thread(target=take, args=(o,)) for o in "abcd"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for ids in claimed.values() for i in ids]
    assert len(everything) == len(set(everything)) == 200


def test_sqlite_outbox_survives_reopening(tmp_path):
    box = SqliteOutbox(tmp_path)
    trigger_id = add(box, make()).trigger_id
    box.close()
    again = SqliteOutbox(tmp_path)
    assert again.get(trigger_id).state == QUEUED
    assert again.counts()[QUEUED] == 1
    again.close()


@pytest.mark.slow
def test_redis_persistence_warnings(redis_url):
    client = redis.Redis.from_url(redis_url)
    warnings = persistence_warnings(client)  # the fixture runs without AOF
    assert len(warnings) == 1 and "appendonly" in warnings[0]
    client.config_set("maxmemory-policy", "allkeys-lru")
    try:
        policy, appendonly = persistence_warnings(client)
        assert "allkeys-lru" in policy and "noeviction" in policy
        assert "appendonly" in appendonly
    finally:
        client.config_set("maxmemory-policy", "noeviction")
    assert persistence_warnings(redis.Redis.from_url("redis://127.0.0.1:1/0")) == []


@pytest.mark.slow
def test_a_lost_redis_is_an_outbox_error_not_a_crash(redis_server, redis_url):
    box = RedisOutbox.from_url(redis_url)
    redis_server.kill()
    with pytest.raises(OutboxError):
        add(box, make())
    with pytest.raises(OutboxError):
        box.counts()


def test_an_unwritable_data_dir_is_an_outbox_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises((OutboxError, OSError)):
        SqliteOutbox(blocker)


def test_sqlite_claims_of_a_dead_deliverer_are_settled_at_once(tmp_path):
    box = SqliteOutbox(tmp_path)
    claimed, sending, untouched = (add(box, make(f"c-{i}")).trigger_id for i in range(3))
    box.claim(owner="dead", now=T0 + WINDOW, window=WINDOW, lease=LEASE, limit=2)
    box.move("sending", [sending], now=T0 + 1, owner="dead", lease_until=T0 + 60)
    box.abandon_leases(now=T0 + 2)  # long before the leases end
    assert box.get(claimed).state == QUEUED
    assert (box.get(sending).state, box.get(sending).reason) == (UNKNOWN, STALE_SENDING)
    assert {r.id for r in claim(box, owner="new", now=T0 + 3)} == {claimed, untouched}
    box.close()


def test_the_same_body_in_another_key_order_is_the_same_trigger(outbox):
    first = make(event={"a": 1, "b": {"c": 2, "d": 3}})
    again = make(event={"b": {"d": 3, "c": 2}, "a": 1})
    assert add(outbox, first).trigger_id == add(outbox, again).trigger_id


# --- queues: the tags' items beside the triggers, apart ------------------------------------

TAGS_LIKE = Queue("tags-like", "tgl", Trigger.from_json, "a tags worker stopped", "tgl:")


def test_each_queue_claims_counts_lists_and_moves_only_its_own(outbox):
    other = outbox.for_queue(TAGS_LIKE)
    trigger_id = add(outbox, make("cust-1"), key="k").trigger_id
    item_id = add(other, make("cust-1"), key="k").trigger_id  # same key: another queue's
    assert item_id.startswith("tgl_") and item_id != trigger_id
    assert outbox.counts()[QUEUED] == other.counts()[QUEUED] == 1
    assert [r.id for r in outbox.recent("cust-1")] == [trigger_id]
    assert [r.id for r in other.recent("cust-1")] == [item_id]
    assert outbox.get(item_id) is None and other.get(trigger_id) is None
    assert [r.id for r in claim(other, owner="w")] == [item_id]
    assert [r.id for r in claim(outbox, owner="d")] == [trigger_id]
    assert outbox.move("sending", [item_id], now=T0 + 1, owner="w", lease_until=T0 + 9) == []
    other.move("sending", [item_id], now=T0 + 1, owner="w", lease_until=T0 + 9)
    other.move("dead", [item_id], now=T0 + 2, owner="w", reason="no such customer")
    assert (
        outbox.listed(DEAD, limit=10) == []
        and outbox.move("requeue_dead", [item_id], now=T0) == []
    )
    assert [r.id for r in other.listed(DEAD, limit=10)] == [item_id]


def test_each_queue_has_its_own_bound_and_stale_reason(outbox):
    other = outbox.for_queue(TAGS_LIKE)
    add(outbox, make("c-1"), limit=1)
    assert add(other, make("c-1"), limit=1).created  # the triggers' one doesn't count here
    with pytest.raises(OutboxFull):
        add(other, make("c-2"), limit=1)
    (record,) = claim(other, owner="w")
    other.move("sending", [record.id], now=T0 + 1, owner="w", lease_until=T0 + 2)
    claim(other, owner="x", now=T0 + 3)  # the lease ended: settled with the queue's reason
    assert (other.get(record.id).state, other.get(record.id).reason) == (
        UNKNOWN,
        "a tags worker stopped",
    )


def test_without_a_dedupe_every_add_is_an_item_of_its_own(outbox):
    first = outbox.add(make(), None, now=T0, max_waiting=10)
    again = outbox.add(make(), None, now=T0, max_waiting=10)
    assert first.created and again.created and first.trigger_id != again.trigger_id


def test_adds_through_each_queue_are_stored_once(outbox):
    """SQLite's views share one group commit: what one stored, the other must not again."""
    other = outbox.for_queue(TAGS_LIKE)
    for n in range(3):
        outbox.add(make(f"c-{n}"), None, now=T0, max_waiting=10)
        other.add(make(f"c-{n}"), None, now=T0, max_waiting=10)
    assert outbox.counts()[QUEUED] == other.counts()[QUEUED] == 3


# The schema before queues, as the release before them created it.
BEFORE_QUEUES = """
CREATE TABLE outbox (
    id TEXT PRIMARY KEY, target TEXT NOT NULL, recipient TEXT, body TEXT NOT NULL,
    state TEXT NOT NULL, accepted_at REAL NOT NULL, queued_at REAL NOT NULL,
    due_at REAL NOT NULL, owner TEXT NOT NULL DEFAULT '', lease_until REAL NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0, dispatch_id TEXT NOT NULL DEFAULT '',
    reason TEXT NOT NULL DEFAULT '', updated_at REAL NOT NULL
);
CREATE INDEX outbox_due ON outbox (state, due_at);
CREATE TABLE dedupe (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, trigger_id TEXT NOT NULL,
    expires_at REAL NOT NULL);
CREATE TABLE counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE broadcasts (at REAL NOT NULL);
CREATE TRIGGER count_insert AFTER INSERT ON outbox BEGIN
    UPDATE counts SET n = n + 1 WHERE state = NEW.state;
END;
INSERT INTO counts VALUES ('queued', 0), ('sending', 0), ('sent', 0), ('unknown', 0), ('dead', 0);
"""


def test_a_file_from_before_queues_is_brought_up_to_date(tmp_path):
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        db.executescript(BEFORE_QUEUES)
        for n, state in enumerate((QUEUED, QUEUED, SENT)):
            db.execute(
                "INSERT INTO outbox (id, target, recipient, body, state, accepted_at, queued_at,"
                " due_at, updated_at) VALUES (?, 'campaign:camp-1', 'c', ?, ?, ?, ?, ?, ?)",
                (f"trg_{n}", make(f"c-{n}").to_json(), state, T0, T0, T0, T0),
            )
    box = SqliteOutbox(tmp_path)
    other = box.for_queue(TAGS_LIKE)
    assert box.counts() == {QUEUED: 2, SENDING: 0, SENT: 1, UNKNOWN: 0, DEAD: 0}
    assert other.counts()[QUEUED] == 0
    assert [r.id for r in claim(box, now=T0 + 1)] == ["trg_0", "trg_1"]
    add(other, make())
    assert box.counts()[QUEUED] == 2 and other.counts()[QUEUED] == 1
    box.close()
    again = SqliteOutbox(tmp_path)  # and opening it again changes nothing
    assert again.counts()[SENT] == 1 and again.for_queue(TAGS_LIKE).counts()[QUEUED] == 1
    again.close()
