"""What a worker keeps of wallets is bounded in bytes, over real HTTP against real gunicorn.

The attack this answers: wallets of thousands of large offers, under both caps, each
kept whole. After 30 of them, 16 at once, the two workers of one instance held 980 and
1,050 MB, and still 935 and 1,008 MB once every answer was out.

Here 30 wallets of 7.9 MB of JSON are asked for, 16 at once, and then again (cache hits,
answers rendered), while each worker's resident memory is sampled. Its peak must stay
within docs/operations.md's formula for these settings, and once the burst is over its
memory must come back down to what the cache may hold. A small cache, two SessionM slots
and 16 threads per worker keep the formula's terms small enough to tell a bound from none.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from bench.logins import rss
from tests.helpers import API_KEY, GunicornInstance
from wallet_proxy.config import Settings
from wallet_proxy.memory import WORKER_BASE, worker_peak_bytes
from wallet_proxy.sandbox import SandboxServer

pytestmark = pytest.mark.slow

MB = 1024 * 1024
WALLETS, AT_ONCE = 30, 16
OFFERS, PADDING = 1500, 4750  # 7.9 MB of SessionM's JSON a wallet
MAX_WALLET_BYTES = 8 * MB
CACHE_MAX_BYTES = 32 * MB
# Memory held again once the burst is over, beyond the cache: the allocator's leftovers.
SETTLED_SLACK = 48 * MB


class PeakRss:
    """Each process's highest resident memory, sampled every 20 ms until stopped."""

    def __init__(self, pids: set[int]):
        self.peak = {pid: rss(pid) for pid in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample)

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            for pid in self.peak:
                self.peak[pid] = max(self.peak[pid], rss(pid))

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture
def sandbox():
    with SandboxServer() as server:
        server.configure(generated_offers=OFFERS, offer_padding=PADDING)
        yield server


@pytest.mark.parametrize("shared", [False, True], ids=["in-process", "redis"])
def test_thirty_large_wallets_sixteen_at_once_stay_within_the_formula(sandbox, redis_url, shared):
    settings = {
        "WALLET_PROXY_CACHE_MAX_BYTES": str(CACHE_MAX_BYTES),
        "WALLET_PROXY_MAX_WALLET_BYTES": str(MAX_WALLET_BYTES),
        "WALLET_PROXY_UPSTREAM_CONCURRENCY": "2",
        "WALLET_PROXY_THREADS": str(AT_ONCE),
        # Every wallet is fetched, however slowly a busy machine parses them.
        "WALLET_PROXY_DEADLINE": "30",
        "WALLET_PROXY_UPSTREAM_TIMEOUT": "60",
    }
    if shared:
        settings["WALLET_PROXY_REDIS_URL"] = redis_url
    # docs/operations.md's formula for these settings, beyond a worker's memory at start.
    formula = worker_peak_bytes(Settings.from_env(settings, needs=())) - WORKER_BASE
    with GunicornInstance(sandbox.url, workers=2, **settings) as server:
        for _ in range(8):  # each worker answers once before its memory is taken
            assert server.get("demo-alice").status_code == 200
        started = {pid: rss(pid) for pid in server.worker_pids()}

        def ask(n: int) -> int:
            return requests.get(
                f"{server.url}/v1/wallets/user-large-{n}",
                headers={"Authorization": f"Bearer {API_KEY}"},
                timeout=120,
            ).status_code

        with PeakRss(set(started)) as sampled, ThreadPoolExecutor(AT_ONCE) as pool:
            statuses = list(pool.map(ask, [*range(WALLETS), *range(WALLETS)]))
        time.sleep(2)  # the trim after the last large wallet
        settled = {pid: rss(pid) for pid in started}
    assert statuses == [200] * 2 * WALLETS
    assert sandbox.stats()["calls"] >= WALLETS
    for pid, at_start in started.items():
        assert sampled.peak[pid] - at_start <= formula, (sampled.peak, started)
        assert settled[pid] - at_start <= CACHE_MAX_BYTES + SETTLED_SLACK, (settled, started)
