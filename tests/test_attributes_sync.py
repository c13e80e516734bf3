"""`wallet-proxy attributes sync` against the sandbox's SessionM and Braze over real HTTP.

The sandbox keeps what `/users/track` told it per profile (`braze.profiles()`) and every
call (`braze_calls`), so a missed, doubled or mistyped write shows. Every wallet here has
one offer of fixed expiry (the `extra_offers` knob), so attributes only change when a
test changes them.
"""

from __future__ import annotations

import csv
import itertools
import os
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.helpers import wait_until
from wallet_proxy.cli import main
from wallet_proxy.sandbox import DEMO_BRAZE_API_KEY

OFFER = {
    "user_offer_id": "5ac00000-0000-4000-8000-000000000001",
    "offer_id": "5ac00000-0000-4000-9000-000000000001",
    "offer_type": "manual_fulfillment",
    "title": "Ten off",
    "is_redeemable": True,
    "expires_at": "2031-05-17T09:30:00Z",
}
SOONER = {
    **OFFER,
    "user_offer_id": "5ac00000-0000-4000-8000-000000000002",
    "expires_at": "2030-01-02T03:04:05Z",
}
FOUR = {
    "sessionm_available_points": 120,
    "sessionm_total_points": 500,
    "sessionm_offer_count": 1,
    "sessionm_next_offer_expires_at": "2031-05-17T09:30:00Z",
}


@pytest.fixture
def sync_env(env, sandbox, tmp_path) -> dict:
    sandbox.configure(generated_offers=0, extra_offers=[OFFER])
    return {
        **env,
        "BRAZE_REST_URL": sandbox.url,
        "BRAZE_TRACK_API_KEY": DEMO_BRAZE_API_KEY,
        "WALLET_PROXY_DATA_DIR": str(tmp_path / "data"),
        "WALLET_PROXY_BRAZE_TRACK_RATE": "0",  # unpaced, unless a test paces it
    }


