"""Settings: read once, inside `create_app`, from the environment into one typed object.

Every problem is reported at once, one line each naming the variable (never its value:
most are secrets), so a bad deploy stops at start-up instead of failing per request.

Each setting is declared once, as one field of `Settings`: its variable, the rule that
reads it and its default (`_setting`). Reading goes through every field, recording each
name it reads, so the fields are also the list of known variables: a misspelt
`WALLET_PROXY_*`, `SESSIONM_*` or `BRAZE_*` variable is reported with the closest known
name, with no second list to keep up to date.

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
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit

from .braze_users import DEFAULT_PRIORITIZATION, check_prioritization
from .origins import ORIGIN_RULE, parse_origin
from .rules import CULTURE_RULE, DEFAULT_CULTURE, canonical_culture

log = logging.getLogger(__name__)

GUID_RE = re.compile(r"^[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}\Z")
STAFF_NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}\Z")
# Environment variables that look like ours: one we don't read is most likely a typo.
OUR_PREFIXES = ("WALLET_PROXY_", "SESSIONM_", "BRAZE_")
GUNICORN_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
TAGS_MODES = ("queued", "direct")
# The outbox (triggers, queued tags), and staff sessions and history without Redis.
DEFAULT_DATA_DIR = "/var/lib/wallet-proxy"
# Braze's /users/track: "up to 75 event objects, 75 attribute objects, and 75 purchase
# objects" a request (its rate limits page); contracts of Monthly Active Users CY 24-25:
# "up to 50 updates combined across attribute, event, or purchase objects".
TRACK_BATCH = 75


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
BRAZE_TRACK = Part(
    ("BRAZE_REST_URL",),
    "to write Braze profiles (with BRAZE_TRACK_API_KEY, or BRAZE_REST_API_KEY)",
)
SERVICE = (CONNECT, API)  # what the service itself can't start without


def _setting(
    variable: str,
    rule: str,
    default: Any = MISSING,
    *,
    factory: Callable[[], Any] | None = None,
    secret: bool = False,
    **options: Any,
) -> Any:
    """One setting: the variable it is read from, the `_Reader` rule that reads it (with
    `options`), and its default, here and nowhere else. A secret is left out of repr."""
    metadata = {"variable": variable, "rule": rule, "options": options}
    if factory is not None:
        return field(default_factory=factory, repr=not secret, metadata=metadata)
    return field(default=default, repr=not secret, metadata=metadata)


def _cpu_count() -> int:
    return os.cpu_count() or 2


@dataclass(frozen=True)
class Settings:
    """Every setting, each declared once: variable, rule and default (`_setting`), in the
    order problems are reported. Connect's and the API keys' defaults are empty: required
    only by the commands that use them (see `Part`)."""

    sessionm_connect_url: str = _setting("SESSIONM_CONNECT_URL", "url", "")
    sessionm_connect_auth: str = _setting("SESSIONM_CONNECT_AUTH", "secret", "", secret=True)
    sessionm_retailer_id: str = _setting("SESSIONM_RETAILER_ID", "guid", "")
    api_keys: tuple[str, ...] = _setting("WALLET_PROXY_API_KEYS", "api_keys", (), secret=True)
    default_culture: str = _setting("WALLET_PROXY_DEFAULT_CULTURE", "culture", DEFAULT_CULTURE)
    cache_ttl: float = _setting("WALLET_PROXY_CACHE_TTL", "number", 60.0, low=0, high=86_400)
    stale_ttl: float = _setting("WALLET_PROXY_STALE_TTL", "number", 3600.0, low=0, high=7 * 86_400)
    negative_ttl: float = _setting("WALLET_PROXY_NEGATIVE_TTL", "number", 30.0, low=0, high=3600)
    deadline: float = _setting("WALLET_PROXY_DEADLINE", "number", 1.5, low=0.1, high=30)
    upstream_timeout: float = _setting(
        "WALLET_PROXY_UPSTREAM_TIMEOUT", "number", 3.0, low=0.1, high=60
    )
    upstream_concurrency: int = _setting(
        "WALLET_PROXY_UPSTREAM_CONCURRENCY", "integer", 16, low=1, high=1024
    )
    breaker_threshold: int = _setting(
        "WALLET_PROXY_BREAKER_THRESHOLD", "integer", 5, low=1, high=1000
    )
    breaker_cooldown: float = _setting(
        "WALLET_PROXY_BREAKER_COOLDOWN", "number", 10.0, low=0.1, high=600
    )
    cache_max_bytes: int = _setting(
        "WALLET_PROXY_CACHE_MAX_BYTES", "integer", 64 * 1024 * 1024, low=1_000_000, high=10**12
    )
    redis_url: str | None = _setting("WALLET_PROXY_REDIS_URL", "redis_url", None, secret=True)
    cache_redis_url: str | None = _setting(
        "WALLET_PROXY_CACHE_REDIS_URL", "redis_url", None, secret=True
    )
    staff_users: Mapping[str, str] = _setting(
        "WALLET_PROXY_STAFF_USERS", "staff_users", factory=dict, secret=True
    )
    secret_key: str | None = _setting("WALLET_PROXY_SECRET_KEY", "text", None, secret=True)
    sessionm_core_url: str | None = _setting("SESSIONM_CORE_URL", "optional_url", None)
    sessionm_core_api_key: str | None = _setting(
        "SESSIONM_CORE_API_KEY", "text", None, secret=True
    )
    sessionm_core_api_secret: str | None = _setting(
        "SESSIONM_CORE_API_SECRET", "text", None, secret=True
    )
    # SessionM-triggered Braze messages (wallet_proxy/triggers/)
    braze_rest_url: str | None = _setting("BRAZE_REST_URL", "optional_url", None)
    braze_rest_api_key: str | None = _setting("BRAZE_REST_API_KEY", "text", None, secret=True)
    trigger_keys: tuple[str, ...] = _setting(
        "WALLET_PROXY_TRIGGER_KEYS", "api_keys", (), secret=True, required=False
    )
    data_dir: str = _setting("WALLET_PROXY_DATA_DIR", "directory", DEFAULT_DATA_DIR)
    trigger_batch_ms: int = _setting(
        "WALLET_PROXY_TRIGGER_BATCH_MS", "integer", 250, low=0, high=10_000
    )
    trigger_max_age: float = _setting(
        "WALLET_PROXY_TRIGGER_MAX_AGE", "number", 86_400.0, low=60, high=7 * 86_400
    )
    trigger_max_queued: int = _setting(
        "WALLET_PROXY_TRIGGER_MAX_QUEUED", "integer", 100_000, low=1, high=10**7
    )
    trigger_set_email: bool = _setting("WALLET_PROXY_TRIGGER_SET_EMAIL", "boolean", False)
    trigger_max_bytes: int = _setting(
        "WALLET_PROXY_TRIGGER_MAX_BYTES",
        "integer",
        128 * 1024 * 1024,
        low=4 * 1024 * 1024,
        high=10**12,
    )
    trigger_email_prioritization: tuple[str, ...] = _setting(
        "WALLET_PROXY_TRIGGER_EMAIL_PRIORITIZATION", "prioritization", DEFAULT_PRIORITIZATION
    )
    # Loyalty attributes written to Braze profiles (wallet_proxy/attributes/): a key with the
    # users.track permission (else BRAZE_REST_API_KEY's), requests/s and objects a request.
    braze_track_api_key: str | None = _setting("BRAZE_TRACK_API_KEY", "text", None, secret=True)
    braze_track_rate: float = _setting(
        "WALLET_PROXY_BRAZE_TRACK_RATE", "per_second", 10.0, high=1000
    )
    braze_track_batch: int = _setting(
        "WALLET_PROXY_BRAZE_TRACK_BATCH", "integer", TRACK_BATCH, low=1, high=TRACK_BATCH
    )
    # How gunicorn serves (gunicorn_config.py reads these four through `serving`).
    bind: str = _setting("WALLET_PROXY_BIND", "bind", "0.0.0.0:8000")
    web_concurrency: int = _setting(
        "WEB_CONCURRENCY", "integer", factory=_cpu_count, low=1, high=1024
    )
    threads: int = _setting("WALLET_PROXY_THREADS", "integer", 64, low=1, high=1024)
    log_level: str = _setting(
        "WALLET_PROXY_LOG_LEVEL", "choice", "info", choices=GUNICORN_LOG_LEVELS
    )
    # The support pages and the front proxy
    trusted_proxy_hops: int = _setting(
        "WALLET_PROXY_TRUSTED_PROXY_HOPS", "integer", 0, low=0, high=10
    )
    public_url: str | None = _setting("WALLET_PROXY_PUBLIC_URL", "origin", None)
    image_hosts: tuple[str, ...] = _setting("WALLET_PROXY_IMAGE_HOSTS", "origins", ())
    cultures: tuple[str, ...] = _setting(
        "WALLET_PROXY_CULTURES",
        "cultures",
        (DEFAULT_CULTURE,),
        default_name="WALLET_PROXY_DEFAULT_CULTURE",
    )
    core_timeout: float = _setting("WALLET_PROXY_CORE_TIMEOUT", "number", 5.0, low=0.1, high=30)
    # Braze webhooks to SessionM tags (wallet_proxy/tags/): queued (202, then a worker applies
    # them at Core's budget) or direct (relayed while Braze waits)
    tags_mode: str = _setting("WALLET_PROXY_TAGS_MODE", "choice", "queued", choices=TAGS_MODES)
    tags_max_queued: int = _setting(
        "WALLET_PROXY_TAGS_MAX_QUEUED", "integer", 1_000_000, low=1, high=10**8
    )
    tags_max_age: float = _setting(
        "WALLET_PROXY_TAGS_MAX_AGE", "number", 86_400.0, low=60, high=7 * 86_400
    )
    max_wallet_offers: int = _setting(
        "WALLET_PROXY_MAX_WALLET_OFFERS", "integer", 10_000, low=1, high=50_000
    )
    max_wallet_bytes: int = _setting(
        "WALLET_PROXY_MAX_WALLET_BYTES",
        "integer",
        20 * 1024 * 1024,
        low=100_000,
        high=1_000_000_000,
    )
    max_answer_bytes: int = _setting(
        "WALLET_PROXY_MAX_ANSWER_BYTES", "integer", 1_000_000, low=10_000, high=100_000_000
    )
    # SessionM's request budget for the whole fleet (wallet_proxy/budget.py): requests/s to
    # Connect and to Core (0: no budget), the shares of bulk work and background refreshes,
    # and how many processes share it when Redis can't say.
    sessionm_rate: float = _setting("WALLET_PROXY_SESSIONM_RATE", "per_second", 50.0)
    sessionm_core_rate: float = _setting("WALLET_PROXY_SESSIONM_CORE_RATE", "per_second", 50.0)
    bulk_share: float = _setting("WALLET_PROXY_SESSIONM_BULK_SHARE", "share", 0.8)
    refresh_share: float = _setting("WALLET_PROXY_SESSIONM_REFRESH_SHARE", "share", 0.5)
    fleet_size: int | None = _setting(
        "WALLET_PROXY_FLEET_SIZE", "optional_integer", None, low=1, high=10_000
    )
    # Observability (wallet_proxy/metrics.py, logs.py)
    metrics_token: str | None = _setting("WALLET_PROXY_METRICS_TOKEN", "token", None, secret=True)
    log_hash_key: str | None = _setting("WALLET_PROXY_LOG_HASH_KEY", "token", None, secret=True)
    log_user_ids: bool = _setting("WALLET_PROXY_LOG_USER_IDS", "boolean", False)

    @property
    def core_configured(self) -> bool:
        return self.sessionm_core_url is not None

    @property
    def triggers_configured(self) -> bool:
        """Braze's URL and the trigger-send key are set: the triggers route is on."""
        return self.braze_rest_url is not None and self.braze_rest_api_key is not None

    @property
    def track_api_key(self) -> str | None:
        """The key that writes Braze profiles (users.track): its own, else the REST key."""
        return self.braze_track_api_key or self.braze_rest_api_key

    @property
    def tags_queued(self) -> bool:
        """Webhooks' tags go through the outbox: Core is configured, the mode is queued."""
        return self.core_configured and self.tags_mode == "queued"

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
    def _declare(cls, read: _Reading, names: Collection[str] | None = None) -> Settings:
        """Every setting (or those `names`, the others left at their defaults), each read by
        its own rule; a setting that fails its rule reads as its default."""
        values = {}
        for declared in fields(cls):
            if names is None or declared.name in names:
                values[declared.name] = read.setting(declared)
        return cls(**values)

    def _check_combinations(self) -> Iterator[ConfigError]:
        if self.upstream_timeout < self.deadline:
            yield ConfigError(
                "WALLET_PROXY_UPSTREAM_TIMEOUT", "must be at least WALLET_PROXY_DEADLINE"
            )
        if self.cache_redis_url and not self.redis_url:
            yield ConfigError(
                "WALLET_PROXY_REDIS_URL", "required when WALLET_PROXY_CACHE_REDIS_URL is set"
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

    def _check_braze(self) -> Iterator[ConfigError]:
        keys = {
            "BRAZE_REST_API_KEY": self.braze_rest_api_key,
            "BRAZE_TRACK_API_KEY": self.braze_track_api_key,
        }
        if not self.braze_rest_url:
            for name in (name for name, key in keys.items() if key):
                yield ConfigError("BRAZE_REST_URL", f"required when {name} is set")
        elif not any(keys.values()):
            yield ConfigError(
                "BRAZE_REST_API_KEY",
                "required when BRAZE_REST_URL is set (or BRAZE_TRACK_API_KEY alone, to write "
                "profiles without the triggers)",
            )
        if self.triggers_configured and not self.trigger_keys:
            yield ConfigError(
                "WALLET_PROXY_TRIGGER_KEYS", "required when BRAZE_REST_API_KEY is set"
            )
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
    settings = Settings._declare(read)
    problems: dict[str, ConfigError] = {}
    combinations = [*settings._check_combinations(), *settings._check_braze()]
    for error in [*read.problems, *read.missing(needs), *combinations]:
        problems.setdefault(error.variable, error)  # the first word on each variable
    warnings = tuple(unknown_variables(env, read.names))
    return Verdict(None if problems else settings, tuple(problems.values()), warnings)


def declared_variables() -> tuple[str, ...]:
    """Every variable a setting is read from, in declaration order."""
    read = _Reading({}, ())
    Settings._declare(read)
    return tuple(read.names)


@dataclass(frozen=True)
class Serving:
    """How gunicorn serves the app (gunicorn_config.py)."""

    bind: str
    workers: int
    threads: int
    log_level: str


def serving_settings(env: Mapping[str, str]) -> Serving:
    """The four settings gunicorn's config reads, needing no other: read at its import, in
    the master, where a malformed one reads as its default and `on_starting` then stops
    the master naming it (full validation)."""
    read = _Reading(env, ())
    settings = Settings._declare(read, ("bind", "web_concurrency", "threads", "log_level"))
    return Serving(
        settings.bind, settings.web_concurrency, settings.threads, settings.log_level.lower()
    )


def unknown_variables(env: Mapping[str, str], known: Collection[str]) -> Iterator[str]:
    """A warning for each variable with one of our prefixes that no setting reads."""
    for name in sorted(env):
        if name.startswith(OUR_PREFIXES) and name not in known:
            close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.75)
            hint = f"; did you mean {close[0]}?" if close else ""
            yield f"{name} is not a wallet-proxy setting and is ignored{hint}"


