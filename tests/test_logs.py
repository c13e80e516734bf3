"""Logs: one JSON line per request, user ids hashed, control characters escaped, no secrets;
in-process first, then under real gunicorn with everything it writes captured."""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import re
import socket
import uuid

import pytest
import requests
from click.testing import CliRunner
from prometheus_client import REGISTRY
from werkzeug.security import generate_password_hash

from tests.helpers import API_KEY, OTHER_KEY, GunicornInstance
from wallet_proxy import request_log
from wallet_proxy.cli import DEMO_TRIGGER, main
from wallet_proxy.container import services
from wallet_proxy.logs import JsonLines, UserIds, json_handler
from wallet_proxy.sandbox import (
    DEMO_BRAZE_API_KEY,
    DEMO_CONNECT_AUTH,
    DEMO_CORE_API_KEY,
    DEMO_CORE_API_SECRET,
)

AUTH = {"Authorization": f"Bearer {API_KEY}"}
HASH_KEY = "log-hash-key-for-tests-0001"
TIME_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\Z")
OUR_ID_RE = re.compile(r"^[0-9a-f]{12}-[0-9a-f]+\Z")


def request_lines(captured: str) -> list[dict]:
    lines = [json.loads(line) for line in captured.splitlines() if line]
    return [line for line in lines if line.get("logger") == "wallet_proxy.request"]


def written(capfd) -> str:
    """Standard output so far, queued request lines included."""
    request_log.flush_all()
    return capfd.readouterr().out


def test_one_json_line_per_request(client, capfd):
    written(capfd)
    first = client.get("/v1/wallets/demo-alice?limit=1", headers=AUTH)
    second = client.get("/v1/wallets/demo-alice?limit=1", headers=AUTH)
    refused = client.get("/v1/wallets/demo-alice")
    miss, hit, unauthorized = request_lines(written(capfd))

    assert miss["cache"] == "miss" and miss["sessionm_calls"] == 1
    assert hit["cache"] == "hit" and hit["sessionm_calls"] == 0
    assert unauthorized["cache"] is None and unauthorized["status"] == 401
    for line, response in ((miss, first), (hit, second), (unauthorized, refused)):
        assert TIME_RE.match(line["time"])
        assert line["level"] == "INFO"
        assert line["request_id"] == response.headers["X-Request-ID"]
        assert OUR_ID_RE.match(line["request_id"])
        assert line["method"] == "GET"
        assert line["route"] == "/v1/wallets/<user_id>"
        assert line["status"] == response.status_code
        assert line["bytes"] == len(response.data)
        assert 0 <= line["duration_ms"] < 10_000
    assert miss["request_id"] != hit["request_id"]


def test_unmatched_paths_are_not_logged(client, capfd):
    written(capfd)
    client.get("/no/such/secret-looking-path", headers=AUTH)
    output = written(capfd)
    (line,) = request_lines(output)
    assert (line["route"], line["status"]) == ("unmatched", 404)
    assert "secret-looking" not in output


@pytest.mark.parametrize("given", ["abc-123", str(uuid.uuid4()), "a" * 128, "Root=1-5f/x+y=="])
def test_a_valid_request_id_is_kept(client, capfd, given):
    response = client.get("/healthz", headers={"X-Request-ID": given})
    assert response.headers["X-Request-ID"] == given
    assert request_lines(written(capfd))[-1]["request_id"] == given


@pytest.mark.parametrize("given", ["", "a" * 129, "a b", "ünï", 'x"y', "a\tb", "x;y"])
def test_an_odd_request_id_is_replaced(client, capfd, given):
    response = client.get("/healthz", headers={"X-Request-ID": given})
    assert OUR_ID_RE.match(response.headers["X-Request-ID"])
    assert request_lines(written(capfd))[-1]["request_id"] != given


