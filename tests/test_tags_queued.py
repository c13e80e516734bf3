"""The queued tags relay (WALLET_PROXY_TAGS_MODE=queued, the default) over real HTTP, with
the sandbox as SessionM Core: 202 once stored, applied at most once by the worker, dead
letters, unknown outcomes, re-queues, the bound, the CLI and the support page.

The tests drive the worker by hand (`work`), as its loop would, so each outcome is seen
in order; tests/test_tags_service.py runs it in gunicorn and kills it."""

from __future__ import annotations

import re
import threading
import time

import pytest
import requests
from click.testing import CliRunner
from werkzeug.security import generate_password_hash

from tests.helpers import API_KEY, LiveServer, free_port, wait_until
from wallet_proxy import create_app
from wallet_proxy.cli import main
from wallet_proxy.factory import close_app, start_loops
from wallet_proxy.idempotency import WINDOW
from wallet_proxy.sandbox import DEMO_CORE_API_KEY, DEMO_CORE_API_SECRET, SandboxServer
from wallet_proxy.tags import running
from wallet_proxy.tags.model import APPLIED, STALE_APPLYING
from wallet_proxy.tags.running import worker_for
from wallet_proxy.tags.setup import queued_tags_of
from wallet_proxy.tags.worker import UNKNOWN_CUSTOMER, TagsWorker
from wallet_proxy.triggers.model import DEAD, QUEUED, SENDING, SENT, UNKNOWN
from wallet_proxy.triggers.running import took_over

from .triggers_helpers import BRAZE_KEY

AUTH = {"Authorization": f"Bearer {API_KEY}"}
STAFF, PASSWORD = "agent", "correct horse battery"
PW_HASH = generate_password_hash(PASSWORD, method="pbkdf2:sha256:1000")


# The apps of tests that run a worker by hand: a test app starts no loop by itself (a served
# one starts its tags worker and deliverer at its first request).
TEST_APP = {"TESTING": True}


@pytest.fixture
def queued_env(env, sandbox, tmp_path) -> dict:
    return {
        **env,
        "SESSIONM_CORE_URL": sandbox.url,
        "SESSIONM_CORE_API_KEY": DEMO_CORE_API_KEY,
        "SESSIONM_CORE_API_SECRET": DEMO_CORE_API_SECRET,
        "WALLET_PROXY_DATA_DIR": str(tmp_path / "data"),
    }


@pytest.fixture
def queued_app(queued_env, clock):
    app = create_app({**queued_env, "TESTING": True, "CLOCK": clock})
    yield app
    close_app(app)


@pytest.fixture
def relay(queued_app):
    with LiveServer(queued_app) as server:
        yield server


@pytest.fixture
def worker(queued_app):
    found = worker_for(queued_app)
    assert found is not None
    yield found
    found.close()


def post(server, user_id="user-1", body=None, *, key=None, external=False, raw=None):
    route = "external-users" if external else "users"
    headers = {**AUTH, **({"Idempotency-Key": key} if key else {})}
    url = f"{server.url}/v1/{route}/{user_id}/tags"
    if raw is not None:
        headers["Content-Type"] = "application/json"
        return requests.post(url, data=raw, headers=headers, timeout=10)
    return requests.post(url, json=body or {"tags": ["visits"]}, headers=headers, timeout=10)


def work(worker: TagsWorker) -> None:
    """Apply every tagging that is due, as the worker's loop would, and wait for the calls."""
    while True:
        claimed = worker.run_once()
        assert worker.wait_for_calls(10)
        if not claimed:
            return


def record(app, tagging_id: str):
    return queued_tags_of(app).queue.get(tagging_id)


def core_calls(sandbox) -> list[dict]:
    return sandbox.stats()["core_calls"]


def counts(sandbox, user_id: str) -> dict[str, int]:
    return {tag["tag"]: tag["count"] for tag in sandbox.stats()["tag_state"].get(user_id, [])}


# --- accepted, then applied once ------------------------------------------------------


