"""Queued tags under real gunicorn: kill -9 of the worker applying them, and of the whole
instance, between accepting and applying, with the sandbox standing in for SessionM Core.
Nothing accepted is lost, nothing is applied twice, Braze's retries included."""

from __future__ import annotations

import os
import signal
import sqlite3
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.helpers import API_KEY, GunicornInstance, retrying_session, wait_until
from wallet_proxy.sandbox import DEMO_CORE_API_KEY, DEMO_CORE_API_SECRET
from wallet_proxy.tags.model import STALE_APPLYING, TAGS
from wallet_proxy.triggers.model import QUEUED, SENDING, SENT, UNKNOWN
from wallet_proxy.triggers.sqlite_outbox import FILE_NAME, SqliteOutbox

pytestmark = pytest.mark.slow
WEBHOOKS = 200


def service(sandbox_url: str, data_dir: Path) -> GunicornInstance:
    """The service as deployed, queued tags on the sandbox's Core at the default budget."""
    return GunicornInstance(
        sandbox_url,
        workers=2,
        SESSIONM_CORE_URL=sandbox_url,
        SESSIONM_CORE_API_KEY=DEMO_CORE_API_KEY,
        SESSIONM_CORE_API_SECRET=DEMO_CORE_API_SECRET,
        WALLET_PROXY_DATA_DIR=data_dir,
        WALLET_PROXY_THREADS=16,
    ).start()


def post(session: requests.Session, instance: GunicornInstance, n: int) -> requests.Response:
    """Webhook n: a counter tag for customer user-k-n, with the send's Idempotency-Key: a
    post the session sends again after a reset is answered as a repeat, never applied
    twice."""
    return session.post(
        f"{instance.url}/v1/users/user-k-{n}/tags",
        json={"tags": ["visits"]},
        headers={"Authorization": f"Bearer {API_KEY}", "Idempotency-Key": "dispatch-1"},
        timeout=10,
    )


def post_all(instance: GunicornInstance) -> list[requests.Response]:
    with retrying_session() as session, ThreadPoolExecutor(16) as pool:
        return list(pool.map(lambda n: post(session, instance, n), range(WEBHOOKS)))


def queue(data_dir: Path) -> SqliteOutbox:
    return SqliteOutbox(data_dir).for_queue(TAGS)


def waiting(data_dir: Path) -> int:
    box = queue(data_dir)
    try:
        counts = box.counts()
    finally:
        box.close()
    return counts[QUEUED] + counts[SENDING]


def applying_pid(data_dir: Path) -> int | None:
    """The gunicorn worker holding taggings now (its owner id is host:pid:random)."""
    with sqlite3.connect(data_dir / FILE_NAME) as db:
        rows = db.execute(
            "SELECT DISTINCT owner FROM outbox WHERE queue = ? AND owner != '' "
            "AND state IN (?, ?)",
            (TAGS.name, QUEUED, SENDING),
        ).fetchall()
    return int(rows[0][0].split(":")[1]) if rows else None


def check_nothing_lost_nothing_twice(sandbox, data_dir: Path, ids: dict[str, int]) -> Counter:
    box = queue(data_dir)
    records = {tagging_id: box.get(tagging_id) for tagging_id in ids}
    box.close()
    assert all(record is not None for record in records.values()), "a tagging was lost"
    states = Counter(record.state for record in records.values())
    assert set(states) <= {SENT, UNKNOWN}, states
    calls = Counter(call["user_id"] for call in sandbox.stats()["core_calls"])
    assert max(calls.values()) == 1, "a tagging was applied twice"
    for tagging_id, n in ids.items():
        record = records[tagging_id]
        if record.state == SENT:
            assert calls[f"user-k-{n}"] == 1, f"tagging {n} is applied but SessionM never got it"
        else:
            assert record.reason == STALE_APPLYING
    return states


def test_kill_9_of_the_applying_worker_loses_nothing_applies_nothing_twice(sandbox, tmp_path):
    data_dir = tmp_path / "data"
    sandbox.configure(latency=0.2)  # calls are in flight when the kill comes
    running = service(sandbox.url, data_dir)
    try:
        answers = post_all(running)
        assert [a.status_code for a in answers] == [202] * WEBHOOKS
        ids = {a.json()["tagging_id"]: n for n, a in enumerate(answers)}
        wait_until(lambda: len(sandbox.stats()["core_calls"]) >= 20, timeout=30)
        pid = applying_pid(data_dir)
        assert pid in running.worker_pids()  # a worker, not the master
        os.kill(pid, signal.SIGKILL)
        applied_before = len(sandbox.stats()["core_calls"])
        assert applied_before < WEBHOOKS, "everything was applied before the kill"
        # Braze retries what it sent while the worker died: recognised, not applied again.
        again = post_all(running)
        assert {a.headers.get("Idempotent-Replayed") for a in again} == {"true"}
        assert {a.json()["tagging_id"] for a in again} == set(ids)
        wait_until(lambda: waiting(data_dir) == 0, timeout=60)
        assert applying_pid(data_dir) is None
    finally:
        running.stop()
    states = check_nothing_lost_nothing_twice(sandbox, data_dir, ids)
    print(f"\nworker killed after {applied_before} of {WEBHOOKS} applied: {dict(states)}")


def test_kill_9_of_the_instance_then_a_restart_loses_nothing(sandbox, tmp_path):
    data_dir = tmp_path / "data"
    sandbox.configure(latency=0.2)
    running = service(sandbox.url, data_dir)
    try:
        answers = post_all(running)
        assert [a.status_code for a in answers] == [202] * WEBHOOKS
        ids = {a.json()["tagging_id"]: n for n, a in enumerate(answers)}
    finally:
        for pid in {running.process.pid, *running.worker_pids()}:
            os.kill(pid, signal.SIGKILL)
        running.process.wait(timeout=10)
    applied_before = len(sandbox.stats()["core_calls"])
    assert applied_before < WEBHOOKS, "everything was applied before the kill"
    restarted = service(sandbox.url, data_dir)
    try:
        wait_until(lambda: waiting(data_dir) == 0, timeout=60)
    finally:
        restarted.stop()
    states = check_nothing_lost_nothing_twice(sandbox, data_dir, ids)
    print(f"\ninstance killed after {applied_before} of {WEBHOOKS} applied: {dict(states)}")
