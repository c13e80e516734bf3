"""Settings: read once, inside `create_app`, from the environment into one typed object.

Every problem is reported at once, one line each naming the variable (never its value:
most are secrets), so a bad deploy stops at start-up instead of failing per request.

Each setting is declared once, as one `read.<rule>("NAME", ...)` in `Settings._declare`.
The reader records every name it reads, so that declaration is also the list of known
variables: a misspelt `WALLET_PROXY_*`, `SESSIONM_*` or `BRAZE_*` variable is reported
with the closest known name, with no second list to keep up to date.

A setting that a feature can't run without is required only by the commands that use the
feature (`needs`, a tuple of `Part`s): the service needs Connect and API keys, `tags
import` only Core, `warm` Connect and Redis. Whatever is set is validated, whoever reads it.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import urlsplit

from .origins import ORIGIN_RULE, parse_origin
from .rules import CULTURE_RULE, DEFAULT_CULTURE, canonical_culture

log = logging.getLogger(__name__)

GUID_RE = re.compile(r"^[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}\Z")
STAFF_NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}\Z")
# Environment variables that look like ours: one we don't read is most likely a typo.
OUR_PREFIXES = ("WALLET_PROXY_", "SESSIONM_", "BRAZE_")
GUNICORN_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# The triggers' outbox, and staff sessions and history without Redis.
DEFAULT_DATA_DIR = "/var/lib/wallet-proxy"


class ConfigError(Exception):
    """Settings are missing or malformed: one line for an operator, naming the variable.

    `problems` holds every problem found in one reading, this one first, a line each.
    """

    def __init__(self, variable: str, problem: str, *, also: Sequence[ConfigError] = ()):
        self.variable = variable
        self.problem = problem
        self.problems: tuple[str, ...] = (
            f"{variable}: {problem}",
            *(line for error in also for line in error.problems),
        )
        super().__init__("; ".join(self.problems))

    def report(self) -> str:
        """For a person at a terminal: the problem, or the problems a line each."""
        if len(self.problems) == 1:
            return f"configuration error: {self.problems[0]}"
        lines = [f"{len(self.problems)} configuration errors:"]
        return "\n".join([*lines, *(f"  {problem}" for problem in self.problems)])

    @classmethod
    def listing(cls, errors: Sequence[ConfigError]) -> ConfigError:
        """One error for several problems: it names the first, `problems` lists them all."""
        first, *others = errors
        return cls(first.variable, first.problem, also=others)


@dataclass(frozen=True)
class Part:
    """A feature and the settings it can't run without: required where the feature is used."""

    variables: tuple[str, ...]
    why: str


CONNECT = Part(
    ("SESSIONM_CONNECT_URL", "SESSIONM_CONNECT_AUTH", "SESSIONM_RETAILER_ID"),
    "for SessionM Connect (the wallets)",
)
API = Part(("WALLET_PROXY_API_KEYS",), "(the keys Braze presents)")
CORE = Part(
    ("SESSIONM_CORE_URL", "SESSIONM_CORE_API_KEY", "SESSIONM_CORE_API_SECRET"),
    "for SessionM Core (customer tags)",
)
SHARED_CACHE = Part(
    ("WALLET_PROXY_REDIS_URL",),
    "to warm the cache the service shares: without it the wallets would only land in "
    "this command's memory",
)
SERVICE = (CONNECT, API)  # what the service itself can't start without


