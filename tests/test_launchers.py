"""Each way of starting the service, for real: `gunicorn wsgi:app` from the project's root (its
gunicorn.conf.py is the packaged config), gunicorn with another config, `flask --app wsgi
run`. Whichever it is, triggers are delivered, a configuration error stops it with one line,
and what it can't do right it refuses to do wrong. (`wallet-proxy serve`, the packaged config
by `-c`: tests/test_gunicorn.py, test_triggers_service.py, test_e2e.py.)"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests

from tests.helpers import API_KEY, at_a_terminal, free_port, wait_until
from wallet_proxy.sandbox import DEMO_CONNECT_AUTH, DEMO_RETAILER_ID

from .triggers_helpers import BRAZE_KEY

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TRIGGER_KEY = "launcher-trigger-key"
METRICS_TOKEN = "launcher-metrics-token"
OUR_PREFIXES = ("SESSIONM_", "WALLET_PROXY_", "BRAZE_", "PROMETHEUS_", "GUNICORN_", "FLASK_")
CONFIG_ERROR = "wallet-proxy: configuration error: WALLET_PROXY_API_KEYS: is required"

pytestmark = pytest.mark.slow


@dataclass
class Launched:
    """A launcher's process, from the project's root, with its output in files."""

    process: subprocess.Popen
    url: str
    out: Path
    err: Path
    lines: list[str] = field(default_factory=list)

    def stderr(self) -> str:
        return self.err.read_text()

    def stdout(self) -> str:
        return self.out.read_text()

    def serving(self) -> bool:
        assert self.process.poll() is None, self.stderr()[-3000:]
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def interrupt(self) -> float:
        """Ctrl-C at its terminal (SIGINT to its whole process group); seconds to exit."""
        started = time.monotonic()
        os.killpg(self.process.pid, signal.SIGINT)
        self.process.wait(timeout=30)
        return time.monotonic() - started


def environment(sandbox_url: str, data_dir: Path, **settings: str) -> dict[str, str]:
    """A deployment's settings, triggers included, and nothing of this shell's."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(OUR_PREFIXES)},
        "SESSIONM_CONNECT_URL": sandbox_url,
        "SESSIONM_CONNECT_AUTH": DEMO_CONNECT_AUTH,
        "SESSIONM_RETAILER_ID": DEMO_RETAILER_ID,
        "WALLET_PROXY_API_KEYS": API_KEY,
        "WALLET_PROXY_SESSIONM_RATE": "0",
        "BRAZE_REST_URL": sandbox_url,
        "BRAZE_REST_API_KEY": BRAZE_KEY,
        "WALLET_PROXY_TRIGGER_KEYS": TRIGGER_KEY,
        "WALLET_PROXY_TRIGGER_BATCH_MS": "0",
        "WALLET_PROXY_DATA_DIR": str(data_dir),
        "WALLET_PROXY_METRICS_TOKEN": METRICS_TOKEN,
        "WALLET_PROXY_LOG_HASH_KEY": "launcher-log-hash-key",
        **settings,
    }


def launch(command: list[str], env: dict[str, str], tmp_path: Path, url: str) -> Launched:
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
            preexec_fn=at_a_terminal,
        )
    return Launched(process, url, out, err)


@pytest.fixture
def started(tmp_path):
    """Start a launcher, wait until it serves; stop it (Ctrl-C) at the end."""
    running: list[Launched] = []

    def start(command: list[str], env: dict[str, str], url: str) -> Launched:
        launched = launch(command, env, tmp_path, url)
        running.append(launched)
        wait_until(launched.serving, timeout=60)
        return launched

    yield start
    for launched in running:
        if launched.process.poll() is None:
            os.killpg(launched.process.pid, signal.SIGTERM)
            try:
                launched.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(launched.process.pid, signal.SIGKILL)
                launched.process.wait()


def post_trigger(url: str, recipient: str) -> requests.Response:
    return requests.post(
        f"{url}/v1/braze/triggers",
        json={"braze_campaign_id": "launch-campaign", "customer": {"external_id": recipient}},
        headers={"Authorization": f"Bearer {TRIGGER_KEY}"},
        timeout=10,
    )


def delivered(sandbox, recipient: str) -> bool:
    return any(m["external_user_id"] == recipient for m in sandbox.braze.stats()["braze_messages"])


def scrape(url: str) -> requests.Response:
    return requests.get(
        f"{url}/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}, timeout=10
    )


def without_api_keys(command: list[str], sandbox_url: str, data_dir: Path, **settings: str):
    """`command` run to its end with a required setting missing; its exit and output."""
    env = environment(sandbox_url, data_dir, **settings)
    del env["WALLET_PROXY_API_KEYS"]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def our_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "configuration error" in line]


def company_config(tmp_path: Path) -> Path:
    """A company's template: two sync workers, none of our hooks."""
    other = tmp_path / "company.conf.py"
    other.write_text("workers = 2\n")
    return other


