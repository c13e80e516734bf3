"""The Braze client over real HTTP against the stand-in: what each answer proves."""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate

import pytest

from tests.helpers import CI_ALLOWANCE, free_port, wait_until
from tests.raw_servers import RawServer, TrickledHeaders
from wallet_proxy.braze_rest import (
    BrazeNotProcessed,
    BrazeOutcomeUnknown,
    BrazeRejected,
    RateLimit,
    retry_after_seconds,
)
from wallet_proxy.braze_users import BRAZE_ID, EMAIL, EXTERNAL_ID, USER_ALIAS, BrazeUser
from wallet_proxy.triggers.braze import BrazeClient, call_body
from wallet_proxy.triggers.model import CANVAS, Trigger

from .triggers_helpers import BRAZE_KEY, BrazeServer, trigger


@pytest.fixture
def client(braze):
    return BrazeClient(braze.url, BRAZE_KEY, answer_timeout=5.0)


def one(recipient="ana", **props):
    made = trigger(recipient, **props)
    return call_body([(made, made.properties)])


def test_success_keeps_the_dispatch_id_and_the_rate_limit(client, braze):
    sent = client.send("campaign", one())
    assert len(sent.dispatch_id) == 32 and not sent.queued
    assert sent.rate.limit == 250_000 and sent.rate.remaining == 250_000 - 1
    # Whole seconds (up to 1 s early) of the sandbox's reset_in, taken a moment ago.
    assert sent.rate.reset == pytest.approx(time.time() + 3600, abs=1 + CI_ALLOWANCE)
    (message,) = braze.messages()
    assert message["external_user_id"] == "ana" and message["target"] == "camp-1"
    assert message["properties"] == {"offer_title": "10 % off"}
    assert message["dispatch_id"] == sent.dispatch_id


def test_canvas_calls_carry_context(client, braze):
    made = trigger("bo", "canvas-9", kind=CANVAS)
    body = call_body([(made, made.properties)])
    assert body == {
        "canvas_id": "canvas-9",
        "recipients": [{"external_user_id": "bo", "context": {"offer_title": "10 % off"}}],
    }
    client.send(CANVAS, body)
    assert braze.messages()[0]["kind"] == "canvas"
    assert braze.calls()[0]["status"] == 201


def test_call_bodies_for_broadcasts_and_attributes():
    cast = trigger(None)
    assert call_body([(cast, {"a": 1})]) == {
        "campaign_id": "camp-1",
        "broadcast": True,
        "trigger_properties": {"a": 1},
    }
    canvas_cast = Trigger(CANVAS, "cv", True, None, {}, {})
    assert call_body([(canvas_cast, {"a": 1})])["context"] == {"a": 1}
    with_email = trigger("x", "c", attributes={"email": "x@example.com"})
    assert call_body([(with_email, {})])["recipients"][0]["attributes"] == {
        "email": "x@example.com"
    }
    with pytest.raises(ValueError, match="at most 50"):
        call_body([(trigger(f"u{i}"), {}) for i in range(51)])
    with pytest.raises(ValueError, match="alone"):
        call_body([(cast, {}), (cast, {})])


def test_maintenance_queued_counts_as_sent(client, braze):
    braze.set(maintenance=True)
    sent = client.send("campaign", one())
    assert sent.queued and sent.dispatch_id == ""


@pytest.mark.parametrize(
    ("knobs", "wait"),
    [
        ({"status": 429, "retry_after": 7}, 7.0),
        ({"status": 429, "reset_in": 20}, 20.0),  # no Retry-After: the rate-limit reset
        ({"status": 503, "retry_after": 3}, 3.0),
    ],
)
def test_429_and_503_are_not_processed_and_say_when_to_retry(client, braze, knobs, wait):
    braze.set(**knobs)
    with pytest.raises(BrazeNotProcessed) as caught:
        client.send("campaign", one())
    assert caught.value.retry_after == pytest.approx(wait, abs=1.5)
    assert caught.value.status == knobs["status"]
    assert braze.messages() == []


@pytest.mark.parametrize("status", [500, 502, 504, 599])
def test_every_5xx_sent_nothing_and_may_be_retried(client, braze, status):
    """Braze's errors page: 5XX errors "indicate that no messages will be sent"; 502 and
    504 come as the gateway's HTML page, not JSON."""
    braze.set(status=status)
    with pytest.raises(BrazeNotProcessed, match=f"HTTP {status}") as caught:
        client.send("campaign", one())
    assert not caught.value.may_have_applied and caught.value.retry_after is None
    assert braze.messages() == []
    braze.set(retry_after=5)
    with pytest.raises(BrazeNotProcessed) as caught:
        client.send("campaign", one())
    assert caught.value.retry_after == 5