@dataclass(frozen=True)
class Settings:
    # Empty when the command reading the settings doesn't need them (see `Part`).
    sessionm_connect_url: str = ""
    sessionm_connect_auth: str = field(default="", repr=False)
    sessionm_retailer_id: str = ""
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    default_culture: str = DEFAULT_CULTURE
    cache_ttl: float = 60.0
    stale_ttl: float = 3600.0
    negative_ttl: float = 30.0
    deadline: float = 1.5
    upstream_timeout: float = 3.0
    upstream_concurrency: int = 16
    breaker_threshold: int = 5
    breaker_cooldown: float = 10.0
    cache_max_entries: int = 100_000
    redis_url: str | None = field(default=None, repr=False)
    staff_users: Mapping[str, str] = field(default_factory=dict, repr=False)
    secret_key: str | None = field(default=None, repr=False)
    sessionm_core_url: str | None = None
    sessionm_core_api_key: str | None = field(default=None, repr=False)
    sessionm_core_api_secret: str | None = field(default=None, repr=False)
    # SessionM-triggered Braze messages (wallet_proxy/triggers/)
    braze_rest_url: str | None = None
    braze_rest_api_key: str | None = field(default=None, repr=False)
    trigger_keys: tuple[str, ...] = field(default=(), repr=False)
    data_dir: str = DEFAULT_DATA_DIR
    trigger_batch_ms: int = 250
    trigger_max_age: float = 86_400.0
    trigger_max_queued: int = 100_000
    trigger_set_email: bool = False
    # Read by gunicorn (gunicorn_config.py, where their defaults live); checked here.
    bind: str | None = None
    web_concurrency: int | None = None
    threads: int | None = None
    log_level: str | None = None
    # The support pages and the front proxy
    trusted_proxy_hops: int = 0
    public_url: str | None = None
    image_hosts: tuple[str, ...] = ()
    cultures: tuple[str, ...] = (DEFAULT_CULTURE,)
    core_timeout: float = 5.0
    max_wallet_offers: int = 10_000
    max_wallet_bytes: int = 20 * 1024 * 1024
    max_answer_bytes: int = 1_000_000
    # SessionM's request budget for the whole fleet (wallet_proxy/budget.py)
    sessionm_rate: float = 50.0  # requests/s to Connect; 0: no budget
    sessionm_core_rate: float = 50.0  # the same for Core (tags relay and tags import)
    bulk_share: float = 0.8  # warm and tags import: at most this share of a budget
    refresh_share: float = 0.5  # background refreshes of stale entries: at most this share
    fleet_size: int | None = None  # processes sharing the budget when Redis can't say
    # Observability (wallet_proxy/metrics.py, logs.py)
    metrics_token: str | None = field(default=None, repr=False)
    log_hash_key: str | None = field(default=None, repr=False)
    log_user_ids: bool = False

    @property
    def core_configured(self) -> bool:
        return self.sessionm_core_url is not None

    @property
    def triggers_configured(self) -> bool:
        return self.braze_rest_url is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str], needs: Sequence[Part] = SERVICE) -> Settings:
        """The settings, or a ConfigError listing every problem; unknown variables are logged.

        `needs`: the parts the caller can't run without (default: the service's).
        """
        verdict = examine(env, needs)
        for warning in verdict.warnings:
            log.warning("%s", warning)
        if verdict.settings is None:
            raise ConfigError.listing(verdict.problems)
        return verdict.settings

    @classmethod
    def _declare(cls, read: Any) -> Settings:
        """Every setting: its variable, its rule and its default, in one place."""
        settings = cls(
            sessionm_connect_url=read.url("SESSIONM_CONNECT_URL"),
            sessionm_connect_auth=read.secret("SESSIONM_CONNECT_AUTH"),
            sessionm_retailer_id=read.guid("SESSIONM_RETAILER_ID"),
            api_keys=read.api_keys("WALLET_PROXY_API_KEYS"),
            default_culture=read.culture("WALLET_PROXY_DEFAULT_CULTURE", DEFAULT_CULTURE),
            cache_ttl=read.number("WALLET_PROXY_CACHE_TTL", 60, low=0, high=86_400),
            stale_ttl=read.number("WALLET_PROXY_STALE_TTL", 3600, low=0, high=7 * 86_400),
            negative_ttl=read.number("WALLET_PROXY_NEGATIVE_TTL", 30, low=0, high=3600),
            deadline=read.number("WALLET_PROXY_DEADLINE", 1.5, low=0.1, high=30),
            upstream_timeout=read.number("WALLET_PROXY_UPSTREAM_TIMEOUT", 3, low=0.1, high=60),
            upstream_concurrency=read.integer("WALLET_PROXY_UPSTREAM_CONCURRENCY", 16, 1, 1024),
            breaker_threshold=read.integer("WALLET_PROXY_BREAKER_THRESHOLD", 5, 1, 1000),
            breaker_cooldown=read.number("WALLET_PROXY_BREAKER_COOLDOWN", 10, low=0.1, high=600),
            cache_max_entries=read.integer("WALLET_PROXY_CACHE_MAX_ENTRIES", 100_000, 1, 10**8),
            redis_url=read.redis_url("WALLET_PROXY_REDIS_URL"),
            staff_users=read.staff_users("WALLET_PROXY_STAFF_USERS"),
            secret_key=read.raw("WALLET_PROXY_SECRET_KEY"),
            sessionm_core_url=read.optional_url("SESSIONM_CORE_URL"),
            sessionm_core_api_key=read.raw("SESSIONM_CORE_API_KEY"),
            sessionm_core_api_secret=read.raw("SESSIONM_CORE_API_SECRET"),
            braze_rest_url=read.optional_url("BRAZE_REST_URL"),
            braze_rest_api_key=read.raw("BRAZE_REST_API_KEY"),
            trigger_keys=read.api_keys("WALLET_PROXY_TRIGGER_KEYS", required=False),
            data_dir=read.directory("WALLET_PROXY_DATA_DIR", DEFAULT_DATA_DIR),
            trigger_batch_ms=read.integer("WALLET_PROXY_TRIGGER_BATCH_MS", 250, 0, 10_000),
            trigger_max_age=read.number(
                "WALLET_PROXY_TRIGGER_MAX_AGE", 86_400, low=60, high=7 * 86_400
            ),
            trigger_max_queued=read.integer("WALLET_PROXY_TRIGGER_MAX_QUEUED", 100_000, 1, 10**7),
            trigger_set_email=read.boolean("WALLET_PROXY_TRIGGER_SET_EMAIL"),
            bind=read.bind("WALLET_PROXY_BIND"),
            web_concurrency=read.count("WEB_CONCURRENCY", 1, 1024),
            threads=read.count("WALLET_PROXY_THREADS", 1, 1024),
            log_level=read.choice("WALLET_PROXY_LOG_LEVEL", GUNICORN_LOG_LEVELS),
            trusted_proxy_hops=read.integer("WALLET_PROXY_TRUSTED_PROXY_HOPS", 0, 0, 10),
            public_url=read.origin("WALLET_PROXY_PUBLIC_URL"),
            image_hosts=read.origins("WALLET_PROXY_IMAGE_HOSTS"),
            cultures=read.cultures("WALLET_PROXY_CULTURES", "WALLET_PROXY_DEFAULT_CULTURE"),
            core_timeout=read.number("WALLET_PROXY_CORE_TIMEOUT", 5, low=0.1, high=30),
            max_wallet_offers=read.integer("WALLET_PROXY_MAX_WALLET_OFFERS", 10_000, 1, 50_000),
            max_wallet_bytes=read.integer(
                "WALLET_PROXY_MAX_WALLET_BYTES", 20 * 1024 * 1024, 100_000, 1_000_000_000
            ),
            max_answer_bytes=read.integer(
                "WALLET_PROXY_MAX_ANSWER_BYTES", 1_000_000, 10_000, 100_000_000
            ),
            sessionm_rate=read.per_second("WALLET_PROXY_SESSIONM_RATE", 50),
            sessionm_core_rate=read.per_second("WALLET_PROXY_SESSIONM_CORE_RATE", 50),
            bulk_share=read.share("WALLET_PROXY_SESSIONM_BULK_SHARE", 0.8),
            refresh_share=read.share("WALLET_PROXY_SESSIONM_REFRESH_SHARE", 0.5),
            fleet_size=read.count("WALLET_PROXY_FLEET_SIZE", 1, 10_000),
            metrics_token=read.token("WALLET_PROXY_METRICS_TOKEN"),
            log_hash_key=read.token("WALLET_PROXY_LOG_HASH_KEY"),
            log_user_ids=read.boolean("WALLET_PROXY_LOG_USER_IDS"),
        )
        return settings

    def _check_combinations(self) -> Iterator[ConfigError]:
        if self.upstream_timeout < self.deadline:
            yield ConfigError(
                "WALLET_PROXY_UPSTREAM_TIMEOUT", "must be at least WALLET_PROXY_DEADLINE"
            )
        if self.staff_users and not self.secret_key:
            yield ConfigError(
                "WALLET_PROXY_SECRET_KEY", "required when WALLET_PROXY_STAFF_USERS is set"
            )
        if self.secret_key is not None and len(self.secret_key) < 16:
            yield ConfigError("WALLET_PROXY_SECRET_KEY", "must be at least 16 characters")
        core = {
            "SESSIONM_CORE_URL": self.sessionm_core_url,
            "SESSIONM_CORE_API_KEY": self.sessionm_core_api_key,
            "SESSIONM_CORE_API_SECRET": self.sessionm_core_api_secret,
        }
        given = [name for name, value in core.items() if value]
        if given and len(given) < len(core):
            for missing in (name for name, value in core.items() if not value):
                yield ConfigError(missing, f"required when {given[0]} is set")

    def _check_triggers(self) -> Iterator[ConfigError]:
        if bool(self.braze_rest_url) != bool(self.braze_rest_api_key):
            missing = "BRAZE_REST_API_KEY" if self.braze_rest_url else "BRAZE_REST_URL"
            given = "BRAZE_REST_URL" if self.braze_rest_url else "BRAZE_REST_API_KEY"
            yield ConfigError(missing, f"required when {given} is set")
        if self.braze_rest_url and not self.trigger_keys:
            yield ConfigError("WALLET_PROXY_TRIGGER_KEYS", "required when BRAZE_REST_URL is set")
        if set(self.trigger_keys) & set(self.api_keys):
            yield ConfigError(
                "WALLET_PROXY_TRIGGER_KEYS", "must not reuse a key of WALLET_PROXY_API_KEYS"
            )


