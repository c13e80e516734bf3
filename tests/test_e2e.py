"""End to end over real HTTP: the service (threaded server, then gunicorn) and the sandbox.

The demo (`wallet-proxy serve --sandbox`, what `make run` calls) is started once, as a
newcomer would meet it, and the docs' demo snippets (`<!-- demo-test: NAME -->` blocks) run
against it exactly as written, with only the ports changed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.helpers import API_KEY, free_port, wait_until

DOCS = Path(__file__).resolve().parent.parent / "docs"
DEMO_KEY = "demo-api-key-not-secret"
REAL_KEY = "real-key-from-the-shell-1234"


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


def test_a_culture_without_texts_is_answered_as_asked_with_sessionms_fallback(
    live_server, sandbox
):
    response = requests.get(
        f"{live_server.url}/v1/wallets/demo-alice?culture=fr-FR&limit=1",
        auth=("braze", API_KEY),
        timeout=5,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["culture"] == "fr-FR"
    assert body["offers"][0]["title"] == "10% off your next coffee"


def test_one_culture_however_braze_spells_it_is_one_sessionm_call(live_server, sandbox):
    """BCP 47 tags are case-insensitive and Braze's locales read es_ES: every spelling of a
    culture is one cache key, one SessionM call with one `culture`, and one answer's."""
    spellings = {
        "en-US": ["en-US", "EN-us", "En-Us", "en-us", "en_US"],
        "es-ES": ["es_ES", "ES-es", "es-es"],
    }
    for canonical, written in spellings.items():
        for culture in written:
            response = requests.get(
                f"{live_server.url}/v1/wallets/demo-alice?culture={culture}",
                auth=("braze", API_KEY),
                timeout=5,
            )
            assert response.status_code == 200, culture
            assert response.json()["culture"] == canonical
    assert sandbox.stats()["calls_by_culture"] == {"en-US": 1, "es-ES": 1}


def test_an_unknown_route_is_the_documented_not_found(live_server):
    response = requests.get(f"{live_server.url}/wallets/demo-alice", timeout=5)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert "| 404 | `not_found` |" in (DOCS / "api.md").read_text()


# --- the demo --------------------------------------------------------------------------


@dataclass
class Demo:
    base: str
    sandbox_url: str
    banner: str
    port: int
    sandbox_port: int
    log: Path
    process: subprocess.Popen

    def exports(self) -> str:
        """The `export` block of the banner, as a newcomer pastes it."""
        return "\n".join(
            line.strip() for line in self.banner.splitlines() if line.startswith("  export ")
        )

    def snippet(self, page: str, name: str) -> str:
        """A `demo-test` block of a page (a path from the repository's root), as written: it
        reaches the demo through the banner's $DEMO_URL and $SANDBOX_URL, whatever the ports."""
        text = (DOCS.parent / page).read_text()
        match = re.search(rf"<!-- demo-test: {name} -->\n```sh\n(.*?)```", text, re.S)
        assert match, f"no demo-test block {name!r} in {page}"
        assert "127.0.0.1" not in match.group(1), f"{page} {name}: use $DEMO_URL, $SANDBOX_URL"
        return match.group(1)

    def run(self, script: str, cwd: Path) -> subprocess.CompletedProcess:
        """`script` in bash, in an environment with none of our settings but the exports."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(OUR_PREFIXES)}
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", f"{self.exports()}\n{script}"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )


OUR_PREFIXES = ("SESSIONM_", "WALLET_PROXY_", "BRAZE_")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`wallet-proxy serve --sandbox` under real gunicorn, from a shell holding a real API key
    and asking for 2 workers: the demo must use neither."""
    port, sandbox_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(OUR_PREFIXES)}
    env.update(WEB_CONCURRENCY="2", WALLET_PROXY_API_KEYS=REAL_KEY, WALLET_PROXY_CACHE_TTL="3")
    log_path = tmp_path_factory.mktemp("demo") / "serve.log"
    log = log_path.open("w")
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
        # Read through a file of its own: seeking `log` would move the server's offset too
        # (they share one open file), and its next line would overwrite the banner.
        banner = log_path.read_text()
        yield Demo(
            base, f"http://127.0.0.1:{sandbox_port}", banner, port, sandbox_port, log_path, process
        )
    finally:
        process.send_signal(signal.SIGTERM)  # as systemd or a container runtime would
        assert process.wait(timeout=20) == 0
    for left in (port, sandbox_port):
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", left)) != 0, f"port {left} left serving"