def json_lines(text: str) -> list[dict]:
    """Every line parsed as JSON (fails on one that isn't)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- gunicorn wsgi:app from the project's root: the packaged config, without -c ---------------


def test_gunicorn_wsgi_app_from_the_root_serves_with_the_packaged_config(
    started, sandbox, tmp_path
):
    port = free_port()
    env = environment(
        sandbox.url, tmp_path / "data", WALLET_PROXY_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="2"
    )
    gunicorn = started([str(BIN / "gunicorn"), "wsgi:app"], env, f"http://127.0.0.1:{port}")

    # The deliverer runs in a worker (post_worker_init): the trigger reaches Braze.
    assert post_trigger(gunicorn.url, "ext-root").status_code == 202
    wait_until(lambda: delivered(sandbox, "ext-root"), timeout=30)
    assert requests.get(f"{gunicorn.url}/readyz", timeout=5).json()["checks"]["triggers"] == "ok"

    # Both workers' answers in one scrape: the metrics folder is set up.
    for _ in range(10):
        requests.get(f"{gunicorn.url}/healthz", headers={"Connection": "close"}, timeout=5)

    def healthz_answers() -> float:
        found = re.search(
            r'wallet_proxy_http_requests_total\{route="/healthz",status="200"\} (\S+)',
            scrape(gunicorn.url).text,
        )
        return float(found.group(1)) if found else 0.0

    wait_until(lambda: healthz_answers() >= 11, timeout=10)  # and the first readiness wait's

    assert gunicorn.interrupt() < 10
    lines = json_lines(gunicorn.stderr())  # gunicorn's own lines too
    messages = [line["message"] for line in lines]
    assert "Using worker: gthread" in messages  # not the sync worker
    assert sum(m.startswith("Booting worker") for m in messages) == 2
    assert not [m for m in messages if "SIGKILL" in m]


def test_gunicorn_wsgi_app_from_the_root_refuses_bad_settings_in_one_line(sandbox, tmp_path):
    bind = f"127.0.0.1:{free_port()}"
    result = without_api_keys(
        [str(BIN / "gunicorn"), "wsgi:app"], sandbox.url, tmp_path, WALLET_PROXY_BIND=bind
    )
    assert result.returncode != 0
    assert our_lines(result.stderr) == [CONFIG_ERROR]
    assert "Booting worker" not in result.stderr  # stopped before any worker


# --- gunicorn with another config: the hooks don't run ------------------------------------


def test_another_gunicorn_config_still_delivers_and_refuses_partial_metrics(
    started, sandbox, tmp_path
):
    other, port = company_config(tmp_path), free_port()
    gunicorn = started(
        [str(BIN / "gunicorn"), "-c", str(other), "--bind", f"127.0.0.1:{port}", "wsgi:app"],
        environment(sandbox.url, tmp_path / "data"),
        f"http://127.0.0.1:{port}",
    )
    # The app started its deliverer at its first request.
    assert post_trigger(gunicorn.url, "ext-other-config").status_code == 202
    wait_until(lambda: delivered(sandbox, "ext-other-config"), timeout=30)

    # Two workers, no multiprocess folder: a scrape would count one of them.
    refused = scrape(gunicorn.url)
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "not_configured"
    assert "PROMETHEUS_MULTIPROC_DIR" in refused.json()["error"]["message"]


def test_another_gunicorn_config_stops_on_bad_settings_instead_of_restarting(sandbox, tmp_path):
    """gunicorn boots a new worker each time one exits; a worker that can't load the app
    exits with gunicorn's "App failed to load" instead, and the master stops. (When both
    workers fail at once, gunicorn 27's halt may print a traceback of its own.)"""
    bind = f"127.0.0.1:{free_port()}"
    command = [str(BIN / "gunicorn"), "-c", str(company_config(tmp_path)), "--bind", bind]
    result = without_api_keys([*command, "wsgi:app"], sandbox.url, tmp_path)
    assert result.returncode != 0
    ours = our_lines(result.stderr)
    assert ours and set(ours) == {CONFIG_ERROR}  # one per worker that started
    assert result.stderr.count("Booting worker") <= 2  # none booted again
    assert "App failed to load" in result.stderr


# --- flask --app wsgi run ------------------------------------------------------------------


def test_flask_run_delivers_triggers_and_logs_no_customer_id(started, sandbox, tmp_path):
    port = free_port()
    flask = started(
        [str(BIN / "flask"), "--app", "wsgi", "run", "--port", str(port)],
        environment(sandbox.url, tmp_path / "data"),
        f"http://127.0.0.1:{port}",
    )
    assert post_trigger(flask.url, "ext-flask-run").status_code == 202
    wait_until(lambda: delivered(sandbox, "ext-flask-run"), timeout=30)

    customer = "demo-alice"
    answer = requests.get(
        f"{flask.url}/v1/wallets/{customer}",
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    )
    assert answer.status_code == 200
    # A request werkzeug can't read: its error would quote the request line.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        raw.sendall(f"GET /v1/wallets/{customer} HTTP/1.x\r\n\r\n".encode())
        assert b"Error code explanation: 400" in raw.recv(4096)

    assert flask.interrupt() < 10
    output = flask.stdout() + flask.stderr()
    assert customer not in output
    assert "/v1/wallets/<user_id>" in flask.stdout()  # the app's own request line
    assert "what the client sent is not repeated" in flask.stderr()


def test_flask_run_refuses_bad_settings_in_one_line(sandbox, tmp_path):
    command = [str(BIN / "flask"), "--app", "wsgi", "run", "--port", str(free_port())]
    result = without_api_keys(command, sandbox.url, tmp_path)
    assert result.returncode != 0
    assert our_lines(result.stderr) == [CONFIG_ERROR]
    assert "Traceback" not in result.stderr