@pytest.mark.parametrize("status", [401, 403, 404])
def test_a_wrong_key_or_url_waits_with_the_operators_line(client, braze, status, caplog):
    """Braze's errors page: "404 Not Found: Invalid URL", like a refused key (401, 403):
    every call fails alike until someone fixes BRAZE_REST_*, so the triggers wait."""
    braze.set(status=status)
    with pytest.raises(BrazeNotProcessed) as caught:
        client.send("campaign", one())
    assert caught.value.status == status and caught.value.retry_after == 60
    line = f"Braze refused this service's calls (HTTP {status}): check BRAZE_REST_*"
    assert [r.getMessage() for r in caplog.records if r.levelname == "ERROR"] == [line]


@pytest.mark.parametrize("status", [400, 422])
def test_other_4xx_are_final(client, braze, status):
    braze.set(status=status)
    with pytest.raises(BrazeRejected) as caught:
        client.send("campaign", one())
    assert caught.value.status == status and not caught.value.may_have_applied


def test_braze_refusing_a_bad_body_is_final(client, braze):
    body = one()
    body["recipients"][0]["braze_id"] = "also-named-by-braze-id"
    with pytest.raises(BrazeRejected, match="exactly one of"):
        client.send("campaign", body)


@pytest.mark.parametrize(
    ("kind", "notice"),
    [
        ("campaign", "The campaign is paused. Resume the campaign"),
        (CANVAS, "The Canvas is paused. Resume the Canvas to ensure trigger requests"),
    ],
)
def test_a_paused_campaign_or_canvas_sent_nothing(client, braze, kind, notice):
    """Braze answers 201 `success` with a `notice` and sends nothing: not `Sent`."""
    made = trigger("ana", "paused-1", kind=kind)
    braze.set(paused=["paused-1"])
    with pytest.raises(BrazeRejected) as caught:
        client.send(kind, call_body([(made, made.properties)]))
    assert caught.value.status == 201 and caught.value.reason.startswith(notice)
    assert not caught.value.may_have_applied
    assert braze.messages() == [] and braze.calls()[0]["status"] == 201
    assert client.send(kind, call_body([(trigger("ana", "running-1", kind=kind), {})]))


def test_each_recipient_kind_reaches_braze_as_braze_names_it(client, braze):
    alias = BrazeUser(USER_ALIAS, "123", "loyalty_id")
    email = BrazeUser(
        EMAIL, "ana@example.com", prioritization=("identified", "most_recently_updated")
    )
    users = [BrazeUser(EXTERNAL_ID, "ext-1"), BrazeUser(BRAZE_ID, "5f0c6b0e5a11"), alias, email]
    for user in users:
        made = trigger(user)
        client.send("campaign", call_body([(made, made.properties)]))
    assert [m["recipient"] for m in braze.messages()] == [
        {"external_user_id": "ext-1"},
        {"braze_id": "5f0c6b0e5a11"},
        {"user_alias": {"alias_name": "123", "alias_label": "loyalty_id"}},
        {"email": "ana@example.com"},
    ]
    assert braze.calls()[3]["body"]["recipients"][0]["prioritization"] == [
        "identified",
        "most_recently_updated",
    ]


def test_a_refused_key_waits_without_leaking_the_key(braze, caplog):
    client = BrazeClient(braze.url, "wrong-secret-key-123")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(BrazeNotProcessed) as caught:
        client.send("campaign", one())
    assert caught.value.status == 401 and caught.value.retry_after == 60
    assert "wrong-secret-key-123" not in caplog.text + str(caught.value)


def test_a_slow_braze_is_outcome_unknown_and_did_deliver(braze):
    answer_timeout = 1.0
    client = BrazeClient(braze.url, BRAZE_KEY, answer_timeout=answer_timeout)
    braze.set(latency=answer_timeout + 2 * CI_ALLOWANCE)
    started = time.monotonic()
    with pytest.raises(BrazeOutcomeUnknown, match="in time"):
        client.send("campaign", one())
    assert time.monotonic() - started < answer_timeout + CI_ALLOWANCE
    assert len(braze.messages()) == 1  # which is why it must not be sent again


