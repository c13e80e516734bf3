"""Settings: fail fast with one line naming the variable, never echoing a secret."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import OFFER_WITH_UNKNOWN_EXPIRY, free_port
from wallet_proxy import create_app
from wallet_proxy.config import (
    CONNECT,
    CORE,
    SHARED_CACHE,
    ConfigError,
    Settings,
    declared_variables,
    examine,
)
from wallet_proxy.sandbox import DEMO_CONNECT_AUTH, DEMO_RETAILER_ID
from wallet_proxy.serving import gunicorn_command

GOOD = {
    "SESSIONM_CONNECT_URL": "https://connect.example.test/",
    "SESSIONM_CONNECT_AUTH": "super-secret-basic",
    "SESSIONM_RETAILER_ID": "5f0c6b0e-5a11-4b0b-9d1e-000000000001",
    "WALLET_PROXY_API_KEYS": "key-aaaaaaaa, key-bbbbbbbb",
}


def test_good_settings_and_defaults():
    settings = Settings.from_env(GOOD)
    assert settings.sessionm_connect_url == "https://connect.example.test"
    assert settings.api_keys == ("key-aaaaaaaa", "key-bbbbbbbb")
    assert (settings.default_culture, settings.cache_ttl, settings.deadline) == ("en-US", 60, 1.5)
    assert "super-secret" not in repr(settings)


@pytest.mark.parametrize(
    "change, variable",
    [
        ({"SESSIONM_CONNECT_URL": None}, "SESSIONM_CONNECT_URL"),
        ({"SESSIONM_CONNECT_URL": "ftp://x"}, "SESSIONM_CONNECT_URL"),
        ({"SESSIONM_CONNECT_URL": "https://u:p@x"}, "SESSIONM_CONNECT_URL"),
        ({"SESSIONM_CONNECT_AUTH": " "}, "SESSIONM_CONNECT_AUTH"),
        ({"SESSIONM_RETAILER_ID": "retailer-1"}, "SESSIONM_RETAILER_ID"),
        ({"WALLET_PROXY_API_KEYS": None}, "WALLET_PROXY_API_KEYS"),
        ({"WALLET_PROXY_API_KEYS": "key-aaaaaaaa,,"}, "WALLET_PROXY_API_KEYS"),
        ({"WALLET_PROXY_API_KEYS": "short"}, "WALLET_PROXY_API_KEYS"),
        ({"WALLET_PROXY_DEFAULT_CULTURE": "english"}, "WALLET_PROXY_DEFAULT_CULTURE"),
        ({"WALLET_PROXY_CACHE_TTL": "soon"}, "WALLET_PROXY_CACHE_TTL"),
        ({"WALLET_PROXY_CACHE_TTL": "-1"}, "WALLET_PROXY_CACHE_TTL"),
        ({"WALLET_PROXY_DEADLINE": "0"}, "WALLET_PROXY_DEADLINE"),
        ({"WALLET_PROXY_DEADLINE": "nan"}, "WALLET_PROXY_DEADLINE"),
        ({"WALLET_PROXY_UPSTREAM_CONCURRENCY": "1.5"}, "WALLET_PROXY_UPSTREAM_CONCURRENCY"),
        ({"WALLET_PROXY_REDIS_URL": "localhost:6379"}, "WALLET_PROXY_REDIS_URL"),
        ({"WALLET_PROXY_CACHE_REDIS_URL": "redis://cache:6379/0"}, "WALLET_PROXY_REDIS_URL"),
        ({"WALLET_PROXY_CACHE_MAX_BYTES": "64MB"}, "WALLET_PROXY_CACHE_MAX_BYTES"),
        ({"WALLET_PROXY_STAFF_USERS": "ann:plaintext"}, "WALLET_PROXY_STAFF_USERS"),
        ({"WALLET_PROXY_STAFF_USERS": "ann:md5$salt$abc"}, "WALLET_PROXY_STAFF_USERS"),
        ({"WALLET_PROXY_STAFF_USERS": "ann:scrypt:1$a$b"}, "WALLET_PROXY_SECRET_KEY"),
        ({"SESSIONM_CORE_URL": "https://core.example.test"}, "SESSIONM_CORE_API_KEY"),
        ({"WALLET_PROXY_THREADS": "many"}, "WALLET_PROXY_THREADS"),
        ({"WEB_CONCURRENCY": "0"}, "WEB_CONCURRENCY"),
        ({"WALLET_PROXY_LOG_LEVEL": "loud"}, "WALLET_PROXY_LOG_LEVEL"),
        ({"WALLET_PROXY_BIND": "localhost"}, "WALLET_PROXY_BIND"),
    ],
)
def test_one_line_naming_the_variable(change, variable):
    env = {**GOOD, **change}
    env = {k: v for k, v in env.items() if v is not None}
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == variable
    message = str(caught.value)
    assert message.startswith(variable) and "\n" not in message
    assert "super-secret" not in message


def test_create_app_reads_nothing_at_import_and_validates_inside():
    with pytest.raises(ConfigError):
        create_app({})


def run(*args, env):
    return subprocess.run(
        [sys.executable, "-m", *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config_command():
    good = run("wallet_proxy.cli", "check-config", env=GOOD)
    assert good.returncode == 0, good.stderr
    assert "configuration OK" in good.stdout
    bad = run("wallet_proxy.cli", "check-config", env={**GOOD, "SESSIONM_RETAILER_ID": "x"})
    assert bad.returncode != 0
    assert bad.stderr.strip().splitlines() == [
        "Error: configuration error: SESSIONM_RETAILER_ID: must be a GUID like "
        "5f0c6b0e-5a11-4b0b-9d1e-000000000001"
    ]
    for output in (good.stdout + good.stderr, bad.stdout + bad.stderr):
        assert "super-secret" not in output and "key-aaaa" not in output


def test_gunicorn_refuses_to_start_with_one_line():
    env = {k: v for k, v in GOOD.items() if k != "WALLET_PROXY_API_KEYS"}
    env["WALLET_PROXY_API_KEY"] = "key-aaaaaaaa"  # the usual slip: one letter short
    result = run(*gunicorn_command(bind="127.0.0.1:0", app="wsgi:app")[2:], env=env)
    assert result.returncode != 0
    assert "WALLET_PROXY_API_KEYS: is required" in result.stderr
    assert (
        "WALLET_PROXY_API_KEY is not a wallet-proxy setting and is ignored; "
        "did you mean WALLET_PROXY_API_KEYS?"
    ) in result.stderr
    assert "Traceback" not in result.stderr and "key-aaaa" not in result.stderr


# --- every problem at once, and only what a command needs ------------------------------


def test_every_problem_is_reported_at_once():
    env = {
        "SESSIONM_CONNECT_URL": "ftp://connect.example.test",
        "WALLET_PROXY_DEADLINE": "soon",
        "WALLET_PROXY_STAFF_USERS": "ann:scrypt:1$a$b",
        "SESSIONM_CONNECT_AUTH": "super-secret-basic",
    }
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    assert caught.value.variable == "SESSIONM_CONNECT_URL"
    assert caught.value.problems == (
        "SESSIONM_CONNECT_URL: must be an http:// or https:// URL",
        "SESSIONM_RETAILER_ID: is required",
        "WALLET_PROXY_API_KEYS: is required",
        "WALLET_PROXY_DEADLINE: must be a number of seconds (0.1 to 30)",
        "WALLET_PROXY_SECRET_KEY: required when WALLET_PROXY_STAFF_USERS is set",
    )
    assert "\n" not in str(caught.value) and "super-secret" not in str(caught.value)


def test_each_command_needs_only_its_parts():
    core = {
        "SESSIONM_CORE_URL": "https://core.example.test",
        "SESSIONM_CORE_API_KEY": "core-key",
        "SESSIONM_CORE_API_SECRET": "core-secret",
    }
    assert Settings.from_env(core, (CORE,)).sessionm_core_url == "https://core.example.test"
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(GOOD, (CORE,))
    assert [line.split(":")[0] for line in caught.value.problems] == list(core)
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(GOOD, (CONNECT, SHARED_CACHE))
    assert caught.value.problems == (
        "WALLET_PROXY_REDIS_URL: is required to warm the cache the service shares: without it "
        "the wallets would only land in this command's memory",
    )
    # Whatever is set is still checked, needed or not.
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({**core, "SESSIONM_RETAILER_ID": "retailer-1"}, (CORE,))
    assert caught.value.variable == "SESSIONM_RETAILER_ID"


def test_misspelt_variables_are_warned_about_with_the_closest_name(caplog):
    env = {
        **GOOD,
        "WALLET_PROXY_API_KEY": "key-cccccccc",
        "WALLET_PROXY_CACHE_TTLS": "5",
        "SESSIONM_CONECT_AUTH": "x",
        "BRAZE_SOMETHING_ELSE": "1",
        "WALLET_PROXY_THREADS": "8",  # gunicorn's, declared with the others
        "WEB_CONCURRENCY": "2",
        "HOME": "/root",
    }
    assert examine(env).warnings == (
        "BRAZE_SOMETHING_ELSE is not a wallet-proxy setting and is ignored",
        "SESSIONM_CONECT_AUTH is not a wallet-proxy setting and is ignored; "
        "did you mean SESSIONM_CONNECT_AUTH?",
        "WALLET_PROXY_API_KEY is not a wallet-proxy setting and is ignored; "
        "did you mean WALLET_PROXY_API_KEYS?",
        "WALLET_PROXY_CACHE_TTLS is not a wallet-proxy setting and is ignored; "
        "did you mean WALLET_PROXY_CACHE_TTL?",
    )
    with caplog.at_level("WARNING", logger="wallet_proxy.config"):
        create_app({**env, "TESTING": True})
    logged = [r.getMessage() for r in caplog.records if r.name == "wallet_proxy.config"]
    assert logged == list(examine(env).warnings)
    assert not any("key-cccc" in line for line in logged)


def test_the_known_variables_are_the_declared_ones():
    """One declaration: what Settings reads is what is known, gunicorn's variables included."""
    known = declared_variables()
    assert len(known) == len(set(known))
    assert {"SESSIONM_CONNECT_URL", "WALLET_PROXY_API_KEYS", "SESSIONM_CORE_API_SECRET"} < set(
        known
    )
    assert {"WALLET_PROXY_BIND", "WALLET_PROXY_THREADS", "WALLET_PROXY_LOG_LEVEL"} < set(known)
    assert examine({name: "" for name in known}).warnings == ()