@dataclass(frozen=True)
class Verdict:
    """One reading of the environment: the settings if there is no problem, every problem
    (in declaration order) and a warning for each variable that looks like ours but isn't."""

    settings: Settings | None
    problems: tuple[ConfigError, ...]
    warnings: tuple[str, ...]


def examine(env: Mapping[str, str], needs: Sequence[Part] = SERVICE) -> Verdict:
    """Read every setting, noting every problem instead of stopping at the first."""
    read = _Reading(env, needs)
    settings = _with_defaults(Settings._declare(read))
    problems: dict[str, ConfigError] = {}
    combinations = [*settings._check_combinations(), *settings._check_triggers()]
    for error in [*read.problems, *read.missing(needs), *combinations]:
        problems.setdefault(error.variable, error)  # the first word on each variable
    warnings = tuple(unknown_variables(env, read.names))
    return Verdict(None if problems else settings, tuple(problems.values()), warnings)


def declared_variables() -> tuple[str, ...]:
    """Every variable a setting is read from, in declaration order."""
    read = _Reading({}, ())
    Settings._declare(read)
    return tuple(read.names)


def unknown_variables(env: Mapping[str, str], known: Collection[str]) -> Iterator[str]:
    """A warning for each variable with one of our prefixes that no setting reads."""
    for name in sorted(env):
        if name.startswith(OUR_PREFIXES) and name not in known:
            close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
            hint = f"; did you mean {close[0]}?" if close else ""
            yield f"{name} is not a wallet-proxy setting and is ignored{hint}"


