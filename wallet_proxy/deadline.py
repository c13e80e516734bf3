"""A lookup's time, on the monotonic clock, and the shares of it each step may use.

Braze drops an answer after 2 s, and the service answers within WALLET_PROXY_DEADLINE
whatever SessionM does. One `Deadline` is made when a lookup starts and carries every
instant its steps need, so no step does its own arithmetic on the clock:

- `answer_by`: when the asker stops waiting and answers (a stale copy or an error);
- `budget_until`: how long the SessionM call may wait for the fleet's request budget;
- `slot_until`: how long it may wait for one of this process's SessionM slots;
- `fetch_by`: when the call to SessionM itself must end (WALLET_PROXY_UPSTREAM_TIMEOUT),
  which may be after `answer_by`: a slow answer still fills the cache for the next render.
"""

from __future__ import annotations

from dataclasses import dataclass

# Stop waiting this much before the deadline (at most a tenth of it), so the answer is
# rendered and written by then, also when many waiters wake at once on a busy machine.
SEND_MARGIN = 0.1
# A render waits for budget this share of its deadline at most; the rest is for SessionM's
# answer. Booked later, every render of a saturated budget would answer too late.
QUEUE_SHARE = 2 / 3
# Once the call has ended, the asker of a bulk fetch waits this much longer for its result.
SETTLE = 1.0


@dataclass(frozen=True, slots=True)
class Deadline:
    answer_by: float
    budget_until: float | None  # None: the budget only if it has room now
    slot_until: float | None  # None: a SessionM slot only if one is free now
    fetch_by: float

    @classmethod
    def render(cls, now: float, deadline: float, upstream_timeout: float) -> Deadline:
        """Someone waits for the answer, within `deadline` seconds of `now`."""
        answer_by = now + deadline - min(SEND_MARGIN, deadline / 10)
        return cls(
            answer_by=answer_by,
            budget_until=now + deadline * QUEUE_SHARE,
            slot_until=answer_by,
            fetch_by=now + upstream_timeout,
        )

    @classmethod
    def spare(cls, now: float, deadline: float, upstream_timeout: float) -> Deadline:
        """Answered by the same time as a render, but a fetch goes only if the budget and
        a slot are free now: it never makes a render wait."""
        render = cls.render(now, deadline, upstream_timeout)
        return cls(render.answer_by, None, None, render.fetch_by)

    @classmethod
    def bulk(cls, now: float, patience: float, upstream_timeout: float) -> Deadline:
        """Work that may wait `patience` seconds for its turn, then for the whole call."""
        turn_by = now + patience
        fetch_by = turn_by + upstream_timeout
        return cls(
            answer_by=fetch_by + SETTLE,
            budget_until=turn_by,
            slot_until=turn_by,
            fetch_by=fetch_by,
        )

    def lease(self, now: float) -> float:
        """Seconds another process should wait for our call at most: all of it, and a
        second for storing its answer."""
        return self.fetch_by - now + 1
