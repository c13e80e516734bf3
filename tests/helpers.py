"""Helpers the tests share: keys, the CI allowance, a clock moved by hand, polling, live
servers, Redis.

Imported as `tests.helpers` by every test module; conftest.py holds only fixtures.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry
from werkzeug.serving import make_server

from wallet_proxy.sandbox import DEMO_CONNECT_AUTH, DEMO_RETAILER_ID
from wallet_proxy.serving import gunicorn_command

API_KEY = "test-api-key-1"
OTHER_KEY = "test-api-key-2"

# An offer as a tenant might send it with its expiry under a name the service doesn't read
# (for the sandbox's `extra_offers` knob): it loads as never expiring, and is marked so.
OFFER_WITH_UNKNOWN_EXPIRY = {
    "user_offer_id": "0dd00000-0000-4000-8000-000000000001",
    "offer_id": "0dd00000-0000-4000-9000-000000000001",
    "offer_group_id": "6a0f0c1e-0000-4000-8000-000000000001",
    "offer_type": "manual_fulfillment",
    "title": "Odd tenant's offer",
    "valid_until": "2031-05-17T09:30:00Z",
}

# Seconds a loaded 2-core machine (this suite beside another one, CI beside a developer's
# runs) may add to any interval a test times: scheduling, not the service's own work. Every
# wall-clock bound in the tests is a configured value (a deadline, a timeout, a latency)
# plus this, so a busy machine can't fail a test, and where a test tells two behaviours
# apart by time it sets the slow one apart by more than this. What the service really
# takes is measured by the benchmarks (docs/benchmarks.md), not here.
CI_ALLOWANCE = 1.0
# The same for a rate as SessionM receives it: a paced sender's calls can arrive bunched by
# the machine's scheduling, so a test counting them at SessionM allows this multiple of the
# rate. The exact pacing is proven where the calls start, and measured by the benchmarks.
CI_RATE_FACTOR = 1.5

# Settings for a test that is not about the deadline but fetches a wallet of several
# SessionM pages (demo-carol has 3): a loaded machine can take longer than the 1.5 s default.
UNHURRIED = {"WALLET_PROXY_DEADLINE": "10", "WALLET_PROXY_UPSTREAM_TIMEOUT": "10"}


class Clock:
    """Time that tests move by hand: no sleeping to see a TTL pass or an offer expire."""

    def __init__(self, now: datetime | None = None):
        self.now = now or datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


def at_a_terminal() -> None:
    """A `preexec_fn` for a process a test will Ctrl-C: SIGINT and SIGQUIT as a terminal's
    foreground job has them. A shell starts background jobs with both ignored, and a child
    inherits that: a test run started with `&` would see Ctrl-C ignored, not handled."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


