"""The direct tags relay (WALLET_PROXY_TAGS_MODE=direct) over real HTTP to the sandbox's
Core: auth, validation, ids, errors, replays. The queued mode's tests (the default) are in
tests/test_tags_queued.py; the input rules below hold in both modes (the view checks them
before either)."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import socket
import threading
import time
from urllib.parse import quote, urlsplit

import pytest
import requests
from flask import request

from tests.helpers import API_KEY, CI_ALLOWANCE, LiveServer, free_port, wait_until
from wallet_proxy import create_app
from wallet_proxy.idempotency import WINDOW, Answer, Idempotency
from wallet_proxy.sandbox import (
    DEMO_CONNECT_AUTH,
    DEMO_CORE_API_KEY,
    DEMO_CORE_API_SECRET,
    DEMO_RETAILER_ID,
    SandboxServer,
)
from wallet_proxy.sessionm import sessionm_http
from wallet_proxy.sessionm_core import CoreClient
from wallet_proxy.stores import SqliteSharedStore

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture(scope="module")
def core_server():
    """A sandbox of our own that also records each raw request line's path (REQUEST_URI)."""
    server = SandboxServer()
    server.raw_paths = []
    server.app.before_request(lambda: server.raw_paths.append(request.environ["REQUEST_URI"]))
    with server:
        yield server


@pytest.fixture
def core(core_server):
    core_server.reset()
    core_server.raw_paths.clear()
    yield core_server
    # A call we timed out on still lands later: let it, so it can't tag the next test's user.
    wait_until(lambda: core_server.stats()["in_flight"] == 0, timeout=5)
    core_server.reset()


@pytest.fixture
def core_env(core, tmp_path) -> dict:
    return {
        "WALLET_PROXY_DATA_DIR": str(tmp_path),  # the Idempotency-Key records, without Redis
        "SESSIONM_CONNECT_URL": core.url,
        "SESSIONM_CONNECT_AUTH": DEMO_CONNECT_AUTH,
        "SESSIONM_RETAILER_ID": DEMO_RETAILER_ID,
        "WALLET_PROXY_API_KEYS": API_KEY,
        "WALLET_PROXY_SESSIONM_CORE_RATE": "0",  # no budget here: tests/test_budget.py has it
        "SESSIONM_CORE_URL": core.url,
        "SESSIONM_CORE_API_KEY": DEMO_CORE_API_KEY,
        "SESSIONM_CORE_API_SECRET": DEMO_CORE_API_SECRET,
        "WALLET_PROXY_TAGS_MODE": "direct",
    }


@pytest.fixture
def core_app(core_env):
    return create_app({**core_env, "TESTING": True})


@pytest.fixture
def relay(core_app):
    return core_app.test_client()


def post(client, user_id="user-1", body=None, *, external=False, headers=None, raw=None):
    route = "external-users" if external else "users"
    path = f"/v1/{route}/{quote(user_id, safe='')}/tags"
    data = (
        raw if raw is not None else json.dumps({"tags": ["braze_test"]} if body is None else body)
    )
    return client.post(
        path,
        data=data,
        headers={**AUTH, "Content-Type": "application/json", **(headers or {})},
    )


def calls(core) -> list[dict]:
    return core.stats()["core_calls"]


def counts(core, user_id: str) -> dict[str, int]:
    return {tag["tag"]: tag["count"] for tag in core.stats()["tag_state"].get(user_id, [])}


def assert_error(response, status: int, code: str) -> str:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == code
    assert set(error) == {"code", "message"}
    return error["message"]


# --- happy paths -------------------------------------------------------------------


def test_relay_tags_a_customer_with_our_core_credentials(relay, core):
    response = post(relay, "user-1", {"tags": ["braze_test", "vip"], "ttl": 2592000})

    assert response.status_code == 200
    assert response.get_json() == {
        "id_type": "user",
        "id": "user-1",
        "tags": ["braze_test", "vip"],
        "ttl": 2592000,
    }
    (call,) = calls(core)
    # The sandbox answers 401 unless Basic auth is the Core key and secret.
    assert call["status"] == 200
    assert call["path"] == f"/priv/v1/apps/{DEMO_CORE_API_KEY}/users/user-1/tags"
    assert (call["tags"], call["ttl"], call["external"]) == (["braze_test", "vip"], 2592000, False)


