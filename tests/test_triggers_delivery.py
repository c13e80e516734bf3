"""The deliverer against the Braze stand-in over real HTTP, with a real outbox and a hand clock."""

from __future__ import annotations

import io
import json
import logging
import re
import threading
import time

import pytest

from tests.helpers import CI_ALLOWANCE, wait_until
from wallet_proxy.attributes.values import Loyalty
from wallet_proxy.attributes.written import SqliteWritten
from wallet_proxy.braze_users import (
    BRAZE_ID,
    DEFAULT_PRIORITIZATION,
    EMAIL,
    EXTERNAL_ID,
    USER_ALIAS,
    BrazeUser,
)
from wallet_proxy.logs import json_handler
from wallet_proxy.triggers.braze import BrazeClient
from wallet_proxy.triggers.deliverer import Deliverer, split_calls
from wallet_proxy.triggers.model import CANVAS, DEAD, QUEUED, SENT, UNKNOWN, Record
from wallet_proxy.triggers.outbox import BROADCASTS_PER_MINUTE, Dedupe
from wallet_proxy.triggers.properties import WALLET_UNKNOWN
from wallet_proxy.triggers.redis_outbox import RedisOutbox
from wallet_proxy.triggers.sqlite_outbox import SqliteOutbox

from .triggers_helpers import BRAZE_KEY, trigger

WINDOW = 0.25
MAX_AGE = 86_400.0


class Clock:
    def __init__(self):
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def outbox(tmp_path):
    box = SqliteOutbox(tmp_path)
    yield box
    box.close()


def deliverer(outbox, braze, clock, answer_timeout=5.0, **kwargs) -> Deliverer:
    kwargs.setdefault("window", WINDOW)
    kwargs.setdefault("max_age", MAX_AGE)
    kwargs.setdefault("rng", lambda: 1.0)
    client = BrazeClient(braze.url, BRAZE_KEY, answer_timeout=answer_timeout)
    return Deliverer(outbox, client, clock=clock, **kwargs)


def accept(outbox, clock, made, key=None) -> str:
    return outbox.add(made, Dedupe.of(made, key), now=clock(), max_waiting=10**6).trigger_id


def drain(worker: Deliverer) -> int:
    """Run until nothing is due now; the number of triggers handled."""
    total = 0
    while handled := worker.run_once():
        total += handled
    return total


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_120_triggers_in_the_window_make_3_calls_of_at_most_50(
    backend, braze, clock, tmp_path, request
):
    box = (
        SqliteOutbox(tmp_path)
        if backend == "sqlite"
        else RedisOutbox.from_url(request.getfixturevalue("redis_url"))
    )
    for i in range(120):
        accept(box, clock, trigger(f"cust-{i:03}", offer_id=str(i)))
        clock.advance(WINDOW / 200)  # all inside one window
    clock.advance(WINDOW)
    assert drain(deliverer(box, braze, clock)) == 120
    calls = braze.calls()
    assert [len(c["body"]["recipients"]) for c in calls] == [50, 50, 20]
    got = [m["external_user_id"] for m in braze.messages()]
    assert sorted(got) == [f"cust-{i:03}" for i in range(120)]
    # each recipient got its own properties
    assert all(
        int(m["properties"]["offer_id"]) == int(m["external_user_id"][-3:])
        for m in braze.messages()
    )
    assert box.counts()[SENT] == 120
    assert {r.dispatch_id for r in box.listed(SENT, limit=200)} == {
        m["dispatch_id"] for m in braze.messages()
    }
    box.close()


def test_a_recipient_is_never_twice_in_one_call(outbox, braze, clock):
    for i in range(3):
        accept(outbox, clock, trigger("ana", offer_id=f"a{i}"))
    for i in range(60):
        accept(outbox, clock, trigger(f"c{i}"))
    clock.advance(WINDOW)
    drain(deliverer(outbox, braze, clock))
    for call in braze.calls():
        ids = [r["external_user_id"] for r in call["body"]["recipients"]]
        assert len(ids) == len(set(ids)) <= 50
    anas = [
        m["properties"]["offer_id"] for m in braze.messages() if m["external_user_id"] == "ana"
    ]
    assert anas == ["a0", "a1", "a2"]  # in the order accepted


