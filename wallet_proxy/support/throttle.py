"""How many password checks an outsider can cause: per name, per address, and at once.

Each check hashes a password (scrypt: 32 MiB and tens of milliseconds of CPU), so
guessing passwords is also a way to exhaust a worker's memory and CPU. Three bounds:

- per staff name: after `NAME_FAILURES` failures, each less than `WINDOW` apart, the
  name is refused until a window after the last, right password or not;
- per client address: the same after `ADDRESS_FAILURES` failures, whatever the names,
  so inventing a new name for each guess doesn't escape the count. The address is the
  client's only when WALLET_PROXY_TRUSTED_PROXY_HOPS says which proxies to believe;
  otherwise it is the front proxy's, shared by everyone behind it;
- at once: at most `HASH_SLOTS` hashes run in a process; a check beyond them is
  refused (429) without hashing, however many addresses the guesses come from.

Counts are per process, like the rest of the login state before a session exists.
The configured staff names are counted in a table of their own, which holds nothing
else, so no flood of other names can push a locked name out of memory; other names
and addresses share bounded tables where a flood only evicts the flooder's entries.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections.abc import Callable, Collection, MutableMapping

from cachetools import LRUCache

from ..background import Pool
from ..errors import TooManyAttempts

NAME_FAILURES = 10
# Higher than a name's: agents behind one address (without trusted hops) share it.
ADDRESS_FAILURES = 50
WINDOW = 15 * 60
HASH_SLOTS = 2
HASH_NICENESS = 10  # CPU weight about a tenth of a request thread's
# Other names and addresses remembered per process; a flood past this evicts its own.
TABLE_SIZE = 10_000
_NAME_LENGTH = 64  # longer names are counted by their start: they are no staff name anyway

Failures = tuple[int, float]  # (count, time of the last failure)


class LoginThrottle:
    def __init__(
        self,
        *,
        timer: Callable[[], float],
        staff_names: Collection[str],
        name_limit: int = NAME_FAILURES,
        address_limit: int = ADDRESS_FAILURES,
        window: float = WINDOW,
    ):
        self.timer = timer
        self.name_limit = name_limit
        self.address_limit = address_limit
        self.window = window
        self._staff_names = frozenset(staff_names)
        self._staff: dict[str, Failures] = {}  # only ever the configured names
        self._names: LRUCache[str, Failures] = LRUCache(maxsize=TABLE_SIZE)
        self._addresses: LRUCache[str, Failures] = LRUCache(maxsize=TABLE_SIZE)
        self._lock = threading.Lock()

    def check(self, name: str, address: str) -> None:
        """TooManyAttempts while the address or the name is locked."""
        with self._lock:
            by_address = self._wait(self._addresses, address, self.address_limit)
            by_name = self._wait(*self._table(name), self.name_limit)
        if by_address:
            raise TooManyAttempts(
                "Too many failed logins from this address; wait a while before trying again.",
                retry_after=by_address,
            )
        if by_name:
            raise TooManyAttempts(retry_after=by_name)

    def record(self, name: str, address: str, *, success: bool) -> None:
        with self._lock:
            names, key = self._table(name)
            if success:
                names.pop(key, None)
                return
            now = self.timer()
            for table, counted in ((names, key), (self._addresses, address)):
                table[counted] = (self._count(table, counted, now) + 1, now)

    def _table(self, name: str) -> tuple[MutableMapping[str, Failures], str]:
        if name in self._staff_names:
            return self._staff, name
        return self._names, name[:_NAME_LENGTH]

    def _count(self, table: MutableMapping[str, Failures], key: str, now: float) -> int:
        """Failures still counting: a window without one starts the count again."""
        count, last = table.get(key, (0, 0.0))
        return count if now - last < self.window else 0

    def _wait(self, table: MutableMapping[str, Failures], key: str, limit: int) -> int:
        """Seconds before `key` may try again; 0 when it may now."""
        now = self.timer()
        if self._count(table, key, now) < limit:
            return 0
        _, last = table[key]
        return max(1, math.ceil(last + self.window - now))


class HashSlots:
    """At most `size` password hashes at once in this process; the rest are refused, not
    queued, so a flood of guesses holds neither memory nor request threads.

    The hashes run on `size` threads of their own at a lower CPU priority (Linux
    schedules threads separately), so the hashing an attacker causes yields the CPU
    to health checks and Braze's calls instead of competing with them as equals.
    """

    def __init__(self, size: int = HASH_SLOTS):
        self._slots = threading.BoundedSemaphore(size)
        self._hashers = Pool("password-hash", size, initializer=_lower_priority)

    def close(self) -> None:
        self._hashers.shutdown()

    def run(self, check: Callable[[], bool]) -> bool:
        """`check()` on a hashing thread; TooManyAttempts at once when all are busy."""
        if not self._slots.acquire(blocking=False):
            raise TooManyAttempts(
                "Too many sign-ins at once; try again in a moment.", retry_after=1
            )
        try:
            return self._hashers.submit(check).result()
        finally:
            self._slots.release()


def _lower_priority() -> None:
    if sys.platform == "linux":  # elsewhere this would lower the whole process
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), HASH_NICENESS)