def test_external_ids_use_the_external_route_and_counters_count_every_call(relay, core):
    for _ in range(2):
        assert post(relay, "ext-42", {"tags": ["visits"]}, external=True).status_code == 200

    assert [call["path"] for call in calls(core)] == [
        f"/priv/v1/apps/{DEMO_CORE_API_KEY}/external/users/ext-42/tags"
    ] * 2
    assert all(call["ttl"] is None for call in calls(core))
    assert counts(core, "ext-42") == {"visits": 2}


def test_the_api_key_also_works_as_the_basic_auth_password(relay, core):
    response = relay.post(
        "/v1/users/user-1/tags",
        json={"tags": ["braze_test"], "ttl": 60},
        headers={"Authorization": "Basic " + _b64(f"braze:{API_KEY}")},
    )
    assert response.status_code == 200
    assert len(calls(core)) == 1


class CountedInput:
    """A WSGI input that counts what the app reads from it."""

    def __init__(self, stream):
        self.stream = stream
        self.read_bytes = 0

    def read(self, *args):
        data = self.stream.read(*args)
        self.read_bytes += len(data)
        return data


def counting_reads(app) -> list[CountedInput]:
    inputs: list[CountedInput] = []
    wsgi_app = app.wsgi_app

    def middleware(environ, start_response):
        environ["wsgi.input"] = counted = CountedInput(environ["wsgi.input"])
        inputs.append(counted)
        return wsgi_app(environ, start_response)

    app.wsgi_app = middleware
    return inputs


def post_chunked(base_url: str, chunks: list[bytes]) -> tuple[int, dict]:
    """POST a chunked body on a raw socket, sending from a thread while the answer is read:
    a server that refuses early may stop reading (and reset) before the body's end."""
    host, port = urlsplit(base_url).netloc.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/users/user-7/tags HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            % (host.encode(), API_KEY.encode())
        )

        def send() -> None:
            with contextlib.suppress(OSError):
                for chunk in chunks:
                    sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sock.sendall(b"0\r\n\r\n")

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        answer = http.client.HTTPResponse(sock)
        answer.begin()
        body = json.loads(answer.read())
        sender.join(10)
    return answer.status, body


VALID = b'{"tags": ["braze_test"], "ttl": 600}'
PADDED = [VALID] + [b" " * 65536] * 16  # valid JSON, then 1 MB of spaces


def test_a_chunked_body_over_16_kb_is_413_and_read_no_further(core_app, core):
    inputs = counting_reads(core_app)
    with LiveServer(core_app) as server:
        status, body = post_chunked(server.url, PADDED)
    assert (status, body["error"]["code"]) == (413, "request_entity_too_large")
    assert calls(core) == []
    assert inputs[0].read_bytes <= 16 * 1024 + 1


def test_a_chunked_body_of_exactly_16_kb_is_accepted(core_app, core):
    padding = 16 * 1024 - len(VALID)
    with LiveServer(core_app) as server:
        assert post_chunked(server.url, [VALID, b" " * padding])[0] == 200
        assert post_chunked(server.url, [VALID, b" " * (padding + 1)])[0] == 413
    assert counts(core, "user-7") == {"braze_test": 1}


@pytest.mark.slow
def test_a_chunked_body_over_16_kb_is_413_under_gunicorn(core, core_env):
    from tests.helpers import GunicornInstance

    settings = {k: v for k, v in core_env.items() if k != "SESSIONM_CONNECT_URL"}
    with GunicornInstance(core.url, workers=1, **settings) as server:
        status, body = post_chunked(server.url, PADDED)
        small = post_chunked(server.url, [VALID])
    assert (status, body["error"]["code"]) == (413, "request_entity_too_large")
    assert small[0] == 200
    assert counts(core, "user-7") == {"braze_test": 1}


def test_over_real_http_with_a_chunked_body(core_app, core):
    def chunks():
        yield b'{"tags": ["braze_test"],'
        yield b' "ttl": 600}'

    with LiveServer(core_app) as server:
        response = requests.post(
            f"{server.url}/v1/users/user-7/tags", data=chunks(), headers=AUTH, timeout=5
        )
    assert response.status_code == 200, response.text
    assert counts(core, "user-7") == {"braze_test": 1}