# --- check-config ----------------------------------------------------------------------


def test_check_config_lists_every_problem_and_warning_from_an_empty_environment():
    result = run("wallet_proxy.cli", "check-config", env={"WALLET_PROXY_CACHE_TTLS": "5"})
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "warning: WALLET_PROXY_CACHE_TTLS is not a wallet-proxy setting and is ignored; "
        "did you mean WALLET_PROXY_CACHE_TTL?",
        "Error: 4 configuration errors:",
        "  SESSIONM_CONNECT_URL: is required (an http:// or https:// base URL)",
        "  SESSIONM_CONNECT_AUTH: is required",
        "  SESSIONM_RETAILER_ID: is required",
        "  WALLET_PROXY_API_KEYS: is required",
    ]


@pytest.mark.slow
def test_check_config_pings_redis(redis_url):
    reachable = run(
        "wallet_proxy.cli", "check-config", env={**GOOD, "WALLET_PROXY_REDIS_URL": redis_url}
    )
    assert reachable.returncode == 0, reachable.stderr
    assert "cache: Redis (reachable)" in reachable.stdout

    nobody_home = f"redis://:redis-secret-pw@127.0.0.1:{free_port()}/0"
    result = run(
        "wallet_proxy.cli", "check-config", env={**GOOD, "WALLET_PROXY_REDIS_URL": nobody_home}
    )
    assert result.returncode == 1
    assert "cache: Redis (NOT reachable)" in result.stdout
    (problem,) = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert problem.startswith(
        "Error: WALLET_PROXY_REDIS_URL: Redis does not answer PING (ConnectionError: "
    )
    assert "redis-secret-pw" not in result.stdout + result.stderr


