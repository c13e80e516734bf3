"""Fresh hits answered before Flask's dispatch (fast_hits.py) are the Flask view's answers.

One app, two entry points: the deployed one (the fast path in front of Flask) and Flask's
own. The same requests to both, with the clock held still, get the same status, headers
and bytes; the request lines agree; and a fresh hit really skips the view.
"""

from __future__ import annotations

import io
import json
import os
import sys

import pytest

from tests.helpers import API_KEY
from wallet_proxy import request_log
from wallet_proxy.factory import close_app
from wallet_proxy.fast_hits import FastHits

AUTH = f"Bearer {API_KEY}"
CASES = [
    ("/v1/wallets/demo-alice", "", AUTH),
    ("/v1/wallets/demo-alice", "culture=es-ES", AUTH),
    ("/v1/wallets/demo-alice", "culture=es_es&limit=1", AUTH),
    ("/v1/wallets/demo-alice", "limit=0", AUTH),  # 400
    ("/v1/wallets/demo-alice", "culture=klingon", AUTH),  # 400
    ("/v1/wallets/demo-alice", "", "Bearer wrong-key-123"),  # 401
    ("/v1/wallets/demo-alice", "", ""),  # 401
    ("/v1/wallets/demo-alice/", "", AUTH),  # not the route
    ("/v1/wallets/demo-bob", "cache-buster=1", AUTH),
    ("/v1/wallets/nobody", "", AUTH),  # 404, remembered
    ("/v1/wallets/caf%C3%A9", "", AUTH),
]


def environ(path: str, query: str, authorization: str) -> dict:
    env = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path.replace("%C3%A9", "\xc3\xa9"),  # as a WSGI server decodes it
        "QUERY_STRING": query,
        "SERVER_NAME": "wallet-proxy.test",
        "SERVER_PORT": "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "wallet-proxy.test",
        "HTTP_X_REQUEST_ID": "req-fast-hits-0001",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(),
        "wsgi.errors": sys.stderr,
    }
    if authorization:
        env["HTTP_AUTHORIZATION"] = authorization
    return env


def call(wsgi, env: dict) -> tuple[str, list[tuple[str, str]], bytes]:
    answered = {}

    def start_response(status, headers, exc_info=None):
        answered.update(status=status, headers=headers)

    body = b"".join(wsgi(env, start_response))
    return answered["status"], answered["headers"], body


@pytest.fixture
def deployed(make_app):
    return make_app()


def test_both_paths_answer_every_case_alike(deployed):
    fast = deployed.wsgi_app
    assert isinstance(fast, FastHits)
    flask_only = fast.flask_app
    for path, query, authorization in CASES:
        call(flask_only, environ(path, query, authorization))  # a miss fills the cache
        through_flask = call(flask_only, environ(path, query, authorization))
        through_fast = call(fast, environ(path, query, authorization))
        assert through_fast == through_flask, (path, query, authorization)


def test_a_fresh_hit_skips_the_view_and_anything_else_reaches_it(deployed, monkeypatch):
    views = []
    view = deployed.view_functions["api.get_wallet"]
    monkeypatch.setitem(
        deployed.view_functions,
        "api.get_wallet",
        lambda **kwargs: views.append(kwargs) or view(**kwargs),
    )
    hit = environ("/v1/wallets/demo-alice", "", AUTH)
    assert call(deployed.wsgi_app, hit)[0] == "200 OK"  # a miss: the view
    assert call(deployed.wsgi_app, hit)[0] == "200 OK"  # a fresh hit: not the view
    assert call(deployed.wsgi_app, environ("/v1/wallets/demo-alice", "limit=x", AUTH))[0] == (
        "400 BAD REQUEST"
    )
    assert len(views) == 2


def test_the_request_lines_of_both_paths_agree(tmp_path, make_app):
    out = tmp_path / "lines"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT)
    app = make_app()
    try:
        app.wsgi_app.log.fd = fd  # the app's request lines, to a file of this test
        env_hit = environ("/v1/wallets/demo-alice", "culture=es-ES", AUTH)
        call(app.wsgi_app.flask_app, env_hit)  # the miss
        call(app.wsgi_app.flask_app, env_hit)  # a hit through Flask
        call(app.wsgi_app, env_hit)  # a hit before Flask
        request_log.flush_all()
    finally:
        close_app(app)
        os.close(fd)
    *_, through_flask, through_fast = [json.loads(line) for line in out.read_text().splitlines()]
    for line in (through_flask, through_fast):
        del line["time"], line["duration_ms"]
    assert through_fast == through_flask
    assert through_fast["cache"] == "hit" and through_fast["route"] == "/v1/wallets/<user_id>"
