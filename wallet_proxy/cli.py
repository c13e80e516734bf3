"""The `wallet-proxy` command: serve, sandbox, check-config, hash-password, log-id (and bulk/)."""

from __future__ import annotations

import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from urllib.parse import urlsplit

import click
import redis
from werkzeug.security import generate_password_hash

from . import memory, preflight
from . import sandbox as sandbox_module
from .budget import UNLIMITED
from .bulk.commands import tags_group, warm_command
from .bulk.plan import plan_command
from .bulk.sync import attributes_group
from .config import ConfigError, Settings, examine, log_id_settings, serving_settings
from .errors import InvalidRequest, UserNotFound, WalletProxyError
from .logs import UserIds
from .redis_clients import COMMAND, connect
from .rules import check_user_id
from .schemas import EXPIRY_FIELDS, OFFER_FIELDS_READ
from .serving import CONFIG, gunicorn_command
from .sessionm import ConnectClient, connect_client
from .support.staff import MIN_PASSWORD_LENGTH
from .tags.commands import tags_requeue, tags_status
from .triggers.commands import triggers_group

DEMO_API_KEY = "demo-api-key-not-secret"
DEMO_TRIGGER_KEY = "demo-trigger-key-not-secret"
DEMO_STAFF_USER = "support"
DEMO_STAFF_PASSWORD = "demo-support-not-secret"  # noqa: S105 - public demo credential
DEMO_METRICS_TOKEN = "demo-metrics-token-not-secret"  # noqa: S105 - public demo credential
DEMO_LOG_HASH_KEY = "demo-log-hash-key-not-secret"
# demo-alice's offers have Spanish texts: the support pages offer both.
DEMO_CULTURES = "en-US,es-ES"
# One process, so that the cache and single-flight behave as they do in one process (a
# deployment shares them through Redis).
DEMO_WORKERS, DEMO_THREADS = 1, 64
# What `check-config --probe --user` prints of SessionM's offer field names.
MAX_FIELDS_SHOWN, MAX_FIELD_NAME = 100, 64
DEFAULT_BIND = Settings().bind  # gunicorn_config.py's, when WALLET_PROXY_BIND is not set
SANDBOX_HOST = "127.0.0.1"  # where `serve --sandbox` runs the sandbox
DEMO_TRIGGER = (
    '{"braze_campaign_id": "demo-campaign", "customer": {"external_id": "ext-alice", '
    '"sessionm_user_id": "demo-alice"}, "enrich": ["wallet"], '
    '"offer": {"title": "Double points"}, "points": {"award_amount": 100}}'
)


@click.group()
@click.version_option(package_name="wallet-proxy")
def main() -> None:
    """wallet-proxy: SessionM offer wallets for Braze Connected Content."""


