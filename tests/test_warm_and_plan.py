"""Before a campaign: `wallet-proxy warm --fresh-for` (with the clock moved by hand) and
`wallet-proxy plan` (its numbers for fixed inputs, and no SessionM call), for a
Connected Content send and for a webhook campaign."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import API_KEY
from wallet_proxy.bulk.commands import warm_all
from wallet_proxy.bulk.durations import parse_duration, spoken
from wallet_proxy.bulk.plan import (
    CPU_PER_HIT_US,
    INTAKE_PER_SECOND,
    make_plan,
    make_sync_plan,
    make_webhook_plan,
)
from wallet_proxy.cli import main
from wallet_proxy.config import Settings
from wallet_proxy.container import services

AUTH = {"Authorization": f"Bearer {API_KEY}"}
USERS = ["demo-alice", "demo-bob", "user-1", "user-2"]


def segment(tmp_path: Path, users: list[str]) -> Path:
    path = tmp_path / "send.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id"])
        writer.writerows([user] for user in users)
    return path


@pytest.fixture
def warm_app(make_app, redis_url):
    return make_app(WALLET_PROXY_REDIS_URL=redis_url, WALLET_PROXY_SESSIONM_RATE=50)


def warm(app, tmp_path, fresh_for: float, users=USERS, rate=50.0):
    service = services(app).wallet_service
    ids = list(enumerate(users, start=2))  # (line, id), as in a file with a header
    return warm_all(service, ids, len(ids), "en-US", fresh_for=fresh_for, concurrency=4, rate=rate)


def cache_states(app) -> set[str]:
    client = app.test_client()
    return {client.get(f"/v1/wallets/{user}", headers=AUTH).headers["X-Cache"] for user in USERS}


def test_warmed_wallets_stay_fresh_for_fresh_for_and_a_rerun_skips_them(
    warm_app, clock, sandbox, tmp_path
):
    two_hours = 2 * 3600
    run = warm(warm_app, tmp_path, two_hours)
    assert (run.warmed, run.skipped, run.failed) == (4, 0, 0)
    assert sandbox.stats()["calls"] == 4

    # A rerun soon after (an interruption): fresh until 2 h after warming is at least
    # now + 0.9 x 2 h = 108 min, so nothing is fetched again.
    clock.advance(minutes=11)
    run = warm(warm_app, tmp_path, two_hours)
    assert (run.warmed, run.skipped) == (0, 4)
    assert sandbox.stats()["calls"] == 4
    # Two minutes more and they have less than 108 minutes left: fetched again.
    clock.advance(minutes=2)
    run = warm(warm_app, tmp_path, two_hours)
    assert (run.warmed, run.skipped) == (4, 0)
    assert sandbox.stats()["calls"] == 8

    # The send, anywhere in the next two hours: every render a HIT, no SessionM call.
    clock.advance(hours=1, minutes=59)
    assert cache_states(warm_app) == {"HIT"}
    assert sandbox.stats()["calls"] == 8
    clock.advance(minutes=2)  # past the two hours: stale, and refreshed in the background
    assert cache_states(warm_app) == {"STALE"}


def test_warm_takes_only_its_share_of_the_budget(sandbox, redis_url, tmp_path, make_app):
    app = make_app(WALLET_PROXY_REDIS_URL=redis_url, WALLET_PROXY_SESSIONM_RATE=10)
    run = warm(app, tmp_path, 3600, users=[f"user-share-{n}" for n in range(24)], rate=1000)
    assert run.warmed == 24
    # 80 % of 10 requests/s, whatever its own --rate and concurrency say.
    assert sandbox.stats()["busiest_second"] <= 9


def test_warm_fresh_for_is_a_duration_of_at_most_4_hours(env, tmp_path):
    path = segment(tmp_path, USERS)
    for value, message in (("5h", "between 1 min and 4 h"), ("soon", "not a duration")):
        result = CliRunner().invoke(main, ["warm", str(path), "--fresh-for", value], env=env)
        assert result.exit_code == 2
        assert message in result.output
    dry = CliRunner().invoke(main, ["warm", str(path), "--fresh-for", "1h30m", "--dry-run"])
    assert dry.exit_code == 0
    assert "fresh for 1 h 30 min" in dry.output


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("45m", 2700), ("2h", 7200), ("1h30m", 5400), ("3600", 3600)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "1x", "1h1h", "-5m", "1.5.2h", "2 h"])
def test_not_durations(text):
    assert parse_duration(text) is None


def settings(env, **values) -> Settings:
    return Settings.from_env({**env, **{k: str(v) for k, v in values.items()}})


def test_plan_for_the_benchmarks_send(env):
    plan = make_plan(settings(env, WALLET_PROXY_SESSIONM_RATE=20), 2000, 2, None)
    assert plan.paced == pytest.approx(22 / 1.2)  # 1.1 x 20 in any 1.2 s: 18.3/s
    assert plan.warm_rate == pytest.approx(0.8 * 22 / 1.2)  # 80 % of that
    assert plan.warm_seconds == pytest.approx(136.4, abs=0.1)
    assert plan.cold_per_minute == 1045  # 95 % of 18.3/s
    assert plan.cold_seconds == pytest.approx(114.8, abs=0.1)
    assert plan.fresh_for == 3600
    by_rate = {row.per_second: row for row in plan.faster}
    three = by_rate[60]  # 3 x the budget
    assert three.first_pass == pytest.approx(33.3, abs=0.1)
    assert three.retried == 1389  # 1 - 18.3/60 of the messages miss the first time
    assert three.at_risk == 253  # 2,000 - 18.3/s x (33.3 s + 62 s of retries)
    assert not three.unhealthy  # 69 % failures is under Braze's 90 %
    assert by_rate[200].unhealthy  # 10 x: 90.8 % failing, over Braze's 90 %


def test_plan_for_a_million_with_a_deadline(env):
    plan = make_plan(
        settings(env, WALLET_PROXY_SESSIONM_RATE=100), 1_000_000, 3, parse_duration("4h")
    )
    assert plan.warm_rate == 50  # warm's own --rate default caps 80 % of 100
    assert plan.warm_seconds == 20_000  # 5 h 33 min
    assert plan.cold_per_minute == 5225  # 95 % of 91.7/s
    assert plan.cold_seconds == pytest.approx(11_483, abs=1)  # 3 h 11 min: fits in 4 h
    assert plan.fresh_for == 35_100  # warm + 4 h, in quarter hours: more than 4 h
    assert spoken(plan.warm_seconds) == "5 h 33 min"


def test_plan_command_in_plain_words_without_calling_sessionm(env, sandbox):
    result = CliRunner().invoke(
        main,
        ["plan", "--recipients", "2000", "--send-within", "30m"],
        env={**env, "WALLET_PROXY_SESSIONM_RATE": "20"},
    )
    assert result.exit_code == 0, result.output
    for words in (
        "sustained at 18.3/s so that SessionM never sees more than 1.1 x 20 in a second",
        "Warming 2,000 customers takes about 2 min 16 s (14.7 wallets/s)",
        "wallet-proxy warm FILE --fresh-for 1h",
        "at most 1,045 messages per minute",
        "The send then takes about 1 min 55 s",
        "That fits in 30 min",
        ":basic_auth wallet_proxy :retry :save wallet",
    ):
        assert words in result.output
    assert re.search(r"^ +3,600 +33 s +1,389 +253$", result.output, re.MULTILINE)
    assert sandbox.stats()["calls"] == 0


def test_the_plan_shown_in_the_docs_is_the_commands_output(env):
    docs = (Path(__file__).resolve().parent.parent / "docs" / "bulk.md").read_text()
    shown = re.search(r"```\n(SessionM budget: .*?)```", docs, re.DOTALL)
    assert shown is not None
    result = CliRunner().invoke(
        main,
        ["plan", "--recipients", "2000", "--send-within", "30m"],
        env={**env, "WALLET_PROXY_SESSIONM_RATE": "20"},
    )
    assert result.exit_code == 0, result.output
    assert result.output == shown.group(1)


def test_plan_says_how_many_cores_a_warmed_send_needs_at_a_delivery_rate(env):
    """Braze's fastest delivery: 500,000 messages a minute, each rendered twice, every
    render a cache hit costing CPU_PER_HIT_US, a core counted at 70 %."""
    alone = make_plan(settings(env, WALLET_PROXY_SESSIONM_RATE=20), 10, 2, None, 500_000)
    per_second = 500_000 / 60 * 2
    assert alone.cores == pytest.approx(per_second * CPU_PER_HIT_US["local"] / 1e6 / 0.7)
    fleet = make_plan(
        settings(env, WALLET_PROXY_SESSIONM_RATE=20, WALLET_PROXY_REDIS_URL="redis://r:6379/0"),
        10,
        2,
        None,
        500_000,
    )
    assert fleet.cores == pytest.approx(per_second * CPU_PER_HIT_US["redis"] / 1e6 / 0.7)
    result = CliRunner().invoke(
        main,
        ["plan", "--recipients", "10", "--delivery-rate", "60000", "--renders", "3"],
        env={**env, "WALLET_PROXY_SESSIONM_RATE": "20"},
    )
    assert result.exit_code == 0, result.output
    cores = 60_000 / 60 * 3 * CPU_PER_HIT_US["local"] / 1e6 / 0.7
    said = "At 60,000 messages a minute (1,000/s x 3 renders), the instances need about"
    assert f"{said} {cores:.1f} cores" in result.output
    refused = CliRunner().invoke(
        main, ["plan", "--recipients", "10", "--delivery-rate", "600000"], env=env
    )
    assert refused.exit_code == 2  # past Braze's 500,000 a minute


def test_plan_needs_a_budget(env):
    result = CliRunner().invoke(main, ["plan", "--recipients", "10"], env=env)  # rate 0
    assert result.exit_code == 2
    assert "WALLET_PROXY_SESSIONM_RATE is 0" in result.output


# --- plan --webhooks -----------------------------------------------------------------------


def test_webhook_plan_queued_for_a_segment_of_200_000(env):
    plan = make_webhook_plan(settings(env, WALLET_PROXY_SESSIONM_CORE_RATE=50), 200_000)
    assert plan.queued and not plan.bound_limited
    assert plan.paced == pytest.approx(55 / 1.2)  # 1.1 x 50 in any 1.2 s: 45.8/s
    assert plan.apply_rate == pytest.approx(0.8 * 55 / 1.2)  # the bulk share: 36.7/s
    assert plan.per_minute == INTAKE_PER_SECOND * 30  # half a minute of what one instance stores
    assert plan.send_seconds == pytest.approx(200_000 / (plan.per_minute / 60))
    assert plan.backlog == round(200_000 - plan.apply_rate * plan.send_seconds)
    assert plan.applied_after == pytest.approx(200_000 / plan.apply_rate)  # 1 h 30 min
    assert spoken(plan.applied_after) == "1 h 30 min"


def test_webhook_plan_keeps_the_queue_within_its_bound(env):
    values = {"WALLET_PROXY_SESSIONM_CORE_RATE": 50, "WALLET_PROXY_TAGS_MAX_QUEUED": 100_000}
    plan = make_webhook_plan(settings(env, **values), 300_000)
    assert plan.bound_limited
    assert plan.per_minute == 3219  # 60 x 36.7/s x 300,000 / (300,000 - 95 % of 100,000)
    assert plan.backlog <= 95_000


def test_webhook_plan_direct_is_the_budget(env):
    values = {"WALLET_PROXY_SESSIONM_CORE_RATE": 50, "WALLET_PROXY_TAGS_MODE": "direct"}
    plan = make_webhook_plan(settings(env, **values), 200_000)
    assert not plan.queued
    assert plan.per_minute == 2612  # 95 % of 45.8/s
    assert plan.applied_after == plan.send_seconds == pytest.approx(200_000 / (2612 / 60))


@pytest.mark.parametrize(
    ("args", "says"),
    [
        ([], "give exactly one of --recipients, --webhooks, --sync"),
        (["--recipients", "10", "--webhooks", "10"], "give exactly one of"),
        (["--recipients", "10", "--sync", "10"], "give exactly one of"),
        (["--webhooks", "10", "--sync", "10"], "give exactly one of"),
        (["--webhooks", "10", "--renders", "3"], "--renders goes with --recipients"),
        (["--webhooks", "10", "--send-within", "1h"], "--send-within goes with --recipients"),
        (["--webhooks", "10", "--delivery-rate", "600"], "--delivery-rate goes with --recipients"),
        (["--sync", "10", "--renders", "3"], "--renders goes with --recipients, not --sync"),
        (["--sync", "10", "--send-within", "1h"], "--send-within goes with --recipients"),
        (["--sync", "10", "--delivery-rate", "600"], "--delivery-rate goes with --recipients"),
    ],
)
def test_plan_takes_one_kind_of_send(env, args, says):
    result = CliRunner().invoke(main, ["plan", *args], env=env)
    assert result.exit_code == 2 and says in result.output


def test_plan_webhooks_needs_a_core_budget(env):
    result = CliRunner().invoke(main, ["plan", "--webhooks", "10"], env=env)  # Core rate 0
    assert result.exit_code == 2
    assert "WALLET_PROXY_SESSIONM_CORE_RATE is 0" in result.output


@pytest.mark.parametrize("mode", ["queued", "direct"])
def test_the_webhook_plans_shown_in_the_docs_are_the_commands_output(env, mode):
    docs = (Path(__file__).resolve().parent.parent / "docs" / "bulk.md").read_text()
    blocks = re.findall(r"```\n(SessionM Core budget: [^`]*)```", docs)
    (shown,) = [block for block in blocks if f" customers, {mode} (" in block]
    result = CliRunner().invoke(
        main,
        ["plan", "--webhooks", "200000"],
        env={**env, "WALLET_PROXY_SESSIONM_CORE_RATE": "50", "WALLET_PROXY_TAGS_MODE": mode},
    )
    assert result.exit_code == 0, result.output
    assert result.output == shown


# --- plan --sync ---------------------------------------------------------------------------


def test_a_sync_plan_of_100000_customers(env):
    plan = make_sync_plan(settings(env, WALLET_PROXY_SESSIONM_RATE=50), 100_000)
    assert plan.requests == 1334  # 100,000 / 75, the last one not full
    assert plan.warmed_seconds == pytest.approx(133.4)  # at the default 10 requests/s
    assert plan.wallet_rate == pytest.approx(0.8 * 55 / 1.2)  # 36.7 wallets/s
    assert plan.cold_seconds == pytest.approx(100_000 / (0.8 * 55 / 1.2))  # 45 min 27 s
    assert spoken(plan.cold_seconds) == "45 min 27 s"

    narrow = make_sync_plan(
        settings(env, WALLET_PROXY_BRAZE_TRACK_BATCH=50, WALLET_PROXY_BRAZE_TRACK_RATE=0), 100_000
    )
    assert narrow.requests == 2000 and narrow.track_rate == 1000  # Braze's 3,000 per 3 s
    assert narrow.cold_seconds is None  # no SessionM budget to plan against


def test_plan_sync_in_plain_words_without_calling_anything(env, sandbox):
    result = CliRunner().invoke(
        main, ["plan", "--sync", "100000"], env={**env, "WALLET_PROXY_SESSIONM_RATE": "50"}
    )
    assert result.exit_code == 0, result.output
    for words in (
        "at most 1,334 /users/track requests of 75 profiles",
        "started at most 10/s (WALLET_PROXY_BRAZE_TRACK_RATE): 2 min 13 s",
        "36.7 wallets/s, the bulk share (80%) of what the budget of 50 requests/s sustains: "
        "about 45 min 27 s",
        "the Braze rate alone bounds it: about 2 min 13 s",
        "The first sync sets 4 a customer (400,000)",
    ):
        assert words in result.output
    assert sandbox.stats()["calls"] == 0 and sandbox.braze.stats()["braze_calls"] == []


def test_the_sync_plan_shown_in_the_docs_is_the_commands_output(env):
    docs = (Path(__file__).resolve().parent.parent / "docs" / "braze.md").read_text()
    shown = re.search(r"```\n(Sync of .*?)```", docs, re.DOTALL)
    assert shown is not None
    result = CliRunner().invoke(
        main, ["plan", "--sync", "100000"], env={**env, "WALLET_PROXY_SESSIONM_RATE": "50"}
    )
    assert result.exit_code == 0, result.output
    assert result.output == shown.group(1)
