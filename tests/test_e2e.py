"""End to end over real HTTP: the service (threaded server, then gunicorn) and the sandbox."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import requests

from tests.helpers import API_KEY, free_port


def test_wallet_over_real_http(live_server, sandbox):
    response = requests.get(
        f"{live_server.url}/v1/wallets/demo-alice?culture=es-ES",
        auth=("braze", API_KEY),
        headers={
            "User-Agent": "Braze Sender 1a2b",
            "Accept": "*/*",
            "Content-Type": "application/json",
        },
        timeout=5,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["culture"] == "es-ES" and body["offer_count"] == 3
    assert sandbox.stats()["calls_by_user"] == {"demo-alice": 1}


def test_errors_over_real_http(live_server, sandbox):
    url = f"{live_server.url}/v1/wallets/nobody"
    assert requests.get(url, timeout=5).status_code == 401
    missing = requests.get(url, auth=("braze", API_KEY), timeout=5)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "user_not_found"


def test_make_run_demo_serves_the_demo_wallet(tmp_path):
    """`wallet-proxy serve --sandbox` (what `make run` calls) under real gunicorn."""
    port, sandbox_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIONM_", "WALLET_PROXY_"))}
    env["WEB_CONCURRENCY"] = "2"
    log = (tmp_path / "serve.log").open("w+")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wallet_proxy.cli",
            "serve",
            "--sandbox",
            "--bind",
            f"127.0.0.1:{port}",
            "--sandbox-port",
            str(sandbox_port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except requests.RequestException:  # not up yet, or too busy to answer in time
                pass
            assert process.poll() is None and time.monotonic() < deadline, "did not start"
            time.sleep(0.1)
        log.seek(0)
        banner = log.read()
        assert "API key: demo-api-key-not-secret" in banner
        assert f"{base}/v1/wallets/demo-alice" in banner
        response = requests.get(
            f"{base}/v1/wallets/demo-alice",
            headers={"Authorization": "Bearer demo-api-key-not-secret"},
            timeout=5,
        )
        assert response.status_code == 200
        assert response.json()["available_points"] == 1250
        # A reload (systemd's ExecReload): serve passes SIGHUP on to gunicorn and lives on.
        process.send_signal(signal.SIGHUP)
        time.sleep(1)
        assert process.poll() is None
        again = requests.get(f"{base}/healthz", timeout=5)
        assert again.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)  # as systemd or a container runtime would
        assert process.wait(timeout=20) == 0
    for left in (port, sandbox_port):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", left)) != 0, f"port {left} left serving"