def test_user_ids_are_hmacs_that_log_id_computes(capfd, make_app):
    app = make_app(WALLET_PROXY_LOG_HASH_KEY=HASH_KEY)
    written(capfd)
    app.test_client().get("/v1/wallets/demo-alice", headers=AUTH)
    output = written(capfd)
    (line,) = request_lines(output)
    assert "demo-alice" not in output
    result = CliRunner().invoke(
        main, ["log-id", "demo-alice"], env={"WALLET_PROXY_LOG_HASH_KEY": HASH_KEY}
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == line["user"]
    assert re.fullmatch(r"[0-9a-f]{16}", line["user"])


def test_user_ids_as_they_are_when_asked(capfd, make_app):
    app = make_app(WALLET_PROXY_LOG_USER_IDS="true")
    written(capfd)
    app.test_client().get("/v1/wallets/demo-alice", headers=AUTH)
    (line,) = request_lines(written(capfd))
    assert line["user"] == "demo-alice"


def test_without_a_key_each_process_hashes_its_own_way_and_says_so(
    caplog, make_app, fresh_warnings
):
    with caplog.at_level(logging.WARNING, logger="wallet_proxy.logs"):
        make_app()
    assert "WALLET_PROXY_LOG_HASH_KEY is not set" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="wallet_proxy.logs"):
        make_app(WALLET_PROXY_LOG_HASH_KEY=HASH_KEY)
    assert "WALLET_PROXY_LOG_HASH_KEY" not in caplog.text
    assert UserIds(None)("demo-alice") != UserIds(None)("demo-alice")


PRODUCTION_WARNINGS = (
    "WALLET_PROXY_LOG_HASH_KEY is not set",
    "The SessionM budgets are per process without WALLET_PROXY_REDIS_URL",
)
# What both warnings are about: a budget without Redis, no hash key.
WITHOUT_REDIS = {"WALLET_PROXY_SESSIONM_RATE": "50"}


def test_the_settings_warnings_are_written_once_per_process(make_app, caplog, fresh_warnings):
    """A command or a test builds several apps from the same settings: one warning each."""
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            make_app(**WITHOUT_REDIS)
    for warning in PRODUCTION_WARNINGS:
        assert caplog.text.count(warning) == 1, warning


def test_a_fleet_of_one_process_has_nothing_to_warn_about_redis(make_app, caplog, fresh_warnings):
    """The demo's case: its one worker is the fleet (WALLET_PROXY_FLEET_SIZE=1)."""
    alone = {
        **WITHOUT_REDIS,
        "WALLET_PROXY_FLEET_SIZE": "1",
        "WALLET_PROXY_LOG_HASH_KEY": HASH_KEY,
    }
    with caplog.at_level(logging.WARNING):
        make_app(**alone)
    assert not [warning for warning in PRODUCTION_WARNINGS if warning in caplog.text]
    with caplog.at_level(logging.WARNING):
        make_app(**{**alone, "WALLET_PROXY_FLEET_SIZE": "2"})
    assert "The SessionM budgets are per process" in caplog.text


def test_log_id_needs_the_key():
    unset = {"WALLET_PROXY_LOG_HASH_KEY": None, "WALLET_PROXY_LOG_USER_IDS": None}
    result = CliRunner().invoke(main, ["log-id", "demo-alice"], env=unset)
    assert result.exit_code == 1
    assert "WALLET_PROXY_LOG_HASH_KEY" in result.output
    short = CliRunner().invoke(
        main, ["log-id", "demo-alice"], env={"WALLET_PROXY_LOG_HASH_KEY": "short"}
    )
    assert short.exit_code == 1
    assert "WALLET_PROXY_LOG_HASH_KEY" in short.output and "short" not in short.output
    plain = CliRunner().invoke(
        main, ["log-id", "demo-alice"], env={**unset, "WALLET_PROXY_LOG_USER_IDS": "true"}
    )
    assert (plain.exit_code, plain.output.strip()) == (0, "demo-alice")


def answered(n: int) -> request_log.Answered:
    return request_log.Answered(0.0, f"id-{n}", "GET", "/healthz", 200, 0.001, None, 0, 15, None)


def test_lines_are_written_whole_and_at_most_a_pipe_buffer_at_a_time():
    """On a pipe, a write of at most PIPE_BUF bytes can't be split by another worker's."""
    lines = [b'{"n":%d,"pad":"%s"}\n' % (n, b"x" * (n * 37 % 300)) for n in range(200)]
    lines.insert(100, b"y" * 5000 + b"\n")  # longer than a pipe buffer: alone
    chunks = list(request_log.line_chunks(b"".join(lines)))
    assert b"".join(chunks) == b"".join(lines)
    assert len(chunks) < len(lines) / 5
    for chunk in chunks:
        assert chunk.endswith(b"\n")
        assert len(chunk) <= request_log.PIPE_BUF or chunk.count(b"\n") == 1