@main.command("check-config")
@click.option(
    "--probe",
    is_flag=True,
    help="Also make one harmless call to SessionM Connect (a made-up customer's wallet).",
)
@click.option(
    "--user",
    "user_id",
    metavar="ID",
    help="With --probe: read this real customer's wallet instead, and print the names (never "
    "the values) of the offer fields SessionM sends and which the service reads.",
)
def check_config(probe: bool, user_id: str | None) -> None:
    """Validate the service's settings: every problem at once, what start-up checks (the
    data folder), example placeholders left in, then Redis (and SessionM).

    Variables that look like ours but that no setting reads are warned about, with the
    closest known name, and so is a deadline leaving no room under Braze's 2 s. Exits 1 on
    any problem; warnings alone don't fail.
    """
    if user_id is not None:
        if not probe:
            raise click.UsageError("--user goes with --probe")
        try:
            user_id = check_user_id(user_id)
        except InvalidRequest as error:
            raise click.BadParameter(error.message, param_hint="--user") from None
    verdict = examine(os.environ)
    settings = verdict.settings
    for warning in [*verdict.warnings, *preflight.warnings(settings)]:
        click.echo(f"warning: {warning}", err=True)
    beyond = preflight.problems(os.environ, settings)
    if settings is None:
        raise click.ClickException(ConfigError.listing([*verdict.problems, *beyond]).report())
    failures = [str(problem) for problem in beyond]
    cache = "in-process"
    for variable, url in (
        ("WALLET_PROXY_REDIS_URL", settings.redis_url),
        ("WALLET_PROXY_CACHE_REDIS_URL", settings.cache_redis_url),
    ):
        if url:
            problem = _redis_problem(url)
            own = " of its own" if variable == "WALLET_PROXY_CACHE_REDIS_URL" else ""
            cache = f"Redis{own} ({'reachable' if problem is None else 'NOT reachable'})"
            if problem:
                failures.append(f"{variable}: {problem}")
    click.echo("configuration OK" if not failures else "configuration read, but:")
    click.echo(f"  SessionM Connect: {settings.sessionm_connect_url}")
    core = settings.sessionm_core_url or "not configured (the tags routes answer 503)"
    if settings.core_configured:
        core += f"; tags relay: {settings.tags_mode}"
    click.echo(f"  SessionM Core: {core}")
    staff = f"{len(settings.staff_users)} staff users" if settings.staff_users else "off"
    click.echo(f"  API keys: {len(settings.api_keys)}; support pages: {staff}")
    click.echo(f"  cache: {cache}, TTL {settings.cache_ttl:g}s; deadline {settings.deadline:g}s")
    if settings.triggers_configured:
        store = "Redis" if settings.redis_url else f"SQLite in {settings.data_dir}"
        click.echo(
            f"  Braze triggers: {settings.braze_rest_url}; {len(settings.trigger_keys)} "
            f"SessionM keys; outbox: {store}"
        )
    worker, instance = (
        peak(settings) / memory.MB
        for peak in (memory.worker_peak_bytes, memory.instance_peak_bytes)
    )
    click.echo(
        f"  memory: at most about {worker:,.0f} MiB a worker, {instance:,.0f} MiB with "
        f"{settings.web_concurrency} workers (docs/operations.md#memory)"
    )
    for needs in preflight.braze_permissions(settings):
        click.echo(f"  {needs}")
    if uses := preflight.data_dir_uses(settings):
        click.echo(f"  data folder: {settings.data_dir}, for {' and '.join(uses)}")
    if probe:
        if user_id is None:
            answered, outcome = _probe_connect(settings)
        else:
            answered, outcome = _probe_offer_fields(settings, user_id)
        click.echo(f"  SessionM Connect probe: {outcome}")
        if not answered:
            failures.append(f"SessionM Connect probe: {outcome}")
    if failures:
        raise click.ClickException("\n".join(failures))


def _redis_problem(url: str) -> str | None:
    """None if Redis answers PING within a second, else why not (without the password)."""
    client = connect(url, COMMAND)
    try:
        client.ping()
    except redis.RedisError as error:
        message = str(error)
        password = urlsplit(url).password
        if password:
            message = message.replace(password, "***")
        # redis-py's class, not ours: RedisNotConnected is a ConnectionError to an operator.
        kind = next(c for c in type(error).__mro__ if c.__module__.startswith("redis."))
        return f"Redis does not answer PING ({kind.__name__}: {message})"
    finally:
        client.close()
    return None


def _probe_client(settings: Settings) -> tuple[ConnectClient, float]:
    """A Connect client for a probe and the probe's deadline. One call an operator asks for
    is not worth a place in the fleet's SessionM budget."""
    client = connect_client(settings, lambda: datetime.now(UTC), UNLIMITED)
    return client, time.monotonic() + settings.upstream_timeout


def _probe_connect(settings: Settings) -> tuple[bool, str]:
    """(answered as expected, what happened): get_user_offers for a customer nobody has.

    Harmless: it reads, and a made-up id is unknown to SessionM. A not-found answer proves
    the URL, the credentials and the retailer id; nothing secret is shown either way.
    """
    client, deadline = _probe_client(settings)
    made_up = f"wallet-proxy-probe-{secrets.token_hex(6)}"
    try:
        client.fetch_wallet(made_up, settings.default_culture, deadline=deadline)
    except UserNotFound:
        return True, f"answered: {made_up} is unknown, as expected (credentials accepted)"
    except WalletProxyError as error:
        return False, f"failed: {error.message} ({error.code})"
    return True, f"answered with a wallet for the made-up id {made_up} (credentials accepted)"