def cli(args: list, env: dict):
    result = CliRunner().invoke(main, [str(arg) for arg in args], env=env)
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def customers(path: Path, count: int, *extra: tuple[str, str]) -> Path:
    """A Braze export: external ids `ext-NNNNN` for SessionM's `user-NNNNN`."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["external_id", "user_id", "email"])
        writer.writerows([f"ext-{n:05d}", f"user-{n:05d}", ""] for n in range(count))
        writer.writerows([*pair, ""] for pair in extra)
    return path


def track_calls(sandbox, status: int | None = None) -> list[dict]:
    calls = [c for c in sandbox.braze.stats()["braze_calls"] if c["kind"] == "track"]
    return [c for c in calls if status is None or c["status"] == status]


def profiles(sandbox) -> dict[str, dict]:
    return {key: p["attributes"] for key, p in sandbox.braze.profiles().items()}


def sync(path: Path, env: dict, *options: str):
    return cli(["attributes", "sync", path, *options], env)


def test_every_customer_gets_the_four_attributes_as_braze_types_in_requests_of_75(
    tmp_path, sync_env, sandbox
):
    path = customers(tmp_path / "c.csv", 160, ("ext-gone", "nobody"))
    result = sync(path, sync_env)
    assert result.exit_code == 0, result.output
    assert "written 160 (640 attributes in 3 requests)" in result.stderr
    assert "not in SessionM 1, failed 0" in result.stderr
    assert "from the cache 0, from SessionM 160" in result.stderr
    calls = track_calls(sandbox)
    assert sorted(len(c["body"]["attributes"]) for c in calls) == [10, 75, 75]
    assert {c["status"] for c in calls} == {201}
    found = profiles(sandbox)
    assert found == {f"external_id:ext-{n:05d}": FOUR for n in range(160)}
    one = found["external_id:ext-00007"]
    for name in ("sessionm_available_points", "sessionm_total_points", "sessionm_offer_count"):
        assert type(one[name]) is int
    assert datetime.fromisoformat(one["sessionm_next_offer_expires_at"]).tzinfo is not None
    # Each object names its profile by external id, and carries nothing else of ours.
    sent = calls[0]["body"]["attributes"][0]
    assert set(sent) == {"external_id", *FOUR}
    assert not Path(f"{path}.sync.journal").exists()  # done: the next run starts afresh
    assert not Path(f"{path}.sync.failed.csv").exists()


def test_a_second_run_sends_only_what_changed(tmp_path, sync_env, sandbox):
    path = customers(tmp_path / "c.csv", 40)
    assert sync(path, sync_env).exit_code == 0
    assert len(track_calls(sandbox)) == 1

    again = sync(path, sync_env)
    assert again.exit_code == 0, again.output
    assert "written 0 (0 attributes in 0 requests), unchanged 40" in again.stderr
    assert len(track_calls(sandbox)) == 1  # nothing new: no request at all

    sandbox.configure(extra_offers=[OFFER, SOONER])  # a second offer, expiring sooner
    changed = sync(path, sync_env)
    assert "written 40 (80 attributes in 1 requests)" in changed.stderr
    (latest,) = track_calls(sandbox)[1:]
    assert {frozenset(o) for o in latest["body"]["attributes"]} == {
        frozenset({"external_id", "sessionm_offer_count", "sessionm_next_offer_expires_at"})
    }
    assert profiles(sandbox)["external_id:ext-00003"] == {
        **FOUR,
        "sessionm_offer_count": 2,
        "sessionm_next_offer_expires_at": "2030-01-02T03:04:05Z",
    }

    sandbox.configure(extra_offers=[])  # no offer left: the expiry is removed
    emptied = sync(path, sync_env)
    assert "written 40 (80 attributes in 1 requests)" in emptied.stderr
    sent = track_calls(sandbox)[-1]["body"]["attributes"][0]
    assert sent["sessionm_offer_count"] == 0 and sent["sessionm_next_offer_expires_at"] is None
    assert "sessionm_next_offer_expires_at" not in profiles(sandbox)["external_id:ext-00003"]


def test_full_resends_everything_and_stamp_adds_when_sessionm_said_it(tmp_path, sync_env, sandbox):
    path = customers(tmp_path / "c.csv", 5)
    assert sync(path, sync_env).exit_code == 0
    full = sync(path, sync_env, "--full")
    assert "written 5 (20 attributes in 1 requests)" in full.stderr
    stamped = sync(path, sync_env, "--stamp")
    assert "written 5 (5 attributes in 1 requests)" in stamped.stderr
    stamp = profiles(sandbox)["external_id:ext-00001"]["sessionm_synced_at"]
    assert datetime.fromisoformat(stamp).tzinfo is not None


def test_requests_start_at_the_configured_rate(tmp_path, sync_env, sandbox):
    path = customers(tmp_path / "c.csv", 60)
    paced = {
        **sync_env,
        "WALLET_PROXY_BRAZE_TRACK_RATE": "5",
        "WALLET_PROXY_BRAZE_TRACK_BATCH": "10",
    }
    result = sync(path, paced)
    assert result.exit_code == 0, result.output
    times = sorted(call["at"] for call in track_calls(sandbox))
    assert len(times) == 6
    assert times[-1] - times[0] >= 5 / 5 * 0.95  # 200 ms apart, arrivals jitter by ms
    assert max(sum(t <= u < t + 1.0 for u in times) for t in times) <= 6


def test_a_429_waits_for_brazes_reset(tmp_path, sync_env, sandbox):
    """Braze documents no Retry-After on a 429: its X-RateLimit-Reset says when."""
    sandbox.braze.configure({"status": 429, "times": 2, "track_window": 1.0})
    path = customers(tmp_path / "c.csv", 10)
    result = sync(path, sync_env)
    assert result.exit_code == 0, result.output
    calls = track_calls(sandbox)
    assert [c["status"] for c in calls] == [429, 429, 201]
    # Each 429 said the window resets at the next whole second: no try before it.
    for before, after in itertools.pairwise(calls):
        assert after["at"] >= int(before["at"]) + 1
    assert len(profiles(sandbox)) == 10


def test_brazes_burst_limit_is_kept_before_it_says_429(tmp_path, sync_env, sandbox):
    """An answer with no request left (X-RateLimit-Remaining: 0) holds every worker until
    X-RateLimit-Reset."""
    sandbox.braze.configure({"track_limit": 2, "track_window": 1.0})
    path = customers(tmp_path / "c.csv", 60)
    result = sync(path, {**sync_env, "WALLET_PROXY_BRAZE_TRACK_BATCH": "10"})
    assert result.exit_code == 0, result.output
    taken = sorted(call["at"] for call in track_calls(sandbox, 201))
    assert len(taken) == 6 and not track_calls(sandbox, 429)
    windows = [int(t) for t in taken]
    assert max(windows.count(w) for w in windows) <= 2
    assert len(profiles(sandbox)) == 60


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_5xx_is_sent_again_with_backoff(tmp_path, sync_env, sandbox, status):
    sandbox.braze.configure({"status": status, "times": 2})
    path = customers(tmp_path / "c.csv", 10)
    result = sync(path, sync_env)
    assert result.exit_code == 0, result.output
    assert [c["status"] for c in track_calls(sandbox)] == [status, status, 201]
    assert len(profiles(sandbox)) == 10


def test_a_batch_braze_refuses_goes_one_by_one(tmp_path, sync_env, sandbox):
    """Braze's Monthly Active Users CY 24-25 contracts take 50 objects a request in all."""
    sandbox.braze.configure({"max_objects": 5})
    path = customers(tmp_path / "c.csv", 10)
    result = sync(path, sync_env)
    assert result.exit_code == 0, result.output
    assert [len(c["body"]["attributes"]) for c in track_calls(sandbox)] == [10] + [1] * 10
    assert len(profiles(sandbox)) == 10

    sandbox.reset()
    sandbox.configure(generated_offers=0, extra_offers=[OFFER])
    sandbox.braze.configure({"max_objects": 5})
    sized = sync(path, {**sync_env, "WALLET_PROXY_BRAZE_TRACK_BATCH": "5"}, "--full")
    assert sized.exit_code == 0, sized.output
    assert [len(c["body"]["attributes"]) for c in track_calls(sandbox)] == [5, 5]