@pytest.mark.parametrize("interval", [0.5, 0.05])
def test_a_braze_trickling_headers_is_cut_at_the_answer_timeout(interval):
    """Per-read timeouts never trip when a byte comes every `interval`: the call still ends
    at its answer timeout, headers included, and the connection is closed (a Braze that
    never finishes would otherwise hold the instance's one deliverer for ever)."""
    trickle = TrickledHeaders(interval)
    server = RawServer(trickle)
    answer_timeout = 1.0
    client = BrazeClient(server.url, BRAZE_KEY, answer_timeout=answer_timeout)
    started = time.monotonic()
    try:
        with pytest.raises(BrazeOutcomeUnknown, match="in time"):
            client.send("campaign", one())
        elapsed = time.monotonic() - started
        assert trickle.hung_up.wait(10), "the connection was never closed"
    finally:
        server.close()
    assert answer_timeout <= elapsed < answer_timeout + CI_ALLOWANCE


def test_a_dropped_connection_is_outcome_unknown(client, braze):
    braze.set(drop=True)
    with pytest.raises(BrazeOutcomeUnknown, match="dropped"):
        client.send("campaign", one())


def test_a_refused_connection_was_not_processed():
    client = BrazeClient(f"http://127.0.0.1:{free_port()}", BRAZE_KEY)
    with pytest.raises(BrazeNotProcessed, match="refused"):
        client.send("campaign", one())


def test_retry_after_forms():
    now = time.time()
    assert retry_after_seconds({"Retry-After": "12"}, now) == 12
    date = formatdate(now + 30, usegmt=True)
    assert retry_after_seconds({"Retry-After": date}, now) == pytest.approx(30, abs=1.5)
    assert retry_after_seconds({"X-RateLimit-Reset": str(int(now) + 9)}, now) == pytest.approx(
        9, abs=1.5
    )
    assert retry_after_seconds({"Retry-After": "soon"}, now) is None
    assert retry_after_seconds({"Retry-After": "-5"}, now) == 0
    assert retry_after_seconds({"Retry-After": "99999999"}, now) == 3600
    assert retry_after_seconds({}, now) is None
    reset = {"X-RateLimit-Reset": str(int(now) + 9)}
    assert retry_after_seconds(reset, now, rate_limited=False) is None  # a 503's own reset