@pytest.mark.slow
def test_make_run_demo_serves_the_demo_wallet_with_its_own_key_only(demo):
    assert demo.banner.lstrip().startswith("wallet-proxy demo:")
    assert f"API key: {DEMO_KEY}" in demo.banner
    assert f"{demo.base}/v1/wallets/demo-alice" in demo.banner
    assert REAL_KEY not in demo.banner
    assert "Ignored from your environment (the demo uses its own): WALLET_PROXY_API_KEYS" in (
        demo.banner
    )
    response = requests.get(
        f"{demo.base}/v1/wallets/demo-alice",
        headers={"Authorization": f"Bearer {DEMO_KEY}"},
        timeout=5,
    )
    assert response.status_code == 200
    assert response.json()["available_points"] == 1250
    real = requests.get(f"{demo.base}/v1/wallets/demo-alice", auth=("braze", REAL_KEY), timeout=5)
    assert real.status_code == 401


@pytest.mark.slow
def test_the_demo_is_one_process_whatever_web_concurrency_says(demo):
    assert "1 worker process with 64 threads" in demo.banner
    headers = {"Authorization": f"Bearer {DEMO_KEY}"}
    url = f"{demo.base}/v1/wallets/user-one-process"
    # With two workers and no Redis, the second request could miss its worker's cache.
    caches = [requests.get(url, headers=headers, timeout=5).headers["X-Cache"] for _ in range(2)]
    assert caches == ["MISS", "HIT"]
    assert demo.log.read_text().count("Booting worker with pid") == 1