def test_a_webhook_is_answered_202_once_stored_then_applied_once(
    relay, worker, queued_app, sandbox
):
    answer = post(relay, "user-1", {"tags": ["visits"]}, key="dispatch-1")
    assert answer.status_code == 202, answer.text
    body = answer.json()
    tagging_id = body.pop("tagging_id")
    assert tagging_id.startswith("tag_")
    assert body == {
        "id_type": "user",
        "id": "user-1",
        "tags": ["visits"],
        "ttl": None,
        "status": QUEUED,
    }
    assert core_calls(sandbox) == []  # Braze has its answer before SessionM is called

    work(worker)
    assert record(queued_app, tagging_id).state == SENT
    assert counts(sandbox, "user-1") == {"visits": 1}
    again = post(relay, "user-1", {"tags": ["visits"]}, key="dispatch-1")  # Braze's retry
    assert (again.status_code, again.headers["Idempotent-Replayed"]) == (202, "true")
    assert (again.json()["tagging_id"], again.json()["status"]) == (tagging_id, APPLIED)
    work(worker)
    assert len(core_calls(sandbox)) == 1


def test_external_ids_and_expiring_tags_take_the_external_route(relay, worker, sandbox):
    body = {"tags": ["braze_test"], "ttl": 2592000}
    answer = post(relay, "ext-42", body, external=True)
    assert answer.json()["id_type"] == "external" and answer.json()["ttl"] == 2592000
    work(worker)
    (call,) = core_calls(sandbox)
    assert call["path"] == f"/priv/v1/apps/{DEMO_CORE_API_KEY}/external/users/ext-42/tags"
    assert (call["tags"], call["ttl"]) == (["braze_test"], 2592000)


def test_repeats_are_recognised_for_24_hours_then_it_is_a_new_tagging(
    relay, worker, clock, sandbox
):
    first = post(relay, key="send-1").json()["tagging_id"]
    clock.advance(seconds=WINDOW - 1)
    assert post(relay, key="send-1").json()["tagging_id"] == first
    clock.advance(seconds=2)
    later = post(relay, key="send-1")
    assert later.json()["tagging_id"] != first and "Idempotent-Replayed" not in later.headers
    work(worker)
    assert counts(sandbox, "user-1") == {"visits": 2}


def test_keys_are_scoped_to_route_and_customer_and_bound_to_the_body(relay, worker, sandbox):
    for user_id, external in (("user-1", False), ("user-2", False), ("user-1", True)):
        assert post(relay, user_id, key="same-key", external=external).status_code == 202
    conflict = post(relay, "user-1", {"tags": ["visits"], "ttl": 60}, key="same-key")
    assert (conflict.status_code, conflict.json()["error"]["code"]) == (
        422,
        "idempotency_conflict",
    )
    work(worker)
    assert len(core_calls(sandbox)) == 3


def test_without_a_key_every_webhook_is_applied(relay, worker, sandbox):
    assert post(relay).json()["tagging_id"] != post(relay).json()["tagging_id"]
    work(worker)
    assert counts(sandbox, "user-1") == {"visits": 2}


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b'{"tags": []}', 400),
        (b'{"tags": ["a"], "ttl": 0}', 400),
        (b"not json", 400),
        (b'{"tags": ["a"], "pad": "' + b"x" * 20_000 + b'"}', 413),
    ],
)
def test_what_the_direct_relay_refuses_the_queue_refuses_storing_nothing(
    relay, queued_app, raw, status
):
    assert post(relay, raw=raw).status_code == status
    assert queued_tags_of(queued_app).queue.counts()[QUEUED] == 0


# --- what SessionM answers ---------------------------------------------------------------


def test_a_customer_sessionm_does_not_know_is_a_dead_letter_with_that_reason(
    relay, worker, queued_app, sandbox
):
    tagging_id = post(relay, "nobody").json()["tagging_id"]
    work(worker)
    dead = record(queued_app, tagging_id)
    assert (dead.state, dead.reason) == (DEAD, UNKNOWN_CUSTOMER)
    work(worker)
    assert len(core_calls(sandbox)) == 1