def _probe_offer_fields(settings: Settings, user_id: str) -> tuple[bool, str]:
    """(answered, what happened): one real customer's first page of offers, reported by the
    names of the fields SessionM sent (how many offers carry each, and what the service
    reads each as), never their values. It only reads, like the made-up probe."""
    client, deadline = _probe_client(settings)
    try:
        found = client.offer_fields(user_id, settings.default_culture, deadline=deadline)
    except UserNotFound:
        return False, f"SessionM does not know the customer {user_id}"
    except WalletProxyError as error:
        return False, f"failed: {error.message} ({error.code})"
    lines = [f"answered with {found.offers:,} offers for {user_id} (the first page)"]
    if found.offers:
        lines.append("  offer fields SessionM sent (offers carrying each; never their values):")
        shown = sorted(found.sent.items(), key=lambda item: (-item[1], item[0]))
        for name, count in shown[:MAX_FIELDS_SHOWN]:
            read_as = OFFER_FIELDS_READ.get(name)
            mapped = f"read as {read_as}" if read_as else "not read"
            lines.append(f"    {_field_name(name):32} {count:6,}  {mapped}")
        if len(shown) > MAX_FIELDS_SHOWN:
            lines.append(f"    … and {len(shown) - MAX_FIELDS_SHOWN:,} more names")
        missing = sorted(set(OFFER_FIELDS_READ) - set(found.sent))
        lines.append(f"  fields read that SessionM did not send: {', '.join(missing) or 'none'}")
        lines.append(
            f"  offers with none of {', '.join(EXPIRY_FIELDS)}: {found.without_expiry_field:,}"
            + (" (served as never expiring)" if found.without_expiry_field else "")
        )
    return True, "\n".join(lines)


def _field_name(name: str) -> str:
    """A name SessionM chose, safe on a terminal: escaped when it holds controls, and cut."""
    name = name[:MAX_FIELD_NAME]
    return name if name.isprintable() else ascii(name)


@main.command("hash-password")
@click.option(
    "--stdin",
    "from_stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of prompting.",
)
def hash_password(from_stdin: bool) -> None:
    """Print a password hash for WALLET_PROXY_STAFF_USERS (name:hash); never the password.

    At a terminal the password is asked twice and never echoed. Piped in, it is the first
    line; a second line, if there is one, must repeat it (as at the prompt).
    """
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    elif not sys.stdin.isatty():
        password = sys.stdin.readline().rstrip("\r\n")
        repeated = sys.stdin.readline()
        if repeated and repeated.rstrip("\r\n") != password:
            raise click.ClickException("the two lines piped in do not match")
    else:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise click.ClickException(f"use at least {MIN_PASSWORD_LENGTH} characters")
    click.echo(generate_password_hash(password))


@main.command("log-id")
@click.argument("user_id")
def log_id(user_id: str) -> None:
    """Print what the logs show for USER_ID (an HMAC under WALLET_PROXY_LOG_HASH_KEY), to find
    a customer's lines."""
    try:
        key, plain = log_id_settings(os.environ)
    except ConfigError as error:
        raise click.ClickException(f"configuration error: {error}") from None
    if key is None and not plain:
        raise click.ClickException(
            "WALLET_PROXY_LOG_HASH_KEY is not set: set it to the service's key (without it, "
            "each process hashes with a random key of its own)"
        )
    click.echo(UserIds(key, plain=plain)(user_id))


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8001, show_default=True, type=int)
def sandbox(host: str, port: int) -> None:
    """Run the SessionM stand-in (demo customers, knobs under /_sandbox/)."""
    url = f"http://{host}:{port}"
    click.echo(f"SessionM sandbox on {url}  (its knobs: docs/sandbox.md)")
    for user_id, about in sandbox_module.SEEDED_USERS.items():
        click.echo(f"  {user_id:14} {about}")
    click.echo(f"\nIn another shell, this points wallet-proxy at it:\n{_exports(url)}")
    sandbox_module.serve(host, port)