def test_output_that_blocks_drops_lines_rather_than_piling_them_up(monkeypatch):
    monkeypatch.setattr(request_log, "QUEUE_LIMIT", 3)
    read, write = os.pipe()
    log = request_log.RequestLog(write, UserIds(None))
    request_log._logs.discard(log)  # flushed by this test only
    dropped = "wallet_proxy_log_lines_dropped_total"
    before = REGISTRY.get_sample_value(dropped)
    for n in range(5):
        log.add(answered(n))
    assert REGISTRY.get_sample_value(dropped) == before + 2
    log.flush()
    written = os.read(read, 65536).decode().splitlines()
    assert [json.loads(line)["request_id"] for line in written] == ["id-0", "id-1", "id-2"]
    os.close(read)
    os.close(write)


def test_control_characters_are_escaped():
    record = logging.LogRecord(
        "x",
        logging.WARNING,
        __file__,
        1,
        "a\nforged\r\x1b[31m\x00\x7f\u2028\x85 %s",
        ("\n",),
        None,
    )
    line = JsonLines().format(record)
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", line)
    assert json.loads(line)["message"] == "a\nforged\r\x1b[31m\x00\x7f\u2028\x85 \n"


def test_a_flights_records_carry_its_request_id_and_no_user_id(app, client, monkeypatch):
    """A bug in a wallet fetch is logged by the flight's thread: with the request's id, and
    the user as a hash."""
    stream = io.StringIO()
    handler = json_handler(stream)
    logging.getLogger("wallet_proxy").addHandler(handler)
    service = services(app).wallet_service
    monkeypatch.setattr(service.client, "fetch_wallet", lambda *a, **k: 1 / 0)
    try:
        response = client.get("/v1/wallets/demo-alice", headers=AUTH)
    finally:
        logging.getLogger("wallet_proxy").removeHandler(handler)
    assert response.status_code == 500
    (record,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert record["request_id"] == response.headers["X-Request-ID"]
    assert record["level"] == "ERROR" and "ZeroDivisionError" in record["exc_info"]
    assert "demo-alice" not in stream.getvalue()


def test_an_unhandled_error_is_logged_by_its_route_not_its_path(app, client, monkeypatch):
    stream = io.StringIO()
    handler = json_handler(stream)
    logging.getLogger("wallet_proxy").addHandler(handler)
    monkeypatch.setattr(services(app).wallet_service, "lookup", lambda *a, **k: 1 / 0)
    try:
        response = client.get("/v1/wallets/demo-alice", headers=AUTH)
    finally:
        logging.getLogger("wallet_proxy").removeHandler(handler)
    assert response.status_code == 500
    assert response.get_json()["error"]["code"] == "internal_error"
    (record,) = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert record["message"] == "unhandled error on GET /v1/wallets/<user_id>"
    assert "demo-alice" not in stream.getvalue()


# Under real gunicorn: every line it writes is captured and read.

STAFF, PASSWORD = "support-lead", "staff-password-for-tests-1"
SECRETS = {
    "API key": API_KEY,
    "other API key": OTHER_KEY,
    "Connect auth": DEMO_CONNECT_AUTH,
    "Connect secret": base64.b64decode(DEMO_CONNECT_AUTH).decode().partition(":")[2],
    "Core key": DEMO_CORE_API_KEY,
    "Core secret": DEMO_CORE_API_SECRET,
    "staff password": PASSWORD,
    "secret key": "flask-secret-key-for-tests-0001",
    "metrics token": "metrics-token-for-tests-0001",
    "log hash key": HASH_KEY,
    "Braze key": DEMO_BRAZE_API_KEY,
    "trigger key": "trigger-key-for-tests-0001",
}


class Captured(GunicornInstance):
    """The service under real gunicorn with every line it writes kept."""

    def __init__(self, sandbox, folder):
        super().__init__(
            sandbox.url,
            log=folder / "stderr.log",
            out=folder / "stdout.log",
            **settings(sandbox, folder),
        )

    def stdout(self) -> str:
        assert self.out is not None
        return self.out.read_text()

    def stderr(self) -> str:
        return self.log.read_text()


def settings(sandbox, folder) -> dict:
    return {
        "BRAZE_REST_URL": sandbox.url,
        "BRAZE_REST_API_KEY": DEMO_BRAZE_API_KEY,
        "WALLET_PROXY_TRIGGER_KEYS": SECRETS["trigger key"],
        "WALLET_PROXY_DATA_DIR": str(folder),
        "SESSIONM_CORE_URL": sandbox.url,
        "SESSIONM_CORE_API_KEY": DEMO_CORE_API_KEY,
        "SESSIONM_CORE_API_SECRET": DEMO_CORE_API_SECRET,
        "WALLET_PROXY_API_KEYS": f"{API_KEY},{OTHER_KEY}",
        "WALLET_PROXY_STAFF_USERS": f"{STAFF}:{generate_password_hash(PASSWORD)}",
        "WALLET_PROXY_SECRET_KEY": SECRETS["secret key"],
        "WALLET_PROXY_METRICS_TOKEN": SECRETS["metrics token"],
        "WALLET_PROXY_LOG_HASH_KEY": HASH_KEY,
        "WALLET_PROXY_LOG_LEVEL": "debug",
    }


def every_line_is_json(text: str) -> list[dict]:
    lines = text.splitlines()
    assert lines
    return [json.loads(line) for line in lines]  # a forged or plain line would fail here


def raw_request(url: str, data: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        conn.sendall(data)
        return conn.recv(4096)


@pytest.mark.slow
def test_no_line_can_be_forged(sandbox, tmp_path):
    forged = '127.0.0.1 "GET /v1/wallets/FORGED" 200'
    with Captured(sandbox, tmp_path) as server:
        for encoded in ("%0a", "%0d", "%0d%0a", "%1b", "%00", "%7f", "%e2%80%a8"):
            path = f"/v1/wallets/x{encoded}{requests.utils.quote(forged)}"
            requests.get(server.url + path, headers=AUTH, timeout=5)
        # Raw bytes gunicorn refuses itself, which its error log reports.
        for line in (
            f"GET /v1/wallets/x\x0b{forged} HTTP/1.1",
            f"GET /v1/wallets/x\x1b[2J{forged} HTTP/1.1",
            f"GET /v1/wallets/x\r{forged} HTTP/1.1",
        ):
            raw_request(server.url, f"{line}\r\nHost: x\r\n\r\n".encode("latin-1"))
        raw_request(
            server.url, f"GET / HTTP/1.1\r\nHost: x\r\nX-Bad: a\x1b{forged}\r\n\r\n".encode()
        )
    records = every_line_is_json(server.stdout()) + every_line_is_json(server.stderr())
    assert not any(
        line.startswith("127.0.0.1") for line in (server.stdout() + server.stderr()).splitlines()
    )
    answered = [r for r in records if r["logger"] == "wallet_proxy.request"]
    assert sum(r["route"] != "/healthz" for r in answered) == 7  # one line per request
    refused = [
        r for r in records if r["logger"] == "gunicorn.error" and "Invalid request" in r["message"]
    ]
    assert refused  # gunicorn's own error log, through the same formatter


@pytest.mark.slow
def test_a_request_gunicorn_refuses_is_logged_without_its_path(sandbox, tmp_path):
    """Issue 19 item 5: gunicorn's warning about a request line it can't read quoted the
    line, customer id and all; the service logs ids only as HMACs."""
    with Captured(sandbox, tmp_path) as server:
        for line in (
            "GET /v1/wallets/cust-secret-1\x0b HTTP/1.1",  # a control character
            "GET /v1/wallets/cust-secret-2 cust-secret-3 HTTP/1.1",  # a space
            "GET /v1/wallets/cust-secret-4 HTTP/9.9",
            "GET /support/wallets/cust-secret-5\x00 HTTP/1.1",
        ):
            answer = raw_request(server.url, f"{line}\r\nHost: x\r\n\r\n".encode("latin-1"))
            assert answer.startswith(b"HTTP/1.1 400"), answer
    refused = [
        record["message"]
        for record in every_line_is_json(server.stderr())
        if record["logger"] == "gunicorn.error" and "Invalid request" in record["message"]
    ]
    assert len(refused) == 4
    assert all(message.endswith("it may name a customer)") for message in refused), refused
    assert "cust-secret" not in server.stdout() + server.stderr()


def test_gunicorns_error_line_for_a_failed_request_leaves_its_path_out(capsys):
    from gunicorn.config import Config

    from wallet_proxy.logs import GunicornLogger

    logger = GunicornLogger(Config())
    try:
        raise RuntimeError("a failure")
    except RuntimeError:
        logger.exception("Error handling request %s %s", "GET", "/v1/wallets/cust-secret-6")
    written = capsys.readouterr().err
    assert "Error handling request (what the client sent is not repeated" in written
    assert "RuntimeError" in written and "cust-secret" not in written


@pytest.mark.slow
def test_no_secret_and_no_user_id_in_any_line(sandbox, tmp_path):
    """The suite's kinds of requests against real gunicorn; then every line is searched."""
    user_ids = [
        "demo-alice",
        "demo-bob",
        "user-secret-1",
        "nobody-here",
        "tag-target-7",
        "ext-alice",
    ]
    trigger = {"Authorization": f"Bearer {SECRETS['trigger key']}"}
    with Captured(sandbox, tmp_path) as server:
        get = lambda path, **kw: requests.get(server.url + path, timeout=10, **kw)  # noqa: E731
        post = lambda path, **kw: requests.post(server.url + path, timeout=10, **kw)  # noqa: E731
        sent = [
            get("/v1/wallets/demo-alice", headers=AUTH),
            get("/v1/wallets/demo-alice?culture=es-ES&limit=2", headers=AUTH),
            get("/v1/wallets/demo-bob", auth=("braze", OTHER_KEY)),
            get("/v1/wallets/nobody-here", headers=AUTH),
            get("/v1/wallets/demo-alice", headers={"Authorization": "Bearer wrong-key-123"}),
            get("/v1/wallets/demo-alice", auth=("braze", PASSWORD)),
            get("/v1/wallets/demo-alice?limit=0", headers=AUTH),
            get("/v1/wallets/bad%20id", headers=AUTH),
            post("/v1/users/tag-target-7/tags", headers=AUTH, json={"tags": ["braze_test"]}),
            post(
                "/v1/external-users/tag-target-7/tags",
                headers={**AUTH, "Idempotency-Key": "k-1"},
                json={"tags": ["x"], "ttl": 60},
            ),
            post("/v1/users/tag-target-7/tags", headers=AUTH, data=b"{not json"),
            post("/v1/users/tag-target-7/tags", json={"tags": ["x"]}),
            get("/support/", auth=(STAFF, PASSWORD)),
            get("/support/wallets/demo-alice", auth=(STAFF, PASSWORD)),
            get("/support/", auth=(STAFF, "wrong-password")),
            get("/metrics", headers={"Authorization": f"Bearer {SECRETS['metrics token']}"}),
            get("/metrics", headers=AUTH),
            get("/readyz"),
            get("/openapi.json"),
            post("/v1/braze/triggers", headers=trigger, data=DEMO_TRIGGER),
            post("/v1/braze/triggers", headers=trigger, json={"customer": {}}),
            post("/v1/braze/triggers", headers=AUTH, data=DEMO_TRIGGER),
        ]
        session = requests.Session()
        sent.append(session.get(f"{server.url}/support/login", timeout=10))
        token = re.search(r'name="csrf_token" value="([^"]+)"', sent[-1].text).group(1)
        form = {"csrf_token": token, "name": STAFF, "password": PASSWORD}
        sent.append(session.post(f"{server.url}/support/login", data=form, timeout=10))
        sent.append(session.get(f"{server.url}/support/wallets/demo-bob", timeout=10))
        form = {"csrf_token": token, "name": STAFF, "password": PASSWORD + "x"}
        sent.append(session.post(f"{server.url}/support/login", data=form, timeout=10))
        sandbox.configure(status=500)
        sent.append(get("/v1/wallets/user-secret-1", headers=AUTH))
        sandbox.configure(status=None)
    statuses = {r.status_code for r in sent}
    assert {200, 202, 400, 401, 404, 502} <= statuses
    out, err = server.stdout(), server.stderr()
    every_line_is_json(out + err)
    for name, secret in SECRETS.items():
        assert secret not in out + err, f"the {name} is in the logs"
    for user_id in user_ids:
        assert user_id not in out + err, f"{user_id} is in the logs"
    assert "staff-password" not in out + err
    lines = [line for line in request_lines(out) if line["route"] != "/healthz"]  # startup polls
    redirects = sum(len(r.history) for r in sent)
    assert len(lines) == len(sent) + redirects  # one line per request, none missing
