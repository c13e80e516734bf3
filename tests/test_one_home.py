"""Each mechanism has one home, and an app closes what it started.

Threads start only in background.py, outbound HTTP sessions are built only in http.py,
Redis clients only in redis_clients.py: a copy elsewhere is how a safety gets lost (the
Braze client once had no deadline on its headers). An app's `close` stops the threads it
started and closes its pools; no thread is named after a customer.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.helpers import API_KEY, LiveServer, wait_until
from wallet_proxy import create_app
from wallet_proxy.factory import close_app
from wallet_proxy.sandbox import DEMO_BRAZE_API_KEY, DEMO_CORE_API_KEY, DEMO_CORE_API_SECRET
from wallet_proxy.tags.running import start_in_worker as start_tags_worker
from wallet_proxy.triggers.running import start_in_worker

PACKAGE = Path(__file__).resolve().parent.parent / "wallet_proxy"
HOMES = {
    "background.py": re.compile(r"threading\.Thread\(|ThreadPoolExecutor\("),
    "http.py": re.compile(r"requests\.Session\(|HTTPAdapter\(|WatchedAdapter\("),
    "redis_clients.py": re.compile(r"\bRedis\(|Redis\.from_url\(|StrictRedis\("),
}


@pytest.mark.parametrize("home", sorted(HOMES))
def test_one_module_does_it(home):
    found = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        for line in path.read_text().splitlines()
        if HOMES[home].search(line) and not line.startswith("class ")  # building, not naming
    }
    assert found == {home}


def app_threads() -> set[threading.Thread]:
    """Live threads, but the process-wide ones every app shares (the watchdog, the request
    lines' writer) and pytest's own."""
    shared = ("wallet-proxy-watchdog", "wallet-proxy-request-log")
    return {t for t in threading.enumerate() if t.is_alive() and t.name not in shared}


def test_closing_an_app_stops_its_threads(env, clock, sandbox, redis_url, tmp_path):
    """An app with everything that starts threads: Redis (the pub/sub listener, the fleet's
    reporter), flights, the trigger deliverer, the tags worker and its calls, the staff
    pages' password hashing."""
    before = app_threads()
    app = create_app(
        {
            **env,
            "CLOCK": clock,
            "WALLET_PROXY_REDIS_URL": redis_url,
            "WALLET_PROXY_SESSIONM_RATE": "50",
            "BRAZE_REST_URL": sandbox.url,
            "BRAZE_REST_API_KEY": DEMO_BRAZE_API_KEY,
            "WALLET_PROXY_TRIGGER_KEYS": "trigger-key-0123456789",
            "SESSIONM_CORE_URL": sandbox.url,
            "SESSIONM_CORE_API_KEY": DEMO_CORE_API_KEY,
            "SESSIONM_CORE_API_SECRET": DEMO_CORE_API_SECRET,
            "WALLET_PROXY_DATA_DIR": str(tmp_path),
        }
    )
    start_in_worker(app)
    start_tags_worker(app)
    with LiveServer(app) as server:
        for n in range(3):
            answer = requests.get(
                f"{server.url}/v1/wallets/user-{n}",
                headers={"Authorization": f"Bearer {API_KEY}"},
                timeout=10,
            )
            assert answer.status_code == 200
        tagged = requests.post(
            f"{server.url}/v1/users/user-1/tags",
            json={"tags": ["visits"]},
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=10,
        )
        assert tagged.status_code == 202
    wait_until(lambda: len(sandbox.stats()["core_calls"]) == 1, timeout=10)
    assert app_threads() - before, "the app started no thread: nothing is tested"
    started = time.monotonic()
    close_app(app)
    wait_until(lambda: not (app_threads() - before), timeout=10)
    assert time.monotonic() - started < 10


def test_no_thread_is_named_after_a_customer(app, sandbox):
    """A thread's name reaches the logs when it raises: user ids never do in the clear."""
    sandbox.configure(latency=0.5)
    names: list[str] = []
    lookup = threading.Thread(
        target=lambda: app.test_client().get(
            "/v1/wallets/user-secret-id", headers={"Authorization": f"Bearer {API_KEY}"}
        )
    )
    lookup.start()
    while lookup.is_alive():
        names += [thread.name for thread in threading.enumerate()]
        time.sleep(0.02)
    assert any(name.startswith("wallet-flight") for name in names)  # the flight was seen
    assert not [name for name in names if "secret" in name]
