"""Benchmark 6: password guessing as a weapon against memory and /healthz.

128 parallel wrong logins to /support/ (HTTP Basic, a new name every time) against
gunicorn with the deploy config (2 gthread workers x 64 threads) and real scrypt
staff hashes (32 MiB each). Measured: each worker's peak RSS, and /healthz latency
from a separate client during the attack, against /healthz with no attack in the
same run. Targets: RSS under 300 MB per worker, /healthz under 100 ms.

Two attacks: from one address (the per-address limit refuses it after 50
failures), and spread over addresses (X-Forwarded-For, believed with
WALLET_PROXY_TRUSTED_PROXY_HOPS=1, as a botnet behind the load balancer would
look), where only the at-most-2-hashes-at-once rule stands between the attack and
the workers. The attackers run in their own process, at a lower CPU priority, so
the probe's latency is the service's, not our client's GIL or CPU.

    python bench/logins.py [--seconds 10] [--attackers 128]

tests/test_login_flood.py runs the spread attack, shorter, with looser bounds.
"""

from __future__ import annotations

import argparse
import base64
import multiprocessing
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import requests
from werkzeug.security import generate_password_hash

from wallet_proxy.sandbox import DEMO_CONNECT_AUTH, DEMO_RETAILER_ID, SandboxServer
from wallet_proxy.serving import gunicorn_command

ROOT = Path(__file__).resolve().parent.parent
PROBE_INTERVAL = 0.02
SAMPLE_INTERVAL = 0.05
MB = 1024 * 1024
ATTACKER_NICENESS = 10


@dataclass
class Server:
    url: str
    pid: int  # gunicorn's master; the workers are its children