@pytest.mark.parametrize("status", [429, 503])
def test_sessionm_declining_for_now_is_retried_after_a_backoff(
    relay, worker, queued_app, sandbox, clock, status
):
    tagging_id = post(relay, key="k").json()["tagging_id"]
    sandbox.configure(status=status)
    work(worker)
    waiting = record(queued_app, tagging_id)
    assert (waiting.state, waiting.attempts) == (QUEUED, 1)
    sandbox.configure(status=None)
    work(worker)  # the worker waits out the backoff
    assert len(core_calls(sandbox)) == 1
    clock.advance(seconds=5)
    work(worker)
    assert record(queued_app, tagging_id).state == SENT
    assert len(core_calls(sandbox)) == 2 and counts(sandbox, "user-1") == {"visits": 1}


def test_a_refused_connection_is_retried_when_sessionm_is_back(queued_env, clock):
    port = free_port()
    app = create_app(
        {**queued_env, "SESSIONM_CORE_URL": f"http://127.0.0.1:{port}", **TEST_APP, "CLOCK": clock}
    )
    worker = worker_for(app)
    try:
        with LiveServer(app) as server:
            tagging_id = post(server, key="k").json()["tagging_id"]
        work(worker)
        assert record(app, tagging_id).state == QUEUED
        with SandboxServer(port=port) as back:
            clock.advance(seconds=5)
            work(worker)
            assert counts(back, "user-1") == {"visits": 1}
        assert record(app, tagging_id).state == SENT
    finally:
        worker.close()
        close_app(app)


def test_retrying_stops_at_max_age_with_a_dead_letter(queued_env, clock, sandbox):
    app = create_app({**queued_env, "WALLET_PROXY_TAGS_MAX_AGE": "60", **TEST_APP, "CLOCK": clock})
    worker = worker_for(app)
    try:
        with LiveServer(app) as server:
            tagging_id = post(server).json()["tagging_id"]
        sandbox.configure(status=503)
        work(worker)
        clock.advance(seconds=59)
        work(worker)
        dead = record(app, tagging_id)
        assert dead.state == DEAD and dead.reason.startswith("not applied within")
    finally:
        worker.close()
        close_app(app)


@pytest.mark.parametrize("knobs", [{"status": 500}, {"latency": 1.0}], ids=["500", "timeout"])
def test_an_outcome_sessionm_may_have_applied_is_unknown_and_never_sent_again(
    queued_env, clock, sandbox, knobs
):
    app = create_app(
        {**queued_env, "WALLET_PROXY_CORE_TIMEOUT": "0.3", **TEST_APP, "CLOCK": clock}
    )
    worker = worker_for(app)
    try:
        with LiveServer(app) as server:
            tagging_id = post(server, key="k").json()["tagging_id"]
        sandbox.configure(**knobs)
        work(worker)
        wait_until(lambda: sandbox.stats()["in_flight"] == 0, timeout=5)
        unknown = record(app, tagging_id)
        assert unknown.state == UNKNOWN and unknown.reason
        sandbox.configure(status=None, latency=0)
        clock.advance(hours=1)
        work(worker)
        assert len(core_calls(sandbox)) == 1
    finally:
        worker.close()
        close_app(app)


def test_a_tagging_left_sending_by_a_dead_worker_becomes_unknown(queued_app, relay, clock):
    queue = queued_tags_of(queued_app).queue
    tagging_id = post(relay).json()["tagging_id"]
    now = clock().timestamp()
    queue.claim(owner="dead", now=now, window=0, lease=30, limit=10)
    queue.move("sending", [tagging_id], now=now, owner="dead", lease_until=now + 60)
    took_over(worker_for(queued_app))  # the next worker of this instance
    left = queue.get(tagging_id)
    assert (left.state, left.reason) == (UNKNOWN, STALE_APPLYING)


# --- the bound, the store -------------------------------------------------------------------