def test_json_nested_deeper_than_32_is_400_naming_the_field_over_real_http(core_app, core):
    """Issue 19 item 7, on the tags relay's body."""
    from tests.helpers import LiveServer

    deep = b'{"tags": ' + b"[" * 40 + b'"a"' + b"]" * 40 + b"}"
    with LiveServer(core_app) as server:
        response = requests.post(
            f"{server.url}/v1/users/user-7/tags", data=deep, headers=AUTH, timeout=5
        )
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("tags[0][0]") and "nested deeper than 32 levels" in message
    assert calls(core) == []


# --- refusals before SessionM --------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key-123"}, {"Authorization": "Basic !!"}],
    ids=["none", "wrong", "garbled"],
)
def test_without_a_valid_api_key_nothing_is_sent(relay, core, headers):
    response = relay.post("/v1/users/user-1/tags", json={"tags": ["a"]}, headers=headers)
    assert_error(response, 401, "unauthorized")
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert calls(core) == []


def test_not_configured_without_core_settings(client, auth):
    assert_error(post(client), 503, "not_configured")
    # Who is not allowed in does not learn what is configured.
    assert_error(client.post("/v1/users/u/tags", json={"tags": ["a"]}), 401, "unauthorized")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"", "must be JSON"),
        (b"tags=a", "must be JSON"),
        (b"\xff\xfe", "must be JSON"),
        (b'["braze_test"]', "JSON object"),
        (b"[" * 5000, "is nested deeper than 32 levels"),  # past Python's recursion limit
        (b'{"tags": ["a"], "ttl": NaN}', "ttl is NaN, which is not JSON"),
        (b'{"tags": ["a"], "ttl": 1e999}', "ttl is out of range"),
        (b"{}", "tags is required"),
        (b'{"tags": "braze_test"}', "tags must be a list"),
        (b'{"tags": []}', "1 to 20 tags"),
        (json.dumps({"tags": [f"t{n}" for n in range(21)]}).encode(), "1 to 20 tags"),
        (b'{"tags": [""]}', "tags[0] must be 1 to 64 characters"),
        (json.dumps({"tags": ["x" * 65]}).encode(), "tags[0] must be 1 to 64 characters"),
        (b'{"tags": ["ok", "has space"]}', "tags[1] must be 1 to 64"),
        (b'{"tags": ["a/b"]}', "tags[0] must be 1 to 64"),
        (json.dumps({"tags": ["caf\u00e9"]}).encode(), "tags[0] must be 1 to 64"),
        (b'{"tags": [7]}', "tags[0] must be a string"),
        (b'{"tags": ["a", "a"]}', "must not repeat"),
        (b'{"tags": ["a"], "ttl": 0}', "ttl must be a whole number from 1 to 31536000"),
        (b'{"tags": ["a"], "ttl": 31536001}', "ttl must be a whole number from 1 to 31536000"),
        (b'{"tags": ["a"], "ttl": -5}', "ttl must be a whole number"),
        (b'{"tags": ["a"], "ttl": "60"}', "ttl must be a whole number"),
        (b'{"tags": ["a"], "ttl": 1.5}', "ttl must be a whole number"),
        (b'{"tags": ["a"], "ttl": true}', "ttl must be a whole number"),
        (b'{"tags": ["a"], "ttl": null}', "leave it out for a counter"),
        (b'{"tags": ["a"], "tll": 60}', "tll is not a known field"),
    ],
)
def test_invalid_bodies_are_refused_before_sessionm(relay, core, raw, expected):
    message = assert_error(post(relay, raw=raw), 400, "invalid_request")
    assert expected in message
    assert calls(core) == []


def test_edge_values_are_accepted(relay, core):
    body = {"tags": [f"t.{n}:x-y_z" for n in range(19)] + ["x" * 64], "ttl": 31536000}
    assert post(relay, body=body).status_code == 200
    assert post(relay, body={"tags": ["a"], "ttl": 1}).status_code == 200
    assert len(calls(core)) == 2


def test_a_body_over_16_kb_is_413(relay, core):
    body = {"tags": ["a"], "pad": "x" * (16 * 1024)}
    assert_error(post(relay, body=body), 413, "request_entity_too_large")
    assert calls(core) == []


@pytest.mark.parametrize("user_id", [".", "..", "x" * 256, "bad\x01id", "tab\tid"])
def test_ids_that_cannot_be_one_path_segment_are_refused(relay, core, user_id):
    assert_error(post(relay, user_id), 400, "invalid_request")
    assert calls(core) == []


