"""The `wallet-proxy` command as people meet it: a terminal, a pipe, a second shell, a wheel."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from werkzeug.security import check_password_hash

from tests.helpers import free_port, wait_until

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "wallet_proxy.cli"]
OUR_PREFIXES = ("SESSIONM_", "WALLET_PROXY_", "BRAZE_")


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(OUR_PREFIXES)}


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