@pytest.mark.slow
def test_the_bulk_doc_tags_import_works_against_the_demo_as_written(demo, tmp_path):
    result = demo.run(demo.snippet("docs/bulk.md", "tags-import"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "would send 2 calls" in result.stdout.lower()
    assert "done 2, skipped 0, failed 0, unknown 0" in result.stderr
    assert "done 0, skipped 2, failed 0, unknown 0" in result.stderr
    tags = requests.get(f"{demo.sandbox_url}/_sandbox/stats", timeout=5).json()["tag_state"]
    for customer in ("demo-alice", "demo-bob"):
        assert [tag["tag"] for tag in tags[customer]] == ["braze_test"]


@pytest.mark.slow
def test_the_sandbox_doc_makes_sessionm_slow_then_down(demo, tmp_path):
    headers = {"Authorization": f"Bearer {DEMO_KEY}"}
    alice = f"{demo.base}/v1/wallets/demo-alice?culture=en-GB"
    assert requests.get(alice, headers=headers, timeout=5).status_code == 200
    try:
        slow = demo.run(demo.snippet("docs/sandbox.md", "sessionm-slow"), tmp_path)
        assert slow.returncode == 0, slow.stderr
        assert slow.stdout.splitlines()[-1] == (
            '{"error":{"code":"upstream_timeout","message":"SessionM did not answer in time."}}'
        )
        down = demo.run(demo.snippet("docs/sandbox.md", "sessionm-down"), tmp_path)
        assert down.returncode == 0, down.stderr
        assert down.stdout.splitlines()[-1] == (
            '{"error":{"code":"upstream_error","message":"SessionM answered HTTP 503."}}'
        )

        def stale() -> bool:
            response = requests.get(alice, headers=headers, timeout=5)
            return response.headers["X-Cache"] == "STALE" and response.json()["stale"] is True

        wait_until(stale, timeout=20)  # the demo runs with WALLET_PROXY_CACHE_TTL=3
    finally:
        normal = demo.run(demo.snippet("docs/sandbox.md", "sessionm-normal"), tmp_path)
    assert normal.returncode == 0, normal.stderr
    knobs = requests.get(f"{demo.sandbox_url}/_sandbox/config", timeout=5).json()
    assert (knobs["latency"], knobs["status"]) == (0, None)


@pytest.mark.slow
def test_the_api_doc_culture_fallback_as_written(demo, tmp_path):
    result = demo.run(demo.snippet("docs/api.md", "culture-fallback"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert '"culture":"fr-FR"' in result.stdout
    assert '"title":"10% off your next coffee"' in result.stdout


@pytest.mark.slow
def test_the_api_doc_openapi_download_as_written(demo, tmp_path):
    result = demo.run(demo.snippet("docs/api.md", "openapi"), tmp_path)
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "wallet-proxy-openapi.json").read_text())
    assert document["openapi"] == "3.1.0"


@pytest.mark.slow
def test_the_banner_exports_the_demos_addresses(demo):
    exports = demo.exports().splitlines()
    assert f"export DEMO_URL={demo.base}" in exports
    assert f"export SANDBOX_URL={demo.sandbox_url}" in exports


@pytest.mark.slow
def test_the_readme_demo_curl_as_written(demo, tmp_path):
    result = demo.run(demo.snippet("README.md", "readme-wallet"), tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["available_points"] == 1250


@pytest.mark.slow
def test_the_demos_metrics_as_the_banner_prints_them(demo, tmp_path):
    (curl,) = [line.strip() for line in demo.banner.splitlines() if line.endswith("/metrics")]
    scraped = demo.run(curl, tmp_path)
    assert scraped.returncode == 0, scraped.stderr
    assert "wallet_proxy_http_requests_total{" in scraped.stdout


@pytest.mark.slow
def test_log_id_in_the_second_shell_finds_the_demos_lines(demo, tmp_path):
    marked = f"log-id-{time.monotonic_ns()}"
    requests.get(
        f"{demo.base}/v1/wallets/demo-alice",
        headers={"Authorization": f"Bearer {DEMO_KEY}", "X-Request-ID": marked},
        timeout=5,
    )

    def logged() -> list[dict]:
        lines = [json.loads(line) for line in demo.log.read_text().splitlines() if marked in line]
        return [line for line in lines if line.get("request_id") == marked]

    wait_until(logged, timeout=5)
    assert "wallet-proxy log-id demo-alice" in demo.banner
    result = demo.run("wallet-proxy log-id demo-alice", tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == logged()[0]["user"]


@pytest.mark.slow
def test_the_demos_support_pages_switch_to_spanish(demo):
    (link,) = re.findall(r"http://\S+/support/wallets/demo-alice\?culture=es-ES", demo.banner)
    page = requests.get(link, auth=("support", "demo-support-not-secret"), timeout=10)
    assert page.status_code == 200
    assert "Puntos dobles los sábados" in page.text
    assert 'aria-label="Culture"' in page.text and ">en-US</a>" in page.text


@pytest.mark.slow
def test_the_demo_gives_no_production_warnings(demo):
    """Per-process budgets without Redis, no log hash key: the demo's one worker is its
    whole fleet and it has its own key."""
    log = demo.log.read_text()
    for warning in ("WALLET_PROXY_LOG_HASH_KEY is not set", "budgets are per process"):
        assert warning not in log


@pytest.mark.slow
def test_the_demo_lives_through_a_reload(demo):
    """systemd's ExecReload: serve passes SIGHUP on to gunicorn and lives on. (Last: the
    reload replaces the worker, and with it the per-process cache.)"""
    demo.process.send_signal(signal.SIGHUP)
    time.sleep(1)
    assert demo.process.poll() is None
    assert requests.get(f"{demo.base}/healthz", timeout=5).status_code == 200
