"""Whether triggers are going out: the deliverer's heartbeat, `triggers: stalled` in /readyz
(which stays 200), the oldest trigger's age in the metrics, and the route refusing a trigger
nothing would send. (`triggers status`: test_triggers_commands.py; the launchers that start
the deliverer: test_launchers.py.)"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import wait_until
from wallet_proxy import create_app
from wallet_proxy.container import services
from wallet_proxy.factory import close_app
from wallet_proxy.sandbox import DEMO_BRAZE_API_KEY
from wallet_proxy.triggers import running
from wallet_proxy.triggers.liveness import STALL_AFTER
from wallet_proxy.triggers.model import QUEUED
from wallet_proxy.triggers.running import deliverer_for
from wallet_proxy.triggers.setup import triggers_of

TRIGGER_KEY = "liveness-trigger-key"
METRICS_TOKEN = "liveness-metrics-token"
BODY = {"braze_campaign_id": "camp-live", "customer": {"external_id": "ext-live"}}


@pytest.fixture
def trigger_env(env, sandbox, tmp_path) -> dict:
    return {
        **env,
        "BRAZE_REST_URL": sandbox.url,
        "BRAZE_REST_API_KEY": DEMO_BRAZE_API_KEY,
        "WALLET_PROXY_TRIGGER_KEYS": TRIGGER_KEY,
        "WALLET_PROXY_DATA_DIR": str(tmp_path / "data"),
        "WALLET_PROXY_METRICS_TOKEN": METRICS_TOKEN,
    }


@pytest.fixture
def app(trigger_env, clock):
    app = create_app({**trigger_env, "TESTING": True, "CLOCK": clock})
    yield app
    close_app(app)


def post(app, body=BODY):
    return app.test_client().post(
        "/v1/braze/triggers", json=body, headers={"Authorization": f"Bearer {TRIGGER_KEY}"}
    )


def readiness(app):
    answer = app.test_client().get("/readyz")
    return answer.status_code, answer.get_json()


def outbox(app):
    return triggers_of(app).outbox


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
def test_a_running_deliverer_beats_in_the_outbox(trigger_env, clock, backend, request):
    settings = {**trigger_env, "TESTING": True, "CLOCK": clock}
    if backend == "redis":
        settings["WALLET_PROXY_REDIS_URL"] = request.getfixturevalue("redis_url")
    app = create_app(settings)
    try:
        assert outbox(app).last_beat() is None
        stop = threading.Event()
        delivering = threading.Thread(target=deliverer_for(app).run, args=(stop,))
        delivering.start()
        try:
            wait_until(lambda: outbox(app).last_beat() == clock().timestamp(), timeout=10)
        finally:
            stop.set()
            delivering.join()
    finally:
        close_app(app)


def test_stalled_triggers_are_reported_and_the_instance_stays_ready(app, clock):
    assert post(app).status_code == 202
    assert readiness(app)[1]["checks"]["triggers"] == "ok"  # just accepted

    clock.advance(seconds=STALL_AFTER + 1)  # waiting, and no deliverer ever beat
    status, body = readiness(app)
    assert status == 200
    assert body["status"] == "degraded"
    assert body["checks"]["triggers"] == "stalled"

    outbox(app).beat(now=clock().timestamp())  # a deliverer shows life
    assert readiness(app)[1] == {
        "status": "ok",
        "checks": {
            "config": "ok",
            "cache": "ok",
            "sessionm_circuit": "closed",
            "disk": "ok",
            "triggers": "ok",
        },
    }
    clock.advance(seconds=STALL_AFTER + 1)  # ...and none since
    status, body = readiness(app)
    assert (status, body["checks"]["triggers"]) == (200, "stalled")


def test_the_oldest_trigger_age_rises_in_the_metrics_with_no_deliverer(app, clock):
    def oldest() -> float:
        answer = app.test_client().get(
            "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
        )
        assert answer.status_code == 200
        for family in text_string_to_metric_families(answer.get_data(as_text=True)):
            if family.name == "wallet_proxy_trigger_oldest_waiting_seconds":
                return family.samples[0].value
        raise AssertionError("no wallet_proxy_trigger_oldest_waiting_seconds")

    assert oldest() == 0
    assert post(app).status_code == 202
    clock.advance(seconds=90)
    assert oldest() == 90


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_deliverer_that_cannot_run_turns_triggers_away(app, clock):
    """Its thread died (here: its lock file can't be opened): a 202 would be a trigger
    nothing sends. Once another deliverer shows life in the outbox, triggers are taken."""
    (Path(services(app).settings.data_dir) / running.LOCK_FILE).mkdir(parents=True)
    services(app).start_loops()
    loop = app.extensions[running.EXTENSION]
    wait_until(lambda: loop.ended, timeout=10)

    refused = post(app)
    assert refused.status_code == 503
    error = refused.get_json()["error"]
    assert error["code"] == "trigger_deliverer_not_running"
    assert "gunicorn wsgi:app" in error["message"]
    assert "wallet-proxy triggers deliver" in error["message"]
    assert int(refused.headers["Retry-After"]) > 0
    assert outbox(app).counts()[QUEUED] == 0

    outbox(app).beat(now=clock().timestamp())  # `wallet-proxy triggers deliver`, say
    assert post(app).status_code == 202


def test_the_first_request_starts_the_loops_unless_testing(trigger_env, clock):
    served = create_app({**trigger_env, "CLOCK": clock})
    tested = create_app({**trigger_env, "TESTING": True, "CLOCK": clock})
    try:
        for app in (served, tested):
            assert not app.extensions[running.EXTENSION].running
            assert app.test_client().get("/healthz").status_code == 200
        assert served.extensions[running.EXTENSION].running
        assert not tested.extensions[running.EXTENSION].running
    finally:
        close_app(served)
        close_app(tested)
    assert not served.extensions[running.EXTENSION].running  # stopped with the app
