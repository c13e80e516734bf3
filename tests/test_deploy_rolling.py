"""Restarting without dropping Braze's calls (issue 11): a steady stream of wallet requests,
every one counted, through a `kill -HUP` of gunicorn and a rolling restart of two instances
behind deploy/nginx.conf."""

from __future__ import annotations

import http.client
import signal
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest

from tests.helpers import API_KEY, CI_ALLOWANCE, UNHURRIED, GunicornInstance, wait_until
from tests.test_deploy_nginx import Nginx

pytestmark = pytest.mark.slow
RATE = 300  # requests a second
USERS = 40  # wallets asked for in turn: new workers start with an empty memory cache


class SteadyLoad:
    """`RATE` wallet requests a second for `seconds`, each sent on its own schedule whatever
    happens to the others; each outcome (a status, or the exception) is kept."""

    def __init__(self, url: str, seconds: float, *, keepalive: bool, timeout: float = 5):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port
        self.keepalive = keepalive
        self.timeout = timeout
        self.total = int(RATE * seconds)
        self.outcomes: list[int | str | None] = [None] * self.total
        self.answered_at: list[float] = [0.0] * self.total
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(64)
        self._scheduler = threading.Thread(target=self._schedule, daemon=True)

    def _schedule(self) -> None:
        for i in range(self.total):
            delay = self.started + i / RATE - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            self._pool.submit(self._one, i)

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None) if self.keepalive else None
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _one(self, i: int) -> None:
        conn = self._connection()
        try:
            conn.request(
                "GET",
                f"/v1/wallets/user-{i % USERS}",
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
            response = conn.getresponse()
            response.read()
            self.outcomes[i] = response.status
            if not self.keepalive or response.will_close:
                conn.close()
                self._local.conn = None
        except (OSError, http.client.HTTPException) as error:
            self.outcomes[i] = f"{type(error).__name__}: {error}"
            conn.close()
            self._local.conn = None
        self.answered_at[i] = time.monotonic()

    def __enter__(self) -> SteadyLoad:
        self.started = time.monotonic()
        self._scheduler.start()
        return self

    def __exit__(self, *exc) -> None:
        self._scheduler.join()
        self._pool.shutdown(wait=True)

    def answered_between(self, start: float, end: float) -> int:
        return sum(start <= t <= end for t in self.answered_at)

    def check(self, label: str) -> None:
        """Every request answered, every answer a wallet."""
        outcomes = Counter(self.outcomes)
        print(f"\n{label}: {self.total} requests in {RATE}/s, outcomes {dict(outcomes)}")
        answers = sum(isinstance(outcome, int) for outcome in self.outcomes)
        assert answers == self.total, outcomes
        assert outcomes == {200: self.total}


def test_hup_reloads_gunicorn_without_dropping_a_request(sandbox, tmp_path):
    # A new connection per request: the listening socket is all that persists. A dropped
    # request is what this counts, not a slow one: with a second suite beside it, 300/s
    # through workers that are booting can queue past the default deadline, so it is
    # raised, and the client waits for it and what a loaded machine adds.
    deadline = float(UNHURRIED["WALLET_PROXY_DEADLINE"])
    with (
        GunicornInstance(sandbox.url, tmp_path / "gunicorn.log", workers=2, **UNHURRIED) as server,
        SteadyLoad(
            server.url, seconds=12, keepalive=False, timeout=deadline + CI_ALLOWANCE
        ) as load,
    ):
        for at in (3, 7):
            wait_until(lambda at=at: time.monotonic() - load.started >= at, timeout=15)
            before = server.worker_pids()
            server.process.send_signal(signal.SIGHUP)
            # New workers replace every old one, booted, while requests keep coming.
            wait_until(
                lambda before=before: (
                    len(server.worker_pids() - before) == 2
                    and not server.worker_pids() & before
                    and server.booted_workers() == 2
                ),
                timeout=30,  # booting two workers: slow on a loaded machine
            )
    load.check("kill -HUP twice")


def test_rolling_restart_behind_nginx_without_dropping_a_request(sandbox, redis_url, tmp_path):
    settings = {"workers": 1, "WALLET_PROXY_REDIS_URL": redis_url}
    with (
        GunicornInstance(sandbox.url, tmp_path / "first.log", **settings) as first,
        GunicornInstance(sandbox.url, tmp_path / "second.log", **settings) as second,
        Nginx(tmp_path, [first.address, second.address]) as front,
    ):
        # Braze keeps its connections to the front open between calls.
        with SteadyLoad(front.url, seconds=15, keepalive=True) as load:
            wait_until(lambda: time.monotonic() - load.started >= 2, timeout=10)
            began = time.monotonic()
            # Each in turn: SIGTERM, wait for it to exit, start it, wait until it answers.
            for instance in (first, second):
                instance.stop()
                instance.start()
            ended = time.monotonic()
        during = load.answered_between(began, ended)
        print(f"rolling restart took {ended - began:.1f} s, {during} answers meanwhile")
    load.check("rolling restart behind nginx")
    assert during >= RATE * (ended - began) * 0.5  # the stream kept flowing throughout