def test_check_config_says_what_the_settings_let_a_worker_hold():
    """Issue 19 item 1: the memory formula of docs/operations.md, for these settings."""
    small = run("wallet_proxy.cli", "check-config", env=GOOD)
    larger = run(
        "wallet_proxy.cli",
        "check-config",
        env={**GOOD, "WALLET_PROXY_CACHE_MAX_BYTES": str(2**30)},
    )
    worker = re.compile(r"memory: at most about ([\d,]+) MiB a worker, ([\d,]+) MiB with 2 work")
    numbers = [
        [int(n.replace(",", "")) for n in worker.search(result.stdout).groups()]
        for result in (small, larger)
    ]
    assert numbers[1][0] - numbers[0][0] == pytest.approx(1.1 * (1024 - 64), abs=1)
    assert numbers[0][1] > 2 * numbers[0][0]


@pytest.mark.slow
def test_check_config_warns_when_wallets_can_fill_the_outboxs_redis(redis_url, tmp_path):
    triggers = {
        **GOOD,
        **TRIGGERS,
        "WALLET_PROXY_REDIS_URL": redis_url,
        "WALLET_PROXY_DATA_DIR": str(tmp_path),
    }
    shared = run("wallet_proxy.cli", "check-config", env=triggers)
    assert "warning: the wallet cache shares WALLET_PROXY_REDIS_URL with the outbox" in (
        shared.stderr
    )
    own = run(
        "wallet_proxy.cli",
        "check-config",
        env={**triggers, "WALLET_PROXY_CACHE_REDIS_URL": redis_url.rsplit("/", 1)[0] + "/1"},
    )
    assert own.returncode == 0, own.stderr
    assert "warning" not in own.stderr
    assert "cache: Redis of its own (reachable)" in own.stdout
    nobody_home = f"redis://127.0.0.1:{free_port()}/0"
    unreachable = run(
        "wallet_proxy.cli",
        "check-config",
        env={**triggers, "WALLET_PROXY_CACHE_REDIS_URL": nobody_home},
    )
    assert unreachable.returncode == 1
    assert "Error: WALLET_PROXY_CACHE_REDIS_URL: Redis does not answer PING" in (
        unreachable.stderr
    )