def test_an_id_with_a_newline_never_reaches_sessionm(relay, core):
    # The router already refuses it (404); the id rule would too (400) if it got through.
    assert post(relay, "trailing-newline\n").status_code in (400, 404)
    assert calls(core) == []


@pytest.mark.parametrize(
    ("user_id", "reaches_tags_route"),
    [
        ("ext-a/../../../offers/api/2.0/offers/get_user_offers", False),
        ("ext-q?app=other#frag", True),
        ("ext-%2E%2E", True),
        ("ext-..", True),
        ("ext-ünïcode @+:", True),
    ],
)
def test_an_id_never_changes_the_url_we_call(relay, core, user_id, reaches_tags_route):
    response = post(relay, user_id, {"tags": ["a"], "ttl": 60}, external=True)

    # Exactly one request, to the tags route, with the whole id as one encoded segment.
    assert core.raw_paths == [
        f"/priv/v1/apps/{DEMO_CORE_API_KEY}/external/users/{quote(user_id, safe='')}/tags"
    ]
    assert core.stats()["calls"] == 0  # never a Connect call
    if reaches_tags_route:
        assert response.status_code == 200
        assert [call["user_id"] for call in calls(core)] == [user_id]
    else:
        # The sandbox decodes %2F before routing and finds no route: nothing is tagged.
        assert_error(response, 502, "upstream_error")
        assert calls(core) == []


def test_the_core_url_keeps_every_id_inside_its_segment():
    client = CoreClient(
        "https://core.example.com/base/",
        "app key/1",
        "secret",
        http=sessionm_http(1, 1, 1),
    )
    for user_id in ("a/b", "../..", "?x=1", "#f", "%2F", "a b", "ü"):
        parts = urlsplit(client.tags_url(user_id, external=False))
        assert (parts.query, parts.fragment) == ("", "")
        segments = parts.path.split("/")
        assert segments[:6] == ["", "base", "priv", "v1", "apps", "app%20key%2F1"]
        assert segments[6:] == ["users", quote(user_id, safe=""), "tags"]
    assert "secret" not in repr(client)


# --- SessionM's failures -------------------------------------------------------------


@pytest.mark.parametrize(
    ("knobs", "user_id", "status", "code"),
    [
        ({}, "nobody", 404, "user_not_found"),
        ({"status": 500}, "user-1", 502, "upstream_error"),
        ({"status": 503}, "user-1", 502, "upstream_error"),
        ({"status": 429}, "user-1", 503, "upstream_unavailable"),
        ({"status": 400}, "user-1", 502, "upstream_error"),
        ({"garbage": True}, "user-1", 502, "upstream_error"),
    ],
)
def test_sessionm_errors_map_to_the_wallet_error_shape(relay, core, knobs, user_id, status, code):
    core.configure(**knobs)
    response = post(relay, user_id)
    assert_error(response, status, code)
    if status == 503:
        assert response.headers["Retry-After"] == "1"


def test_a_slow_sessionm_is_a_504_within_the_core_timeout(core_env, core):
    timeout = 0.3
    app = create_app({**core_env, "WALLET_PROXY_CORE_TIMEOUT": str(timeout), "TESTING": True})
    core.configure(hang=True)  # slower than any bound: it answers when released
    started = time.monotonic()
    response = post(app.test_client())
    elapsed = time.monotonic() - started
    core.configure(hang=False)
    assert_error(response, 504, "upstream_timeout")
    assert elapsed < timeout + CI_ALLOWANCE


def test_a_core_trickling_its_headers_is_a_504_within_the_core_timeout(core_env, core):
    timeout = 1.0
    app = create_app({**core_env, "WALLET_PROXY_CORE_TIMEOUT": str(timeout), "TESTING": True})
    core.configure(trickle_headers=0.2)  # a header byte every 0.2 s: no read timeout trips
    with LiveServer(app) as server:
        started = time.monotonic()
        response = requests.post(
            f"{server.url}/v1/users/user-1/tags", json={"tags": ["a"]}, headers=AUTH, timeout=10
        )
        elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert timeout <= elapsed < timeout + CI_ALLOWANCE
    wait_until(lambda: core.stats()["in_flight"] == 0, timeout=5)  # we hung up


def test_core_json_nested_a_million_deep_is_a_502(relay, core):
    core.configure(deep=True)
    assert_error(post(relay), 502, "upstream_error")