class _Failed:
    """What a setting that failed its rule reads as, until its default takes its place."""


_FAILED = _Failed()


class _Reading:
    """`_Reader`'s rules, with every problem noted instead of raised.

    A missing or malformed setting reads as `_FAILED` (then as its default), so the rest is
    still checked. A missing setting is a problem only if a part in `needs` requires it.
    """

    def __init__(self, env: Mapping[str, str], needs: Sequence[Part]):
        self._reader = _Reader(env)
        self.names = self._reader.names
        self.needed = {name for part in needs for name in part.variables}
        self.problems: list[ConfigError] = []

    def __getattr__(self, rule: str) -> Callable[..., Any]:
        check = getattr(self._reader, rule)

        def read(*args: Any, **kwargs: Any) -> Any:
            try:
                return check(*args, **kwargs)
            except ConfigError as error:
                if error.variable in self.needed or self._reader.raw(error.variable):
                    self.problems.append(error)
                return _FAILED

        return read

    def missing(self, needs: Sequence[Part]) -> Iterator[ConfigError]:
        """Required settings that are not set, whatever rule reads them."""
        for part in needs:
            for name in part.variables:
                if self._reader.raw(name) is None:
                    yield ConfigError(name, f"is required {part.why}")


def _with_defaults(settings: Settings) -> Settings:
    """`settings` with each failed reading replaced by its field's default."""
    defaults: dict[str, Any] = {}
    for declared in fields(settings):
        if getattr(settings, declared.name) is _FAILED:
            factory = declared.default_factory
            defaults[declared.name] = factory() if callable(factory) else declared.default
    return replace(settings, **defaults)