def test_split_calls_first_fit():
    made = [
        Record(f"t{i}", trigger(name), QUEUED, 0.0, 0.0)
        for i, name in enumerate(["a", "a", "b", "a", "c"])
    ]
    assert [[r.id for r in call] for call in split_calls(made)] == [
        ["t0", "t2", "t4"],
        ["t1"],
        ["t3"],
    ]


def email(address: str) -> BrazeUser:
    return BrazeUser(EMAIL, address, prioritization=DEFAULT_PRIORITIZATION)


def test_split_calls_keeps_kinds_apart_and_each_address_once():
    """An external id and an email (or a Braze id) may name one profile, which Braze would
    dedupe within a call: calls hold one kind; an address (its identifier, or the email
    set as an attribute) is in a call once, in any case."""
    people = [
        trigger("a"),
        trigger(email("Ana@Example.com")),
        trigger(email("ana@example.com")),
        trigger("b", attributes={"email": "ANA@example.com"}),
        trigger(BrazeUser(BRAZE_ID, "a")),
        trigger("c", attributes={"email": "bo@example.com"}),
        trigger(email("bo@example.com")),
    ]
    made = [Record(f"t{i}", t, QUEUED, 0.0, 0.0) for i, t in enumerate(people)]
    assert [[r.id for r in call] for call in split_calls(made)] == [
        ["t0", "t3", "t5"],
        ["t1", "t6"],
        ["t2"],
        ["t4"],
    ]


def test_each_trigger_gets_its_own_message_though_braze_dedupes(outbox, braze, clock):
    """The stand-in dedupes as Braze does (a recipient, or an address, twice in one call is
    messaged once): every accepted trigger still reaches Braze as its own message."""
    people = [
        "ana",
        "ana",
        BrazeUser(USER_ALIAS, "123", "loyalty_id"),
        BrazeUser(USER_ALIAS, "123", "loyalty_id"),
        BrazeUser(BRAZE_ID, "5f0c6b0e5a11"),
        email("Bo@Example.com"),
        email("bo@example.com"),
        "ana",
        email("cy@example.com"),
    ]
    ids = [accept(outbox, clock, trigger(who, offer_id=str(i))) for i, who in enumerate(people)]
    for i in range(2):  # two external ids whose profiles get the same address
        made = trigger(f"shared-{i}", attributes={"email": "dee@example.com"}, offer_id=f"s{i}")
        ids.append(accept(outbox, clock, made))
    clock.advance(WINDOW)
    drain(deliverer(outbox, braze, clock))
    assert {outbox.get(i).state for i in ids} == {SENT}
    assert all(call["deduplicated"] == 0 for call in braze.calls())
    got = sorted(m["properties"]["offer_id"] for m in braze.messages())
    assert got == sorted([*map(str, range(len(people))), "s0", "s1"])


def test_triggers_wait_for_the_window_and_targets_go_apart(outbox, braze, clock):
    accept(outbox, clock, trigger("a", "camp-1"))
    accept(outbox, clock, trigger("a", "camp-2"))
    worker = deliverer(outbox, braze, clock)
    assert worker.run_once() == 0
    clock.advance(WINDOW)
    assert drain(worker) == 2
    assert [c["body"]["campaign_id"] for c in braze.calls()] == ["camp-1", "camp-2"]


def test_canvas_triggers_send_context(outbox, braze, clock):
    accept(outbox, clock, trigger("a", "cv-1", kind=CANVAS, offer_id="o"))
    clock.advance(WINDOW)
    drain(deliverer(outbox, braze, clock))
    (call,) = braze.calls()
    assert call["body"]["canvas_id"] == "cv-1"
    assert call["body"]["recipients"][0]["context"]["offer_id"] == "o"


