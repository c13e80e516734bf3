"""POST /v1/braze/triggers over real HTTP: keys, limits, repeats, durability, delivery."""

from __future__ import annotations

import base64
import json
import socket
import threading
from urllib.parse import urlsplit

import pytest
import requests

from tests.helpers import API_KEY, LiveServer, wait_until
from wallet_proxy import create_app
from wallet_proxy.braze_users import EXTERNAL_ID, BrazeUser
from wallet_proxy.config import ConfigError, Settings
from wallet_proxy.triggers.model import QUEUED, SENT
from wallet_proxy.triggers.outbox import BODY_WINDOW
from wallet_proxy.triggers.running import deliverer_for
from wallet_proxy.triggers.setup import triggers_of

from .triggers_helpers import BRAZE_KEY

TRIGGER_KEY = "sessionm-trigger-key-1"
AUTH = {"Authorization": f"Bearer {TRIGGER_KEY}"}
BODY = {
    "braze_campaign_id": "camp-1",
    "customer": {"external_id": "ext-ana", "email": "ana@example.com"},
    "offer": {"title": "10 % off", "expires_at": "2030-01-01T00:00:00.0000000Z"},
    "points": {"award_amount": 50},
}


@pytest.fixture
def trigger_env(env, sandbox, tmp_path) -> dict:
    return {
        **env,
        "BRAZE_REST_URL": sandbox.url,
        "BRAZE_REST_API_KEY": BRAZE_KEY,
        "WALLET_PROXY_TRIGGER_KEYS": f"{TRIGGER_KEY},other-trigger-key",
        "WALLET_PROXY_DATA_DIR": str(tmp_path / "data"),
    }


@pytest.fixture
def trigger_app(trigger_env, clock):
    return create_app({**trigger_env, "TESTING": True, "CLOCK": clock})


@pytest.fixture
def server(trigger_app):
    with LiveServer(trigger_app) as live:
        yield live


def post(server, body=BODY, headers=AUTH, **kwargs):
    data = json.dumps(body) if isinstance(body, dict | list) else body
    return requests.post(
        f"{server.url}/v1/braze/triggers",
        data=data,
        headers={"Content-Type": "application/json", **headers},
        timeout=10,
        **kwargs,
    )


def outbox(app):
    return triggers_of(app).outbox


def test_accepted_trigger_is_stored_before_the_202(server, trigger_app):
    answer = post(server)
    assert answer.status_code == 202
    found = answer.json()
    assert found["status"] == QUEUED and found["trigger_id"].startswith("trg_")
    record = outbox(trigger_app).get(found["trigger_id"])
    assert record.state == QUEUED
    assert record.trigger.recipient == BrazeUser(EXTERNAL_ID, "ext-ana")
    assert record.trigger.properties["offer_expires_at"] == "2030-01-01T00:00:00Z"
    assert record.trigger.attributes == {}  # WALLET_PROXY_TRIGGER_SET_EMAIL is off


def test_basic_password_works_like_bearer(server):
    token = base64.b64encode(f"sessionm:{TRIGGER_KEY}".encode()).decode()
    assert post(server, headers={"Authorization": f"Basic {token}"}).status_code == 202


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": f"Bearer {API_KEY}"}, {"Authorization": "Bearer nope-nope-nope"}],
    ids=["none", "wallet-api-key", "wrong"],
)
def test_other_keys_are_refused(server, trigger_app, headers):
    answer = post(server, headers=headers)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"
    assert outbox(trigger_app).counts()[QUEUED] == 0


def test_not_configured_without_braze(app):
    with LiveServer(app) as live:
        answer = post(live)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "not_configured"
    assert triggers_of(app) is None


def test_idempotency_key_repeats_answer_the_same_trigger(server, trigger_app):
    first = post(server, headers={**AUTH, "Idempotency-Key": "sm-run-1"})
    again = post(server, headers={**AUTH, "Idempotency-Key": "sm-run-1"})
    assert first.status_code == again.status_code == 202
    assert again.json()["trigger_id"] == first.json()["trigger_id"]
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    other = {**BODY, "points": {"award_amount": 99}}
    conflict = post(server, other, headers={**AUTH, "Idempotency-Key": "sm-run-1"})
    assert conflict.status_code == 422
    assert conflict.json()["error"]["code"] == "idempotency_conflict"
    bad = post(server, headers={**AUTH, "Idempotency-Key": "é"})
    assert bad.status_code == 400
    assert outbox(trigger_app).counts()[QUEUED] == 1


