"""How the service's log lines are written: one JSON object per line, user ids as HMACs.

Every record (the app's, gunicorn's own error log, libraries') goes through one
python-json-logger formatter: `time` (UTC), `level`, `logger`, `message`, the
`request_id` of the request it was written for, and a traceback if any. JSON
escapes control characters, so nothing from outside (a %0a in a path, a header)
can start a line of its own. The request lines themselves are written by
request_log.py, in the same shape.

User ids are data about customers: lines carry an HMAC of them under
WALLET_PROXY_LOG_HASH_KEY (`wallet-proxy log-id USER` computes it, so support can
find a customer's lines), unless WALLET_PROXY_LOG_USER_IDS=true. Code that logs a
user id wraps it in `UserRef`; the handler hashes it.

Logging is process-wide state: `configure` installs the handler once per process
(gunicorn's `GunicornLogger` already did, in the master), and the last app built
in the process decides how user ids are hashed. A warning about the settings is written
once per process (`warn_once`), however many apps it builds.

Under werkzeug's development server (`flask run`) its own request lines, which carry
the path, are dropped (the app writes its own), and its errors lose the request text.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import re
import secrets
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

from gunicorn import glogging
from pythonjsonlogger.json import JsonFormatter

from . import tally

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger(__name__)

HASH_HEX_DIGITS = 16  # 64 bits: no collision to speak of among a retailer's customers
# gunicorn's warning about a request it can't read quotes what the client sent (the request
# line with its path, a header): `Invalid request from ip=...: Invalid HTTP request line:
# 'GET /v1/wallets/<a customer id> ...'`. What follows the kind of error is dropped.
_REQUEST_TEXT = re.compile(r"^(Invalid request from ip=\S*: [^'\":]*?) *[:'\"].*\Z", re.S)
NOT_REPEATED = " (what the client sent is not repeated: it may name a customer)"


class UserIds:
    """What a log line shows for a user id: an HMAC-SHA256 under `key` (16 hex digits), or
    the id itself with `plain`. Without a key, a random one for this process only."""

    def __init__(self, key: str | None, *, plain: bool = False):
        self.plain = plain
        self.per_process = key is None
        self._key = key.encode() if key is not None else secrets.token_bytes(32)
        # Hot users are logged again and again; the HMAC costs more than the lookup.
        self._hash = functools.lru_cache(maxsize=16_384)(self._compute)

    @classmethod
    def from_settings(cls, settings: Settings) -> UserIds:
        return cls(settings.log_hash_key, plain=settings.log_user_ids)

    def __repr__(self) -> str:
        return f"UserIds(plain={self.plain}, <key hidden>)"

    def _compute(self, user_id: str) -> str:
        digest = hmac.digest(self._key, user_id.encode("utf-8", "surrogatepass"), hashlib.sha256)
        return digest.hex()[:HASH_HEX_DIGITS]

    def __call__(self, user_id: str) -> str:
        return user_id if self.plain else self._hash(user_id)


class UserRef(str):
    """A user id passed to a log call (`log.warning("... %s", UserRef(user_id))`): the
    handler writes it as `UserIds` says."""

    __slots__ = ()


_user_ids = UserIds(None)
_warned: set[str] = set()
_warned_lock = threading.Lock()
# werkzeug's development server: `ADDRESS - - [DATE] ` before each line about a request.
_WERKZEUG_REQUEST = re.compile(r"^\S+ - - \[[^\]]*\] ")
_WERKZEUG_ACCESS = '"%s" %s %s'  # its access line: the request line, status and size
_QUOTED = re.compile(r"\s*\(?['\"].*\Z", re.S)


def warn_once(logger: logging.Logger, message: str, *args: object) -> None:
    """A warning, unless this process wrote the same one already: each app a process builds
    (a command, each test) reads the same settings again."""
    text = message % args if args else message
    with _warned_lock:
        if text in _warned:
            return
        _warned.add(text)
    logger.warning("%s", text)


def utc_time(moment: float) -> str:
    """`time.time()` as ISO 8601 UTC to the millisecond: 2026-11-28T22:33:27.906Z."""
    whole = int(moment)
    return f"{_utc_second(whole)}.{int((moment - whole) * 1000):03d}Z"


@functools.lru_cache(maxsize=4)
def _utc_second(whole: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


class JsonLines(JsonFormatter):
    """One JSON object per record: time, level, logger, message, then any extras."""

    def __init__(self) -> None:
        super().__init__(
            "%(levelname)s %(name)s %(message)s",
            rename_fields={"levelname": "level", "name": "logger"},
        )

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = utc_time(record.created)
        super().add_fields(log_data, record, message_dict)

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        # JSON leaves DEL as it is; it is a control character all the same.
        return super().jsonify_log_record(log_data).replace("\x7f", "\\u007f")


class RequestContext(logging.Filter):
    """Adds the current request's id to each record and hashes the user ids in its arguments."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = tally.current()
        if current is not None:
            record.request_id = current.request_id
        if isinstance(record.args, tuple) and any(isinstance(a, UserRef) for a in record.args):
            record.args = tuple(
                _user_ids(arg) if isinstance(arg, UserRef) else arg for arg in record.args
            )
        return True