def log_id_settings(env: Mapping[str, str]) -> tuple[str | None, bool]:
    """WALLET_PROXY_LOG_HASH_KEY and WALLET_PROXY_LOG_USER_IDS alone: `wallet-proxy log-id` runs
    where support works, without the service's other settings."""
    read = _Reader(env)
    return read.token("WALLET_PROXY_LOG_HASH_KEY"), read.boolean("WALLET_PROXY_LOG_USER_IDS")


class _Reader:
    """One method per rule; each reads its variable through `raw` (which records the name)
    and raises ConfigError naming it."""

    def __init__(self, env: Mapping[str, str]):
        self.env = env
        self.names: dict[str, None] = {}  # every variable read, in order (a set that keeps it)

    def raw(self, name: str) -> str | None:
        self.names.setdefault(name)
        value = self.env.get(name)
        if value is None:
            return None
        value = str(value).strip()
        return value or None

    def secret(self, name: str) -> str:
        value = self.raw(name)
        if value is None:
            raise ConfigError(name, "is required")
        return value

    def url(self, name: str) -> str:
        value = self.optional_url(name)
        if value is None:
            raise ConfigError(name, "is required (an http:// or https:// base URL)")
        return value

    def optional_url(self, name: str) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(name, "must be an http:// or https:// URL")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ConfigError(name, "must be a base URL without credentials, query or fragment")
        return value.rstrip("/")

    def redis_url(self, name: str) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(name, "must be a redis://, rediss:// or unix:// URL")
        return value

    def guid(self, name: str) -> str:
        value = self.secret(name)
        if not GUID_RE.match(value):
            raise ConfigError(name, "must be a GUID like 5f0c6b0e-5a11-4b0b-9d1e-000000000001")
        return value

    def culture(self, name: str, default: str) -> str:
        """In its one spelling, as the API's cultures are (`es_ES` is es-ES)."""
        culture = canonical_culture(self.raw(name) or default)
        if culture is None:
            raise ConfigError(name, f"must be a culture {CULTURE_RULE}")
        return culture

    def api_keys(self, name: str, *, required: bool = True) -> tuple[str, ...]:
        if not required and self.raw(name) is None:
            return ()
        value = self.secret(name)
        keys = tuple(key.strip() for key in value.split(","))
        if any(not key for key in keys):
            raise ConfigError(name, "has an empty key (comma-separated, no blanks)")
        if any(len(key) < 8 or any(ch.isspace() for ch in key) for key in keys):
            raise ConfigError(name, "keys must be at least 8 characters without spaces")
        return keys

    def token(self, name: str) -> str | None:
        """An optional secret of ours: long enough not to be guessed, no spaces."""
        value = self.raw(name)
        if value is not None and (len(value) < 16 or any(ch.isspace() for ch in value)):
            raise ConfigError(name, "must be at least 16 characters without spaces")
        return value

    def number(self, name: str, default: float, *, low: float, high: float) -> float:
        value = self.raw(name)
        if value is None:
            return float(default)
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(name, f"must be a number of seconds ({low} to {high})") from None
        if not low <= number <= high or number != number:
            raise ConfigError(name, f"must be between {low} and {high}")
        return number

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(name, f"must be a whole number ({low} to {high})") from None
        if not low <= number <= high:
            raise ConfigError(name, f"must be between {low} and {high}")
        return number

    def directory(self, name: str, default: str) -> str:
        value = self.raw(name) or default
        if "\x00" in value:
            raise ConfigError(name, "must be a folder path")
        return os.path.abspath(value)

    def origin(self, name: str) -> str | None:
        value = self.raw(name)
        if value is None:
            return None
        origin = parse_origin(value)
        if origin is None:
            raise ConfigError(name, f"must be an origin {ORIGIN_RULE}, without a path")
        return origin

    def origins(self, name: str) -> tuple[str, ...]:
        value = self.raw(name)
        if value is None:
            return ()
        found = []
        for item in value.split(","):
            origin = parse_origin(item.strip())
            if origin is None:
                raise ConfigError(name, f"must be origins {ORIGIN_RULE}, comma-separated")
            found.append(origin)
        return tuple(dict.fromkeys(found))

    def cultures(self, name: str, default_name: str) -> tuple[str, ...]:
        """The default culture (`default_name`'s) first, then the listed ones in their order,
        each in its one spelling and once (`es_ES, es-es` is es-ES)."""
        # A malformed default is reported under its own name.
        default = canonical_culture(self.raw(default_name) or DEFAULT_CULTURE) or DEFAULT_CULTURE
        value = self.raw(name)
        listed = []
        for item in value.split(",") if value else []:
            culture = canonical_culture(item.strip())
            if culture is None:
                raise ConfigError(name, f"must be cultures {CULTURE_RULE}, comma-separated")
            listed.append(culture)
        return tuple(dict.fromkeys([default, *listed]))

    def boolean(self, name: str) -> bool:
        value = (self.raw(name) or "false").lower()
        if value not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(name, "must be true or false")
        return value in ("true", "1", "yes")

    def per_second(self, name: str, default: float, high: float = 100_000) -> float:
        value = self.raw(name)
        if value is None:
            return float(default)
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not 0 <= number <= high:
            raise ConfigError(name, f"must be requests per second, 0 (no limit) to {high:g}")
        return number

    def share(self, name: str, default: float) -> float:
        value = self.raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        if not 0.05 <= number <= 1:
            raise ConfigError(name, "must be a share of the budget between 0.05 and 1")
        return number

    def staff_users(self, name: str) -> dict[str, str]:
        value = self.raw(name)
        if value is None:
            return {}
        users: dict[str, str] = {}
        for item in value.split(","):
            user, sep, pw_hash = item.strip().partition(":")
            if not sep or not STAFF_NAME_RE.match(user):
                raise ConfigError(name, "must be name:hash pairs separated by commas")
            if not pw_hash.startswith(("scrypt:", "pbkdf2:")) or pw_hash.count("$") != 2:
                raise ConfigError(
                    name, f"the entry for {user} is not a hash from `wallet-proxy hash-password`"
                )
            users[user] = pw_hash
        return users

    def bind(self, name: str) -> str | None:
        value = self.raw(name)
        if value is None or value.startswith(("unix:", "fd://")):
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdecimal() or not 0 < int(port) < 65536:
            raise ConfigError(name, "must be HOST:PORT (like 0.0.0.0:8000) or unix:PATH")
        return value

    def count(self, name: str, low: int, high: int) -> int | None:
        """A whole number whose default lives with its reader (gunicorn's settings)."""
        if self.raw(name) is None:
            return None
        return self.integer(name, low, low, high)

    def choice(self, name: str, choices: Sequence[str]) -> str | None:
        value = self.raw(name)
        if value is not None and value.lower() not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}")
        return value
