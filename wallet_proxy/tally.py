"""What the current request has done so far, for its log line: its id, the cache's
answer, the SessionM calls made on its behalf.

Held in a context variable, so the code that knows a fact (the wallet service, the
SessionM clients) notes it without being handed the request, and without knowing
Flask. A thread started for a request (a wallet flight) runs under `carried`, so the
calls it makes before the answer is sent count for that request.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

CacheResult = Literal["hit", "stale", "negative", "miss"]


@dataclass(slots=True)
class Tally:
    request_id: str
    started: float  # time.perf_counter() when the request was read
    cache: CacheResult | None = None  # None: no wallet looked up
    sessionm_calls: int = 0


_current: ContextVar[Tally | None] = ContextVar("wallet_proxy_tally", default=None)


def begin(request_id: str, started: float) -> Tally:
    tally = Tally(request_id, started)
    _current.set(tally)
    return tally


def end() -> None:
    _current.set(None)


def current() -> Tally | None:
    return _current.get()


def carried(fn: Callable[P, R]) -> Callable[P, R]:
    """`fn`, to run in another thread on behalf of the current request (if any)."""
    tally = _current.get()

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        _current.set(tally)
        return fn(*args, **kwargs)

    return run