@main.command()
@click.option("--bind", help=f"HOST:PORT  [default: WALLET_PROXY_BIND, else {DEFAULT_BIND}]")
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
    help="Demo: also start the SessionM sandbox, and use it with the demo's own credentials "
    f"({DEMO_WORKERS} worker, {DEMO_THREADS} threads).",
)
@click.option("--sandbox-port", default=8001, show_default=True, type=int)
def serve(
    bind: str | None, config_path: str | None, with_sandbox: bool, sandbox_port: int
) -> None:
    """Run the service under gunicorn."""
    env = dict(os.environ)
    address = bind or serving_settings(env).bind
    # Before anything starts: a port in use is one line, not gunicorn's 5 s of retries.
    # Another gunicorn config (--config) may bind elsewhere: then only gunicorn knows.
    _check_ports(
        address if bind or not config_path else None, sandbox_port if with_sandbox else None
    )
    children: list[subprocess.Popen] = []
    options: list[str] = []
    if with_sandbox:
        children.append(_start_sandbox(sandbox_port, env))
        options = ["--workers", str(DEMO_WORKERS), "--threads", str(DEMO_THREADS)]
    try:
        settings = Settings.from_env(env)
        if found := preflight.problems(env, settings):
            raise ConfigError.listing(found)
    except ConfigError as error:
        _stop(children)
        raise click.ClickException(error.report()) from None
    if with_sandbox:
        replaced = [name for name, value in env.items() if os.environ.get(name, value) != value]
        _print_demo(address.replace("0.0.0.0", "127.0.0.1"), env, replaced)  # noqa: S104
    command = gunicorn_command(bind=bind, config=config_path or CONFIG, options=options)
    gunicorn = subprocess.Popen(command, env=env)  # noqa: S603 - our interpreter and arguments
    children.insert(0, gunicorn)
    # Ctrl-C, or SIGTERM from systemd or a container runtime: stop the children too,
    # never leave gunicorn or the sandbox running without us. gunicorn first (Ctrl-C
    # reaches it from the terminal too), then the sandbox, once the requests in flight
    # to it are answered.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _interrupt)
    # SIGHUP is gunicorn's graceful reload (new workers, same socket): pass it on.
    signal.signal(signal.SIGHUP, lambda _signum, _frame: gunicorn.send_signal(signal.SIGHUP))
    try:
        code = gunicorn.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        # A second Ctrl-C must not cut the stop short and leave the sandbox behind.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)
        _stop(children)
    sys.exit(code)


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def _second_shell(sandbox_url: str) -> dict[str, str]:
    """What a command in another shell needs to use the demo: SessionM Connect and Core and
    Braze's trigger endpoints pointed at the sandbox, the demo's keys (the log hash key
    too, for `log-id`) and its data folder (the triggers' outbox lives in the checkout)."""
    return {
        "SESSIONM_CONNECT_URL": sandbox_url,
        "SESSIONM_CONNECT_AUTH": sandbox_module.DEMO_CONNECT_AUTH,
        "SESSIONM_RETAILER_ID": sandbox_module.DEMO_RETAILER_ID,
        "SESSIONM_CORE_URL": sandbox_url,
        "SESSIONM_CORE_API_KEY": sandbox_module.DEMO_CORE_API_KEY,
        "SESSIONM_CORE_API_SECRET": sandbox_module.DEMO_CORE_API_SECRET,
        "WALLET_PROXY_API_KEYS": DEMO_API_KEY,
        "BRAZE_REST_URL": sandbox_url,
        "BRAZE_REST_API_KEY": sandbox_module.DEMO_BRAZE_API_KEY,
        "WALLET_PROXY_TRIGGER_KEYS": DEMO_TRIGGER_KEY,
        "WALLET_PROXY_DATA_DIR": os.path.abspath("demo-data"),
        "WALLET_PROXY_LOG_HASH_KEY": DEMO_LOG_HASH_KEY,
    }


