"""The `wallet-proxy` command as people meet it: a terminal, a pipe, a second shell, a wheel."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from werkzeug.security import check_password_hash

from tests.helpers import at_a_terminal, free_port, wait_until
from wallet_proxy import gunicorn_config

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "wallet_proxy.cli"]
OUR_PREFIXES = ("SESSIONM_", "WALLET_PROXY_", "BRAZE_")


def clean_env() -> dict[str, str]:
    """The environment of a person's shell: none of our settings, and not inside a make (as
    `make test` runs the suite, where a `make run` would be a sub-make saying `make[1]:`)."""
    nested = ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")
    return {
        k: v for k, v in os.environ.items() if not k.startswith(OUR_PREFIXES) and k not in nested
    }


# --- hash-password -----------------------------------------------------------------------


def test_hash_password_reads_a_piped_line_without_stdin_flag():
    """`echo pw | wallet-proxy hash-password`: no getpass warning, no "Aborted!"."""
    result = subprocess.run(
        ["bash", "-c", 'echo "piped-password" | "$@" hash-password', "bash", *CLI],
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,  # no controlling terminal, as in a script or CI
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert check_password_hash(result.stdout.strip(), "piped-password")


def test_hash_password_piped_twice_must_match():
    result = subprocess.run(
        [*CLI, "hash-password"],
        input="first-password\nother-password\n",
        capture_output=True,
        text=True,
        timeout=60,
        start_new_session=True,
    )
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: the two lines piped in do not match"
    assert "password" not in result.stdout


def _read(fd: int, seen: bytearray, until: bytes | None = None, timeout: float = 30) -> None:
    """Read the terminal into `seen` until `until` shows, or (None) until it is closed."""
    deadline = time.monotonic() + timeout
    while until is None or until not in seen:
        assert time.monotonic() < deadline, f"no {until!r} in {bytes(seen)!r}"
        if select.select([fd], [], [], 0.5)[0]:
            try:
                chunk = os.read(fd, 1024)
            except OSError:  # EIO: every process holding the terminal has exited
                chunk = b""
            if not chunk:
                assert until is None, f"closed before {until!r}: {bytes(seen)!r}"
                return
            seen.extend(chunk)


def test_hash_password_at_a_terminal_asks_twice_without_echo():
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [*CLI, "hash-password"],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        start_new_session=True,
    )
    os.close(terminal)
    seen = bytearray()
    try:
        _read(controller, seen, b"Password: ")
        os.write(controller, b"typed-password\n")
        _read(controller, seen, b"confirmation: ")
        os.write(controller, b"typed-password\n")
        assert process.wait(timeout=30) == 0
        _read(controller, seen)
    finally:
        process.kill()
        os.close(controller)
    output = seen.decode()
    assert "typed-password" not in output
    (pw_hash,) = re.findall(r"scrypt:\S+", output)
    assert check_password_hash(pw_hash, "typed-password")


# --- the sandbox alone ---------------------------------------------------------------------


def test_the_sandbox_banner_exports_point_the_cli_at_it(tmp_path):
    port = free_port()
    sandbox = subprocess.Popen(
        [*CLI, "sandbox", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=clean_env(),
    )
    try:
        banner: list[str] = []
        reader = threading.Thread(target=lambda: banner.extend(sandbox.stdout or ()), daemon=True)
        reader.start()
        wait_until(
            lambda: any("export WALLET_PROXY_API_KEYS=" in line for line in banner), timeout=30
        )
        exports = "\n".join(line.strip() for line in banner if line.startswith("  export "))
        assert "SESSIONM_CORE_API_SECRET=" in exports
        assert f"export SANDBOX_URL=http://127.0.0.1:{port}" in exports.splitlines()
        result = subprocess.run(
            ["bash", "-c", f"{exports}\nwallet-proxy check-config --probe"],
            env=clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=15)
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout
    assert "SessionM Connect probe: answered: " in result.stdout
    assert f"SessionM Core: http://127.0.0.1:{port}" in result.stdout


# --- ports ---------------------------------------------------------------------------------


def occupied_port() -> socket.socket:
    """A port another program listens on, as a newcomer's other service would."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    return holder


def port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("taken", ["service", "sandbox"])
def test_a_port_in_use_stops_the_demo_with_one_line_before_the_banner(taken):
    with occupied_port() as holder:
        busy, free = holder.getsockname()[1], free_port()
        service, sandbox = (busy, free) if taken == "service" else (free, busy)
        command = [*CLI, "serve", "--sandbox", "--bind", f"127.0.0.1:{service}"]
        result = subprocess.run(
            [*command, "--sandbox-port", str(sandbox)],
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
        )
    assert result.returncode == 1
    assert result.stdout == ""  # no banner, no gunicorn
    (line,) = result.stderr.splitlines()
    where = f"127.0.0.1:{busy}" if taken == "service" else f"port {busy}"
    assert line.startswith(f"Error: the {taken} can't listen on {where}: address already in use")
    assert port_is_free(free)  # the other one was never started


