"""Triggers under real gunicorn: kill -9 between accepting and delivering, one deliverer
per instance, and a dead deliverer replaced, with the sandbox standing in for Braze."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.helpers import API_KEY, free_port, wait_until
from wallet_proxy.sandbox import DEMO_CONNECT_AUTH, DEMO_RETAILER_ID
from wallet_proxy.serving import gunicorn_command
from wallet_proxy.triggers.model import QUEUED, SENDING, SENT, UNKNOWN
from wallet_proxy.triggers.sqlite_outbox import FILE_NAME, SqliteOutbox

from .triggers_helpers import BRAZE_KEY

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
TRIGGER_KEY = "sessionm-trigger-key-1"
AUTH = {"Authorization": f"Bearer {TRIGGER_KEY}"}


class Service:
    """gunicorn as deployed (packaged config, wsgi:app) in its own process group."""

    def __init__(self, sandbox_url: str, data_dir: Path, workers: int = 2):
        self.url = f"http://127.0.0.1:{free_port()}"
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("SESSIONM_", "WALLET_PROXY_", "BRAZE_"))
            },
            "SESSIONM_CONNECT_URL": sandbox_url,
            "SESSIONM_CONNECT_AUTH": DEMO_CONNECT_AUTH,
            "SESSIONM_RETAILER_ID": DEMO_RETAILER_ID,
            "WALLET_PROXY_API_KEYS": API_KEY,
            "BRAZE_REST_URL": sandbox_url,
            "BRAZE_REST_API_KEY": BRAZE_KEY,
            "WALLET_PROXY_TRIGGER_KEYS": TRIGGER_KEY,
            "WALLET_PROXY_DATA_DIR": str(data_dir),
            "WEB_CONCURRENCY": str(workers),
            "WALLET_PROXY_THREADS": "16",
        }

    def start(self) -> Service:
        self.process = subprocess.Popen(
            gunicorn_command(
                bind=self.url.removeprefix("http://"),
                options=["--access-logfile", "/dev/null"],
                app="wsgi:app",
            ),
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # kill -9 takes the master and every worker
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:  # not listening yet, or a worker still booting
                pass
            assert self.process.poll() is None, "gunicorn exited"
            assert time.monotonic() < deadline, "gunicorn did not start"
            time.sleep(0.05)

    def kill_9(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=30)

    def post(self, n: int) -> requests.Response:
        body = {
            "braze_campaign_id": "camp-kill",
            "customer": {"external_id": f"k-{n:04}"},
            "offer": {"offer_id": str(n), "title": "10 % off"},
        }
        return requests.post(f"{self.url}/v1/braze/triggers", json=body, headers=AUTH, timeout=10)


def waiting(data_dir: Path) -> int:
    box = SqliteOutbox(data_dir)
    try:
        counts = box.counts()
    finally:
        box.close()
    return counts[QUEUED] + counts[SENDING]


def owners(data_dir: Path) -> set[str]:
    with sqlite3.connect(data_dir / FILE_NAME) as db:
        rows = db.execute("SELECT DISTINCT owner FROM outbox WHERE owner != ''")
        return {row[0] for row in rows}


def test_kill_9_between_accepting_and_delivering_loses_nothing_sends_nothing_twice(
    sandbox, tmp_path
):
    data_dir = tmp_path / "data"
    sandbox.braze.configure({"latency": 0.2})  # delivery is under way when the kill comes
    service = Service(sandbox.url, data_dir).start()
    try:
        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(service.post, range(1000)))
        assert [a.status_code for a in answers] == [202] * 1000
        ids = {a.json()["trigger_id"]: n for n, a in zip(range(1000), answers, strict=True)}
        assert len(ids) == 1000
        delivered_before = len(sandbox.braze.stats()["braze_messages"])
    finally:
        service.kill_9()
    assert delivered_before < 1000, "everything was delivered before the kill"
    sandbox.braze.configure({"latency": 0})
    service = Service(sandbox.url, data_dir).start()
    try:
        wait_until(lambda: waiting(data_dir) == 0, timeout=60)
    finally:
        service.stop()

    box = SqliteOutbox(data_dir)
    records = {trigger_id: box.get(trigger_id) for trigger_id in ids}
    box.close()
    assert all(record is not None for record in records.values()), "a trigger was lost"
    states = Counter(record.state for record in records.values())
    assert set(states) <= {SENT, UNKNOWN}, states
    got = Counter(m["properties"]["offer_id"] for m in sandbox.braze.stats()["braze_messages"])
    assert max(got.values()) == 1, "a trigger was delivered twice"
    for trigger_id, n in ids.items():
        record = records[trigger_id]
        if record.state == SENT:
            assert got[str(n)] == 1, f"trigger {n} is marked sent but Braze never got it"
        else:
            assert got[str(n)] <= 1 and "Braze may or may not have it" in record.reason
    print(f"\nkill -9 after {delivered_before} of 1000 delivered: {dict(states)}")


def test_one_deliverer_per_instance_and_a_dead_one_is_replaced(sandbox, tmp_path):
    data_dir = tmp_path / "data"
    service = Service(sandbox.url, data_dir, workers=3).start()
    try:
        assert all(service.post(n).status_code == 202 for n in range(40))
        wait_until(lambda: waiting(data_dir) == 0, timeout=20)
        (first,) = owners(data_dir)  # three workers, one deliverer
        pid = int(first.split(":")[1])
        assert pid != service.process.pid  # a worker, not the master
        os.kill(pid, signal.SIGKILL)
        assert all(service.post(n).status_code == 202 for n in range(40, 80))
        wait_until(lambda: waiting(data_dir) == 0, timeout=20)
        second = owners(data_dir) - {first}
        assert len(second) == 1 and int(next(iter(second)).split(":")[1]) != pid
    finally:
        service.stop()
    got = Counter(m["properties"]["offer_id"] for m in sandbox.braze.stats()["braze_messages"])
    assert sorted(got) == sorted(str(n) for n in range(80)) and set(got.values()) == {1}