def test_waiting_taggings_are_bounded_over_real_http(queued_env, clock, sandbox):
    app = create_app(
        {**queued_env, "WALLET_PROXY_TAGS_MAX_QUEUED": "2", **TEST_APP, "CLOCK": clock}
    )
    worker = worker_for(app)
    try:
        with LiveServer(app) as server:
            first = post(server, "user-1", key="a")
            post(server, "user-2")
            full = post(server, "user-3")
            assert (full.status_code, full.json()["error"]["code"]) == (503, "tags_queue_full")
            assert full.headers["Retry-After"] == "30"
            # A repeat stores nothing, so it is answered when the queue is full.
            assert post(server, "user-1", key="a").json() == first.json()
            work(worker)
            assert post(server, "user-3").status_code == 202
    finally:
        worker.close()
        close_app(app)
    assert {call["user_id"] for call in core_calls(sandbox)} == {"user-1", "user-2"}


@pytest.mark.slow
def test_a_lost_redis_outbox_is_a_503_saying_nothing_was_stored(
    queued_env, clock, redis_url, redis_server
):
    app = create_app(
        {**queued_env, "WALLET_PROXY_REDIS_URL": redis_url, **TEST_APP, "CLOCK": clock}
    )
    try:
        with LiveServer(app) as server:
            assert post(server).status_code == 202
            redis_server.kill()
            lost = post(server)
        assert (lost.status_code, lost.json()["error"]["code"]) == (503, "tags_store_unavailable")
        assert "nothing was accepted" in lost.json()["error"]["message"]
    finally:
        close_app(app)


@pytest.mark.slow
def test_two_instances_share_a_redis_queue_and_apply_each_once(
    queued_env, clock, redis_url, sandbox
):
    env = {**queued_env, "WALLET_PROXY_REDIS_URL": redis_url, "CLOCK": clock}
    one, two = create_app({**env, **TEST_APP}), create_app({**env, **TEST_APP})
    workers = [worker_for(one), worker_for(two)]
    try:
        with LiveServer(one) as first, LiveServer(two) as second:
            for n in range(20):
                post(first if n % 2 else second, f"user-{n}", key="send").raise_for_status()
            # Braze's retries land on the other instance: recognised there.
            assert post(first, "user-0", key="send").headers["Idempotent-Replayed"] == "true"
        for _ in range(3):
            for worker in workers:
                work(worker)
    finally:
        for worker in workers:
            worker.close()
        close_app(one)
        close_app(two)
    assert sorted(call["user_id"] for call in core_calls(sandbox)) == sorted(
        f"user-{n}" for n in range(20)
    )


def test_triggers_and_tags_share_the_outbox_and_stay_apart(queued_env, clock, sandbox):
    from wallet_proxy.triggers.running import deliverer_for

    app = create_app(
        {
            **queued_env,
            "BRAZE_REST_URL": sandbox.url,
            "BRAZE_REST_API_KEY": BRAZE_KEY,
            "WALLET_PROXY_TRIGGER_KEYS": "sessionm-trigger-key",
            "WALLET_PROXY_TRIGGER_BATCH_MS": "0",
            **TEST_APP,
            "CLOCK": clock,
        }
    )
    deliverer, worker = deliverer_for(app), worker_for(app)
    try:
        with LiveServer(app) as server:
            post(server).raise_for_status()
            requests.post(
                f"{server.url}/v1/braze/triggers",
                json={"braze_campaign_id": "camp-1", "customer": {"external_id": "user-1"}},
                headers={"Authorization": "Bearer sessionm-trigger-key"},
                timeout=10,
            ).raise_for_status()
        assert deliverer.run_once() == 1  # the trigger only
        assert core_calls(sandbox) == [] and len(sandbox.braze.stats()["braze_messages"]) == 1
        work(worker)
        assert len(core_calls(sandbox)) == 1
    finally:
        deliverer.close()
        worker.close()
        close_app(app)


def test_the_worker_runs_in_the_background_and_stops_with_the_app(queued_env, sandbox):
    app = create_app({**queued_env, **TEST_APP})
    loop = app.extensions[running.EXTENSION]
    start_loops(app)  # what gunicorn's post_worker_init does
    with LiveServer(app) as server:
        tagging_id = post(server).json()["tagging_id"]
    wait_until(lambda: record(app, tagging_id).state == SENT, timeout=10)
    close_app(app)
    assert not loop.running