class _Reading:
    """Settings read by their rules (`_Reader`), with every problem noted instead of raised.

    A missing or malformed setting reads as its default, so the rest is still checked. A
    missing setting is a problem only if a part in `needs` requires it.
    """

    def __init__(self, env: Mapping[str, str], needs: Sequence[Part]):
        self._reader = _Reader(env)
        self.names = self._reader.names
        self.needed = {name for part in needs for name in part.variables}
        self.problems: list[ConfigError] = []

    def setting(self, declared: Field[Any]) -> Any:
        if declared.default_factory is not MISSING:
            default = declared.default_factory()
        else:
            default = declared.default
        rule = getattr(self._reader, declared.metadata["rule"])
        try:
            return rule(declared.metadata["variable"], default, **declared.metadata["options"])
        except ConfigError as error:
            if error.variable in self.needed or self._reader.raw(error.variable):
                self.problems.append(error)
            return default

    def missing(self, needs: Sequence[Part]) -> Iterator[ConfigError]:
        """Required settings that are not set, whatever rule reads them."""
        for part in needs:
            for name in part.variables:
                if self._reader.raw(name) is None:
                    yield ConfigError(name, f"is required {part.why}")


def log_id_settings(env: Mapping[str, str]) -> tuple[str | None, bool]:
    """WALLET_PROXY_LOG_HASH_KEY and WALLET_PROXY_LOG_USER_IDS alone: `wallet-proxy log-id` runs
    where support works, without the service's other settings."""
    read = _Reader(env)
    return (
        read.token("WALLET_PROXY_LOG_HASH_KEY", None),
        read.boolean("WALLET_PROXY_LOG_USER_IDS", False),
    )