def _demo_credentials(sandbox_url: str) -> dict[str, str]:
    """Every credential the demo service runs with (and its data folder): its own, whatever
    the environment holds, so a real key in the shell is neither used nor shown. What the
    docs show is on: /metrics, the support pages' culture switch, `log-id`."""
    demo_staff = f"{DEMO_STAFF_USER}:{generate_password_hash(DEMO_STAFF_PASSWORD)}"
    return {
        **_second_shell(sandbox_url),
        "WALLET_PROXY_STAFF_USERS": demo_staff,
        "WALLET_PROXY_SECRET_KEY": secrets.token_urlsafe(32),
        # The support pages show the sandbox's own offer logos.
        "WALLET_PROXY_IMAGE_HOSTS": sandbox_url,
        "WALLET_PROXY_METRICS_TOKEN": DEMO_METRICS_TOKEN,
        "WALLET_PROXY_CULTURES": DEMO_CULTURES,
        # Its one worker is the whole fleet: nothing kept per process needs Redis, and
        # start-up has no warning to give about it.
        "WALLET_PROXY_FLEET_SIZE": str(DEMO_WORKERS),
    }


def _exports(sandbox_url: str, demo_url: str | None = None) -> str:
    """`export` lines to paste into a second shell (and the virtualenv's bin on PATH), with
    the addresses the docs' commands use: SANDBOX_URL, and DEMO_URL when the demo runs."""
    lines = []
    bin_dir = os.path.dirname(sys.executable)
    found = shutil.which("wallet-proxy")
    if sys.prefix != sys.base_prefix and (found is None or os.path.dirname(found) != bin_dir):
        lines.append(f'export PATH={shlex.quote(bin_dir)}:"$PATH"')
    urls = {"DEMO_URL": demo_url} if demo_url else {}
    for name, value in {**urls, "SANDBOX_URL": sandbox_url, **_second_shell(sandbox_url)}.items():
        lines.append(f"export {name}={shlex.quote(value)}")
    return "\n".join(f"  {line}" for line in lines)


def _check_ports(address: str | None, sandbox_port: int | None) -> None:
    """Refuse at once, in one line, a port the service (`address`, if known) or the sandbox
    (`sandbox_port`, if it starts) can't listen on."""
    if sandbox_port is not None:
        problem = _listen_problem(f"{SANDBOX_HOST}:{sandbox_port}")
        if problem:
            raise click.ClickException(
                f"the sandbox can't listen on port {sandbox_port}: {problem} (choose another: "
                "make run SANDBOX_PORT=..., or serve --sandbox-port ...)"
            )
    if address is None:
        return
    problem = _listen_problem(address)
    if problem is None and sandbox_port is not None and address.endswith(f":{sandbox_port}"):
        problem = "the sandbox was given the same port"
    if problem:
        raise click.ClickException(
            f"the service can't listen on {address}: {problem} (choose another port: "
            "make run PORT=..., or serve --bind HOST:PORT)"
        )


