"""Settings: fail fast with one line naming the variable, never echoing a secret."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from wallet_proxy import create_app
from wallet_proxy.config import ConfigError, Settings
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
        ({"WALLET_PROXY_STAFF_USERS": "ann:plaintext"}, "WALLET_PROXY_STAFF_USERS"),
        ({"WALLET_PROXY_STAFF_USERS": "ann:md5$salt$abc"}, "WALLET_PROXY_STAFF_USERS"),
        ({"WALLET_PROXY_STAFF_USERS": "ann:scrypt:1$a$b"}, "WALLET_PROXY_SECRET_KEY"),
        ({"SESSIONM_CORE_URL": "https://core.example.test"}, "SESSIONM_CORE_API_KEY"),
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
    result = run(*gunicorn_command(bind="127.0.0.1:0", app="wsgi:app")[2:], env=env)
    assert result.returncode != 0
    assert "WALLET_PROXY_API_KEYS: is required" in result.stderr
    assert "Traceback" not in result.stderr