def test_objects_braze_skips_are_failed_rows_to_sync_again(tmp_path, sync_env, sandbox):
    sandbox.braze.configure({"reject": ["ext-00003"]})
    path = customers(tmp_path / "c.csv", 6)
    result = sync(path, sync_env)
    assert result.exit_code == 1, result.output
    assert "written 5 (20 attributes in 1 requests)" in result.stderr
    failed = Path(f"{path}.sync.failed.csv")
    with failed.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [
        {
            "external_id": "ext-00003",
            "user_id": "user-00003",
            "line": "5",
            "reason": "Braze: provided external_id is blacklisted and disallowed",
        }
    ]
    assert "external_id:ext-00003" not in profiles(sandbox)

    sandbox.braze.configure({"reject": []})
    again = sync(failed, sync_env)
    assert again.exit_code == 0, again.output
    assert profiles(sandbox)["external_id:ext-00003"] == FOUR


def test_a_refused_key_stops_the_run_and_a_rerun_finishes(tmp_path, sync_env, sandbox):
    path = customers(tmp_path / "c.csv", 100)
    wrong = {**sync_env, "BRAZE_TRACK_API_KEY": "not-the-key"}
    result = sync(path, wrong)
    assert result.exit_code == 1
    assert "stopped: Braze answered HTTP 401: Invalid API key" in result.output
    assert "check BRAZE_REST_URL and BRAZE_TRACK_API_KEY" in result.output
    assert len(track_calls(sandbox)) == 1  # not one call per batch: the first says it all
    assert Path(f"{path}.sync.journal").exists()

    fixed = sync(path, sync_env)
    assert fixed.exit_code == 0, fixed.output
    assert len(profiles(sandbox)) == 100


def test_the_rest_api_key_serves_when_there_is_no_track_key(tmp_path, sync_env, sandbox):
    path = customers(tmp_path / "c.csv", 3)
    env = {k: v for k, v in sync_env.items() if k != "BRAZE_TRACK_API_KEY"}
    env |= {"BRAZE_REST_API_KEY": DEMO_BRAZE_API_KEY, "WALLET_PROXY_TRIGGER_KEYS": "t" * 16}
    assert sync(path, env).exit_code == 0
    assert len(profiles(sandbox)) == 3

    without = {k: v for k, v in env.items() if not k.startswith("BRAZE_")}
    refused = sync(path, without)
    assert refused.exit_code == 2
    assert "BRAZE_REST_URL: is required to write Braze profiles" in refused.output