def json_handler(stream: TextIO) -> logging.Handler:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines())
    handler.addFilter(RequestContext())
    return handler


def configure(user_ids: UserIds) -> None:
    """JSON lines on stderr for every record of this process, unless the host (gunicorn
    through `GunicornLogger`, or pytest) set up logging already; user ids as `user_ids`."""
    global _user_ids
    _user_ids = user_ids
    root = logging.getLogger()
    if not root.handlers:
        _install_root()
    werkzeug = logging.getLogger("werkzeug")
    if not any(isinstance(found, WerkzeugLines) for found in werkzeug.filters):
        werkzeug.addFilter(WerkzeugLines())
    if user_ids.per_process and not user_ids.plain:
        warn_once(
            log,
            "WALLET_PROXY_LOG_HASH_KEY is not set: user ids in the logs are hashed with a key "
            "of this process only, so the same user's hashes differ between processes and "
            "restarts, and `wallet-proxy log-id` can't compute them",
        )


def _install_root() -> None:
    root = logging.getLogger()
    root.addHandler(json_handler(sys.stderr))
    root.setLevel(logging.INFO)
    # A thread's uncaught exception would print a bare traceback: a record instead.
    threading.excepthook = _log_thread_exception


def _log_thread_exception(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    name = args.thread.name if args.thread is not None else "a thread"
    log.error(
        "uncaught exception in %s",
        name,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
    )


class WerkzeugLines(logging.Filter):
    """werkzeug's development server logs each request's line, path and all, and its errors
    quote what the client sent: paths name customers. The request line is the app's own
    (request_log.py), so werkzeug's is dropped; an error keeps its kind only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not isinstance(record.msg, str) or not _WERKZEUG_REQUEST.match(record.msg):
            return True  # its start-up lines
        if record.msg.endswith(_WERKZEUG_ACCESS):
            return False
        message = record.getMessage()
        cut = _QUOTED.sub(NOT_REPEATED, message)
        record.msg, record.args = cut, ()
        return True


class GunicornLogger(glogging.Logger):
    """gunicorn's own lines (start-up, workers, errors) in the service's JSON format, and
    no access log: the app writes one line per request itself (request_log.py), which
    gunicorn's text access log, formatted under a lock shared by all threads, cost a
    busy worker a third of its time."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonLines())
            handler.addFilter(RequestContext())
        if not logging.getLogger().handlers:
            _install_root()

    @property
    def access_log_enabled(self) -> bool:
        return False

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        msg = _REQUEST_TEXT.sub(lambda found: found.group(1) + NOT_REPEATED, msg)
        super().warning(msg, *args, **kwargs)

    def exception(self, msg: str, *args: Any, **kwargs: Any) -> None:
        if msg.startswith("Error handling request"):  # its arguments are the method and path
            msg, args = "Error handling request" + NOT_REPEATED, ()
        super().exception(msg, *args, **kwargs)

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        """Not written: see request_log.py."""
