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

The failures are counted in the store every worker shares (stores.py: Redis, else the
support pages' SQLite file), so the limits hold for the instance (with Redis, for every
instance), not per worker. A count is a counter that expires a window after its last
failure; names and addresses are kept as digests (a name field may hold a password typed
in the wrong box). Nothing is evicted to make room, so no flood of other names pushes a
locked name out; the counts themselves are bounded by the hashing: a failure is counted
only once its password was hashed, at most `HASH_SLOTS` at once per worker.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import threading
from collections.abc import Callable

from ..background import Pool
from ..errors import TooManyAttempts
from ..stores import SharedStore

NAME_FAILURES = 10
# Higher than a name's: agents behind one address (without trusted hops) share it.
ADDRESS_FAILURES = 50
WINDOW = 15 * 60
HASH_SLOTS = 2
HASH_NICENESS = 10  # CPU weight about a tenth of a request thread's


class LoginThrottle:
    def __init__(
        self,
        store: SharedStore,
        *,
        name_limit: int = NAME_FAILURES,
        address_limit: int = ADDRESS_FAILURES,
        window: float = WINDOW,
    ):
        self.store = store
        self.name_limit = name_limit
        self.address_limit = address_limit
        self.window = window

    def check(self, name: str, address: str) -> None:
        """TooManyAttempts while the address or the name is locked."""
        by_address = self._wait(_key("address", address), self.address_limit)
        if by_address:
            raise TooManyAttempts(
                "Too many failed logins from this address; wait a while before trying again.",
                retry_after=by_address,
            )
        by_name = self._wait(_key("name", name), self.name_limit)
        if by_name:
            raise TooManyAttempts(retry_after=by_name)

    def record(self, name: str, address: str, *, success: bool) -> None:
        if success:
            self.store.delete(_key("name", name))
            return
        for counted in (_key("name", name), _key("address", address)):
            self.store.count(counted, ttl=self.window)

    def _wait(self, key: str, limit: int) -> int:
        """Seconds before `key` may try again; 0 when it may now."""
        count, left = self.store.counted(key)
        return max(1, math.ceil(left)) if count >= limit else 0


def _key(kind: str, value: str) -> str:
    return f"login-{kind}:{hashlib.sha256(value.encode()).hexdigest()[:32]}"


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