def test_killed_and_resumed_every_profile_is_written(tmp_path, sync_env, sandbox):
    total = 3000
    path = customers(tmp_path / "c.csv", total)
    sandbox.braze.configure({"latency": 0.02})
    command = [sys.executable, "-m", "wallet_proxy.cli", "attributes", "sync", str(path)]
    command += ["--rate", "100000"]
    child_env = {**os.environ, **sync_env}
    first = subprocess.Popen(
        command, env=child_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until(lambda: len(track_calls(sandbox, 201)) >= 10, timeout=60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    written_before = len(profiles(sandbox))
    assert written_before < total, "killed too late to prove anything"
    assert Path(f"{path}.sync.journal").exists()

    second = subprocess.run(command, env=child_env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    skipped = int(second.stderr.split("skipped (done before) ")[1].split(";")[0])
    assert 0 < skipped <= written_before  # only what Braze had taken was skipped
    assert profiles(sandbox) == {f"external_id:ext-{n:05d}": FOUR for n in range(total)}
    assert not Path(f"{path}.sync.journal").exists()


def test_after_a_warm_up_the_sync_makes_no_sessionm_call(tmp_path, sync_env, sandbox, redis_url):
    shared = {**sync_env, "WALLET_PROXY_REDIS_URL": redis_url}
    path = customers(tmp_path / "c.csv", 50)
    warmed = cli(["warm", path, "--id-column", "user_id"], shared)
    assert warmed.exit_code == 0, warmed.output
    calls = sandbox.stats()["calls"]
    assert calls == 50

    result = sync(path, shared)
    assert result.exit_code == 0, result.output
    assert "from the cache 50, from SessionM 0" in result.stderr
    assert sandbox.stats()["calls"] == calls
    assert len(profiles(sandbox)) == 50
    # What was written is kept in Redis, so a rerun anywhere sends nothing new.
    again = sync(path, shared)
    assert "unchanged 50" in again.stderr


def test_dry_run_checks_and_calls_nothing(tmp_path, sync_env, sandbox):
    path = customers(tmp_path / "c.csv", 100)
    result = sync(path, sync_env, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "100 rows, Braze external ids from column 'external_id', SessionM user ids from "
    assert "column 'user_id'" in result.output
    assert "at most 2 requests of 75" in result.output
    assert sandbox.stats()["calls"] == 0 and track_calls(sandbox) == []


def test_one_id_serves_both_unless_a_column_names_the_sessionm_ids(tmp_path, sync_env, sandbox):
    both = tmp_path / "both.csv"
    both.write_text("external_id,email\nuser-00001,a@example.com\n")
    assert sync(both, sync_env).exit_code == 0
    assert profiles(sandbox) == {"external_id:user-00001": FOUR}

    named = tmp_path / "named.csv"
    named.write_text("external_id,sm\next-9,user-00009\n")
    assert sync(named, sync_env, "--user-id-column", "sm").exit_code == 0
    assert profiles(sandbox)["external_id:ext-9"] == FOUR


def test_a_bad_file_is_refused_whole_before_anything_is_sent(tmp_path, sync_env, sandbox):
    bad = tmp_path / "bad.csv"
    bad.write_text("external_id,user_id\next-1,user-1\next-2,not an id\next-3,\n")
    result = sync(bad, sync_env)
    assert result.exit_code == 2
    assert "line 3: 'not an id': user_id must be" in result.output
    assert "line 4: '': user_id must be" in result.output
    no_column = tmp_path / "ids.csv"
    no_column.write_text("user_id\nuser-1\n")
    refused = sync(no_column, sync_env)
    assert refused.exit_code == 2
    assert "no column named 'external_id'" in refused.output
    assert sandbox.stats()["calls"] == 0 and track_calls(sandbox) == []