def test_identical_body_without_key_is_one_trigger_for_ten_minutes(server, trigger_app, clock):
    first = post(server).json()["trigger_id"]
    assert post(server).json()["trigger_id"] == first
    clock.advance(seconds=BODY_WINDOW + 1)
    assert post(server).json()["trigger_id"] != first  # tomorrow's scheduled send
    assert outbox(trigger_app).counts()[QUEUED] == 2


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"{not json", "The body must be JSON"),
        ({"braze_campaign_id": "c"}, "customer is required"),
        ({**BODY, "broadcast": True}, "customer must be left out with broadcast"),
        ({**BODY, "surprise": 1}, "surprise is not a known field"),
        ([[[[]]]], "The body must be a JSON object"),
        (b"[" * 60_000, "[0][0][0]"),
    ],
)
def test_bad_bodies_are_400_and_store_nothing(server, trigger_app, body, message):
    answer = post(server, body)
    assert answer.status_code == 400
    assert message in answer.json()["error"]["message"]
    assert outbox(trigger_app).counts()[QUEUED] == 0


def nested(levels: int) -> str:
    """An `event` that makes the body `levels` objects and arrays deep (the body is one)."""
    inner = "[" * (levels - 2) + "]" * (levels - 2)
    return json.dumps({**BODY, "event": {"deep": "@"}}).replace('"@"', inner)


@pytest.mark.parametrize("levels", [33, 980, 5000])
def test_json_nested_deeper_than_32_is_400_naming_the_field(server, trigger_app, levels):
    """Issue 19 item 7: an `event` nested 980 deep was a 500 (RecursionError)."""
    answer = post(server, nested(levels))
    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert message.startswith("event.deep[0][0]")
    assert message.endswith("is nested deeper than 32 levels of objects and arrays.")
    assert outbox(trigger_app).counts()[QUEUED] == 0


def test_json_nested_32_deep_is_accepted(server):
    assert post(server, nested(32)).status_code == 202


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ('"event": {"ratio": NaN}', "event.ratio is NaN, which is not JSON"),
        ('"event": {"limits": [1, Infinity]}', "event.limits[1] is Infinity, which is not JSON"),
        ('"event": {"floor": -Infinity}', "event.floor is -Infinity, which is not JSON"),
        ('"event": {"big": 1e400}', "event.big is out of range"),
        ('"event": {"big": 9007199254740992}', "event.big is out of range"),
        ('"campaign": {"custom": {"n": -1e16}}', "campaign.custom.n is out of range"),
        ('"points": {"award_amount": ' + "9" * 309 + "}", "points.award_amount is out of range"),
        ('"points": {"award_amount": "1e308"}', "points.award_amount must lie within"),
    ],
)
def test_numbers_braze_cannot_hold_are_400_at_intake(server, trigger_app, raw, message):
    """Issue 19 item 8: NaN, Infinity and a 309-digit award_amount were accepted (202) and
    sent to Braze as they were; numbers beyond 2^53 - 1 reach Liquid rounded."""
    body = json.dumps({k: v for k, v in BODY.items() if k != "points"})[:-1] + f", {raw}}}"
    answer = post(server, body)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["message"].startswith(message)
    assert outbox(trigger_app).counts()[QUEUED] == 0


def test_numbers_up_to_2_to_the_53_minus_1_are_accepted(server, trigger_app):
    edge = 2**53 - 1
    body = {**BODY, "points": {"award_amount": edge}, "event": {"low": -edge, "x": 0.5e15}}
    answer = post(server, body)
    assert answer.status_code == 202
    properties = outbox(trigger_app).get(answer.json()["trigger_id"]).trigger.properties
    assert properties["point_award_amount"] == edge
    assert properties["event"] == {"low": -edge, "x": 0.5e15}


def test_properties_over_50_kb_are_400_before_storing(server, trigger_app):
    answer = post(server, {**BODY, "event": {"blob": "x" * 52_000}})
    assert answer.status_code == 400
    assert "51200 bytes" in answer.json()["error"]["message"]
    assert outbox(trigger_app).counts()[QUEUED] == 0


def test_bodies_over_64_kb_are_413(server, trigger_app):
    answer = post(server, {**BODY, "event": {"blob": "x" * 70_000}})
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "request_entity_too_large"
    exactly = json.dumps({**BODY, "event": {"blob": ""}})
    padded = exactly + " " * (64 * 1024 - len(exactly))
    assert post(server, padded).status_code == 202  # exactly 64 KB
    assert post(server, padded + " ").status_code == 413