@contextmanager
def service(sessionm_url: str, data_dir: str, *, workers: int = 2, **env: str) -> Iterator[Server]:
    """gunicorn with the packaged config and a staff account with a real (scrypt) hash."""
    port = _free_port()
    environment = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SESSIONM_", "WALLET_"))},
        "SESSIONM_CONNECT_URL": sessionm_url,
        "SESSIONM_CONNECT_AUTH": DEMO_CONNECT_AUTH,
        "SESSIONM_RETAILER_ID": DEMO_RETAILER_ID,
        "WALLET_PROXY_API_KEYS": "bench-api-key-1",
        "WALLET_PROXY_STAFF_USERS": f"agent:{generate_password_hash('a real password')}",
        "WALLET_PROXY_SECRET_KEY": "bench-secret-key-0123456789",
        "WALLET_PROXY_DATA_DIR": data_dir,
        "WEB_CONCURRENCY": str(workers),
        "WALLET_PROXY_THREADS": "64",
        **env,
    }
    process = subprocess.Popen(
        gunicorn_command(
            bind=f"127.0.0.1:{port}",
            options=["--access-logfile", "/dev/null", "--log-level", "warning"],
        ),
        cwd=ROOT,
        env=environment,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while len(worker_pids(process.pid)) < workers or not _answers(f"{url}/healthz"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gunicorn did not start")
            time.sleep(0.05)
        time.sleep(0.5)  # every worker has booted its app
        yield Server(url, process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=1).status_code == 200
    except requests.RequestException:
        return False


def worker_pids(master: int) -> list[int]:
    try:
        children = Path(f"/proc/{master}/task/{master}/children").read_text()
    except OSError:
        return []
    return [int(pid) for pid in children.split()]


def rss(pid: int) -> int:
    """Resident memory of a process in bytes (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _attacker(url: str, index: int, spread: bool, stop, answers) -> None:
    """Wrong logins with a new name each time, until `stop`; counts statuses in `answers`."""
    session = requests.Session()
    counts: Counter[int] = Counter()
    n = 0
    while not stop.is_set():
        n += 1
        token = base64.b64encode(f"guess-{index}-{n}:wrong password {n}".encode()).decode()
        headers = {"Authorization": f"Basic {token}"}
        if spread:
            headers["X-Forwarded-For"] = f"10.{index}.{n // 256 % 256}.{n % 256}"
        try:
            status = session.get(
                f"{url}/support/", headers=headers, timeout=10, allow_redirects=False
            ).status_code
        except requests.RequestException:
            status = NO_ANSWER
        counts[status] += 1
    for status, count in counts.items():
        with answers.get_lock():
            answers[_SLOTS.index(status) if status in _SLOTS else 0] += count


NO_ANSWER = -1  # the attacker gave up waiting (10 s)
_SLOTS = (0, 401, 429, 200, 500, 503, NO_ANSWER)  # 0: any other status


def _attack(url: str, attackers: int, spread: bool, stop, answers) -> None:
    """The attackers' process: one thread per parallel login.

    At a lower CPU priority: a real attacker's CPU is not ours, so the load generator
    must not take the CPU the service and the probe need (on 2 shared cores).
    """
    os.nice(ATTACKER_NICENESS)
    threads = [
        threading.Thread(target=_attacker, args=(url, i, spread, stop, answers), daemon=True)
        for i in range(attackers)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


@dataclass
class Measurement:
    healthz: list[float] = field(default_factory=list)  # seconds, one per probe
    peak_rss: dict[int, int] = field(default_factory=dict)  # worker pid -> bytes
    answers: dict[int, int] = field(default_factory=dict)  # status -> count (0: failed)

    def percentile(self, p: float) -> float:
        ordered = sorted(self.healthz)
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def measure(server: Server, *, attackers: int, seconds: float, spread: bool) -> Measurement:
    """Probe /healthz and sample worker RSS for `seconds`, with `attackers` running (or none)."""
    found = Measurement()
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    answers = context.Array("l", len(_SLOTS))
    attack = None
    if attackers:
        attack = context.Process(
            target=_attack, args=(server.url, attackers, spread, stop, answers), daemon=True
        )
        attack.start()
        time.sleep(1.0)  # the attack under way before the probe starts
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            for pid in worker_pids(server.pid):
                found.peak_rss[pid] = max(found.peak_rss.get(pid, 0), rss(pid))
            time.sleep(SAMPLE_INTERVAL)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        started = time.perf_counter()
        # A new connection each time, as a load balancer's health check makes.
        requests.get(f"{server.url}/healthz", timeout=10).raise_for_status()
        found.healthz.append(time.perf_counter() - started)
        time.sleep(PROBE_INTERVAL)
    stop.set()
    if attack is not None:
        attack.join(timeout=30)
    sampling.set()
    sampler.join()
    found.answers = {status: answers[i] for i, status in enumerate(_SLOTS) if answers[i]}
    return found


def _row(label: str, found: Measurement) -> list[str]:
    answers = ", ".join(f"{s or 'other'}: {n:,}" for s, n in sorted(found.answers.items()))
    return [
        label,
        f"{statistics.median(found.healthz) * 1000:.1f}",
        f"{found.percentile(95) * 1000:.1f}",
        f"{max(found.healthz) * 1000:.1f}",
        " / ".join(f"{b / MB:.0f}" for b in found.peak_rss.values()),
        answers or "-",
    ]


def _table(title: str, columns: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [columns, *rows]) for i in range(len(columns))]
    lines = [f"## {title}", ""]
    for index, row in enumerate([columns, *rows]):
        lines.append(
            "| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |"
        )
        if index == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--attackers", type=int, default=128)
    args = parser.parse_args()

    rows, verdicts = [], []
    with SandboxServer() as sessionm, tempfile.TemporaryDirectory() as data:
        scenarios = [
            ("one address", {}, False),
            ("spread over addresses", {"WALLET_PROXY_TRUSTED_PROXY_HOPS": "1"}, True),
        ]
        for label, env, spread in scenarios:
            with service(sessionm.url, data, **env) as server:
                quiet = measure(server, attackers=0, seconds=args.seconds, spread=False)
                attacked = measure(
                    server, attackers=args.attackers, seconds=args.seconds, spread=spread
                )
            rows += [_row(f"{label}: no attack", quiet), _row(f"{label}: attack", attacked)]
            peak = max(attacked.peak_rss.values()) / MB
            ratio = statistics.median(attacked.healthz) / statistics.median(quiet.healthz)
            verdicts.append(
                f"{label}: peak worker RSS {peak:.0f} MB (target < 300); /healthz p95 "
                f"{attacked.percentile(95) * 1000:.1f} ms (target < 100), median "
                f"{ratio:.2f}x the median without attack"
            )
    print(
        _table(
            f"{args.attackers} parallel wrong logins, 2 gthread workers x 64 threads, "
            f"{args.seconds:g} s each",
            [
                "run",
                "/healthz median ms",
                "p95 ms",
                "max ms",
                "peak RSS per worker MB",
                "answers to the attack",
            ],
            rows,
        )
    )
    for verdict in verdicts:
        print(verdict)


if __name__ == "__main__":
    sys.exit(main())
