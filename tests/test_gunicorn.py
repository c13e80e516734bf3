"""The shielding under real gunicorn: several worker processes, a real redis-server,
and the sandbox over HTTP, each test with its own sandbox so the counts are its own."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers import CI_ALLOWANCE, GunicornInstance, wait_until
from wallet_proxy.sandbox import SandboxServer

pytestmark = pytest.mark.slow


def at_once(count, fn):
    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(fn, range(count)))


@pytest.fixture
def sandbox():
    with SandboxServer() as server:
        yield server


def test_one_sessionm_call_across_all_workers(sandbox, redis_url):
    with GunicornInstance(sandbox.url, workers=3, WALLET_PROXY_REDIS_URL=redis_url) as server:
        sandbox.configure(latency=0.3)
        responses = at_once(30, lambda _: server.get("demo-alice"))
        assert [r.status_code for r in responses] == [200] * 30
        assert sandbox.stats()["calls"] == 1
        bodies = {r.content for r in responses}
        assert len(bodies) == 1  # every worker answered the same wallet


def test_stale_served_while_sessionm_is_down(sandbox, redis_url):
    with GunicornInstance(
        sandbox.url, workers=3, WALLET_PROXY_REDIS_URL=redis_url, WALLET_PROXY_CACHE_TTL=1
    ) as server:
        assert server.get("demo-alice").status_code == 200
        time.sleep(1.1)
        sandbox.configure(status=503)
        responses = at_once(12, lambda _: server.get("demo-alice"))
        assert {(r.status_code, r.headers["X-Cache"]) for r in responses} == {(200, "STALE")}
        assert all(r.json()["stale"] for r in responses)
        assert int(responses[0].headers["Age"]) >= 1


def test_deadline_held_while_sessionm_hangs(sandbox):
    # Slots for every request even if one worker accepts them all (a loaded machine spreads
    # connections unevenly): a request still queued for a slot would rightly be a 503.
    deadline = 0.5
    with GunicornInstance(
        sandbox.url,
        workers=3,
        WALLET_PROXY_DEADLINE=deadline,
        WALLET_PROXY_UPSTREAM_CONCURRENCY=32,
    ) as server:
        sandbox.configure(hang=True)

        def timed(i):
            started = time.monotonic()
            response = server.get(f"user-{i}")
            return response.status_code, time.monotonic() - started

        results = at_once(20, timed)
        sandbox.configure(hang=False)
    assert {status for status, _ in results} == {504}
    assert max(elapsed for _, elapsed in results) < deadline + CI_ALLOWANCE


def test_breaker_opens_in_each_worker_and_closes(sandbox):
    with GunicornInstance(
        sandbox.url, workers=2, WALLET_PROXY_BREAKER_THRESHOLD=2, WALLET_PROXY_BREAKER_COOLDOWN=1
    ) as server:
        sandbox.configure(status=500)
        statuses = [server.get(f"user-{i}").status_code for i in range(20)]
        assert set(statuses) == {502, 503}
        # Each worker stops calling after two failures: the rest are answered without SessionM.
        assert sandbox.stats()["calls"] <= 2 * 2
        sandbox.configure(status=None)
        time.sleep(1.1)
        statuses = [server.get(f"user-ok-{i}").status_code for i in range(10)]
        assert statuses.count(200) >= 8  # a probe closes each worker's breaker
        assert statuses[-4:] == [200] * 4


def test_concurrency_cap_never_exceeded(sandbox):
    with GunicornInstance(sandbox.url, workers=2, WALLET_PROXY_UPSTREAM_CONCURRENCY=2) as server:
        sandbox.configure(latency=0.2)
        responses = at_once(24, lambda i: server.get(f"user-{i}"))
        assert {r.status_code for r in responses} <= {200, 503, 504}
        assert sandbox.stats()["peak_concurrency"] <= 2 * 2


def test_redis_killed_mid_run_and_the_service_still_answers(sandbox, redis_url, redis_server):
    with GunicornInstance(sandbox.url, workers=2, WALLET_PROXY_REDIS_URL=redis_url) as server:
        before = at_once(8, lambda i: server.get(f"user-{i % 4}"))
        redis_server.kill()
        during = at_once(8, lambda i: server.get(f"user-{i}"))
        after = [server.get(f"user-late-{i}") for i in range(5)]
        ready = requests.get(f"{server.url}/readyz", timeout=5)
    assert [r.status_code for r in before + during + after] == [200] * 21
    assert ready.status_code == 200
    assert ready.json()["checks"]["redis"].startswith("unreachable")


def test_a_newline_in_the_path_cannot_forge_a_log_line(sandbox, tmp_path):
    """gunicorn's text access log is replaced by the app's JSON request line (see also
    tests/test_logs.py): the forged path is not even in it, and every line is JSON."""
    out, err = tmp_path / "stdout.log", tmp_path / "stderr.log"
    with GunicornInstance(sandbox.url, err, workers=1, out=out) as server:
        forged = '/v1/wallets/x%0a127.0.0.1%20"GET%20/v1/wallets/FORGED"%20200'
        assert requests.get(server.url + forged, timeout=10).status_code == 404
        wait_until(lambda: '"route":"unmatched"' in out.read_text(), timeout=10)
    lines = out.read_text().splitlines() + err.read_text().splitlines()
    assert not any(line.startswith('127.0.0.1 "GET /v1/wallets/FORGED"') for line in lines)
    assert all(isinstance(json.loads(line), dict) for line in lines)
