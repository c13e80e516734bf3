"""`wallet-proxy triggers status|deliver|requeue` against a real outbox and the sandbox's Braze."""

from __future__ import annotations

import time

import pytest
from click.testing import CliRunner

from wallet_proxy.cli import main
from wallet_proxy.triggers.model import DEAD, QUEUED, SENT, UNKNOWN
from wallet_proxy.triggers.outbox import Dedupe
from wallet_proxy.triggers.sqlite_outbox import SqliteOutbox

from .triggers_helpers import BRAZE_KEY, trigger


@pytest.fixture
def cli_env(env, sandbox, tmp_path, monkeypatch) -> dict:
    values = {
        **env,
        "BRAZE_REST_URL": sandbox.url,
        "BRAZE_REST_API_KEY": BRAZE_KEY,
        "WALLET_PROXY_TRIGGER_KEYS": "sessionm-trigger-key",
        "WALLET_PROXY_DATA_DIR": str(tmp_path / "data"),
        "WALLET_PROXY_TRIGGER_BATCH_MS": "0",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def outbox(cli_env):
    box = SqliteOutbox(cli_env["WALLET_PROXY_DATA_DIR"])
    yield box
    box.close()


def run(*args):
    return CliRunner().invoke(main, ["triggers", *args], catch_exceptions=False)


def accept(box, name, now=None):
    made = trigger(name)
    return box.add(made, Dedupe.of(made, None), now=now or time.time(), max_waiting=1000)


def settle(box, ids, move, reason):
    """Claim and send by hand, then record an outcome, as a deliverer would."""
    box.claim(owner="me", now=time.time() + 1, window=0, lease=60, limit=100)
    box.move("sending", ids, now=time.time(), owner="me", lease_until=time.time() + 60)
    box.move(move, ids, now=time.time(), owner="me", reason=reason)


def test_deliver_until_idle_sends_what_was_accepted(outbox, sandbox):
    ids = [accept(outbox, f"c{i}").trigger_id for i in range(3)]
    result = run("deliver", "--until-idle")
    assert result.exit_code == 0, result.output
    assert "handled 3 triggers" in result.output
    assert {outbox.get(i).state for i in ids} == {SENT}
    assert len(sandbox.braze.stats()["braze_messages"]) == 3
    assert run("deliver", "--until-idle").exit_code == 0  # nothing left: returns at once


def test_status_counts_and_lists_what_needs_a_decision(outbox):
    ids = [accept(outbox, f"c{i}").trigger_id for i in range(4)]
    settle(outbox, ids[:1], "unknown", "Braze did not answer in time")
    settle(outbox, ids[1:2], "dead", "Braze answered HTTP 404: campaign not found")
    result = run("status")
    assert result.exit_code == 0, result.output
    assert "queued 2  sending 0  sent 0  unknown 1  dead 1" in result.output
    assert "oldest queued: accepted" in result.output
    assert f"{ids[0]}  campaign:camp-1  c0  Braze did not answer in time" in result.output
    assert "campaign not found" in result.output


def test_requeue_dead_and_settle_unknown(outbox):
    ids = [accept(outbox, f"c{i}").trigger_id for i in range(5)]
    settle(outbox, ids[:2], "dead", "HTTP 404")
    settle(outbox, ids[2:4], "unknown", "timed out")
    result = run("requeue", "--dead")
    assert (result.exit_code, result.output.strip()) == (0, "re-queued 2 triggers")
    assert {outbox.get(i).state for i in ids[:2]} == {QUEUED}
    result = run("requeue", "--unknown", "mark-done", "--id", ids[2])
    assert result.output.strip() == "marked sent 1 triggers"
    assert outbox.get(ids[2]).state == SENT
    result = run("requeue", "--unknown", "resend")
    assert result.output.strip() == "re-queued 1 triggers"
    assert outbox.get(ids[3]).state == QUEUED
    assert outbox.counts()[UNKNOWN] == 0 and outbox.counts()[DEAD] == 0


def test_requeue_reports_ids_in_another_state(outbox):
    trigger_id = accept(outbox, "c").trigger_id
    result = CliRunner().invoke(main, ["triggers", "requeue", "--dead", "--id", trigger_id])
    assert result.exit_code == 1
    assert "re-queued 0 triggers" in result.output


@pytest.mark.parametrize("args", [[], ["--dead", "--unknown", "resend"]])
def test_requeue_needs_exactly_one_choice(cli_env, args):
    result = CliRunner().invoke(main, ["triggers", "requeue", *args])
    assert result.exit_code == 2 and "exactly one of --dead and --unknown" in result.output


def test_commands_say_when_triggers_are_not_configured(env, monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("BRAZE_REST_URL", raising=False)
    result = CliRunner().invoke(main, ["triggers", "status"])
    assert result.exit_code == 1 and "triggers are not configured" in result.output


def test_check_config_mentions_triggers(cli_env):
    result = CliRunner().invoke(main, ["check-config"])
    assert result.exit_code == 0
    assert f"Braze triggers: {cli_env['BRAZE_REST_URL']}; 1 SessionM keys" in result.output
    assert f"outbox: SQLite in {cli_env['WALLET_PROXY_DATA_DIR']}" in result.output
    assert BRAZE_KEY not in result.output
    assert (
        "BRAZE_REST_API_KEY needs campaigns.trigger.send, canvas.trigger.send, users.track "
        "(the triggers and `attributes sync`)"
    ) in result.output


def test_check_config_says_what_each_braze_key_needs(cli_env, monkeypatch):
    monkeypatch.setenv("BRAZE_TRACK_API_KEY", "track-key-123456")
    both = CliRunner().invoke(main, ["check-config"])
    assert both.exit_code == 0, both.output
    assert "BRAZE_REST_API_KEY needs campaigns.trigger.send, canvas.trigger.send (the " in (
        both.output
    )
    assert "BRAZE_TRACK_API_KEY needs users.track (`attributes sync`)" in both.output
    monkeypatch.delenv("BRAZE_REST_API_KEY")
    track_only = CliRunner().invoke(main, ["check-config"])
    assert track_only.exit_code == 0, track_only.output
    assert "Braze triggers" not in track_only.output and "BRAZE_REST_API_KEY" not in (
        track_only.output
    )
    assert "BRAZE_TRACK_API_KEY needs users.track" in track_only.output
    assert "track-key-123456" not in track_only.output
