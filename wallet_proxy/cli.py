"""The `wallet-proxy` command: serve, sandbox, check-config."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time

import click
from werkzeug.security import check_password_hash, generate_password_hash

from .bulk.commands import tags_group, warm_command
from .config import ConfigError, Settings
from .serving import CONFIG, gunicorn_command
from .support.staff import hash_password
from .triggers.commands import triggers_group

DEMO_API_KEY = "demo-api-key-not-secret"
DEMO_TRIGGER_KEY = "demo-trigger-key-not-secret"
DEMO_STAFF_USER = "support"
DEMO_STAFF_PASSWORD = "demo-support-not-secret"  # noqa: S105 - public demo credential


@click.group()
@click.version_option(package_name="wallet-proxy")
def main() -> None:
    """wallet-proxy: SessionM offer wallets for Braze Connected Content."""


@main.command("check-config")
def check_config() -> None:
    """Validate the environment's settings; exit non-zero naming the first problem."""
    try:
        settings = Settings.from_env(os.environ)
    except ConfigError as error:
        raise click.ClickException(f"configuration error: {error}") from None
    click.echo("configuration OK")
    click.echo(f"  SessionM Connect: {settings.sessionm_connect_url}")
    click.echo(
        f"  API keys: {len(settings.api_keys)}; cache: "
        f"{'Redis' if settings.redis_url else 'in-process'}, TTL {settings.cache_ttl:g}s; "
        f"deadline {settings.deadline:g}s"
    )
    if settings.triggers_configured:
        store = "Redis" if settings.redis_url else f"SQLite in {settings.data_dir}"
        click.echo(
            f"  Braze triggers: {settings.braze_rest_url}; {len(settings.trigger_keys)} "
            f"SessionM keys; outbox: {store}"
        )


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8001, show_default=True, type=int)
def sandbox(host: str, port: int) -> None:
    """Run the SessionM stand-in (demo customers, knobs under /_sandbox/)."""
    from . import sandbox as sandbox_module

    click.echo(f"SessionM sandbox on http://{host}:{port}")
    click.echo(f"  Connect auth (Basic): {sandbox_module.DEMO_CONNECT_AUTH}")
    click.echo(f"  retailer id: {sandbox_module.DEMO_RETAILER_ID}")
    click.echo(f"  Braze REST key (trigger sends): {sandbox_module.DEMO_BRAZE_API_KEY}")
    for user_id, about in sandbox_module.SEEDED_USERS.items():
        click.echo(f"  {user_id:14} {about}")
    sandbox_module.serve(host, port)