def _listen_problem(address: str) -> str | None:
    """Why gunicorn could not listen on HOST:PORT (the port in use, say), or None: tried the
    way gunicorn binds (SO_REUSEADDR) and let go at once. unix: and fd:// are gunicorn's."""
    from gunicorn.util import is_ipv6, parse_address

    try:
        parsed = parse_address(address)
    except RuntimeError as error:
        return str(error)
    if not isinstance(parsed, tuple):
        return None
    host, port = parsed
    with socket.socket(socket.AF_INET6 if is_ipv6(host) else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            return (error.strerror or str(error)).lower()
    return None


def _start_sandbox(port: int, env: dict) -> subprocess.Popen:
    """Start `wallet-proxy sandbox` and give `env` the demo's credentials for it. In a
    process group of its own, so that Ctrl-C at the terminal doesn't reach it: it stops
    after the service (`_stop`), which may still be waiting for it."""
    command = [sys.executable, "-m", "wallet_proxy.cli", "sandbox", "--host", SANDBOX_HOST]
    process = subprocess.Popen(  # noqa: S603 - our own interpreter and arguments
        [*command, "--port", str(port)], stdout=subprocess.DEVNULL, process_group=0
    )
    deadline = time.monotonic() + 15
    while not _listening(SANDBOX_HOST, port):
        if process.poll() is not None or time.monotonic() > deadline:
            _stop([process])
            raise click.ClickException("the SessionM sandbox did not start")
        time.sleep(0.05)
    env.update(_demo_credentials(f"http://{SANDBOX_HOST}:{port}"))
    return process


def _print_demo(bind: str, env: Mapping[str, str], ignored: Sequence[str] = ()) -> None:
    base = f"http://{bind}"
    key = DEMO_API_KEY
    bearer = f"curl -s -H 'Authorization: Bearer {key}'"
    click.echo(
        "\nwallet-proxy demo: the SessionM sandbox stands in for SessionM at "
        f"{env['SESSIONM_CONNECT_URL']}\n"
        f"  {DEMO_WORKERS} worker process with {DEMO_THREADS} threads: the cache and "
        "single-flight\n"
        "  behave as in one process (a deployment runs a worker per core, sharing them "
        "through Redis).\n"
    )
    if ignored:
        click.echo(
            f"  Ignored from your environment (the demo uses its own): {', '.join(ignored)}\n"
        )
    click.echo(
        f"  API key: {key}\n\n"
        "Try:\n"
        f"  {bearer} {base}/v1/wallets/demo-alice\n"
        f"  {bearer} '{base}/v1/wallets/demo-alice?culture=es-ES&limit=2'\n"
        f"  {bearer} '{base}/v1/wallets/demo-alice?culture=fr-FR'"
        "   # no French texts: English, as SessionM falls back\n"
        f"  curl -s -u braze:{key} {base}/v1/wallets/demo-bob\n"
        f"  {bearer} {base}/v1/wallets/nobody   # 404\n"
        f"  curl -s {base}/readyz\n\n"
        "A SessionM-triggered Braze message (the sandbox records what Braze got):\n"
        f"  curl -s -H 'Authorization: Bearer {DEMO_TRIGGER_KEY}' "
        f"-H 'Content-Type: application/json' -d '{DEMO_TRIGGER}' {base}/v1/braze/triggers\n"
        f"  curl -s {env['BRAZE_REST_URL']}/_sandbox/braze/stats\n"
        "  wallet-proxy triggers status   # in the second shell (below)\n\n"
        f"Support pages: {base}/support/  (login: {DEMO_STAFF_USER} / {DEMO_STAFF_PASSWORD})\n"
        f"  demo-alice's wallet in each culture: {base}/support/wallets/demo-alice?culture=es-ES"
        f"  (the switch offers {DEMO_CULTURES.replace(',', ', ')})\n\n"
        "Metrics (docs/operations.md#metrics):\n"
        f"  curl -s -H 'Authorization: Bearer {DEMO_METRICS_TOKEN}' {base}/metrics\n\n"
        "A customer's log lines carry an HMAC of their id; in the second shell:\n"
        '  wallet-proxy log-id demo-alice   # the "user" of demo-alice\'s request lines\n\n'
        "Make SessionM slow or down: docs/sandbox.md\n\n"
        "In a second shell, this points wallet-proxy's commands and the docs' examples "
        "($DEMO_URL, $SANDBOX_URL) at the demo:\n"
        f"{_exports(env['SESSIONM_CONNECT_URL'], base)}\n"
    )


def _listening(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to each in turn, waiting for it to exit (SIGKILL after 15 s: gunicorn's
    graceful stop takes at most 10)."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


tags_group.add_command(tags_status)
tags_group.add_command(tags_requeue)
main.add_command(tags_group)
main.add_command(warm_command)
main.add_command(plan_command)
main.add_command(attributes_group)
main.add_command(triggers_group)

if __name__ == "__main__":
    main()
