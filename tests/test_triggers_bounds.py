"""WALLET_PROXY_TRIGGER_MAX_BYTES (issue 19 item 2): the outbox, every queue's items in
every state and the dedupe records, held within a byte bound, on both stores, and a flood
of 50 KB triggers over HTTP."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from pathlib import Path

import pytest
import redis
import requests

from tests.helpers import LiveServer, wait_until
from wallet_proxy import create_app
from wallet_proxy.factory import close_app
from wallet_proxy.tags.model import TAGS, Tagging
from wallet_proxy.triggers import redis_outbox, sqlite_outbox
from wallet_proxy.triggers.model import DEAD, QUEUED, SENDING, SENT, UNKNOWN
from wallet_proxy.triggers.outbox import (
    BODY_WINDOW,
    KEY_WINDOW,
    PRUNED,
    SENT_RETENTION,
    TRIGGERS,
    Dedupe,
    OutboxFull,
    state_part,
)
from wallet_proxy.triggers.redis_outbox import RedisOutbox
from wallet_proxy.triggers.running import deliverer_for
from wallet_proxy.triggers.setup import triggers_of
from wallet_proxy.triggers.sqlite_outbox import SqliteOutbox

from .test_triggers_api import AUTH, BODY, trigger_env  # noqa: F401 (a fixture)
from .test_triggers_outbox import T0
from .triggers_helpers import trigger as make

MIB = 1024 * 1024
BOUND = 4 * MIB  # the smallest WALLET_PROXY_TRIGGER_MAX_BYTES
PAD = "x" * 100_000  # about 100 KB a trigger: some 30 fit


@pytest.fixture(params=["sqlite", "redis"])
def bounded(request, tmp_path):
    if request.param == "sqlite":
        box = SqliteOutbox(tmp_path / "data", max_bytes=BOUND)
    else:
        box = RedisOutbox.from_url(request.getfixturevalue("redis_url"), max_bytes=BOUND)
    yield box
    box.close()


def costs(box):
    return sqlite_outbox.COSTS if isinstance(box, SqliteOutbox) else redis_outbox.COSTS


def room_for_records(box) -> int:
    """What the ledger may hold: SQLite leaves part of the bound to its log and reserve."""
    return box.records_bytes if isinstance(box, SqliteOutbox) else box.max_bytes


def add(box, n: int, *, now: float, keyed: bool = True):
    """Trigger `n`, with the Idempotency-Key `k-<n>` unless not `keyed`."""
    trigger = make(f"c-{n}", pad=PAD, n=n)
    key = f"k-{n}" if keyed else None
    return box.add(trigger, Dedupe.of(trigger, key), now=now, max_waiting=10**6)


def finish(box, ids: list[str], move: str, *, now: float) -> None:
    """Claim `ids` (all that is due) and end them by `move`."""
    claimed = box.claim(owner="d", now=now, window=0, lease=30, limit=500)
    assert sorted(r.id for r in claimed) == sorted(ids)
    box.move("sending", ids, now=now, owner="d", lease_until=now + 60)
    assert sorted(box.move(move, ids, now=now, owner="d", reason="r")) == sorted(ids)


def test_kept_history_is_pruned_oldest_first_and_a_repeat_answers_pruned(bounded):
    ids = []
    for n in range(80):  # some 8 MB of triggers, each sent as soon as it is accepted
        ids.append(add(bounded, n, now=T0 + n).trigger_id)
        finish(bounded, ids[-1:], "sent", now=T0 + n)
        assert sum(bounded.usage().values()) <= room_for_records(bounded)
    kept = [i for i in ids if bounded.get(i) is not None]
    assert 20 < len(kept) < 40
    assert kept == ids[-len(kept) :]  # the oldest went first, and only they
    again = add(bounded, 0, now=T0 + 100)
    assert (again.trigger_id, again.state, again.created) == (ids[0], PRUNED, False)
    assert bounded.counts()[SENT] == len(kept)


def test_sent_goes_before_dead_unknown_and_waiting_never_then_the_bound_refuses(bounded):
    dead = [add(bounded, n, now=T0).trigger_id for n in range(8)]
    finish(bounded, dead, "dead", now=T0 + 1)
    sent = [add(bounded, n, now=T0 + 2).trigger_id for n in range(8, 16)]
    finish(bounded, sent, "sent", now=T0 + 3)
    unknown = [add(bounded, n, now=T0 + 4).trigger_id for n in range(16, 20)]
    finish(bounded, unknown, "unknown", now=T0 + 5)
    waiting, gone_order = [], []
    with pytest.raises(OutboxFull):
        for n in range(20, 80):  # never delivered: they only wait
            waiting.append(add(bounded, n, now=T0 + 6).trigger_id)
            gone_order += [i for i in sent + dead if i not in gone_order and not bounded.get(i)]
    assert gone_order == sent + dead  # every sent one before the first dead letter
    assert all(bounded.get(i).state == UNKNOWN for i in unknown)
    assert all(bounded.get(i).state == QUEUED for i in waiting)  # nothing accepted is lost
    # Once some are delivered, there is room again: their records are history now.
    finish(bounded, waiting, "sent", now=T0 + 7)
    assert add(bounded, 99, now=T0 + 8).created


def test_the_ledger_counts_each_record_where_it_is(bounded):
    cost = costs(bounded)
    first = add(bounded, 1, now=T0).trigger_id
    each = cost.record(bounded.get(first).trigger.to_json())
    finish(bounded, [first], "sent", now=T0 + 1)
    second = add(bounded, 2, now=T0 + 1).trigger_id

    def part(state: str) -> int:
        return bounded.usage().get(state_part(TRIGGERS.name, state), 0)

    assert [part(s) for s in (QUEUED, SENDING, SENT, UNKNOWN, DEAD)] == [each, 0, each, 0, 0]
    assert bounded.usage()["dedupe"] == 2 * cost.per_dedupe
    assert sum(bounded.usage().values()) == 2 * each + 2 * cost.per_dedupe
    bounded.purge(now=T0 + 1 + SENT_RETENTION + 1)  # the sent one, and both keys (7 days)
    assert (part(QUEUED), part(SENT), bounded.usage()["dedupe"]) == (each, 0, 0)
    assert bounded.get(second).state == QUEUED


def test_the_queued_tags_count_against_the_same_bound(bounded):
    """Both queues fill one outbox: a webhook's tags make room by pruning sent triggers,
    and tags waiting for SessionM are held as waiting triggers are."""
    sent = [add(bounded, n, now=T0).trigger_id for n in range(20)]
    finish(bounded, sent, "sent", now=T0 + 1)
    tags = bounded.for_queue(TAGS)
    waiting = []
    with pytest.raises(OutboxFull):
        for n in range(80):  # 50 KB of tags each, never applied
            tagging = Tagging(f"c-{n}", False, (f"t-{n}", "y" * 50_000), None)
            waiting.append(tags.add(tagging, None, now=T0 + 2, max_waiting=10**6).trigger_id)
    assert all(bounded.get(i) is None for i in sent)  # every sent trigger made room
    assert all(tags.get(i).state == QUEUED for i in waiting)
    assert tags.counts()[QUEUED] == len(waiting) > 30
    assert sum(bounded.usage().values()) <= room_for_records(bounded)
    with pytest.raises(OutboxFull):  # and a trigger finds no room either
        add(bounded, 99, now=T0 + 3)


def test_expired_dedupe_records_leave_the_ledger_without_a_purge(bounded):
    for n in range(5):
        add(bounded, n, now=T0, keyed=False)
    assert bounded.usage()["dedupe"] == 5 * costs(bounded).per_dedupe
    add(bounded, 9, now=T0 + BODY_WINDOW + 1)  # an add forgets expired ones on its way
    assert bounded.usage()["dedupe"] == costs(bounded).per_dedupe


def used_pages(box: SqliteOutbox) -> int:
    db = sqlite3.connect(box.path)
    try:
        (pages,), (free,) = (
            db.execute(f"PRAGMA {p}").fetchone() for p in ("page_count", "freelist_count")
        )
        (size,) = db.execute("PRAGMA page_size").fetchone()
    finally:
        db.close()
    return (pages - free) * size


@pytest.mark.parametrize("body_bytes", [50, 1500, 2500, 10_000, 48_000])
def test_sqlite_costs_cover_what_the_file_takes(tmp_path, body_bytes):
    box = SqliteOutbox(tmp_path, max_bytes=10**9)
    try:
        before_pages, before = used_pages(box), sum(box.usage().values())
        for n in range(300):
            trigger = make(f"c-{n}", pad="y" * body_bytes)
            box.add(trigger, Dedupe.of(trigger, f"k-{n}"), now=T0, max_waiting=10**6)
        taken, counted = used_pages(box) - before_pages, sum(box.usage().values()) - before
    finally:
        box.close()
    assert taken <= counted <= 2 * taken


@pytest.mark.slow
@pytest.mark.parametrize("body_bytes", [50, 2000, 48_000])
def test_redis_costs_cover_what_redis_takes(redis_url, body_bytes):
    box = RedisOutbox.from_url(redis_url, max_bytes=10**9)
    client = redis.Redis.from_url(redis_url)
    try:
        before_memory = client.info("memory")["used_memory"]
        for n in range(300):
            trigger = make(f"c-{n}", pad="y" * body_bytes)
            box.add(trigger, Dedupe.of(trigger, f"k-{n}"), now=T0, max_waiting=10**6)
        taken = client.info("memory")["used_memory"] - before_memory
        counted = sum(box.usage().values())
    finally:
        box.close()
        client.close()
    assert taken <= counted <= 2 * taken


def test_sqlite_gives_the_space_of_purged_triggers_back(tmp_path):
    box = SqliteOutbox(tmp_path, max_bytes=64 * MIB)
    try:
        for n in range(100):
            finish(box, [add(box, n, now=T0).trigger_id], "sent", now=T0)
        box._db().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        full = box.path.stat().st_size
        assert box.purge(now=T0 + KEY_WINDOW + SENT_RETENTION) == 100
        box._db().execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert box.path.stat().st_size < full / 10
    finally:
        box.close()


OLD_SCHEMA = """
CREATE TABLE outbox (id TEXT PRIMARY KEY, target TEXT NOT NULL, recipient TEXT,
    body TEXT NOT NULL, state TEXT NOT NULL, accepted_at REAL NOT NULL,
    queued_at REAL NOT NULL, due_at REAL NOT NULL, owner TEXT NOT NULL DEFAULT '',
    lease_until REAL NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    dispatch_id TEXT NOT NULL DEFAULT '', reason TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL);