def test_in_direct_mode_there_is_no_queue(queued_env, sandbox):
    app = create_app({**queued_env, "WALLET_PROXY_TAGS_MODE": "direct"})
    try:
        assert queued_tags_of(app) is None and running.EXTENSION not in app.extensions
        with LiveServer(app) as server:
            assert post(server).status_code == 200
    finally:
        close_app(app)


# --- the CLI and the support page -------------------------------------------------------------


@pytest.fixture
def settled(queued_env, relay, worker, queued_app, sandbox, monkeypatch):
    """One tagging of each end: applied, dead (SessionM said 400) and unknown (500)."""
    for name, value in queued_env.items():
        monkeypatch.setenv(name, value)
    ids = {}
    for outcome, status in ((SENT, None), (DEAD, 400), (UNKNOWN, 500)):
        sandbox.configure(status=status)
        ids[outcome] = post(relay, f"user-{outcome}").json()["tagging_id"]
        work(worker)
    sandbox.configure(status=None)
    assert {outcome: record(queued_app, i).state for outcome, i in ids.items()} == {
        SENT: SENT,
        DEAD: DEAD,
        UNKNOWN: UNKNOWN,
    }
    return ids


def cli(*args):
    return CliRunner().invoke(main, ["tags", *args], catch_exceptions=False)


def test_status_counts_and_lists_what_needs_a_decision(settled):
    result = cli("status")
    assert result.exit_code == 0, result.output
    assert "queued 0  sending 0  applied 1  unknown 1  dead 1" in result.output
    assert "outcome unknown (check in SessionM, then requeue --unknown ...): 1" in result.output
    assert f"{settled[UNKNOWN]}  user user-unknown  visits (counter)" in result.output
    assert f"{settled[DEAD]}  user user-dead  visits (counter)" in result.output


def test_requeue_dead_and_unknown_from_the_cli(settled, worker, queued_app, sandbox, clock):
    assert "re-queued 1 taggings" in cli("requeue", "--dead").output
    assert "marked applied 1 taggings" in cli("requeue", "--unknown", "mark-done").output
    assert record(queued_app, settled[UNKNOWN]).state == SENT
    clock.advance(seconds=5)  # the CLI re-queues as of the wall clock
    work(worker)
    assert record(queued_app, settled[DEAD]).state == SENT
    assert counts(sandbox, "user-dead") == {"visits": 1}
    missing = cli("requeue", "--unknown", "resend", "--id", settled[DEAD])
    assert missing.exit_code == 1 and "1 of the given ids were not unknown" in missing.output
    assert cli("requeue").exit_code == 2


def test_resend_unknown_sends_again(settled, worker, queued_app, sandbox, clock):
    assert "re-queued 1 taggings" in cli("requeue", "--unknown", "resend").output
    clock.advance(seconds=5)
    work(worker)
    assert record(queued_app, settled[UNKNOWN]).state == SENT
    assert counts(sandbox, "user-unknown") == {"visits": 1}  # the 500 had applied nothing


def test_stalled_tags_are_reported_by_readyz_and_the_cli(
    queued_env, relay, queued_app, clock, monkeypatch
):
    """Tags waiting over a minute with no tags worker seen as long: /readyz says so and stays
    200 (every instance shares the cause), `tags status` says so and exits 1."""
    for name, value in queued_env.items():
        monkeypatch.setenv(name, value)

    def ready():
        answer = queued_app.test_client().get("/readyz")
        return answer.status_code, answer.get_json()

    assert ready()[1]["checks"]["tags"] == "ok"
    clock.advance(minutes=-2)
    assert post(relay).status_code == 202  # accepted two minutes ago, no worker ever
    clock.advance(minutes=2)
    status, body = ready()
    assert (status, body["status"], body["checks"]["tags"]) == (200, "degraded", "stalled")
    stalled = CliRunner().invoke(main, ["tags", "status"])
    assert stalled.exit_code == 1, stalled.output
    assert "tags worker: none has run yet" in stalled.output
    assert "Error: tags are stalled" in stalled.output

    queued_tags_of(queued_app).queue.beat(now=clock().timestamp())  # a worker shows life
    assert ready()[1]["checks"]["tags"] == "ok"
    alive = cli("status")
    assert alive.exit_code == 0, alive.output
    assert "tags worker: last seen" in alive.output and "stalled" not in alive.output


