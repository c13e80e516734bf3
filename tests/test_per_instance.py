"""Limits that hold for an instance, not for each of its workers, without Redis: real
gunicorn with two workers, the sandbox over HTTP, a data folder of the test's own.

Before, the Idempotency-Key records and the failed-login counts lived in each worker:
the same key sent 20 times applied a counter tag twice, and a staff name had 10 guesses
per worker. Now both are in SQLite files in the data folder, which every worker shares.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers import API_KEY, GunicornInstance
from tests.staff import PASSWORD, PW_HASH, SECRET, STAFF, basic
from wallet_proxy.sandbox import DEMO_CORE_API_KEY, DEMO_CORE_API_SECRET, SandboxServer
from wallet_proxy.support.throttle import NAME_FAILURES

pytestmark = pytest.mark.slow

SENT = 20


@pytest.fixture
def sandbox():
    with SandboxServer() as server:
        yield server


def test_an_idempotency_key_sent_20_times_to_two_workers_is_one_sessionm_call(sandbox, tmp_path):
    core = {
        "SESSIONM_CORE_URL": sandbox.url,
        "SESSIONM_CORE_API_KEY": DEMO_CORE_API_KEY,
        "SESSIONM_CORE_API_SECRET": DEMO_CORE_API_SECRET,
        "WALLET_PROXY_SESSIONM_CORE_RATE": "0",
        "WALLET_PROXY_DATA_DIR": str(tmp_path),
        "WALLET_PROXY_TAGS_MODE": "direct",  # the queued mode dedupes in its own outbox
    }
    with GunicornInstance(sandbox.url, workers=2, **core) as server:

        def send(_: int) -> requests.Response:
            # A new connection each time, so the kernel hands them to both workers.
            return requests.post(
                f"{server.url}/v1/users/user-7/tags",
                json={"tags": ["store_visit"]},  # a counter: every call counts
                headers={"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": "visit-7"},
                timeout=10,
            )

        sandbox.configure(latency=0.3)  # the first call is still running when the rest come
        with ThreadPoolExecutor(SENT // 2) as pool:
            at_once = list(pool.map(send, range(SENT // 2)))
        sandbox.configure(latency=0)
        after = [send(n) for n in range(SENT // 2)]
    assert sorted(r.status_code for r in at_once) == [200] + [409] * (SENT // 2 - 1)
    assert [(r.status_code, r.headers.get("Idempotent-Replayed")) for r in after] == [
        (200, "true")
    ] * (SENT // 2)
    assert len(sandbox.stats()["core_calls"]) == 1
    assert [(tag["tag"], tag["count"]) for tag in sandbox.stats()["tag_state"]["user-7"]] == [
        ("store_visit", 1)
    ]


def test_a_staff_name_has_ten_guesses_per_instance_not_per_worker(sandbox, tmp_path):
    staff = {
        "WALLET_PROXY_STAFF_USERS": f"{STAFF}:{PW_HASH}",
        "WALLET_PROXY_SECRET_KEY": SECRET,
        "WALLET_PROXY_DATA_DIR": str(tmp_path),
    }
    with GunicornInstance(sandbox.url, workers=2, **staff) as server:

        def support(password: str) -> int:
            return requests.get(
                f"{server.url}/support/", headers=basic(STAFF, password), timeout=10
            ).status_code

        guesses = [support(f"guess {n}") for n in range(NAME_FAILURES)]
        # Each worker has seen some of the ten: every one now refuses the name.
        then = [support(PASSWORD) for _ in range(10)]
    assert guesses == [401] * NAME_FAILURES
    assert then == [429] * 10