@pytest.mark.parametrize(
    ("knobs", "wait"),
    [({"retry_after": 7}, 7.0), ({"reset_in": 20}, 20.0)],
    ids=["retry-after", "rate-limit-reset"],
)
def test_429_is_retried_when_braze_says(outbox, braze, clock, knobs, wait):
    trigger_id = accept(outbox, clock, trigger("a"))
    clock.advance(WINDOW)
    braze.set(status=429, times=1, **knobs)
    worker = deliverer(outbox, braze, clock)
    assert drain(worker) == 1
    record = outbox.get(trigger_id)
    assert (record.state, record.attempts) == (QUEUED, 1)
    assert "429" in record.reason
    assert worker.paused_until == pytest.approx(clock() + wait, abs=1.5)
    clock.advance(wait - 2)
    assert drain(worker) == 0 and len(braze.calls()) == 1
    clock.advance(2 + WINDOW + 0.01)
    assert drain(worker) == 1
    assert outbox.get(trigger_id).state == SENT
    assert len(braze.messages()) == 1


def test_503_backs_off_exponentially(outbox, braze, clock):
    trigger_id = accept(outbox, clock, trigger("a"))
    braze.set(status=503, times=3)
    worker = deliverer(outbox, braze, clock)
    waits = []
    for _ in range(3):
        clock.advance(WINDOW + 0.01)
        started = clock()
        assert drain(worker) == 1
        waits.append(worker.paused_until - started)
        clock.now = worker.paused_until
    assert waits == pytest.approx([1.0, 2.0, 4.0], abs=0.05)
    clock.advance(WINDOW + 0.01)
    drain(worker)
    assert outbox.get(trigger_id).state == SENT and len(braze.calls()) == 4


@pytest.mark.parametrize("status", [500, 502, 504])
def test_every_5xx_is_retried_with_backoff_and_jitter_then_sent_once(outbox, braze, clock, status):
    """Braze's errors page: a 5XX means no messages were sent; "retry your request with
    exponential backoff". Each wait is 1, 2, 4 ... s times a random 0.5 to 1."""
    trigger_id = accept(outbox, clock, trigger("a"))
    braze.set(status=status, times=3)
    draws = iter([0.0, 0.5, 1.0])
    worker = deliverer(outbox, braze, clock, rng=lambda: next(draws))
    waits = []
    for _ in range(3):
        clock.advance(WINDOW + 0.01)
        started = clock()
        assert drain(worker) == 1
        record = outbox.get(trigger_id)
        assert record.state == QUEUED and f"HTTP {status}" in record.reason
        waits.append(worker.paused_until - started)
        clock.now = worker.paused_until
    assert waits == pytest.approx([0.5, 1.5, 4.0], abs=0.05)
    assert braze.messages() == []
    clock.advance(WINDOW + 0.01)
    drain(worker)
    assert outbox.get(trigger_id).state == SENT and len(braze.calls()) == 4
    assert len(braze.messages()) == 1


def test_5xx_retries_stop_at_max_age(outbox, braze, clock):
    trigger_id = accept(outbox, clock, trigger("a"))
    braze.set(status=502)
    worker = deliverer(outbox, braze, clock, max_age=100)
    while outbox.get(trigger_id).state == QUEUED:
        clock.advance(WINDOW + 0.01)
        drain(worker)
        clock.now = max(clock.now, worker.paused_until)
    record = outbox.get(trigger_id)
    assert record.state == DEAD
    assert record.reason.startswith("not delivered within ")
    assert record.reason.endswith(" h: Braze answered HTTP 502")
    assert len(braze.calls()) == 7  # at 0, 1, 3, 7, 15, 31 and 63 s; the next would be past 100


@pytest.mark.parametrize("knobs", [{"latency": 3}, {"drop": True}])
def test_timeouts_and_drops_become_unknown_never_resent(outbox, braze, clock, knobs):
    ids = [accept(outbox, clock, trigger(f"c{i}")) for i in range(3)]
    clock.advance(WINDOW)
    braze.set(**knobs)
    worker = deliverer(outbox, braze, clock, answer_timeout=1.0)
    drain(worker)
    assert {outbox.get(i).state for i in ids} == {UNKNOWN}
    braze.set(status=None, latency=0, drop=False)
    clock.advance(3600)
    assert drain(worker) == 0
    assert len(braze.calls()) == 1  # one call, never repeated