def test_a_chunked_body_over_the_cap_is_413_not_truncated(server, trigger_app):
    padded = json.dumps(BODY) + " " * (64 * 1024)  # valid JSON if it were cut at the cap
    answer = post(
        server, iter([padded[i : i + 8192].encode() for i in range(0, len(padded), 8192)])
    )
    assert answer.status_code == 413
    assert outbox(trigger_app).counts()[QUEUED] == 0


def test_a_chunked_body_is_cut_at_the_cap_without_reading_on(server):
    """Send 80 KB in chunks and never finish: the answer must come anyway, from the cap."""
    address = urlsplit(server.url)
    with socket.create_connection((address.hostname, address.port), timeout=5) as conn:
        conn.sendall(
            b"POST /v1/braze/triggers HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + TRIGGER_KEY.encode() + b"\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 8192
        for _ in range(10):
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        answer = conn.recv(4096)  # no terminating chunk was sent
    assert answer.startswith(b"HTTP/1.1 413")


def test_full_queue_is_503_with_retry_after(trigger_env, clock):
    app = create_app(
        {**trigger_env, "WALLET_PROXY_TRIGGER_MAX_QUEUED": "2", "TESTING": True, "CLOCK": clock}
    )
    with LiveServer(app) as live:
        for n in range(2):
            assert post(live, {**BODY, "points": {"award_amount": n}}).status_code == 202
        full = post(live, {**BODY, "points": {"award_amount": 9}})
        assert full.status_code == 503
        assert full.json()["error"]["code"] == "trigger_queue_full"
        assert int(full.headers["Retry-After"]) > 0
        assert post(live, {**BODY, "points": {"award_amount": 0}}).status_code == 202  # repeat
    assert outbox(app).counts()[QUEUED] == 2


def test_email_goes_to_braze_only_when_configured(trigger_env, clock):
    app = create_app(
        {**trigger_env, "WALLET_PROXY_TRIGGER_SET_EMAIL": "true", "TESTING": True, "CLOCK": clock}
    )
    with LiveServer(app) as live:
        trigger_id = post(live).json()["trigger_id"]
    assert outbox(app).get(trigger_id).trigger.attributes == {"email": "ana@example.com"}


def test_accepted_triggers_reach_the_sandboxs_braze_with_the_wallet(server, trigger_app, sandbox):
    """The whole way: SessionM posts, the deliverer enriches from SessionM and calls Braze."""
    enriched = {
        **BODY,
        "customer": {"external_id": "ext-alice", "sessionm_user_id": "demo-alice"},
        "enrich": ["wallet"],
    }
    canvas = {
        "braze_canvas_id": "canvas-7",
        "customer": {"external_id": "ext-bob"},
        "offer": {"title": "Welcome"},
    }
    ids = [post(server, body).json()["trigger_id"] for body in (BODY, enriched, canvas)]
    deliverer = deliverer_for(trigger_app)
    deliverer.window = 0  # the hand clock doesn't move by itself
    while deliverer.run_once():
        pass
    box = outbox(trigger_app)
    assert [box.get(i).state for i in ids] == [SENT, SENT, SENT]
    messages = {m["external_user_id"]: m for m in sandbox.braze.stats()["braze_messages"]}
    assert messages["ext-ana"]["properties"]["offer_title"] == "10 % off"
    assert messages["ext-ana"]["properties"]["point_award_amount"] == 50
    alice = messages["ext-alice"]["properties"]
    assert (alice["wallet_available_points"], alice["wallet_offer_count"]) == (1250, 3)
    assert messages["ext-bob"]["kind"] == "canvas" and messages["ext-bob"]["target"] == "canvas-7"
    assert box.get(ids[0]).dispatch_id == messages["ext-ana"]["dispatch_id"]


def test_a_trigger_asking_for_attributes_sets_what_changed_on_the_profile(
    server, trigger_app, sandbox
):
    """The whole way: the wallet from SessionM, its attributes with the send, remembered."""
    asking = {
        **BODY,
        "customer": {"external_id": "ext-bob", "sessionm_user_id": "demo-bob"},
        "enrich": ["attributes"],
    }
    deliverer = deliverer_for(trigger_app)
    deliverer.window = 0  # the hand clock doesn't move by itself
    for award in (10, 20):  # two triggers, not a repeat of one
        assert post(server, {**asking, "points": {"award_amount": award}}).status_code == 202
        while deliverer.run_once():
            pass
    first, second = sandbox.braze.stats()["braze_messages"]
    assert first["attributes"] == {
        "sessionm_available_points": 40,
        "sessionm_total_points": 40,
        "sessionm_offer_count": 0,
        "sessionm_next_offer_expires_at": None,
    }
    assert second["attributes"] == {}  # nothing new to set
    written = triggers_of(trigger_app).written.latest_for("demo-bob")
    assert written is not None and written.user == BrazeUser(EXTERNAL_ID, "ext-bob")


def test_every_recipient_kind_the_whole_way_to_brazes_stand_in(trigger_env, clock, sandbox):
    """Braze's recipients object: "one of external_user_id, user_alias, braze_id, or email
    ... Requests must specify only one"; an email comes with a prioritization."""
    app = create_app(
        {
            **trigger_env,
            "WALLET_PROXY_TRIGGER_EMAIL_PRIORITIZATION": "unidentified,most_recently_updated",
            "WALLET_PROXY_TRIGGER_SET_EMAIL": "true",
            "TESTING": True,
            "CLOCK": clock,
        }
    )
    alias = {"alias_name": "123", "alias_label": "loyalty_id"}
    customers = [
        {"braze_id": "5f0c6b0e5a11", "email": "bo@example.com"},
        {"user_alias": alias, "external_id": "", "braze_id": None},  # as a template leaves them
        {"email": "cy@example.com", "external_id": ""},
    ]
    with LiveServer(app) as live:
        for customer in customers:
            assert post(live, {**BODY, "customer": customer}).status_code == 202
        both = post(live, {**BODY, "customer": {"external_id": "x", "user_alias": alias}})
        assert both.status_code == 400
        assert both.json()["error"]["message"] == (
            "customer names the customer by external_id and user_alias: give at most one of "
            "external_id, braze_id, user_alias (Braze takes one identifier per recipient)."
        )
    clock.advance(seconds=5)
    deliverer = deliverer_for(app)
    while deliverer.run_once():
        pass
    deliverer.close()
    sent = [r for c in sandbox.braze.stats()["braze_calls"] for r in c["body"]["recipients"]]
    assert [{k: v for k, v in r.items() if k != "trigger_properties"} for r in sent] == [
        {"braze_id": "5f0c6b0e5a11", "attributes": {"email": "bo@example.com"}},
        {"user_alias": alias},
        {"email": "cy@example.com", "prioritization": ["unidentified", "most_recently_updated"]},
    ]
    assert len(sandbox.braze.stats()["braze_messages"]) == 3


def test_trigger_settings_fail_fast_with_one_line(env):
    base = {**env, "WALLET_PROXY_TRIGGER_KEYS": TRIGGER_KEY}
    cases = [
        ({"BRAZE_REST_URL": "https://rest.iad-01.braze.com"}, "BRAZE_REST_API_KEY"),
        ({"BRAZE_REST_API_KEY": "k"}, "BRAZE_REST_URL"),
        ({"BRAZE_REST_URL": "ftp://x", "BRAZE_REST_API_KEY": "k"}, "BRAZE_REST_URL"),
        ({"WALLET_PROXY_TRIGGER_BATCH_MS": "soon"}, "WALLET_PROXY_TRIGGER_BATCH_MS"),
        ({"WALLET_PROXY_TRIGGER_MAX_QUEUED": "0"}, "WALLET_PROXY_TRIGGER_MAX_QUEUED"),
        ({"WALLET_PROXY_TRIGGER_MAX_AGE": "5"}, "WALLET_PROXY_TRIGGER_MAX_AGE"),
        ({"WALLET_PROXY_TRIGGER_SET_EMAIL": "maybe"}, "WALLET_PROXY_TRIGGER_SET_EMAIL"),
        ({"WALLET_PROXY_TRIGGER_KEYS": API_KEY}, "WALLET_PROXY_TRIGGER_KEYS"),
        ({"WALLET_PROXY_TRIGGER_KEYS": "short"}, "WALLET_PROXY_TRIGGER_KEYS"),
        *(
            (
                {"WALLET_PROXY_TRIGGER_EMAIL_PRIORITIZATION": value},
                "WALLET_PROXY_TRIGGER_EMAIL_PRIORITIZATION",
            )
            for value in (
                "newest",
                "identified,unidentified",
                "most_recently_updated,most_recently_updated",
                ",",
            )
        ),
    ]
    for extra, variable in cases:
        with pytest.raises(ConfigError) as caught:
            Settings.from_env({**base, **extra})
        assert caught.value.variable == variable, extra
        assert "\n" not in str(caught.value)
    keyless = {k: v for k, v in base.items() if k != "WALLET_PROXY_TRIGGER_KEYS"}
    with pytest.raises(ConfigError, match="WALLET_PROXY_TRIGGER_KEYS: required"):
        Settings.from_env({**keyless, "BRAZE_REST_URL": "https://b", "BRAZE_REST_API_KEY": "k"})
    settings = Settings.from_env(base)
    assert not settings.triggers_configured and settings.trigger_batch_ms == 250
    assert settings.trigger_max_age == 86_400 and settings.trigger_max_queued == 100_000
    assert settings.trigger_email_prioritization == ("identified", "most_recently_updated")
    chosen = {"WALLET_PROXY_TRIGGER_EMAIL_PRIORITIZATION": " unidentified, least_recently_updated"}
    assert Settings.from_env({**base, **chosen}).trigger_email_prioritization == (
        "unidentified",
        "least_recently_updated",
    )
    assert "k-secret" not in repr(
        Settings.from_env(
            {**base, "BRAZE_REST_URL": "https://b", "BRAZE_REST_API_KEY": "k-secret"}
        )
    )


def test_an_unusable_data_dir_stops_start_up(trigger_env, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="WALLET_PROXY_DATA_DIR"):
        create_app({**trigger_env, "WALLET_PROXY_DATA_DIR": str(blocker / "sub")})


@pytest.mark.slow
def test_with_redis_a_lost_store_is_503_and_nothing_accepted(
    trigger_env, redis_server, redis_url, clock
):
    app = create_app(
        {**trigger_env, "WALLET_PROXY_REDIS_URL": redis_url, "TESTING": True, "CLOCK": clock}
    )
    with LiveServer(app) as live:
        assert post(live).status_code == 202
        redis_server.kill()
        try:
            answer = post(live, {**BODY, "points": {"award_amount": 2}})
        finally:
            redis_server.start()
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "trigger_store_unavailable"
    assert int(answer.headers["Retry-After"]) > 0


@pytest.mark.slow
def test_start_up_warns_about_a_redis_that_may_lose_triggers(trigger_env, redis_url, caplog):
    import redis

    redis.Redis.from_url(redis_url).config_set("maxmemory-policy", "allkeys-lru")
    try:
        create_app({**trigger_env, "WALLET_PROXY_REDIS_URL": redis_url, "TESTING": True})
    finally:
        redis.Redis.from_url(redis_url).config_set("maxmemory-policy", "noeviction")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("allkeys-lru" in w and "noeviction" in w for w in warnings)
    assert any("appendonly" in w for w in warnings)


@pytest.mark.slow
def test_with_redis_the_data_dir_still_holds_the_deliverer_lock(trigger_env, redis_url, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="WALLET_PROXY_DATA_DIR"):
        create_app(
            {
                **trigger_env,
                "WALLET_PROXY_REDIS_URL": redis_url,
                "WALLET_PROXY_DATA_DIR": str(blocker / "sub"),
            }
        )


def test_trigger_outcomes_and_queue_depth_in_the_metrics(trigger_env, clock):
    from prometheus_client import REGISTRY

    app = create_app({**trigger_env, "TESTING": True, "CLOCK": clock})

    def metric(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    counted = {o: metric("wallet_proxy_triggers_total", outcome=o) for o in ("accepted", "repeat")}
    sent_before = metric("wallet_proxy_triggers_total", outcome="sent")
    with LiveServer(app) as live:
        for body in (BODY, {**BODY, "customer": {"external_id": "ext-bob"}}):
            assert post(live, body, {**AUTH, "Idempotency-Key": str(body)}).status_code == 202
        assert post(live, BODY, {**AUTH, "Idempotency-Key": str(BODY)}).status_code == 202
    assert metric("wallet_proxy_triggers_total", outcome="accepted") == counted["accepted"] + 2
    assert metric("wallet_proxy_triggers_total", outcome="repeat") == counted["repeat"] + 1

    # The deliverer reads the depth while the triggers wait for their batch window...
    deliverer = deliverer_for(app)
    stop = threading.Event()
    running = threading.Thread(target=deliverer.run, args=(stop,))
    running.start()
    try:
        wait_until(lambda: metric("wallet_proxy_trigger_queue_depth") == 2, timeout=5)
        # ...and again once they are sent.
        clock.advance(seconds=5)
        wait_until(lambda: metric("wallet_proxy_trigger_queue_depth") == 0, timeout=5)
    finally:
        stop.set()
        running.join()
    assert metric("wallet_proxy_triggers_total", outcome="sent") == sent_before + 2