def test_the_service_and_the_sandbox_cant_share_a_port():
    port = free_port()
    result = subprocess.run(
        [*CLI, "serve", "--sandbox", "--bind", f"127.0.0.1:{port}", "--sandbox-port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"Error: the service can't listen on 127.0.0.1:{port}: the sandbox was given the same port"
    )
    assert port_is_free(port)


def make_run(*variables: str) -> list[str]:
    """`make run` with this test's virtualenv, installed already (make won't reinstall)."""
    installed = Path(sys.prefix) / ".installed"
    return [
        "make",
        "-s",
        "-C",
        str(ROOT),
        "-o",
        str(installed),
        "run",
        f"VENV={sys.prefix}",
        *variables,
    ]


@pytest.mark.slow
def test_make_run_port_and_sandbox_port_move_the_demo(tmp_path):
    port, sandbox_port = free_port(), free_port()
    log = tmp_path / "make-run.log"
    with log.open("w") as output:
        make = subprocess.Popen(
            make_run(f"PORT={port}", f"SANDBOX_PORT={sandbox_port}"),
            stdout=output,
            stderr=subprocess.STDOUT,
            env=clean_env(),
            start_new_session=True,
            preexec_fn=at_a_terminal,
        )
    demo, sandbox = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{sandbox_port}"
    try:
        wait_until(lambda: answers(f"{demo}/readyz") or make.poll() is not None, timeout=60)
        assert make.poll() is None, log.read_text()
        assert requests.get(f"{sandbox}/_sandbox/config", timeout=5).status_code == 200
        banner = log.read_text()
        assert f"{demo}/v1/wallets/demo-alice" in banner
        assert f"export DEMO_URL={demo}" in banner
        assert f"export SANDBOX_URL={sandbox}" in banner
    finally:
        os.killpg(make.pid, signal.SIGINT)  # Ctrl-C reaches the terminal's whole group
        make.wait(timeout=30)
    wait_until(lambda: port_is_free(port) and port_is_free(sandbox_port), timeout=30)


def test_make_run_with_a_port_in_use_names_it():
    with occupied_port() as holder:
        busy = holder.getsockname()[1]
        result = subprocess.run(
            make_run(f"PORT={busy}", f"SANDBOX_PORT={free_port()}"),
            capture_output=True,
            text=True,
            timeout=60,
            env=clean_env(),
        )
    assert result.returncode != 0
    assert result.stdout == ""
    ours = [line for line in result.stderr.splitlines() if not line.startswith("make: ")]
    assert ours == [
        f"Error: the service can't listen on 127.0.0.1:{busy}: address already in use "
        "(choose another port: make run PORT=..., or serve --bind HOST:PORT)"
    ]


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


# --- stopping ------------------------------------------------------------------------------


class Demo:
    """`wallet-proxy serve --sandbox` in a terminal's process group of its own, as at a
    shell: Ctrl-C there sends SIGINT to every process of the group. As a context manager,
    whatever happens to the test, nothing of it is left running."""

    def __init__(self, log: Path):
        self.port, self.sandbox_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.sandbox_url = f"http://127.0.0.1:{self.sandbox_port}"
        self.log = log
        command = [*CLI, "serve", "--sandbox", "--bind", f"127.0.0.1:{self.port}"]
        with log.open("w") as output:
            self.process = subprocess.Popen(
                [*command, "--sandbox-port", str(self.sandbox_port)],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=clean_env(),
                cwd=log.parent,
                start_new_session=True,
                preexec_fn=at_a_terminal,
            )

    def __enter__(self) -> Demo:
        up = f"{self.url}/readyz"
        try:
            wait_until(lambda: answers(up) or self.process.poll() is not None, timeout=60)
            assert self.process.poll() is None, self.log.read_text()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        """`serve` stops what it started on SIGTERM; if it can't, SIGKILL for everything
        it started, the sandbox (in a group of its own) included."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pid = self.process.pid
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                for child in children:
                    os.kill(int(child), signal.SIGKILL)
                os.killpg(pid, signal.SIGKILL)
                self.process.wait()

    def ctrl_c(self) -> float:
        """Seconds from Ctrl-C until `serve` has exited."""
        started = time.monotonic()
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(timeout=60)
        return time.monotonic() - started

    def gone(self) -> bool:
        return port_is_free(self.port) and port_is_free(self.sandbox_port)


@pytest.mark.slow
def test_an_idle_demo_stops_at_ctrl_c_within_3_s_every_time(tmp_path):
    """A second quit signal (the terminal's SIGINT, then the master's SIGQUIT) used to hang a
    worker until gunicorn's SIGKILL, 10 s later, in about one stop of four."""
    for attempt in range(20):
        folder = tmp_path / str(attempt)
        folder.mkdir()
        with Demo(folder / "serve.log") as demo:
            time.sleep(0.5)  # idle
            seconds = demo.ctrl_c()
        assert seconds < 3, f"try {attempt}: {seconds:.1f} s\n{demo.log.read_text()[-2000:]}"
        assert "SIGKILL" not in demo.log.read_text()
        wait_until(demo.gone, timeout=10)


@pytest.mark.slow
def test_ctrl_c_answers_the_requests_in_flight_within_the_graceful_timeout(tmp_path):
    """Requests waiting on SessionM when Ctrl-C comes get their wallets: gunicorn stops
    gracefully, and the sandbox (SessionM) only after it."""
    headers = {"Authorization": "Bearer demo-api-key-not-secret"}
    with Demo(tmp_path / "serve.log") as demo, ThreadPoolExecutor(4) as pool:
        slow = requests.post(f"{demo.sandbox_url}/_sandbox/config", json={"latency": 1}, timeout=5)
        assert slow.status_code == 200
        answers_in_flight = [
            pool.submit(
                requests.get,
                f"{demo.url}/v1/wallets/user-in-flight-{n}",
                headers=headers,
                timeout=20,
            )
            for n in range(4)
        ]
        in_flight = f"{demo.sandbox_url}/_sandbox/stats"
        wait_until(lambda: requests.get(in_flight, timeout=5).json()["in_flight"] == 4, timeout=10)
        seconds = demo.ctrl_c()
        statuses = [answer.result().status_code for answer in answers_in_flight]
    assert statuses == [200] * 4
    assert seconds < gunicorn_config.graceful_timeout
    assert "SIGKILL" not in demo.log.read_text()
    wait_until(demo.gone, timeout=10)
