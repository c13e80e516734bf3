"""GET /metrics: its token, what each metric counts, and the sums under real gunicorn workers.

Metrics are per process (prometheus_client's registry), so in-process tests compare a
scrape after against one before.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import yaml
from flask.testing import FlaskClient
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import (
    API_KEY,
    OFFER_WITH_UNKNOWN_EXPIRY,
    GunicornInstance,
    free_port,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "metrics-token-for-tests-0001"
SCRAPE = {"Authorization": f"Bearer {TOKEN}"}
AUTH = {"Authorization": f"Bearer {API_KEY}"}
WALLET = "/v1/wallets/<user_id>"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(value for (n, have), value in samples.items() if n == name and wanted <= set(have))


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


@pytest.fixture
def metered(make_app) -> Callable[..., FlaskClient]:
    """Clients of apps with the metrics token, and any settings on top."""
    return lambda **settings: make_app(WALLET_PROXY_METRICS_TOKEN=TOKEN, **settings).test_client()


@pytest.fixture
def app(make_app):
    return make_app(WALLET_PROXY_METRICS_TOKEN=TOKEN)


@pytest.fixture
def budgeted(metered):
    """A client of an app with the SessionM budget at its default, as deployed: its
    metrics are there to be scraped too."""
    return metered(WALLET_PROXY_SESSIONM_RATE="50")


def scrape(client) -> Samples:
    response = client.get("/metrics", headers=SCRAPE)
    assert response.status_code == 200, response.get_data(as_text=True)
    return parse(response.get_data(as_text=True))


def test_no_token_configured_no_metrics(make_app):
    client = make_app().test_client()
    response = client.get("/metrics", headers=SCRAPE)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    "header",
    [None, f"Bearer {API_KEY}", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", "Basic xx"],
)
def test_only_the_metrics_token_opens_them(client, header):
    response = client.get("/metrics", headers={"Authorization": header} if header else {})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert "Bearer" in response.headers["WWW-Authenticate"]
    assert b"wallet_proxy_" not in response.data


def test_several_processes_without_a_metrics_folder_get_503_not_a_part(client, monkeypatch):
    """A WSGI server with several workers and no PROMETHEUS_MULTIPROC_DIR: a scrape would
    count the one worker answering it. (Served by real gunicorn: test_launchers.py.)"""
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    alone = client.get("/metrics", headers=SCRAPE)
    assert alone.status_code == 200
    several = client.get("/metrics", headers=SCRAPE, environ_overrides={"wsgi.multiprocess": True})
    assert several.status_code == 503
    assert several.get_json()["error"]["code"] == "not_configured"
    assert "PROMETHEUS_MULTIPROC_DIR" in several.get_json()["error"]["message"]
    assert b"wallet_proxy_" not in several.data


def test_prometheus_text_with_every_metric(budgeted):
    response = budgeted.get("/metrics", headers=SCRAPE)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    families = {f.name for f in text_string_to_metric_families(response.get_data(as_text=True))}
    assert {
        "wallet_proxy_http_requests",
        "wallet_proxy_http_request_duration_seconds",
        "wallet_proxy_cache_results",
        "wallet_proxy_sessionm_calls",
        "wallet_proxy_sessionm_call_duration_seconds",
        "wallet_proxy_breaker_state",
        "wallet_proxy_singleflight_waiters",
        "wallet_proxy_redis_errors",
        "wallet_proxy_sessionm_budget_wait_seconds",
        "wallet_proxy_sessionm_budget_denied",
        "wallet_proxy_sessionm_budget_pauses",
        "wallet_proxy_triggers",
        "wallet_proxy_trigger_queue_depth",
        "wallet_proxy_offers_without_expiry_field",
    } <= families


def test_offers_without_an_expiry_field_we_know_are_counted(client, sandbox, clock):
    """Each fetch counts the offers it loads as never expiring for want of a field we read;
    an offer SessionM marks as never expiring (`expiration_date: null`) is not one."""
    name = "wallet_proxy_offers_without_expiry_field_total"
    before = scrape(client)
    assert client.get("/v1/wallets/demo-alice", headers=AUTH).status_code == 200
    assert delta(before, scrape(client), name) == 0
    sandbox.configure(extra_offers=[OFFER_WITH_UNKNOWN_EXPIRY])
    assert client.get("/v1/wallets/demo-bob", headers=AUTH).get_json()["offer_count"] == 1
    assert delta(before, scrape(client), name) == 1
    clock.advance(seconds=61)  # past WALLET_PROXY_CACHE_TTL: the refresh is a new fetch
    assert client.get("/v1/wallets/demo-bob", headers=AUTH).headers["X-Cache"] == "STALE"
    wait_until(lambda: delta(before, scrape(client), name) == 2, timeout=5)


def test_lookups_counted_by_what_the_cache_held(client, sandbox, clock):
    before = scrape(client)
    assert client.get("/v1/wallets/demo-alice", headers=AUTH).status_code == 200  # miss
    assert client.get("/v1/wallets/demo-alice", headers=AUTH).status_code == 200  # hit
    assert client.get("/v1/wallets/nobody", headers=AUTH).status_code == 404  # miss
    assert client.get("/v1/wallets/nobody", headers=AUTH).status_code == 404  # negative
    clock.advance(seconds=61)  # past WALLET_PROXY_CACHE_TTL
    stale = client.get("/v1/wallets/demo-alice", headers=AUTH)
    assert stale.headers["X-Cache"] == "STALE"
    wait_until(lambda: sandbox.stats()["calls"] == 3, timeout=5)  # the background refresh
    after = scrape(client)

    results = {
        r: delta(before, after, "wallet_proxy_cache_results_total", result=r)
        for r in ("hit", "miss", "negative", "stale")
    }
    assert results == {"hit": 1, "miss": 2, "negative": 1, "stale": 1}
    assert (
        delta(before, after, "wallet_proxy_http_requests_total", route=WALLET, status="200") == 3
    )
    assert (
        delta(before, after, "wallet_proxy_http_requests_total", route=WALLET, status="404") == 2
    )
    duration = "wallet_proxy_http_request_duration_seconds_count"
    assert delta(before, after, duration, route=WALLET) == 5
    calls = "wallet_proxy_sessionm_calls_total"
    wait_until(
        lambda: delta(before, scrape(client), calls, api="get_user_offers", outcome="ok") == 2,
        timeout=5,
    )
    assert delta(before, after, calls, api="get_user_offers", outcome="user_not_found") == 1
    timed = "wallet_proxy_sessionm_call_duration_seconds_count"
    assert delta(before, scrape(client), timed, api="get_user_offers") == 3


def test_outcomes_and_the_breaker_state(sandbox, metered):
    client = metered(WALLET_PROXY_BREAKER_THRESHOLD="1", WALLET_PROXY_BREAKER_COOLDOWN="0.2")
    before = scrape(client)
    sandbox.configure(status=500)
    assert client.get("/v1/wallets/user-1", headers=AUTH).status_code == 502
    after = scrape(client)
    calls = "wallet_proxy_sessionm_calls_total"
    assert delta(before, after, calls, api="get_user_offers", outcome="server_error") == 1
    assert total(after, "wallet_proxy_breaker_state") == 2  # open
    assert client.get("/v1/wallets/user-2", headers=AUTH).status_code == 503  # not called
    assert delta(before, scrape(client), calls) == 1

    wait_until(
        lambda: client.get("/readyz").get_json()["checks"]["sessionm_circuit"] == "half-open",
        timeout=5,
    )
    assert total(scrape(client), "wallet_proxy_breaker_state") == 1
    sandbox.configure(status=None)
    assert client.get("/v1/wallets/user-3", headers=AUTH).status_code == 200
    assert total(scrape(client), "wallet_proxy_breaker_state") == 0


def test_waiters_counted_while_they_wait(app, client, sandbox):
    sandbox.configure(latency=0.6)
    statuses = []

    def ask() -> None:
        statuses.append(app.test_client().get("/v1/wallets/demo-alice", headers=AUTH).status_code)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    wait_until(lambda: total(scrape(client), "wallet_proxy_singleflight_waiters") == 4, timeout=5)
    for thread in threads:
        thread.join()
    assert statuses == [200] * 4
    assert sandbox.stats()["calls"] == 1
    assert total(scrape(client), "wallet_proxy_singleflight_waiters") == 0


def test_redis_errors_counted(sandbox, metered):
    nobody_there = f"redis://127.0.0.1:{free_port()}/0"
    client = metered(WALLET_PROXY_REDIS_URL=nobody_there)
    before = scrape(client)
    assert client.get("/v1/wallets/demo-alice", headers=AUTH).status_code == 200
    assert delta(before, scrape(client), "wallet_proxy_redis_errors_total") >= 1


def test_budget_waits_refusals_and_pauses_counted(sandbox, metered):
    # One request, then the next in 5 s.
    client = metered(WALLET_PROXY_SESSIONM_RATE=0.2, WALLET_PROXY_BREAKER_THRESHOLD=100)
    before = scrape(client)
    assert client.get("/v1/wallets/user-1", headers=AUTH).status_code == 200
    assert client.get("/v1/wallets/user-2", headers=AUTH).status_code == 503
    after = scrape(client)
    waited = "wallet_proxy_sessionm_budget_wait_seconds_count"
    assert delta(before, after, waited, api="connect") == 1
    denied = "wallet_proxy_sessionm_budget_denied_total"
    assert delta(before, after, denied, api="connect", priority="waiting") == 1
    assert delta(before, after, denied, api="connect", priority="refresh") == 0
    assert delta(before, after, "wallet_proxy_sessionm_budget_pauses_total") == 0


def test_a_429_counted_as_a_pause(sandbox, metered):
    client = metered(WALLET_PROXY_DEADLINE="0.5", WALLET_PROXY_SESSIONM_RATE="20")
    before = scrape(client)
    sandbox.configure(status=429, retry_after=3)
    assert client.get("/v1/wallets/user-1", headers=AUTH).status_code == 503
    pauses = "wallet_proxy_sessionm_budget_pauses_total"
    assert delta(before, scrape(client), pauses, api="connect") == 1


def test_dashboard_panels_query_metrics_we_export(budgeted, sandbox):
    """Every panel of deploy/grafana-dashboard.json asks for series a scrape really has."""
    budgeted.get("/v1/wallets/demo-alice", headers=AUTH)
    budgeted.get("/v1/wallets/demo-alice", headers=AUTH)
    exported = {name for name, _ in scrape(budgeted)}
    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    panels = [
        panel
        for top in dashboard["panels"]
        for panel in [top, *top.get("panels", [])]
        if panel["type"] != "row"
    ]
    assert len(panels) >= 5
    for panel in panels:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            named = set(re.findall(r"\bwallet_proxy_[a-z_]+", target["expr"]))
            assert named, (panel["title"], target["expr"])
            assert named <= exported, (panel["title"], named - exported)
    titles = " ".join(panel["title"].lower() for panel in panels)
    for topic in ("status", "p99", "hit", "sessionm calls", "breaker"):
        assert topic in titles


def test_the_alert_rules_in_the_docs_query_metrics_we_export(budgeted):
    """docs/operations.md's Prometheus rules parse, and name series a scrape really has."""
    exported = {name for name, _ in scrape(budgeted)}
    text = (ROOT / "docs" / "operations.md").read_text()
    (block,) = re.findall(r"### Alerts\n.*?```yaml\n(.*?)```", text, re.S)
    rules = [rule for group in yaml.safe_load(block)["groups"] for rule in group["rules"]]
    assert [rule["alert"] for rule in rules] == ["WalletProxyTriggersStalled"]
    for rule in rules:
        named = set(re.findall(r"\bwallet_proxy_[a-z_]+", rule["expr"]))
        assert named and named <= exported, (rule["alert"], named - exported)