def wait_until(condition, *, timeout: float) -> None:
    """Poll `condition` until it holds; fail the test if `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def retrying_session(attempts: int = 3) -> requests.Session:
    """A session that sends a request again, unchanged, when its connection is refused,
    reset or times out before an answer: a loaded machine can drop one connection in a
    thousand. Only for requests the service must recognise when repeated (an
    Idempotency-Key), so a retry exercises its dedupe rather than hiding a failure."""
    retry = Retry(
        total=attempts,
        connect=attempts,
        read=attempts,
        status=0,
        other=0,
        allowed_methods=None,  # every method: the Idempotency-Key makes a repeat safe
        backoff_factor=0.1,
    )
    session = requests.Session()
    session.mount("http://", HTTPAdapter(max_retries=retry, pool_maxsize=32))
    return session


class LiveServer:
    """The app served over real HTTP on a free port, in a thread."""

    def __init__(self, app):
        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), daemon=True
        )

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A real redis-server on a free port, no persistence; `kill()` simulates losing it."""

    def __init__(self):
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed: run `make test` (it installs it)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._args = [
            binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.process = None

    def start(self) -> RedisServer:
        self.process = subprocess.Popen(self._args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if time.monotonic() > deadline:
                pytest.fail("redis-server did not start")
            time.sleep(0.02)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def flush(self) -> None:
        import redis

        redis.Redis.from_url(self.url).flushall()


class GunicornInstance:
    """One instance of the service as deployed (gunicorn_command: the packaged config, the
    installed app) on its own port, started and stopped as a process manager would.

    Its standard error goes to `log`; its standard output (the request lines) to `out`, or
    nowhere. `umask`: the process's (-1, the default: this one's)."""

    def __init__(
        self,
        sandbox_url: str,
        log: Path | None = None,
        workers: int = 2,
        out: Path | None = None,
        umask: int = -1,
        **settings: object,
    ):
        self.address = f"127.0.0.1:{free_port()}"
        self.url = f"http://{self.address}"
        self.workers = workers
        self.umask = umask
        self.log = log or Path(tempfile.mkdtemp()) / "gunicorn.log"
        self.out = out
        self.env = {
            **{
                k: v
                for k, v in os.environ.items()
                if not k.startswith(("SESSIONM_", "WALLET_PROXY_", "PROMETHEUS_"))
            },
            "SESSIONM_CONNECT_URL": sandbox_url,
            "SESSIONM_CONNECT_AUTH": DEMO_CONNECT_AUTH,
            "SESSIONM_RETAILER_ID": DEMO_RETAILER_ID,
            "WALLET_PROXY_API_KEYS": API_KEY,
            # No SessionM budget unless a test sets one (tests/test_budget.py): the others
            # count single-flight, the cap, the breaker, and a budget would change the count.
            "WALLET_PROXY_SESSIONM_RATE": "0",
            "WEB_CONCURRENCY": str(workers),
            **{k: str(v) for k, v in settings.items()},
        }

    def start(self) -> GunicornInstance:
        with self.log.open("a") as log, contextlib.ExitStack() as files:
            out = files.enter_context(self.out.open("a")) if self.out else subprocess.DEVNULL
            self.process = subprocess.Popen(
                gunicorn_command(bind=self.address),
                env=self.env,
                stdout=out,
                stderr=log,
                umask=self.umask,
            )
        try:
            wait_until(self._serving, timeout=60)
        except BaseException:
            self.stop()
            raise
        return self

    def _serving(self) -> bool:
        """Answering, with every worker booted: none is still loading the app and taking
        the machine's CPU from the requests a test times."""
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        try:
            requests.get(f"{self.url}/healthz", timeout=2).raise_for_status()
        except requests.RequestException:
            return False
        return self.booted_workers() == self.workers

    def booted_workers(self) -> int:
        """Workers that have loaded the app and are in their request loop.

        A worker's process exists well before it takes requests, and gunicorn logs
        "Booting worker" before the worker loads the app, so neither says it is ready. Its
        heartbeat does: the master holds one file per worker (`wgunicorn-*`, unlinked),
        made with equal modification and change times, and the worker first touches it
        from its request loop, after loading the app and running post_worker_init; every
        worker class does, and the master judges its workers alive by the same file.
        Read through the master's open files, so a dead worker's file no longer counts.
        """
        beating = set()
        for fd in Path(f"/proc/{self.process.pid}/fd").iterdir():
            try:
                if "wgunicorn-" not in os.readlink(fd):
                    continue
                stat = fd.stat()
            except OSError:
                continue  # closed meanwhile: its worker is gone
            if stat.st_mtime_ns != stat.st_ctime_ns:
                beating.add(stat.st_ino)
        return len(beating)

    def worker_pids(self) -> set[int]:
        pid = self.process.pid
        return {
            int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        }

    def stop(self) -> None:
        """SIGTERM, gunicorn's graceful stop; wait for it to exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)

    def __enter__(self) -> GunicornInstance:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def get(self, user_id: str, **params: str) -> requests.Response:
        """A wallet, on a new connection each time so the kernel spreads them over workers."""
        return requests.get(
            f"{self.url}/v1/wallets/{user_id}",
            params=params,
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=10,
        )