@pytest.fixture
def probe_env(sandbox) -> dict:
    """GOOD, pointed at the sandbox's Connect."""
    return {
        **GOOD,
        "SESSIONM_CONNECT_URL": sandbox.url,
        "SESSIONM_CONNECT_AUTH": DEMO_CONNECT_AUTH,
        "SESSIONM_RETAILER_ID": DEMO_RETAILER_ID,
    }


def test_check_config_probe_names_the_offer_fields_sessionm_sends(sandbox, probe_env):
    """For one real customer: each field name SessionM sent and what the service reads it as,
    and the offers with no expiry field we know; never a value."""
    sandbox.configure(extra_offers=[OFFER_WITH_UNKNOWN_EXPIRY])
    result = run(
        "wallet_proxy.cli", "check-config", "--probe", "--user", "demo-alice", env=probe_env
    )
    assert result.returncode == 0, result.stderr
    assert "SessionM Connect probe: answered with 6 offers for demo-alice" in result.stdout
    fields = {
        line.split()[0]: " ".join(line.split()[2:])
        for line in result.stdout.splitlines()
        if line.startswith("    ")
    }
    assert fields["valid_until"] == "not read"
    assert fields["expiration_date"] == "read as expires_at"
    assert fields["redemption_end_date"] == "read as expires_at"
    assert fields["name"] == "read as title"
    assert fields["media"] == "read as logo_url"
    assert fields["custom_data"] == "not read"
    expiry_names = "expires_at, expiration_date, redemption_end_date"
    assert f"offers with none of {expiry_names}: 1 (served as never expiring)" in result.stdout
    assert "fields read that SessionM did not send: expires_at" in result.stdout
    for value in ("Odd tenant", "2031", "0dd00000", "Double points", "SAT-2X", "gold"):
        assert value not in result.stdout + result.stderr
    assert sandbox.stats()["calls_by_user"] == {"demo-alice": 1}

    unknown = run("wallet_proxy.cli", "check-config", "--probe", "--user", "nobody", env=probe_env)
    assert unknown.returncode == 1
    assert "SessionM does not know the customer nobody" in unknown.stderr
    alone = run("wallet_proxy.cli", "check-config", "--user", "demo-alice", env=probe_env)
    assert alone.returncode == 2 and "--user goes with --probe" in alone.stderr
    bad = run("wallet_proxy.cli", "check-config", "--probe", "--user", "a b", env=probe_env)
    assert bad.returncode == 2 and "Invalid value for --user" in bad.stderr
    assert sandbox.stats()["calls"] == 2


