"""Settings: read once, inside `create_app`, from the environment into one typed object.

Every problem is reported as one line naming the variable (never its value: most
are secrets), so a bad deploy stops at start-up instead of failing per request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from .rules import CULTURE_RULE, DEFAULT_CULTURE, is_culture

GUID_RE = re.compile(r"^[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}\Z")
STAFF_NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}\Z")


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
    core_timeout: float = 5.0
    max_wallet_offers: int = 10_000
    max_wallet_bytes: int = 20 * 1024 * 1024
    max_answer_bytes: int = 1_000_000

    @property
    def core_configured(self) -> bool:
        return self.sessionm_core_url is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        read = _Reader(env)
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
            core_timeout=read.number("WALLET_PROXY_CORE_TIMEOUT", 5, low=0.1, high=30),
            max_wallet_offers=read.integer("WALLET_PROXY_MAX_WALLET_OFFERS", 10_000, 1, 50_000),
            max_wallet_bytes=read.integer(
                "WALLET_PROXY_MAX_WALLET_BYTES", 20 * 1024 * 1024, 100_000, 1_000_000_000
            ),
            max_answer_bytes=read.integer(
                "WALLET_PROXY_MAX_ANSWER_BYTES", 1_000_000, 10_000, 100_000_000
            ),
        )
        settings._check_combinations()
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

    def api_keys(self, name: str) -> tuple[str, ...]:
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