def test_secrets_never_reach_answers_or_logs(core_env, core, caplog):
    caplog.set_level(logging.DEBUG)
    app = create_app(
        {**core_env, "SESSIONM_CORE_API_SECRET": "wrong-core-secret-42", "TESTING": True}
    )
    answers = [post(app.test_client(), "user-1").get_data(as_text=True)]
    core.configure(status=500)
    answers.append(post(app.test_client(), "user-1").get_data(as_text=True))

    assert "credentials" in answers[0]
    for secret in ("wrong-core-secret-42", DEMO_CORE_API_KEY, API_KEY):
        assert secret not in caplog.text
        assert all(secret not in answer for answer in answers)


# --- Idempotency-Key ------------------------------------------------------------------


def test_a_repeat_returns_the_first_answer_without_calling_sessionm(relay, core):
    key = {"Idempotency-Key": "dispatch-1:user-1"}
    first = post(relay, "user-1", {"tags": ["visits"]}, headers=key)
    second = post(relay, "user-1", {"tags": ["visits"]}, headers=key)

    assert first.status_code == second.status_code == 200
    assert second.get_json() == first.get_json()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    assert len(calls(core)) == 1
    assert counts(core, "user-1") == {"visits": 1}


def test_keys_are_scoped_to_route_and_customer(relay, core):
    key = {"Idempotency-Key": "same-key"}
    for user_id, external in (("user-1", False), ("user-2", False), ("user-1", True)):
        post(relay, user_id, {"tags": ["visits"]}, external=external, headers=key)
    assert len(calls(core)) == 3


def test_the_same_key_with_another_body_is_422(relay, core):
    key = {"Idempotency-Key": "k-1"}
    post(relay, body={"tags": ["visits"]}, headers=key)
    assert_error(
        post(relay, body={"tags": ["visits"], "ttl": 60}, headers=key), 422, "idempotency_conflict"
    )
    assert len(calls(core)) == 1


def test_a_duplicate_while_the_first_is_in_flight_is_409(core_app, core):
    core.configure(latency=0.6)
    key = {"Idempotency-Key": "in-flight"}
    first = {}
    worker = threading.Thread(
        target=lambda: first.setdefault("response", post(core_app.test_client(), headers=key))
    )
    worker.start()
    wait_until(lambda: core.stats()["in_flight"] == 1, timeout=5)
    duplicate = post(core_app.test_client(), headers=key)
    worker.join()

    assert_error(duplicate, 409, "idempotency_in_progress")
    assert duplicate.headers["Retry-After"] == "1"
    assert first["response"].status_code == 200
    assert post(core_app.test_client(), headers=key).headers["Idempotent-Replayed"] == "true"
    assert len(calls(core)) == 1


@pytest.mark.parametrize("value", ["", "x" * 256, "caf\u00e9", "a\x7fb"])
def test_a_malformed_idempotency_key_is_400(relay, core, value):
    message = assert_error(post(relay, headers={"Idempotency-Key": value}), 400, "invalid_request")
    assert "Idempotency-Key" in message
    assert calls(core) == []


def test_a_timed_out_counter_is_not_sent_again(core_env, core):
    """SessionM may apply a call we gave up on: the retry must not count it twice."""
    app = create_app({**core_env, "WALLET_PROXY_CORE_TIMEOUT": "0.3", "TESTING": True})
    core.configure(latency=0.8)
    key = {"Idempotency-Key": "slow-1"}
    assert_error(
        post(app.test_client(), body={"tags": ["visits"]}, headers=key), 504, "upstream_timeout"
    )
    wait_until(lambda: core.stats()["in_flight"] == 0, timeout=5)
    core.configure(latency=0)
    replay = post(app.test_client(), body={"tags": ["visits"]}, headers=key)

    assert_error(replay, 504, "upstream_timeout")
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert len(calls(core)) == 1
    assert counts(core, "user-1") == {"visits": 1}  # SessionM did apply the first call