CREATE TABLE dedupe (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,
    trigger_id TEXT NOT NULL, expires_at REAL NOT NULL);
CREATE TABLE counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL);
INSERT INTO counts VALUES ('queued', 1), ('sending', 0), ('sent', 1), ('unknown', 0),
    ('dead', 0);
"""


def test_a_file_from_the_previous_version_is_measured_and_made_to_give_space_back(tmp_path):
    """What a service upgraded in place already holds counts against the bound at once."""
    path = tmp_path / sqlite_outbox.FILE_NAME
    old = sqlite3.connect(path)
    old.executescript(OLD_SCHEMA)
    body = make("c-1").to_json()
    for trigger_id, state in (("trg_1", QUEUED), ("trg_2", SENT)):
        old.execute(
            "INSERT INTO outbox (id, target, recipient, body, state, accepted_at, queued_at,"
            " due_at, updated_at) VALUES (?, 'campaign:camp-1', 'c-1', ?, ?, 0, 0, 0, 0)",
            (trigger_id, body, state),
        )
        old.execute(
            "INSERT INTO dedupe VALUES (?, 'f', ?, ?)", (f"key:{trigger_id}", trigger_id, T0)
        )
    old.commit()
    old.close()
    box = SqliteOutbox(tmp_path)
    try:
        cost = sqlite_outbox.COSTS
        usage = box.usage()
        queued, sent = (usage[state_part(TRIGGERS.name, state)] for state in (QUEUED, SENT))
        assert queued == sent == cost.record(body)
        assert usage["dedupe"] == 2 * cost.per_dedupe
        assert box._db().execute("PRAGMA auto_vacuum").fetchone() == (2,)  # incremental
        assert box.get("trg_2").state == SENT
    finally:
        box.close()


# --- the flood, over HTTP --------------------------------------------------------------


def folder_bytes(folder: Path) -> int:
    return sum(entry.stat().st_size for entry in folder.iterdir() if entry.is_file())


@pytest.mark.slow
def test_a_flood_of_50_kb_triggers_braze_accepts_keeps_the_folder_within_the_bound(
    trigger_env,  # noqa: F811
    sandbox,
    clock,
):
    """The attack: one trigger-key holder posting 50 KB triggers that Braze accepts, as
    fast as the service takes them, grew the data folder by 133 MB in 20 s. With the bound
    the folder never passes it: the oldest sent triggers make room, and while those
    waiting for Braze fill it, new ones are refused (503 trigger_queue_full), which the
    sender retries. Every accepted trigger reaches Braze."""
    data = Path(trigger_env["WALLET_PROXY_DATA_DIR"])
    app = create_app(
        {
            **trigger_env,
            "WALLET_PROXY_TRIGGER_MAX_BYTES": str(BOUND),
            "WALLET_PROXY_TRIGGER_BATCH_MS": "0",
            "TESTING": True,
            "CLOCK": clock,
        }
    )
    event = {"note": "z" * 49_000}  # properties just under Braze's 50 KB
    accepted: list[str] = []
    refusals: list[requests.Response] = []
    largest = [0]
    stop = threading.Event()

    def measure() -> None:
        while not stop.is_set():
            largest[0] = max(largest[0], folder_bytes(data))

    def flood(worker: int, url: str) -> None:
        for n in range(40):
            body = json.dumps({**BODY, "event": {**event, "n": f"{worker}-{n}"}})
            while not stop.is_set():
                answer = requests.post(
                    f"{url}/v1/braze/triggers",
                    data=body,
                    headers={"Content-Type": "application/json", **AUTH},
                    timeout=10,
                )
                if answer.status_code == 202:
                    accepted.append(f"{worker}-{n}")
                    break
                refusals.append(answer)
                stop.wait(0.05)  # sooner than Retry-After: a hostile sender would

    deliverer = deliverer_for(app)
    helpers = [
        threading.Thread(target=deliverer.run, args=(stop,)),
        threading.Thread(target=measure),
    ]
    try:
        with LiveServer(app) as live:
            for thread in helpers:
                thread.start()
            floods = [threading.Thread(target=flood, args=(w, live.url)) for w in range(8)]
            for thread in floods:
                thread.start()
            for thread in floods:
                thread.join(timeout=120)
            box = triggers_of(app).outbox
            wait_until(lambda: box.counts()[QUEUED] + box.counts()[SENDING] == 0, timeout=30)
            repeat = requests.post(
                f"{live.url}/v1/braze/triggers",
                data=json.dumps({**BODY, "event": {**event, "n": "0-0"}}),
                headers={"Content-Type": "application/json", **AUTH},
                timeout=10,
            )
    finally:
        stop.set()
        for thread in helpers:
            thread.join()
        deliverer.close()
        close_app(app)
    print(f"largest data folder under the flood: {largest[0]:,} bytes (bound {BOUND:,})")
    assert len(accepted) == 320  # 16 MB through a 4 MB outbox
    assert 0 < largest[0] <= BOUND
    for refused in refusals:
        assert refused.status_code == 503
        assert refused.json()["error"]["code"] == "trigger_queue_full"
        assert int(refused.headers["Retry-After"]) > 0
    delivered = [m["properties"]["event"]["n"] for m in sandbox.braze.stats()["braze_messages"]]
    assert sorted(delivered) == sorted(accepted)  # each once, none lost
    assert repeat.status_code == 202 and repeat.json()["status"] == PRUNED
    assert os.path.exists(data / sqlite_outbox.RESERVE_NAME)
