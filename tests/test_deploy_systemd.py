"""deploy/wallet-proxy.service and its environment file: systemd's own checks (no systemd
needs to be running for them), and the facts tying the unit to nginx and gunicorn."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import wallet_proxy.gunicorn_config
from wallet_proxy.config import Settings

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "deploy" / "wallet-proxy.service"
ENV_EXAMPLE = ROOT / "deploy" / "wallet-proxy.env.example"
INSTALLED = "/opt/wallet-proxy/bin/wallet-proxy"


def service_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    section = None
    for line in UNIT.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#") and section == "Service":
            name, value = line.split("=", 1)
            settings.setdefault(name, []).append(value)
    return settings


@pytest.fixture
def unit_here(tmp_path) -> Path:
    """The unit with ExecStart pointing at this environment's wallet-proxy: `verify`
    checks that the program exists."""
    text = UNIT.read_text()
    assert text.count(INSTALLED) == 1
    unit = tmp_path / UNIT.name
    unit.write_text(text.replace(INSTALLED, str(Path(sys.prefix) / "bin" / "wallet-proxy")))
    return unit


def systemd_analyze() -> str:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.skip("systemd-analyze is not installed (scripts/system-deps.sh installs Debian's)")
    return binary


def test_systemd_accepts_the_unit(unit_here):
    result = subprocess.run(
        [systemd_analyze(), "verify", str(unit_here)], capture_output=True, text=True
    )
    # Unknown or misspelt options are only warnings: any output is a failure here.
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_unit_exposure_is_low(unit_here):
    result = subprocess.run(
        [systemd_analyze(), "security", "--offline=true", "--no-pager", str(unit_here)],
        capture_output=True,
        text=True,
    )
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert score, result.stdout[-2000:] + result.stderr
    print(f"\nsystemd-analyze security: exposure {score.group(1)} (0 best, 10 worst)")
    assert float(score.group(1)) <= 2.0


def test_unit_runs_serve_hardened_behind_nginx():
    settings = service_settings()
    assert settings["ExecStart"] == [f"{INSTALLED} serve"]
    assert settings["EnvironmentFile"] == ["/etc/wallet-proxy/wallet-proxy.env"]
    for name, value in {
        "DynamicUser": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "StateDirectory": "wallet-proxy",
        "CapabilityBoundingSet": "",
    }.items():
        assert settings[name] == [value], name
    environment = dict(value.split("=", 1) for value in settings["Environment"])
    assert environment["WALLET_PROXY_DATA_DIR"] == "/var/lib/wallet-proxy"  # StateDirectory
    assert environment["PROMETHEUS_MULTIPROC_DIR"].startswith("/run/wallet-proxy/")
    # Loopback only, and the address deploy/nginx.conf sends to.
    assert environment["WALLET_PROXY_BIND"] == "127.0.0.1:8000"
    nginx = (ROOT / "deploy" / "nginx.conf").read_text()
    assert f"server {environment['WALLET_PROXY_BIND']} " in nginx
    # systemd waits for gunicorn's graceful stop before SIGKILL.
    stop = int(settings["TimeoutStopSec"][0])
    assert stop > wallet_proxy.gunicorn_config.graceful_timeout
    assert settings["KillMode"] == ["mixed"]


def test_env_example_is_a_valid_configuration():
    env = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, value = line.split("=", 1)
            env[name] = value
    settings = Settings.from_env(env)
    assert settings.core_configured and settings.redis_url