def test_check_config_probe_makes_one_harmless_call(sandbox, probe_env):
    good = run("wallet_proxy.cli", "check-config", "--probe", env=probe_env)
    assert good.returncode == 0, good.stderr
    assert "SessionM Connect probe: answered: wallet-proxy-probe-" in good.stdout
    assert "is unknown, as expected (credentials accepted)" in good.stdout
    (made_up,) = sandbox.stats()["calls_by_user"]
    assert made_up.startswith("wallet-proxy-probe-")

    wrong = {**probe_env, "SESSIONM_CONNECT_AUTH": "d3JvbmctYXV0aC1zZWNyZXQ="}
    bad = run("wallet_proxy.cli", "check-config", "--probe", env=wrong)
    assert bad.returncode == 1
    assert "SessionM Connect probe: failed: " in bad.stderr
    output = bad.stdout + bad.stderr
    assert "d3JvbmctYXV0aC1zZWNyZXQ=" not in output and "key-aaaa" not in output
    assert sum(sandbox.stats()["calls_by_user"].values()) == 2


# --- check-config gives the server's verdict ---------------------------------------------

ROOT = Path(__file__).resolve().parent.parent
STAFF = {
    "WALLET_PROXY_STAFF_USERS": "ann:scrypt:32768:8:1$salt$hash",
    "WALLET_PROXY_SECRET_KEY": "a-secret-key-of-some-length",
}
TRIGGERS = {
    "BRAZE_REST_URL": "https://rest.example.braze.test",
    "BRAZE_REST_API_KEY": "braze-rest-key-1",
    "WALLET_PROXY_TRIGGER_KEYS": "trigger-key-1",
}


@pytest.fixture
def unwritable(tmp_path) -> Path:
    """A data folder this process can't create or write: read-only for a user, and for root
    (whom permissions don't stop) one that would have to be made inside a regular file."""
    if os.geteuid() == 0:
        (tmp_path / "a-file").write_text("")
        return tmp_path / "a-file" / "data"
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o500)
    return folder


