"""Shared fixtures: a controllable clock, the real sandbox over HTTP, the app and its client.

The helpers behind them live in tests/helpers.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from flask import Flask

from tests.helpers import API_KEY, OTHER_KEY, Clock, LiveServer, RedisServer
from tests.triggers_helpers import BrazeServer
from wallet_proxy import create_app, logs, request_log
from wallet_proxy.factory import close_app
from wallet_proxy.sandbox import DEMO_CONNECT_AUTH, DEMO_RETAILER_ID, SandboxServer


@pytest.fixture(autouse=True)
def _request_lines_written():
    """Request lines are queued and written by a thread: write a test's own before the next
    test begins, so no test reads another's lines in what it captures."""
    yield
    request_log.flush_all()


@pytest.fixture
def fresh_warnings(monkeypatch):
    """This process as if it had written no warning yet: each is written once per process
    (logs.warn_once), and an earlier test may have written it."""
    monkeypatch.setattr(logs, "_warned", set())


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
def sandbox_server():
    with SandboxServer() as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server):
    sandbox_server.reset()
    yield sandbox_server
    sandbox_server.reset()


@pytest.fixture(scope="module")
def braze_server():
    """The sandbox seen from its Braze side, one per module (tests/triggers_helpers.py)."""
    with BrazeServer() as server:
        yield server


@pytest.fixture
def braze(braze_server):
    braze_server.reset()
    yield braze_server
    braze_server.reset()


@pytest.fixture
def env(sandbox, tmp_path) -> dict:
    """The settings a real deployment would have, pointed at the running sandbox, with a
    data folder of the test's own (SQLite stores without Redis)."""
    return {
        "WALLET_PROXY_DATA_DIR": str(tmp_path / "data"),
        "SESSIONM_CONNECT_URL": sandbox.url,
        "SESSIONM_CONNECT_AUTH": DEMO_CONNECT_AUTH,
        "SESSIONM_RETAILER_ID": DEMO_RETAILER_ID,
        "WALLET_PROXY_API_KEYS": f"{API_KEY},{OTHER_KEY}",
        # The SessionM budgets are out of the way of tests that measure something else
        # (caps, single-flight, counts); tests/test_budget.py turns them on.
        "WALLET_PROXY_SESSIONM_RATE": "0",
        "WALLET_PROXY_SESSIONM_CORE_RATE": "0",
    }


@pytest.fixture
def make_app(env, clock) -> Iterator[Callable[..., Flask]]:
    """The one app factory of the tests: `env` (as the module defines it), TESTING, the
    clock moved by hand, and any settings on top by name, read as the environment's text
    is: `make_app(WALLET_PROXY_DEADLINE=0.5)`, or a test switch such as `FAST_HITS=False`.
    Every app it made is closed after the test."""
    made: list[Flask] = []

    def make(**settings: object) -> Flask:
        app = create_app({**env, "TESTING": True, "CLOCK": clock, **settings})
        made.append(app)
        return app

    yield make
    for app in reversed(made):
        close_app(app)


@pytest.fixture
def app(make_app):
    return make_app()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth() -> dict:
    return {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def live_server(app):
    with LiveServer(app) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server():
    server = RedisServer().start()
    yield server
    server.kill()


@pytest.fixture
def redis_url(redis_server) -> str:
    """A running, empty Redis; restarted if a previous test killed it."""
    if redis_server.process.poll() is not None:
        redis_server.start()
    redis_server.flush()
    return redis_server.url
