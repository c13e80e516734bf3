"""What `check-config` and `serve` check beyond each setting's own rule, so that their OK
is the server's: the data folder can be written where the settings need it, the deadline
leaves room under Braze's 2 s, and no value is still an example file's placeholder.

Start-up opens the data folder itself (stores.py, triggers/setup.py). `data_dir_problem`
asks the same question without leaving anything there: `check-config` may run as another
user than the service (root, say), and a file it left behind could lock the service out.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from .attributes.written import DATABASE as ATTRIBUTES_DATABASE
from .config import ConfigError, Settings, declared_variables
from .idempotency import DATABASE as IDEMPOTENCY_DATABASE
from .stores import DATABASE
from .tags.running import LOCK_FILE as TAGS_LOCK_FILE
from .triggers.running import LOCK_FILE
from .triggers.sqlite_outbox import FILE_NAME

# Braze: "Braze requires that server response time is less than 2 seconds [...]; if the
# server takes longer than 2 seconds to respond, the content will not be inserted."
BRAZE_TIMEOUT = 2.0
# What the answer needs besides our deadline to reach Braze in time: its connection and
# TLS, the front proxy, the way back.
NETWORK_ROOM = 0.5
# How every secret of deploy/wallet-proxy.env.example and secret.example.yaml starts.
PLACEHOLDER = "replace-with-"


def problems(env: Mapping[str, str], settings: Settings | None) -> list[ConfigError]:
    """Every problem beyond the settings' own rules: placeholders, then (with settings that
    passed their rules) the data folder."""
    found = list(placeholders(env))
    if settings is not None and (problem := data_dir_problem(settings)) is not None:
        found.append(problem)
    return found


def data_dir_uses(settings: Settings) -> list[str]:
    """What the service keeps in WALLET_PROXY_DATA_DIR with these settings; empty when it
    keeps nothing there (then the folder need not exist)."""
    uses = []
    if settings.triggers_configured:
        uses.append("the triggers' deliverer lock" if settings.redis_url else "the trigger outbox")
    if settings.tags_queued:
        uses.append("the tags worker's lock" if settings.redis_url else "the queued tags' outbox")
    if settings.staff_users and not settings.redis_url:
        uses.append("the staff sessions")
    if settings.core_configured and not settings.tags_queued and not settings.redis_url:
        uses.append("the Idempotency-Key records")
    if (settings.triggers_configured or settings.staff_users) and not settings.redis_url:
        uses.append("the attributes last written to Braze profiles")
    return uses


def data_dir_problem(settings: Settings) -> ConfigError | None:
    """Why the service couldn't use its data folder, or None (also when it needs none)."""
    uses = data_dir_uses(settings)
    if not uses:
        return None
    problem = _unwritable(Path(settings.data_dir))
    if problem is None:
        return None
    return ConfigError("WALLET_PROXY_DATA_DIR", f"{problem} (it holds {' and '.join(uses)})")


def _data_files() -> list[str]:
    """The files start-up opens in the data folder (SQLite's journals beside its databases)."""
    return [
        LOCK_FILE,
        TAGS_LOCK_FILE,
        *(
            f"{db}{end}"
            for db in (DATABASE, IDEMPOTENCY_DATABASE, FILE_NAME, ATTRIBUTES_DATABASE)
            for end in ("", "-wal", "-shm")
        ),
    ]


def _unwritable(folder: Path) -> str | None:
    """Why this process couldn't create `folder` or write in it, or None. Tried for real (a
    temporary file or folder, removed at once): permissions alone miss a read-only mount."""
    trying = f"create {folder}"
    try:
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if existing != folder:
            os.rmdir(tempfile.mkdtemp(dir=existing))
            return None
        if not folder.is_dir():
            return f"{folder} is not a folder"
        trying = f"write in {folder}"
        with tempfile.TemporaryFile(dir=folder):
            pass
        for path in (folder / name for name in _data_files()):
            trying = f"write {path}"
            if path.exists():
                with path.open("r+b"):
                    pass
    except OSError as error:
        return f"can't {trying}: {(error.strerror or str(error)).lower()}"
    return None


def braze_permissions(settings: Settings) -> list[str]:
    """Which Braze REST API permissions each configured key needs, for what."""
    found = []
    if settings.braze_rest_api_key:
        needs = ["campaigns.trigger.send", "canvas.trigger.send"]
        uses = "the triggers"
        if not settings.braze_track_api_key:
            needs.append("users.track")
            uses += " and `attributes sync`"
        found.append(f"BRAZE_REST_API_KEY needs {', '.join(needs)} ({uses})")
    if settings.braze_track_api_key:
        found.append("BRAZE_TRACK_API_KEY needs users.track (`attributes sync`)")
    return found


def warnings(settings: Settings | None) -> list[str]:
    """What may go wrong with settings that pass: an answer given at the deadline that may
    reach Braze after its 2 s; wallets that may fill the outbox's Redis."""
    if settings is None:
        return []
    found = []
    if BRAZE_TIMEOUT - settings.deadline < NETWORK_ROOM:
        room = BRAZE_TIMEOUT - settings.deadline
        found.append(
            f"WALLET_PROXY_DEADLINE={settings.deadline:g} leaves {max(room, 0):g} s of Braze's "
            f"{BRAZE_TIMEOUT:g} s for the way to Braze and back: an answer given at the "
            f"deadline may arrive too late, and Braze leaves its content out; keep it at "
            f"{BRAZE_TIMEOUT - NETWORK_ROOM:g} or less"
        )
    outbox = settings.triggers_configured or settings.tags_queued
    if outbox and settings.redis_url and not settings.cache_redis_url:
        found.append(
            "the wallet cache shares WALLET_PROXY_REDIS_URL with the outbox (triggers, queued "
            "tags): large wallets can fill that Redis, and with noeviction (as the outbox "
            "needs) new triggers and webhooks are then refused; give the cache a Redis of its "
            "own that evicts (maxmemory-policy allkeys-lru) in WALLET_PROXY_CACHE_REDIS_URL"
        )
    return found


def placeholders(env: Mapping[str, str]) -> Iterator[ConfigError]:
    """A problem for each setting still holding an example file's `replace-with-...` value
    (named, never shown)."""
    for name in declared_variables():
        if PLACEHOLDER in env.get(name, "").lower():
            yield ConfigError(
                name, f"still holds the example's {PLACEHOLDER}... placeholder: set the real value"
            )