@main.command()
@click.option("--bind", help="HOST:PORT  [default: WALLET_PROXY_BIND, else 0.0.0.0:8000]")
@click.option(
    "--config",
    "config_path",
    type=click.Path(exists=True, dir_okay=False),
    help="gunicorn configuration file  [default: the one shipped in the package]",
)
@click.option(
    "--sandbox",
    "with_sandbox",
    is_flag=True,
    help="Also start the SessionM sandbox and point the service at it (demo).",
)
@click.option("--sandbox-port", default=8001, show_default=True, type=int)
def serve(
    bind: str | None, config_path: str | None, with_sandbox: bool, sandbox_port: int
) -> None:
    """Run the service under gunicorn."""
    env = dict(os.environ)
    children: list[subprocess.Popen] = []
    if with_sandbox:
        children.append(_start_sandbox(sandbox_port, env))
    try:
        Settings.from_env(env)
    except ConfigError as error:
        _stop(children)
        raise click.ClickException(f"configuration error: {error}") from None
    if with_sandbox:
        address = bind or env.get("WALLET_PROXY_BIND") or "0.0.0.0:8000"
        _print_demo(address.replace("0.0.0.0", "127.0.0.1"), env)  # noqa: S104 - display only
    command = gunicorn_command(bind=bind, config=config_path or CONFIG)
    gunicorn = subprocess.Popen(command, env=env)  # noqa: S603 - our interpreter and arguments
    children.insert(0, gunicorn)
    # Ctrl-C, or SIGTERM from systemd or a container runtime: stop the children too,
    # never leave gunicorn or the sandbox running without us.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    # SIGHUP is gunicorn's graceful reload (new workers, same socket): pass it on.
    signal.signal(signal.SIGHUP, lambda _signum, _frame: gunicorn.send_signal(signal.SIGHUP))
    try:
        code = gunicorn.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        _stop(children)
    sys.exit(code)


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def _start_sandbox(port: int, env: dict) -> subprocess.Popen:
    from . import sandbox as sandbox_module

    if _listening("127.0.0.1", port):
        raise click.ClickException(f"port {port} is taken; pick another with --sandbox-port")
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [sys.executable, "-m", "wallet_proxy.cli", "sandbox", "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while not _listening("127.0.0.1", port):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop([process])
            raise click.ClickException("the SessionM sandbox did not start")
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    env.update(
        SESSIONM_CONNECT_URL=url,
        SESSIONM_CONNECT_AUTH=sandbox_module.DEMO_CONNECT_AUTH,
        SESSIONM_RETAILER_ID=sandbox_module.DEMO_RETAILER_ID,
        SESSIONM_CORE_URL=url,
        SESSIONM_CORE_API_KEY=sandbox_module.DEMO_CORE_API_KEY,
        SESSIONM_CORE_API_SECRET=sandbox_module.DEMO_CORE_API_SECRET,
    )
    env.setdefault("WALLET_PROXY_API_KEYS", DEMO_API_KEY)
    demo_staff = f"{DEMO_STAFF_USER}:{generate_password_hash(DEMO_STAFF_PASSWORD)}"
    env.setdefault("WALLET_PROXY_STAFF_USERS", demo_staff)
    env.setdefault("WALLET_PROXY_SECRET_KEY", secrets.token_urlsafe(32))
    # The sandbox stands in for Braze's trigger endpoints too; the outbox (and the staff
    # sessions and history) live in the checkout.
    env.setdefault("BRAZE_REST_URL", url)
    env.setdefault("BRAZE_REST_API_KEY", sandbox_module.DEMO_BRAZE_API_KEY)
    env.setdefault("WALLET_PROXY_TRIGGER_KEYS", DEMO_TRIGGER_KEY)
    env.setdefault("WALLET_PROXY_DATA_DIR", os.path.abspath("demo-data"))
    # The support pages show the sandbox's own offer logos.
    env.setdefault("WALLET_PROXY_IMAGE_HOSTS", url)
    return process


def _print_demo(bind: str, env: dict) -> None:
    base = f"http://{bind}"
    key = env["WALLET_PROXY_API_KEYS"].split(",")[0]
    click.echo(
        "\nwallet-proxy demo: the SessionM sandbox stands in for SessionM at "
        f"{env['SESSIONM_CONNECT_URL']}\n"
        f"  API key: {key}\n\n"
        "Try:\n"
        f"  curl -s -H 'Authorization: Bearer {key}' {base}/v1/wallets/demo-alice\n"
        f"  curl -s -H 'Authorization: Bearer {key}' "
        f"'{base}/v1/wallets/demo-alice?culture=es-ES&limit=2'\n"
        f"  curl -s -u braze:{key} {base}/v1/wallets/demo-bob\n"
        f"  curl -s -H 'Authorization: Bearer {key}' {base}/v1/wallets/nobody   # 404\n"
        f"  curl -s {base}/readyz\n"
    )
    if env.get("WALLET_PROXY_TRIGGER_KEYS") == DEMO_TRIGGER_KEY:
        trigger = (
            '{"braze_campaign_id": "demo-campaign", "customer": {"external_id": "ext-alice", '
            '"sessionm_user_id": "demo-alice"}, "enrich": ["wallet"], '
            '"offer": {"title": "Double points"}, "points": {"award_amount": 100}}'
        )
        click.echo(
            "A SessionM-triggered Braze message (the sandbox records what Braze got):\n"
            f"  curl -s -H 'Authorization: Bearer {DEMO_TRIGGER_KEY}' "
            f"-H 'Content-Type: application/json' -d '{trigger}' {base}/v1/braze/triggers\n"
            f"  curl -s {env['BRAZE_REST_URL']}/_sandbox/braze/stats\n"
            "  wallet-proxy triggers status   # with the same environment\n"
        )
    name, _, pw_hash = env.get("WALLET_PROXY_STAFF_USERS", "").split(",")[0].partition(":")
    if name == DEMO_STAFF_USER and check_password_hash(pw_hash, DEMO_STAFF_PASSWORD):
        click.echo(
            f"Support pages: {base}/support/  (login: {DEMO_STAFF_USER} / {DEMO_STAFF_PASSWORD})\n"
        )


def _listening(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


main.add_command(hash_password)
main.add_command(tags_group)
main.add_command(warm_command)
main.add_command(triggers_group)

if __name__ == "__main__":
    main()