@pytest.mark.slow
def test_counters_add_up_across_gunicorn_workers(sandbox, tmp_path):
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    leftover = metrics_dir / "counter_4242.db"  # a previous run's: must not count
    leftover.write_bytes(b"\0" * 16)
    out = tmp_path / "stdout.log"
    with GunicornInstance(
        sandbox.url,
        log=tmp_path / "stderr.log",
        out=out,
        workers=3,
        WALLET_PROXY_METRICS_TOKEN=TOKEN,
        PROMETHEUS_MULTIPROC_DIR=metrics_dir,
    ) as server:
        assert not leftover.exists()

        def get(i: int) -> requests.Response:
            # A new connection each time, so the kernel spreads requests over the workers.
            url = f"{server.url}/v1/wallets/user-{i % 20}"
            return requests.get(url, headers=AUTH, timeout=10)

        def answered_by() -> dict[int, int]:
            """Wallet answers per worker pid, from the request lines."""
            counts: dict[int, int] = {}
            for text in out.read_text().splitlines():
                line = json.loads(text)
                if line["route"] == WALLET:
                    counts[line["pid"]] = counts.get(line["pid"], 0) + 1
            return counts

        # Batches of 30 at once until the lines show that several workers answered.
        sent = 0
        while sent < 300:
            with ThreadPoolExecutor(10) as pool:
                responses = list(pool.map(get, range(sent, sent + 30)))
            assert [r.status_code for r in responses] == [200] * 30
            sent += 30
            # Each worker writes its queued lines within FLUSH_INTERVAL.
            wait_until(lambda: sum(answered_by().values()) == sent, timeout=10)  # noqa: B023
            if len(answered_by()) >= 2:
                break
        by_worker = answered_by()
        assert len(by_worker) >= 2, by_worker

        def metrics() -> Samples:
            response = requests.get(f"{server.url}/metrics", headers=SCRAPE, timeout=10)
            assert response.status_code == 200
            return parse(response.text)

        requests_total = "wallet_proxy_http_requests_total"
        # Each worker counts its queued answers within FLUSH_INTERVAL.
        wait_until(
            lambda: total(metrics(), requests_total, route=WALLET, status="200") == sent,
            timeout=10,
        )
        samples = metrics()
        assert total(samples, "wallet_proxy_cache_results_total") == sent
        calls = total(samples, "wallet_proxy_sessionm_calls_total", outcome="ok")
        assert calls == sandbox.stats()["calls"] >= 20

        # A worker dies: its counts stay in the sums, its live gauges go.
        victim = next(iter(by_worker))
        assert (metrics_dir / f"gauge_livesum_{victim}.db").exists()
        os.kill(victim, signal.SIGTERM)
        wait_until(lambda: not (metrics_dir / f"gauge_livesum_{victim}.db").exists(), timeout=20)
        samples = metrics()
        assert total(samples, requests_total, route=WALLET, status="200") == sent
        assert total(samples, "wallet_proxy_sessionm_calls_total", outcome="ok") == calls