@pytest.mark.parametrize(
    ("feature", "needs_the_folder"),
    [({}, False), (TRIGGERS, True), (STAFF, True)],
    ids=["no-folder-needed", "trigger-outbox", "staff-sessions"],
)
def test_check_config_refuses_the_data_folder_exactly_when_start_up_does(
    unwritable, feature, needs_the_folder
):
    env = {**GOOD, **feature, "WALLET_PROXY_DATA_DIR": str(unwritable)}
    result = run("wallet_proxy.cli", "check-config", env=env)
    try:
        create_app(env)
        started = True
    except ConfigError as error:
        assert error.variable == "WALLET_PROXY_DATA_DIR"
        started = False
    assert started is not needs_the_folder
    assert (result.returncode == 0) is started, result.stderr
    if not started:
        (line,) = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
        assert line.startswith(f"Error: WALLET_PROXY_DATA_DIR: can't create {unwritable}: ")


def test_check_config_accepts_a_data_folder_start_up_will_create_and_leaves_nothing(tmp_path):
    folder = tmp_path / "not" / "yet"
    result = run(
        "wallet_proxy.cli",
        "check-config",
        env={**GOOD, **TRIGGERS, "WALLET_PROXY_DATA_DIR": str(folder)},
    )
    assert result.returncode == 0, result.stderr
    assert f"data folder: {folder}, for the trigger outbox" in result.stdout
    assert list(tmp_path.iterdir()) == []  # as the service's user will find it


def test_serve_refuses_an_unwritable_data_folder_in_one_line(unwritable):
    """It used to start gunicorn, whose workers died with a traceback each."""
    env = {**GOOD, **TRIGGERS, "WALLET_PROXY_DATA_DIR": str(unwritable)}
    result = run("wallet_proxy.cli", "serve", "--bind", f"127.0.0.1:{free_port()}", env=env)
    assert result.returncode == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        f"Error: configuration error: WALLET_PROXY_DATA_DIR: can't create {unwritable}: "
    )


@pytest.mark.parametrize(("deadline", "warned"), [("1.5", False), ("1.6", True), ("2", True)])
def test_check_config_warns_of_a_deadline_too_close_to_brazes_2_seconds(deadline, warned):
    result = run(
        "wallet_proxy.cli", "check-config", env={**GOOD, "WALLET_PROXY_DEADLINE": deadline}
    )
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "WALLET_PROXY_DEADLINE" in line]
    assert len(warnings) == warned
    if warned:
        assert warnings[0].startswith(f"warning: WALLET_PROXY_DEADLINE={deadline} leaves ")
        assert warnings[0].endswith("keep it at 1.5 or less")


def example_values() -> dict[str, str]:
    """Every setting the example files give (their commented-out ones too)."""
    found = {}
    env_example = ROOT / "deploy" / "wallet-proxy.env.example"
    for line in env_example.read_text().splitlines():
        if match := re.match(r"#? ?([A-Z_]+)=(\S+)$", line):
            found[match[1]] = match[2]
    secret = (ROOT / "deploy" / "k8s" / "secret.example.yaml").read_text()
    for match in re.finditer(r'^ *#? ?([A-Z_]+): "([^"]+)"$', secret, re.MULTILINE):
        found[match[1]] = match[2]
    return found


def test_check_config_names_every_placeholder_the_examples_hold(tmp_path):
    examples = example_values()
    placeholders = {name for name, value in examples.items() if "replace-with-" in value}
    assert {"SESSIONM_CONNECT_AUTH", "WALLET_PROXY_API_KEYS", "BRAZE_REST_API_KEY"} <= placeholders
    env = {**GOOD, **TRIGGERS, **{name: examples[name] for name in placeholders}}
    env.update(
        SESSIONM_CORE_URL=examples["SESSIONM_CORE_URL"], WALLET_PROXY_DATA_DIR=str(tmp_path)
    )
    result = run("wallet_proxy.cli", "check-config", env=env)
    assert result.returncode == 1
    named = set(
        re.findall(r"^(?:Error: |  )?([A-Z_]+): still holds the example's", result.stderr, re.M)
    )
    assert named == placeholders
    for name in placeholders:
        assert examples[name] not in result.stdout + result.stderr