def test_rate_limit_says_when_it_is_used_up():
    now = 1000.0
    spent = RateLimit.from_headers(
        {"X-RateLimit-Limit": "10", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1030"}
    )
    assert spent.exhausted_until(now) == 1030
    assert spent.exhausted_until(1031) is None
    left = RateLimit.from_headers({"X-RateLimit-Remaining": "3", "X-RateLimit-Reset": "1030"})
    assert left.exhausted_until(now) is None
    assert RateLimit.from_headers({"X-RateLimit-Remaining": "zero"}).remaining is None


def test_the_stand_in_refuses_what_braze_refuses(braze):
    import requests

    def post(path, body, key=BRAZE_KEY):
        headers = {"Authorization": f"Bearer {key}"}
        return requests.post(braze.url + path, json=body, headers=headers, timeout=5)

    ok = {"external_user_id": "a"}
    cases = [
        ("/canvas/trigger/send", {"canvas_id": "c", "trigger_properties": {}, "broadcast": True}),
        ("/campaigns/trigger/send", {"campaign_id": "c", "recipients": [ok], "context": {}}),
        ("/campaigns/trigger/send", {"campaign_id": "c", "broadcast": True, "recipients": [ok]}),
        ("/campaigns/trigger/send", {"campaign_id": "c", "recipients": []}),
        ("/campaigns/trigger/send", {"campaign_id": "c", "recipients": [{**ok, "braze_id": "b"}]}),
        ("/campaigns/trigger/send", {"campaign_id": "c", "recipients": [{"email": "a@b.c"}]}),
        (
            "/campaigns/trigger/send",
            {
                "campaign_id": "c",
                "recipients": [
                    {"email": "a@b.c", "prioritization": ["identified", "unidentified"]}
                ],
            },
        ),
        (
            "/campaigns/trigger/send",
            {"campaign_id": "c", "recipients": [{**ok, "prioritization": ["identified"]}]},
        ),
        (
            "/campaigns/trigger/send",
            {"campaign_id": "c", "recipients": [{"user_alias": {"alias_name": "n"}}]},
        ),
        (
            "/campaigns/trigger/send",
            {"campaign_id": "c", "recipients": [{"external_user_id": str(i)} for i in range(51)]},
        ),
        (
            "/campaigns/trigger/send",
            {"campaign_id": "c", "recipients": [{**ok, "trigger_properties": {"x": "y" * 51200}}]},
        ),
        ("/canvas/trigger/send", {"campaign_id": "c", "broadcast": True}),
    ]
    for path, body in cases:
        assert post(path, body).status_code == 400, body
    assert (
        post("/campaigns/trigger/send", {"campaign_id": "c", "recipients": [ok]}, "no").status_code
        == 401
    )
    assert braze.messages() == []
    answer = requests.post(braze.url + "/_sandbox/braze/config", json={"statsu": 429}, timeout=5)
    assert answer.status_code == 400 and "statsu" in answer.json()["message"]
    set_over_http = requests.post(
        braze.url + "/_sandbox/braze/config", json={"status": 503, "times": 1}, timeout=5
    )
    assert set_over_http.json()["status"] == 503
    assert (
        post("/campaigns/trigger/send", {"campaign_id": "c", "recipients": [ok]}).status_code
        == 503
    )
    assert (
        post("/campaigns/trigger/send", {"campaign_id": "c", "recipients": [ok]}).status_code
        == 201
    )
    stats = requests.get(braze.url + "/_sandbox/braze/stats", timeout=5).json()
    assert len(stats["braze_messages"]) == 1
    for knob in ({"paused": "c"}, {"reject": [1]}, {"paused": ["c"] * 1001}):
        answer = requests.post(braze.url + "/_sandbox/braze/config", json=knob, timeout=5)
        assert answer.status_code == 400 and "list of at most 1000 ids" in answer.json()["message"]
    braze.reset()
    assert braze.calls() == [] and braze.set()["status"] is None


def test_the_stand_in_dedupes_a_recipient_named_twice_in_a_call(client, braze):
    """Braze's recipients object: "if there exists a duplicated recipient targeting the same
    address (that is, email, push), Braze dedupes the user": 201, one message."""
    twice = one("ana")
    twice["recipients"].append({**twice["recipients"][0], "trigger_properties": {"n": 2}})
    assert client.send("campaign", twice)
    assert [m["properties"] for m in braze.messages()] == [{"offer_title": "10 % off"}]
    assert braze.calls()[0]["deduplicated"] == 1
    emails = BrazeUser(EMAIL, "Ana@Example.com", prioritization=("identified",))
    shared = [
        trigger(emails),
        trigger(BrazeUser(EMAIL, "ana@example.com", prioritization=("identified",))),
        trigger("ext-9", attributes={"email": "ANA@example.com"}),  # the same address
        trigger("ext-10", attributes={"email": "bo@example.com"}),
    ]
    client.send("campaign", call_body([(t, t.properties) for t in shared]))
    assert len(braze.messages()) == 3
    assert braze.calls()[1]["deduplicated"] == 2


def test_hold_after_holds_answers_once_braze_has_that_many_messages(braze):
    """The knob that lets a test stop a deliverer at a point it chose (kill -9 mid-send)."""
    client = BrazeClient(braze.url, BRAZE_KEY, answer_timeout=30.0)
    braze.set(hold_after=2)
    assert client.send("campaign", one("ana")).dispatch_id  # 0 before it: answered
    assert client.send("campaign", one("bo")).dispatch_id  # 1 before it: answered
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(client.send, "campaign", one("cy"))
        wait_until(lambda: braze.held() == 1, timeout=10)
        # Braze acted before holding the answer, as with `latency`.
        assert [m["external_user_id"] for m in braze.messages()] == ["ana", "bo", "cy"]
        assert not held.done()
        braze.set(hold_after=None)
        assert held.result(timeout=10).dispatch_id
    assert braze.held() == 0


def test_stopping_the_sandbox_cuts_a_held_answer():
    with BrazeServer() as own:
        own.set(hold_after=0)
        client = BrazeClient(own.url, BRAZE_KEY, answer_timeout=30.0)
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(client.send, "campaign", one())
            wait_until(lambda: own.held() == 1, timeout=10)
            own.stop()
            with pytest.raises(BrazeOutcomeUnknown, match="dropped"):
                held.result(timeout=10)
