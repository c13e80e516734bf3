"""Settings: read once, inside `create_app`, from the environment into one typed object.

Every problem is reported as one line naming the variable (never its value: most
are secrets), so a bad deploy stops at start-up instead of failing per request.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .origins import ORIGIN_RULE, parse_origin
from .rules import CULTURE_RULE, DEFAULT_CULTURE, is_culture

GUID_RE = re.compile(r"^[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}\Z")
STAFF_NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}\Z")
# Staff sessions and history without Redis, and other files the service keeps.
DEFAULT_DATA_DIR = "/var/lib/wallet-proxy"


class ConfigError(Exception):
    """A setting is missing or malformed; the message is one line for an operator."""

    def __init__(self, variable: str, problem: str):
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


@dataclass(frozen=True)
class Settings:
    sessionm_connect_url: str
    sessionm_connect_auth: str = field(repr=False)
    sessionm_retailer_id: str
    api_keys: tuple[str, ...] = field(repr=False)
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
    # The support pages and the front proxy
    trusted_proxy_hops: int = 0
    public_url: str | None = None
    image_hosts: tuple[str, ...] = ()
    cultures: tuple[str, ...] = (DEFAULT_CULTURE,)

    @property
    def core_configured(self) -> bool:
        return self.sessionm_core_url is not None

    @property
    def triggers_configured(self) -> bool:
        return self.braze_rest_url is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        read = _Reader(env)
        default_culture = read.culture("WALLET_PROXY_DEFAULT_CULTURE", DEFAULT_CULTURE)
        settings = cls(
            sessionm_connect_url=read.url("SESSIONM_CONNECT_URL"),
            sessionm_connect_auth=read.secret("SESSIONM_CONNECT_AUTH"),
            sessionm_retailer_id=read.guid("SESSIONM_RETAILER_ID"),
            api_keys=read.api_keys("WALLET_PROXY_API_KEYS"),
            default_culture=default_culture,
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
            trusted_proxy_hops=read.integer("WALLET_PROXY_TRUSTED_PROXY_HOPS", 0, 0, 10),
            public_url=read.origin("WALLET_PROXY_PUBLIC_URL"),
            image_hosts=read.origins("WALLET_PROXY_IMAGE_HOSTS"),
            cultures=read.cultures("WALLET_PROXY_CULTURES", default_culture),
        )
        settings._check_combinations()
        settings._check_triggers()
        return settings

    def _check_combinations(self) -> None:
        if self.upstream_timeout < self.deadline:
            raise ConfigError(
                "WALLET_PROXY_UPSTREAM_TIMEOUT", "must be at least WALLET_PROXY_DEADLINE"
            )
        if self.staff_users and not self.secret_key:
            raise ConfigError(
                "WALLET_PROXY_SECRET_KEY", "required when WALLET_PROXY_STAFF_USERS is set"
            )
        if self.secret_key is not None and len(self.secret_key) < 16:
            raise ConfigError("WALLET_PROXY_SECRET_KEY", "must be at least 16 characters")
        core = {
            "SESSIONM_CORE_URL": self.sessionm_core_url,
            "SESSIONM_CORE_API_KEY": self.sessionm_core_api_key,
            "SESSIONM_CORE_API_SECRET": self.sessionm_core_api_secret,
        }
        given = [name for name, value in core.items() if value]
        if given and len(given) < len(core):
            missing = next(name for name, value in core.items() if not value)
            raise ConfigError(missing, f"required when {given[0]} is set")

    def _check_triggers(self) -> None:
        if bool(self.braze_rest_url) != bool(self.braze_rest_api_key):
            missing = "BRAZE_REST_API_KEY" if self.braze_rest_url else "BRAZE_REST_URL"
            given = "BRAZE_REST_URL" if self.braze_rest_url else "BRAZE_REST_API_KEY"
            raise ConfigError(missing, f"required when {given} is set")
        if self.braze_rest_url and not self.trigger_keys:
            raise ConfigError("WALLET_PROXY_TRIGGER_KEYS", "required when BRAZE_REST_URL is set")
        if set(self.trigger_keys) & set(self.api_keys):
            raise ConfigError(
                "WALLET_PROXY_TRIGGER_KEYS", "must not reuse a key of WALLET_PROXY_API_KEYS"
            )


class _Reader:
    def __init__(self, env: Mapping[str, str]):
        self.env = env

    def raw(self, name: str) -> str | None:
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
        value = self.raw(name) or default
        if not is_culture(value):
            raise ConfigError(name, f"must be a culture {CULTURE_RULE}")
        return value

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

    def cultures(self, name: str, default: str) -> tuple[str, ...]:
        """The default culture first, then the listed ones in their order."""
        value = self.raw(name)
        listed = [item.strip() for item in value.split(",")] if value else []
        if any(not is_culture(item) for item in listed):
            raise ConfigError(name, f"must be cultures {CULTURE_RULE}, comma-separated")
        return tuple(dict.fromkeys([default, *listed]))

    def boolean(self, name: str) -> bool:
        value = (self.raw(name) or "false").lower()
        if value not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(name, "must be true or false")
        return value in ("true", "1", "yes")

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