def test_a_400_batch_is_sent_again_one_by_one(outbox, braze, clock):
    ids = [accept(outbox, clock, trigger(f"c{i}")) for i in range(5)]
    clock.advance(WINDOW)
    braze.set(reject=["c2"])
    drain(deliverer(outbox, braze, clock))
    states = {i: outbox.get(i).state for i in ids}
    assert states == {**dict.fromkeys(ids, SENT), ids[2]: DEAD}
    assert "invalid recipient" in outbox.get(ids[2]).reason
    assert [len(c["body"]["recipients"]) for c in braze.calls()] == [5, 1, 1, 1, 1, 1]
    assert sorted(m["external_user_id"] for m in braze.messages()) == ["c0", "c1", "c3", "c4"]


def test_a_refused_triggers_line_names_it_and_its_hashed_recipient(outbox, braze, clock):
    written = io.StringIO()
    handler = json_handler(written)
    logger = logging.getLogger("wallet_proxy.triggers.deliverer")
    logger.addHandler(handler)
    try:
        trigger_id = accept(outbox, clock, trigger("customer-77"))
        clock.advance(WINDOW)
        braze.set(reject=["customer-77"])
        drain(deliverer(outbox, braze, clock))
    finally:
        logger.removeHandler(handler)
    assert outbox.get(trigger_id).state == DEAD
    (line,) = [json.loads(text) for text in written.getvalue().splitlines()]
    hashed = rf"trigger {trigger_id} for campaign:\S+ to [0-9a-f]{{16}} refused: "
    assert re.fullmatch(hashed + r"Braze answered HTTP 400: .*<recipient>", line["message"])
    assert "customer-77" not in written.getvalue()


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_wrong_url_or_key_holds_the_triggers_until_fixed(outbox, braze, clock, status, caplog):
    """404 is Braze's "Invalid URL": held like a refused key, not a dead letter."""
    trigger_id = accept(outbox, clock, trigger("a"))
    clock.advance(WINDOW)
    braze.set(status=status)
    worker = deliverer(outbox, braze, clock)
    drain(worker)
    record = outbox.get(trigger_id)
    assert record.state == QUEUED and f"HTTP {status}" in record.reason
    assert worker.paused_until == pytest.approx(clock() + 60)
    line = f"Braze refused this service's calls (HTTP {status}): check BRAZE_REST_*"
    assert line in [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    braze.set(status=None)  # the operator fixes BRAZE_REST_URL or the key
    clock.now = worker.paused_until + WINDOW
    drain(worker)
    assert outbox.get(trigger_id).state == SENT and len(braze.messages()) == 1


def test_a_paused_campaign_makes_dead_letters_with_brazes_notice(outbox, braze, clock):
    from prometheus_client import REGISTRY

    def dead_counted() -> float:
        return REGISTRY.get_sample_value("wallet_proxy_triggers_total", {"outcome": "dead"}) or 0

    before = dead_counted()
    paused = [accept(outbox, clock, trigger(f"c{i}", "camp-paused")) for i in range(3)]
    running = accept(outbox, clock, trigger("c0", "camp-running"))
    clock.advance(WINDOW)
    braze.set(paused=["camp-paused"])
    worker = deliverer(outbox, braze, clock)
    drain(worker)
    notice = (
        "The campaign is paused. Resume the campaign to ensure trigger requests will take effect."
    )
    assert [(outbox.get(i).state, outbox.get(i).reason) for i in paused] == [(DEAD, notice)] * 3
    assert outbox.get(running).state == SENT
    assert dead_counted() == before + 3
    assert [m["target"] for m in braze.messages()] == ["camp-running"]
    # Resumed in Braze, then re-queued by an operator: sent.
    braze.set(paused=[])
    assert outbox.move("requeue_dead", paused, now=clock()) == paused
    clock.advance(WINDOW)
    drain(worker)
    assert {outbox.get(i).state for i in paused} == {SENT}
    assert len(braze.messages()) == 4


def test_triggers_older_than_max_age_die(outbox, braze, clock):
    old = accept(outbox, clock, trigger("a"))
    clock.advance(61)
    fresh = accept(outbox, clock, trigger("b"))
    clock.advance(WINDOW)
    drain(deliverer(outbox, braze, clock, max_age=60))
    assert outbox.get(old).state == DEAD
    assert "not delivered within" in outbox.get(old).reason
    assert outbox.get(fresh).state == SENT


def test_retrying_stops_at_max_age(outbox, braze, clock):
    trigger_id = accept(outbox, clock, trigger("a"))
    braze.set(status=429, retry_after=40)
    worker = deliverer(outbox, braze, clock, max_age=100)
    for _ in range(4):
        clock.advance(WINDOW + 0.01)
        drain(worker)
        clock.now = max(clock.now, worker.paused_until)
    record = outbox.get(trigger_id)
    assert record.state == DEAD and "429" in record.reason
    assert len(braze.calls()) == 3  # at 0, 40 and 80 s; the next would be past 100 s


def test_used_up_rate_limit_pauses_before_a_429(outbox, braze, clock):
    braze.set(remaining=0, reset_in=30)
    accept(outbox, clock, trigger("a"))
    clock.advance(WINDOW)
    worker = deliverer(outbox, braze, clock)
    assert drain(worker) == 1
    second = accept(outbox, clock, trigger("b"))
    clock.advance(WINDOW + 1)
    assert drain(worker) == 0  # waits for the reset although nothing failed
    assert len(braze.calls()) == 1
    clock.now = worker.paused_until + 0.01
    drain(worker)
    assert outbox.get(second).state == SENT


def test_broadcasts_go_one_per_call_within_250_a_minute(outbox, braze, clock):
    ids = [accept(outbox, clock, trigger(None, offer_id=str(i))) for i in range(252)]
    accept(outbox, clock, trigger("someone"))
    clock.advance(WINDOW)
    worker = deliverer(outbox, braze, clock)
    drain(worker)
    calls = braze.calls()
    broadcasts = [c for c in calls if c["body"].get("broadcast")]
    assert len(broadcasts) == BROADCASTS_PER_MINUTE
    assert all("recipients" not in c["body"] for c in broadcasts)
    assert sum(1 for c in calls if "recipients" in c["body"]) == 1
    waiting = [i for i in ids if outbox.get(i).state == QUEUED]
    assert len(waiting) == 2
    clock.advance(61)
    drain(worker)
    assert all(outbox.get(i).state == SENT for i in ids)
    assert len({m["properties"]["offer_id"] for m in braze.messages() if m["broadcast"]}) == 252


def test_maintenance_queued_is_sent_with_a_note(outbox, braze, clock):
    trigger_id = accept(outbox, clock, trigger("a"))
    clock.advance(WINDOW)
    braze.set(maintenance=True)
    drain(deliverer(outbox, braze, clock))
    record = outbox.get(trigger_id)
    assert record.state == SENT and "maintenance" in record.reason


class Wallets:
    """Customers' loyalty by SessionM id; one too slow for any budget (it answers when
    released), one unknown."""

    def __init__(self):
        self.asked = []
        self.released = threading.Event()

    def loyalty(self, user_id):
        self.asked.append(user_id)
        if user_id == "slow":
            self.released.wait(30)
        return {"sm-1": Loyalty(900, 1000, 3, None)}.get(user_id)


def test_wallet_summaries_are_added_or_minus_one(outbox, braze, clock):
    import dataclasses

    made = {}
    for name, sm_id in (("a", "sm-1"), ("b", "missing"), ("c", "slow")):
        base = trigger(name, wallet_available_points=-1, wallet_offer_count=-1)
        made[name] = dataclasses.replace(base, wallet_user_id=sm_id)
        accept(outbox, clock, made[name])
    accept(outbox, clock, trigger("d"))
    clock.advance(WINDOW)
    wallets = Wallets()
    budget = 0.3
    started = time.monotonic()
    try:
        drain(deliverer(outbox, braze, clock, wallets=wallets, wallet_budget=budget))
    finally:
        wallets.released.set()
    assert time.monotonic() - started < budget + CI_ALLOWANCE
    got = {m["external_user_id"]: m["properties"] for m in braze.messages()}
    assert (got["a"]["wallet_available_points"], got["a"]["wallet_offer_count"]) == (900, 3)
    for name in ("b", "c"):
        assert got[name]["wallet_available_points"] == WALLET_UNKNOWN
        assert got[name]["wallet_offer_count"] == WALLET_UNKNOWN
    assert "wallet_offer_count" not in got["d"]
    assert sorted(wallets.asked) == ["missing", "slow", "sm-1"]


def test_loyalty_attributes_go_with_the_send_when_they_changed(outbox, braze, clock, tmp_path):
    import dataclasses

    import requests

    store = SqliteWritten(tmp_path / "attributes.sqlite3", unix_time=clock)
    # The profile is in Braze already (a trigger sends to existing users only).
    requests.post(
        f"{braze.url}/users/track",
        json={"attributes": [{"external_id": "a", "sessionm_next_offer_expires_at": "x"}]},
        headers={"Authorization": f"Bearer {BRAZE_KEY}"},
        timeout=5,
    ).raise_for_status()
    wallets = Wallets()

    def send(recipient: str, sm_id: str) -> str:
        offer = str(len(braze.calls()))  # each trigger its own, not a repeat of the last
        made = dataclasses.replace(trigger(recipient, offer_id=offer), attributes_user_id=sm_id)
        trigger_id = accept(outbox, clock, made)
        clock.advance(WINDOW)
        drain(deliverer(outbox, braze, clock, wallets=wallets, written=store))
        return trigger_id

    send("a", "sm-1")
    loyalty = {
        "sessionm_available_points": 900,
        "sessionm_total_points": 1000,
        "sessionm_offer_count": 3,
        "sessionm_next_offer_expires_at": None,
    }
    assert braze.messages()[-1]["attributes"] == loyalty
    assert braze.braze.profiles()["external_id:a"]["attributes"] == {
        k: v for k, v in loyalty.items() if v is not None
    }
    remembered = store.get(BrazeUser(EXTERNAL_ID, "a"))
    assert (remembered.attributes, remembered.by, remembered.sessionm_user_id) == (
        loyalty,
        "trigger",
        "sm-1",
    )

    send("a", "sm-1")  # nothing changed: nothing set, no data point spent
    assert braze.messages()[-1]["attributes"] == {}

    send("c", "missing")  # no wallet to be had: the message goes without
    assert braze.messages()[-1]["attributes"] == {}
    assert store.get(BrazeUser(EXTERNAL_ID, "c")) is None

    braze.set(status=500, times=1)  # not taken: nothing remembered, sent again later
    trigger_id = send("d", "sm-1")
    assert outbox.get(trigger_id).state == QUEUED
    assert store.get(BrazeUser(EXTERNAL_ID, "d")) is None


@pytest.mark.slow
def test_two_instances_share_a_redis_outbox_and_deliver_each_trigger_once(braze, redis_url):
    import threading

    clock = time.time
    box = RedisOutbox.from_url(redis_url)
    for i in range(300):
        made = trigger(f"r{i:03}", target=f"camp-{i % 3}")
        box.add(made, Dedupe.of(made, None), now=clock(), max_waiting=10**6)
    client = BrazeClient(braze.url, BRAZE_KEY)
    instances = [
        Deliverer(RedisOutbox.from_url(redis_url), client, window=0.05, max_age=MAX_AGE)
        for _ in range(2)
    ]
    stop = threading.Event()
    threads = [threading.Thread(target=d.run, args=(stop,)) for d in instances]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 20
        while box.counts()[SENT] < 300 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert box.counts()[SENT] == 300
    got = [m["external_user_id"] for m in braze.messages()]
    assert sorted(got) == [f"r{i:03}" for i in range(300)]
    box.close()


def test_stopping_mid_batch_releases_the_calls_not_made(outbox, braze, clock):
    import threading

    ids = [accept(outbox, clock, trigger(f"c{i:03}")) for i in range(120)]
    clock.advance(WINDOW)
    braze.set(latency=0.3)
    worker = deliverer(outbox, braze, clock)
    stop = threading.Event()
    runner = threading.Thread(target=worker.run, args=(stop,))
    runner.start()
    wait_until(lambda: len(braze.calls()) == 1, timeout=5)
    stop.set()
    runner.join(5)
    assert not runner.is_alive()
    states = [outbox.get(i).state for i in ids]
    assert states.count(SENT) == 50 and states.count(QUEUED) == 70  # the first call finished
    assert len(braze.calls()) == 1
    assert outbox.claim(owner="next", now=clock(), window=0, lease=30, limit=500)  # unclaimed
