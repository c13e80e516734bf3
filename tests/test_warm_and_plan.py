"""Before a campaign: `wallet-proxy warm --fresh-for` (with the clock moved by hand) and
`wallet-proxy plan` (its numbers for fixed inputs, and no SessionM call)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import API_KEY
from wallet_proxy.bulk.commands import warm_all
from wallet_proxy.bulk.csvinput import read_table, wallet_ids
from wallet_proxy.bulk.durations import parse_duration, spoken
from wallet_proxy.bulk.plan import make_plan
from wallet_proxy.cli import main
from wallet_proxy.config import Settings
from wallet_proxy.services import services

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
    records = wallet_ids(read_table(segment(tmp_path, users), None))
    service = services(app).wallet_service
    return warm_all(service, records, "en-US", fresh_for=fresh_for, concurrency=4, rate=rate)


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


def test_plan_needs_a_budget(env):
    result = CliRunner().invoke(main, ["plan", "--recipients", "10"], env=env)  # rate 0
    assert result.exit_code == 2
    assert "WALLET_PROXY_SESSIONM_RATE is 0" in result.output