def test_the_cli_says_when_the_tags_are_not_queued(queued_env, monkeypatch):
    for name, value in {**queued_env, "WALLET_PROXY_TAGS_MODE": "direct"}.items():
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(main, ["tags", "status"])
    assert result.exit_code == 1 and "the tags are not queued" in result.output


@pytest.fixture
def staff_app(queued_env, clock):
    app = create_app(
        {
            **queued_env,
            "WALLET_PROXY_STAFF_USERS": f"{STAFF}:{PW_HASH}",
            "WALLET_PROXY_SECRET_KEY": "support-test-secret-key-0123456789",
            "TESTING": True,
            "CLOCK": clock,
        }
    )
    yield app
    close_app(app)


def test_the_support_page_lists_and_requeues_dead_letters(staff_app, sandbox):
    worker = worker_for(staff_app)
    try:
        with LiveServer(staff_app) as server:
            session = requests.Session()
            session.auth = (STAFF, PASSWORD)
            sandbox.configure(status=400)
            dead = post(server, "user-7", {"tags": ["vip"], "ttl": 60}).json()["tagging_id"]
            work(worker)
            sandbox.configure(status=None)
            letters = session.get(f"{server.url}/support/tags", timeout=10)
            assert letters.status_code == 200 and dead in letters.text
            assert "vip" in letters.text and "expires after 60 s" in letters.text
            page = session.get(f"{server.url}/support/tags?customer=user-7", timeout=10).text
            assert dead in page and "dead" in page
            forged = session.post(f"{server.url}/support/tags/{dead}/requeue", timeout=10)
            assert forged.status_code == 400
            token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
            done = session.post(
                f"{server.url}/support/tags/{dead}/requeue",
                data={"csrf_token": token, "customer": "user-7"},
                timeout=10,
            )
            assert done.status_code == 200 and "queued for SessionM again" in done.text
            assert record(staff_app, dead).state == QUEUED
            work(worker)
            applied = session.get(f"{server.url}/support/tags?customer=user-7", timeout=10)
            assert "applied" in applied.text
    finally:
        worker.close()
    assert counts(sandbox, "user-7") == {"vip": 1}


def test_states_while_being_applied_are_told_apart(queued_app, relay):
    """A repeat during the call answers `sending`: applied or not is not known yet."""
    queue = queued_tags_of(queued_app).queue
    tagging_id = post(relay, key="k").json()["tagging_id"]
    now = time.time()
    queue.claim(owner="w", now=now + 1, window=0, lease=30, limit=10)
    queue.move("sending", [tagging_id], now=now, owner="w", lease_until=now + 60)
    assert post(relay, key="k").json()["status"] == SENDING


def test_outcomes_and_queue_depth_in_the_metrics(relay, worker, clock):
    from prometheus_client import REGISTRY

    def metric(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    outcomes = ("accepted", "repeat", "applied", "dead")
    before = {o: metric("wallet_proxy_queued_tags_total", outcome=o) for o in outcomes}
    post(relay, "user-1", key="k")
    post(relay, "user-1", key="k")
    post(relay, "nobody")
    stop = threading.Event()
    running_worker = threading.Thread(target=worker.run, args=(stop,))
    running_worker.start()
    try:
        done = worker.outbox.counts
        wait_until(lambda: (done()[SENT], done()[DEAD]) == (1, 1), timeout=15)
        clock.advance(seconds=2)  # the worker reads the depth once a second, by its clock
        wait_until(lambda: metric("wallet_proxy_tags_queue_depth") == 0, timeout=5)
    finally:
        stop.set()
        running_worker.join()
    after = {o: metric("wallet_proxy_queued_tags_total", outcome=o) - before[o] for o in outcomes}
    assert after == {"accepted": 2, "repeat": 1, "applied": 1, "dead": 1}