@pytest.mark.parametrize(
    ("knobs", "body", "sent_again"),
    [
        ({"status": 500}, {"tags": ["visits"]}, False),  # counter, maybe applied: kept
        ({"status": 500}, {"tags": ["seen"], "ttl": 60}, True),  # ttl: resending is harmless
        ({"status": 429}, {"tags": ["visits"]}, True),  # refused: nothing was applied
        ({"status": 503}, {"tags": ["visits"]}, True),
        ({"status": 400}, {"tags": ["visits"]}, False),  # SessionM's final answer
    ],
)
def test_what_a_failed_first_call_leaves_for_the_retry(relay, core, knobs, body, sent_again):
    key = {"Idempotency-Key": "retry-me"}
    core.configure(**knobs)
    first = post(relay, body=body, headers=key)
    core.configure(status=None)
    retry = post(relay, body=body, headers=key)

    assert first.status_code != 200
    if sent_again:
        assert retry.status_code == 200
        assert "Idempotent-Replayed" not in retry.headers
        assert len(calls(core)) == 2
    else:
        assert (retry.status_code, retry.get_json()) == (first.status_code, first.get_json())
        assert retry.headers["Idempotent-Replayed"] == "true"
        assert len(calls(core)) == 1


def test_a_counter_refused_at_connect_is_sent_when_sessionm_is_back(core_env):
    """Nothing reached SessionM, so the retry must really call it, not replay the 503."""
    port = free_port()
    app = create_app(
        {**core_env, "SESSIONM_CORE_URL": f"http://127.0.0.1:{port}", "TESTING": True}
    )
    key = {"Idempotency-Key": "refused-1"}
    assert_error(
        post(app.test_client(), body={"tags": ["visits"]}, headers=key),
        503,
        "upstream_unavailable",
    )
    with SandboxServer(port=port) as back:
        retry = post(app.test_client(), body={"tags": ["visits"]}, headers=key)
        assert retry.status_code == 200
        assert "Idempotent-Replayed" not in retry.headers
        assert counts(back, "user-1") == {"visits": 1}


def test_an_unknown_customer_answer_is_replayed(relay, core):
    key = {"Idempotency-Key": "who"}
    post(relay, "nobody", headers=key)
    assert_error(post(relay, "nobody", headers=key), 404, "user_not_found")
    assert len(calls(core)) == 1


def test_keys_are_forgotten_after_24_hours(tmp_path):
    now = [0.0]
    store = SqliteSharedStore(tmp_path / "idempotency.sqlite3", unix_time=lambda: now[0])
    idempotency = Idempotency(store, lease=30)
    sent = []

    def call() -> Answer:
        sent.append(1)
        return Answer(200, {"ok": True})

    scope, body = ("users", "u", "k"), {"tags": ["a"], "ttl": None}
    assert idempotency.run(scope, body, call, resend_safe=False) == (
        Answer(200, {"ok": True}),
        False,
    )
    now[0] += WINDOW - 1
    assert idempotency.run(scope, body, call, resend_safe=False)[1] is True
    now[0] += 2
    assert idempotency.run(scope, body, call, resend_safe=False)[1] is False
    assert len(sent) == 2


# --- shared store: every instance sees the keys ---------------------------------------


@pytest.fixture
def redis_apps(core_env, redis_url):
    env = {**core_env, "WALLET_PROXY_REDIS_URL": redis_url, "TESTING": True}
    return create_app(env), create_app(env)


def test_with_redis_a_retry_on_another_instance_is_replayed(redis_apps, core):
    one, two = redis_apps
    key = {"Idempotency-Key": "braze-dispatch-9"}
    assert post(one.test_client(), headers=key).status_code == 200
    replay = post(two.test_client(), headers=key)

    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert len(calls(core)) == 1


def test_with_redis_an_in_flight_duplicate_on_another_instance_is_409(redis_apps, core):
    one, two = redis_apps
    core.configure(latency=0.6)
    key = {"Idempotency-Key": "twice"}
    worker = threading.Thread(target=post, args=(one.test_client(),), kwargs={"headers": key})
    worker.start()
    wait_until(lambda: core.stats()["in_flight"] == 1, timeout=5)
    assert_error(post(two.test_client(), headers=key), 409, "idempotency_in_progress")
    worker.join()
    assert len(calls(core)) == 1


def test_without_redis_a_keyed_request_is_refused_not_risked(redis_apps, core, redis_server):
    one, _ = redis_apps
    redis_server.kill()
    assert_error(
        post(one.test_client(), headers={"Idempotency-Key": "k"}), 503, "idempotency_unavailable"
    )
    assert calls(core) == []
    # Without a key there is nothing to remember: the call goes through.
    assert post(one.test_client()).status_code == 200


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()