class _Reader:
    """One method per rule, each `rule(name, default, **options)`: it reads its variable
    through `raw` (which records the name), answers `default` when it is not set, and
    raises ConfigError naming it when it is malformed (or required and not set)."""

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

    def text(self, name: str, default: str | None) -> str | None:
        value = self.raw(name)
        return default if value is None else value

    def secret(self, name: str, default: str) -> str:
        value = self.raw(name)
        if value is None:
            raise ConfigError(name, "is required")
        return value

    def url(self, name: str, default: str) -> str:
        value = self.optional_url(name, None)
        if value is None:
            raise ConfigError(name, "is required (an http:// or https:// base URL)")
        return value

    def optional_url(self, name: str, default: str | None) -> str | None:
        value = self.raw(name)
        if value is None:
            return default
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(name, "must be an http:// or https:// URL")
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ConfigError(name, "must be a base URL without credentials, query or fragment")
        return value.rstrip("/")

    def redis_url(self, name: str, default: str | None) -> str | None:
        value = self.raw(name)
        if value is None:
            return default
        if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
            raise ConfigError(name, "must be a redis://, rediss:// or unix:// URL")
        return value

    def guid(self, name: str, default: str) -> str:
        value = self.secret(name, default)
        if not GUID_RE.match(value):
            raise ConfigError(name, "must be a GUID like 5f0c6b0e-5a11-4b0b-9d1e-000000000001")
        return value

    def culture(self, name: str, default: str) -> str:
        """In its one spelling, as the API's cultures are (`es_ES` is es-ES)."""
        culture = canonical_culture(self.raw(name) or default)
        if culture is None:
            raise ConfigError(name, f"must be a culture {CULTURE_RULE}")
        return culture

    def api_keys(
        self, name: str, default: tuple[str, ...], *, required: bool = True
    ) -> tuple[str, ...]:
        if not required and self.raw(name) is None:
            return default
        value = self.secret(name, "")
        keys = tuple(key.strip() for key in value.split(","))
        if any(not key for key in keys):
            raise ConfigError(name, "has an empty key (comma-separated, no blanks)")
        if any(len(key) < 8 or any(ch.isspace() for ch in key) for key in keys):
            raise ConfigError(name, "keys must be at least 8 characters without spaces")
        return keys

    def token(self, name: str, default: str | None) -> str | None:
        """An optional secret of ours: long enough not to be guessed, no spaces."""
        value = self.raw(name)
        if value is None:
            return default
        if len(value) < 16 or any(ch.isspace() for ch in value):
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

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
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

    def optional_integer(
        self, name: str, default: int | None, *, low: int, high: int
    ) -> int | None:
        if self.raw(name) is None:
            return default
        return self.integer(name, low, low=low, high=high)

    def directory(self, name: str, default: str) -> str:
        value = self.raw(name) or default
        if "\x00" in value:
            raise ConfigError(name, "must be a folder path")
        return os.path.abspath(value)

    def origin(self, name: str, default: str | None) -> str | None:
        value = self.raw(name)
        if value is None:
            return default
        origin = parse_origin(value)
        if origin is None:
            raise ConfigError(name, f"must be an origin {ORIGIN_RULE}, without a path")
        return origin

    def origins(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.raw(name)
        if value is None:
            return default
        found = []
        for item in value.split(","):
            origin = parse_origin(item.strip())
            if origin is None:
                raise ConfigError(name, f"must be origins {ORIGIN_RULE}, comma-separated")
            found.append(origin)
        return tuple(dict.fromkeys(found))

    def cultures(
        self, name: str, default: tuple[str, ...], *, default_name: str
    ) -> tuple[str, ...]:
        """The default culture (`default_name`'s) first, then the listed ones in their order,
        each in its one spelling and once (`es_ES, es-es` is es-ES)."""
        # A malformed default is reported under its own name.
        first = default[0]
        first = canonical_culture(self.raw(default_name) or first) or first
        value = self.raw(name)
        listed = []
        for item in value.split(",") if value else []:
            culture = canonical_culture(item.strip())
            if culture is None:
                raise ConfigError(name, f"must be cultures {CULTURE_RULE}, comma-separated")
            listed.append(culture)
        return tuple(dict.fromkeys([first, *listed]))

    def prioritization(self, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
        """Braze's email prioritization, comma-separated, in order of preference."""
        value = self.raw(name)
        if value is None:
            return default
        try:
            return check_prioritization([item.strip() for item in value.split(",")])
        except ValueError as exc:
            raise ConfigError(name, str(exc)) from None

    def boolean(self, name: str, default: bool) -> bool:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(name, "must be true or false")
        return value.lower() in ("true", "1", "yes")

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

    def staff_users(self, name: str, default: dict[str, str]) -> dict[str, str]:
        value = self.raw(name)
        if value is None:
            return default
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

    def bind(self, name: str, default: str) -> str:
        value = self.raw(name)
        if value is None:
            return default
        if value.startswith(("unix:", "fd://")):
            return value
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdecimal() or not 0 < int(port) < 65536:
            raise ConfigError(name, "must be HOST:PORT (like 0.0.0.0:8000) or unix:PATH")
        return value

    def choice(self, name: str, default: str, *, choices: Sequence[str]) -> str:
        value = self.raw(name)
        if value is None:
            return default
        if value.lower() not in choices:
            raise ConfigError(name, f"must be one of {', '.join(choices)}")
        return value
