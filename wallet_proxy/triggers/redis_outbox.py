"""The outbox in Redis, shared by every instance: any of them delivers what another accepted.

Each change is one Lua script, so it is atomic and every instance sees the same queue.
Each queue of the outbox (outbox.Queue) has its keys under `wallet-proxy:<queue>:`
(`wallet-proxy:triggers:` for the triggers). Layout under it: `t:<id>` a hash per item;
`s:<state>` a sorted set of ids per state (counts, listings, purging); `q:<target>` the
unclaimed queued ids of one campaign or Canvas by due time, and `targets` each target by
its earliest due time (what to batch next); `leases` claimed and sending ids by lease
end; `d:<key>` de-duplication records that expire by themselves, and `dedupes` their keys
by expiry, so that the ledger forgets them when they expire; `c:<external id>` a
customer's recent items; `broadcasts` the last minute's broadcast calls; `fence:<id>` an
add that must not happen any more. `wallet-proxy:usage`, every queue's, is the ledger of
bytes per part (outbox.py): the scripts find it, and the queue's name, from the prefix.

An add whose answer is lost (a timeout or a dropped connection after the script was sent)
may run later: Redis runs what it has read even from a client that has given up. So the
intake settles it on another connection, within the bound, with one script that either
finds the trigger stored or fences the add (`fence:<id>`), which then refuses to store
it whenever it runs: the answer is then the truth, not a guess.

Redis holding triggers must persist (appendonly yes) and never evict (maxmemory-policy
noeviction): an evicted key is a lost trigger. `persistence_warnings` reads both when
CONFIG is allowed. A single Redis (or a primary with replicas), not Redis Cluster: the
scripts touch keys they compute.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any

import redis

from ..redis_clients import OUTBOX, TRIGGER_INTAKE, RedisNotConnected, connect
from .model import DEAD, QUEUED, SENDING, SENT, Record
from .outbox import (
    ADD_BOUND,
    ALL_STATES,
    BROADCASTS_PER_MINUTE,
    DEAD_RETENTION,
    DEDUPE_PART,
    DEFAULT_MAX_BYTES,
    FINISHED,
    MOVES,
    PRUNABLE_STATES,
    PRUNED,
    RECENT_PER_CUSTOMER,
    SENT_RETENTION,
    TRIGGERS,
    Accepted,
    Costs,
    Dedupe,
    DedupeConflict,
    OutboxError,
    OutboxFull,
    OutcomeUnknown,
    Queue,
    Queued,
)
from .sqlite_outbox import new_id

log = logging.getLogger(__name__)

ROOT = "wallet-proxy:"


def prefix_of(queue: Queue) -> str:
    return f"{ROOT}{queue.name}:"


PREFIX = prefix_of(TRIGGERS)
BATCH = 1000
# A fenced add may still be on its way to Redis (in a socket buffer, or resent by TCP for
# minutes over a broken network): the fence outlives any such delay.
FENCE_TTL = 86_400
# Measured (used_memory): about 1,900 bytes a trigger besides its body (its hash, its
# members in the state, queue and customer sets), 450 a dedupe record (its key and its
# member of `dedupes`), and jemalloc's size classes round a large body up by up to 1/8.
COSTS = Costs(per_record=2048, per_dedupe=512, body_share=1 / 8)
EXPIRE_DEDUPES = 100  # expired dedupe keys forgotten per add (purge forgets the rest)
# Reading an add back takes, at worst, a new connection: connecting, its handshake and
# the read. Done only when that still ends within ADD_BOUND.
SETTLE_WORST = TRIGGER_INTAKE.connect_timeout + 2 * TRIGGER_INTAKE.answer_timeout

_LIB = (
    """
local P = ARGV[1]
local Q = string.match(P, '([^:]+):$')
local ROOT = string.sub(P, 1, #P - #Q - 1)
local L = ROOT .. 'usage'
local D = '"""
    + DEDUPE_PART
    + """'
local function set_state(id, old, new, score)
  local key = P .. 't:' .. id
  local size = tonumber(redis.call('HGET', key, 'size') or '0')
  if old then
    redis.call('ZREM', P .. 's:' .. old, id)
    redis.call('HINCRBY', L, Q .. ':' .. old, -size)
  end
  redis.call('ZADD', P .. 's:' .. new, score, id)
  redis.call('HSET', key, 'state', new)
  redis.call('HINCRBY', L, Q .. ':' .. new, size)
end
local function forget(queue, id, state)
  local prefix = ROOT .. queue .. ':'
  redis.call('ZREM', prefix .. 's:' .. state, id)
  local key = prefix .. 't:' .. id
  local got = redis.call('HMGET', key, 'state', 'size', 'recipient')
  if not got[1] then return 0 end
  local size = tonumber(got[2] or '0')
  redis.call('HINCRBY', L, queue .. ':' .. got[1], -size)
  if got[3] and got[3] ~= '' then redis.call('ZREM', prefix .. 'c:' .. got[3], id) end
  redis.call('DEL', key)
  return size
end
local function expire_dedupes(now, limit, size)
  local keys = redis.call('ZRANGEBYSCORE', P .. 'dedupes', '-inf', now, 'LIMIT', 0, limit)
  for _, key in ipairs(keys) do
    redis.call('ZREM', P .. 'dedupes', key)
    redis.call('DEL', P .. 'd:' .. key)
    redis.call('HINCRBY', L, D, -size)
  end
  return #keys
end
local function lookup(key, fingerprint, now, pruned)
  if key == '' then return nil end
  local found = redis.call('GET', P .. 'd:' .. key)
  if not found then return nil end
  local record = cjson.decode(found)
  if tonumber(record[3]) <= tonumber(now) then return nil end
  if record[1] ~= fingerprint then return {'conflict'} end
  local state = redis.call('HGET', P .. 't:' .. record[2], 'state')
  return {'found', record[2], state or pruned}
end
local function refresh_target(target)
  local first = redis.call('ZRANGE', P .. 'q:' .. target, 0, 0, 'WITHSCORES')
  if #first == 0 then
    redis.call('ZREM', P .. 'targets', target)
  else
    redis.call('ZADD', P .. 'targets', first[2], target)
  end
end
local function enqueue(id, target, due)
  redis.call('ZADD', P .. 'q:' .. target, due, id)
  refresh_target(target)
end
"""
)

# ARGV: prefix, spec (JSON), body. A dedupe record holds its own expiry (the caller's clock
# decides) and Redis drops it a minute after that; `dedupes` lets the ledger forget it.
_ADD = (
    _LIB
    + """
local spec = cjson.decode(ARGV[2])
local id, now = spec.id, spec.now
if redis.call('EXISTS', P .. 'fence:' .. id) == 1 then return {'fenced'} end
local repeated = lookup(spec.key, spec.fingerprint, now, spec.pruned)
if repeated then return repeated end
local waiting = redis.call('ZCARD', P .. 's:queued') + redis.call('ZCARD', P .. 's:sending')
if waiting >= spec.max_waiting then return {'full'} end
expire_dedupes(now, spec.expire_dedupes, spec.dedupe_size)
local usage = redis.call('HGETALL', L)
local prunable = {}
for _, state in ipairs(spec.prunable) do prunable[state] = true end
local held, total, holding = 0, 0, {}
for i = 1, #usage, 2 do
  local bytes = tonumber(usage[i + 1])
  local queue, state = string.match(usage[i], '^(.*):([^:]+)$')
  total = total + bytes
  if state and prunable[state] then
    if bytes > 0 then
      holding[state] = holding[state] or {}
      table.insert(holding[state], queue)
    end
  else
    held = held + bytes
  end
end
local needed = spec.size + (spec.key ~= '' and spec.dedupe_size or 0)
if held + needed > spec.max_bytes then return {'full'} end
local excess = total + needed - spec.max_bytes
local pruned = {}
for _, state in ipairs(spec.prunable) do
  pruned[#pruned + 1] = 0
  local queues = holding[state] or {}
  while excess > 0 do
    -- the oldest of every queue's oldest
    local oldest, from, at = nil, nil, nil
    for _, queue in ipairs(queues) do
      local first = redis.call('ZRANGE', ROOT .. queue .. ':s:' .. state, 0, 0, 'WITHSCORES')
      if #first > 0 and (at == nil or tonumber(first[2]) < at) then
        oldest, from, at = first[1], queue, tonumber(first[2])
      end
    end
    if oldest == nil then break end
    excess = excess - forget(from, oldest, state)
    pruned[#pruned] = pruned[#pruned] + 1
  end
end
local body, target, recipient = ARGV[3], spec.target, spec.recipient
redis.call('HSET', P .. 't:' .. id, 'body', body, 'target', target, 'recipient', recipient,
  'accepted_at', now, 'queued_at', now, 'due_at', now, 'owner', '', 'lease_until', '0',
  'attempts', '0', 'dispatch_id', '', 'reason', '', 'updated_at', now, 'size', spec.size)
set_state(id, nil, 'queued', now)
enqueue(id, target, now)
if recipient ~= '' then
  local ck = P .. 'c:' .. recipient
  redis.call('ZADD', ck, now, id)
  redis.call('ZREMRANGEBYRANK', ck, 0, -spec.recent - 1)
  redis.call('EXPIRE', ck, spec.recent_ttl)
end
if spec.key ~= '' then
  local expires = tonumber(now) + spec.window_ms / 1000
  redis.call('SET', P .. 'd:' .. spec.key,
    cjson.encode({spec.fingerprint, id, tostring(expires)}), 'PX', spec.window_ms + 60000)
  if redis.call('ZADD', P .. 'dedupes', expires, spec.key) == 1 then
    redis.call('HINCRBY', L, D, spec.dedupe_size)
  end
end
return {'created', id, 'queued', unpack(pruned)}
"""
)

# ARGV: prefix, id, dedupe key, fingerprint, now, fence ttl s, pruned state. After this
# script, the add of `id` has happened (its trigger is found) or never will (fenced).
_SETTLE = (
    _LIB
    + """
local id = ARGV[2]
local state = redis.call('HGET', P .. 't:' .. id, 'state')
if state then return {'created', id, state} end
redis.call('SET', P .. 'fence:' .. id, '1', 'EX', ARGV[6])
return lookup(ARGV[3], ARGV[4], ARGV[5], ARGV[7]) or {'absent'}
"""
)

# ARGV: prefix, owner, now, window, lease until, limit, reason for stale sending
_CLAIM = (
    _LIB
    + """
local now = tonumber(ARGV[3])
local expired = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', '(' .. ARGV[3],
  'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  redis.call('ZREM', P .. 'leases', id)
  local key = P .. 't:' .. id
  local state = redis.call('HGET', key, 'state')
  if state == 'queued' then
    redis.call('HSET', key, 'owner', '', 'lease_until', '0')
    enqueue(id, redis.call('HGET', key, 'target'), redis.call('HGET', key, 'due_at'))
  elseif state == 'sending' then
    redis.call('HSET', key, 'lease_until', '0', 'reason', ARGV[7], 'updated_at', ARGV[3])
    set_state(id, 'sending', 'unknown', ARGV[3])
  end
end
local first = redis.call('ZRANGEBYSCORE', P .. 'targets', '-inf', now - tonumber(ARGV[4]),
  'LIMIT', 0, 1)
if #first == 0 then return {} end
local target = first[1]
local ids = redis.call('ZRANGEBYSCORE', P .. 'q:' .. target, '-inf', ARGV[3], 'LIMIT', 0, ARGV[6])
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. 'q:' .. target, id)
  redis.call('ZADD', P .. 'leases', ARGV[5], id)
  redis.call('HSET', P .. 't:' .. id, 'owner', ARGV[2], 'lease_until', ARGV[5],
    'updated_at', ARGV[3])
end
refresh_target(target)
return ids
"""
)

# ARGV: prefix, spec (JSON), ids...
_MOVE = (
    _LIB
    + """
local spec = cjson.decode(ARGV[2])
local sources = {}
for _, s in ipairs(spec.sources) do sources[s] = true end
local moved = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local key = P .. 't:' .. id
  local got = redis.call('HMGET', key, 'state', 'owner', 'target', 'accepted_at')
  local state, owner, target = got[1], got[2], got[3]
  if state and sources[state] and ((not spec.owned) or owner == spec.owner) then
    for field, value in pairs(spec.fields) do redis.call('HSET', key, field, value) end
    if spec.attempt then redis.call('HINCRBY', key, 'attempts', 1) end
    redis.call('ZREM', P .. 'leases', id)
    if state == 'queued' then
      redis.call('ZREM', P .. 'q:' .. target, id)
      refresh_target(target)
    end
    local score = spec.now
    if spec.to == 'queued' then
      enqueue(id, target, spec.fields.due_at)
      score = got[4]
    elseif spec.to == 'sending' then
      redis.call('ZADD', P .. 'leases', spec.fields.lease_until, id)
    end
    set_state(id, state, spec.to, score)
    table.insert(moved, id)
  end
end
return moved
"""
)

# ARGV: prefix, now, limit, member
_BROADCAST = """
local key = ARGV[1] .. 'broadcasts'
local now = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - 60)
if redis.call('ZCARD', key) >= tonumber(ARGV[3]) then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tostring(tonumber(oldest[2]) + 60 - now)
end
redis.call('ZADD', key, ARGV[2], ARGV[4])
redis.call('EXPIRE', key, 120)
return '0'
"""

# ARGV: prefix, state, cutoff, batch
_PURGE = (
    _LIB
    + """
local ids = redis.call('ZRANGEBYSCORE', P .. 's:' .. ARGV[2], '-inf', ARGV[3], 'LIMIT', 0, ARGV[4])
for _, id in ipairs(ids) do forget(Q, id, ARGV[2]) end
return #ids
"""
)

# ARGV: prefix, now, batch, dedupe size
_EXPIRE_DEDUPES = _LIB + "return expire_dedupes(ARGV[2], ARGV[3], tonumber(ARGV[4]))"


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)


def _record(trigger_id: str, fields: dict, queue: Queue) -> Record | None:
    if not fields:
        return None
    found = {_text(k): _text(v) for k, v in fields.items()}
    return Record(
        id=trigger_id,
        item=queue.decode(found["body"]),
        state=found["state"],
        accepted_at=float(found["accepted_at"]),
        queued_at=float(found["queued_at"]),
        attempts=int(found["attempts"]),
        dispatch_id=found["dispatch_id"],
        reason=found["reason"],
        updated_at=float(found["updated_at"]),
    )


def persistence_warnings(client: redis.Redis) -> list[str]:
    """What is wrong with this Redis for holding triggers, when CONFIG can be read."""
    try:
        found = {
            _text(k): _text(v)
            for name in ("maxmemory-policy", "appendonly")
            for k, v in client.config_get(name).items()
        }
    except redis.RedisError:
        return []  # managed Redis often forbids CONFIG: nothing to say
    policy, appendonly = found.get("maxmemory-policy"), found.get("appendonly")
    warnings = []
    if policy is not None and policy != "noeviction":
        warnings.append(
            f"Redis maxmemory-policy is {policy}: it may evict queued triggers; "
            "set noeviction for the Redis holding the trigger outbox"
        )
    if appendonly is not None and appendonly != "yes":
        warnings.append(
            "Redis appendonly is off: accepted triggers are lost if Redis restarts; "
            "set appendonly yes for the Redis holding the trigger outbox"
        )
    return warnings


class RedisOutbox:
    """`client` for delivery and commands (OUTBOX); `intake` stores what senders wait for,
    within ADD_BOUND (TRIGGER_INTAKE)."""

    def __init__(
        self,
        client: redis.Redis,
        intake: redis.Redis,
        prefix: str = PREFIX,
        queue: Queue = TRIGGERS,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ):
        self.client = client
        self.intake = intake
        self.prefix = prefix
        self.queue = queue
        self.max_bytes = max_bytes
        self._add = client.register_script(_ADD)
        self._settle = client.register_script(_SETTLE)
        self._claim = client.register_script(_CLAIM)
        self._move = client.register_script(_MOVE)
        self._broadcast = client.register_script(_BROADCAST)
        self._purge = client.register_script(_PURGE)
        self._expire_dedupes = client.register_script(_EXPIRE_DEDUPES)

    @classmethod
    def from_url(cls, url: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> RedisOutbox:
        return cls(connect(url, OUTBOX), connect(url, TRIGGER_INTAKE), max_bytes=max_bytes)

    def for_queue(self, queue: Queue) -> RedisOutbox:
        """This outbox's Redis seen through `queue`, within the same bound (closing either
        closes both)."""
        return RedisOutbox(
            self.client, self.intake, prefix_of(queue), queue, max_bytes=self.max_bytes
        )

    def _run(self, script: Any, args: Sequence[object]) -> Any:
        try:
            return script(args=[self.prefix, *args])
        except redis.RedisError as exc:
            raise OutboxError(f"the trigger store failed: {type(exc).__name__}") from None

    def close(self) -> None:
        self.client.close()
        self.intake.close()

    def add(
        self, item: Queued, dedupe: Dedupe | None, *, now: float, max_waiting: int
    ) -> Accepted:
        body, item_id = item.to_json(), new_id(self.queue)
        spec = {
            "id": item_id,
            "now": repr(now),
            "key": dedupe.key if dedupe else "",
            "fingerprint": dedupe.fingerprint if dedupe else "",
            "window_ms": int(dedupe.window * 1000) if dedupe else 0,
            "target": item.target,
            "recipient": item.recipient_index or "",
            "size": COSTS.record(body),
            "dedupe_size": COSTS.per_dedupe,
            "max_bytes": self.max_bytes,
            "max_waiting": max_waiting,
            "prunable": list(PRUNABLE_STATES),
            "pruned": PRUNED,
            "expire_dedupes": EXPIRE_DEDUPES,
            "recent": RECENT_PER_CUSTOMER,
            "recent_ttl": DEAD_RETENTION,
        }
        started = time.monotonic()
        try:
            answer = self._add(args=[self.prefix, json.dumps(spec), body], client=self.intake)
        except RedisNotConnected as exc:
            raise OutboxError(f"the trigger store failed: {type(exc).__name__}") from None
        except (redis.ConnectionError, redis.TimeoutError):
            # Sent, and no answer: Redis may run it yet. Find out, if there is time.
            if time.monotonic() - started + SETTLE_WORST > ADD_BOUND:
                raise OutcomeUnknown() from None
            answer = self._settled(item_id, dedupe, now)
        except redis.RedisError as exc:  # Redis answered with an error: nothing stored
            raise OutboxError(f"the trigger store failed: {type(exc).__name__}") from None
        return self._accepted([_text(part) for part in answer])

    def _settled(self, item_id: str, dedupe: Dedupe | None, now: float) -> list:
        """Whether the add of `item_id` happened; if not, it never will (fenced)."""
        try:
            answer = self._settle(
                args=[
                    self.prefix,
                    item_id,
                    dedupe.key if dedupe else "",
                    dedupe.fingerprint if dedupe else "",
                    repr(now),
                    FENCE_TTL,
                    PRUNED,
                ],
                client=self.intake,
            )
        except redis.RedisError:
            raise OutcomeUnknown() from None
        if _text(answer[0]) == "absent":
            raise OutboxError("the store did not answer in time; the item is not stored")
        return answer

    @staticmethod
    def _accepted(answer: list[str]) -> Accepted:
        outcome, *rest = answer
        if outcome == "conflict":
            raise DedupeConflict()
        if outcome == "full":
            raise OutboxFull()
        if outcome != "created":
            return Accepted(rest[0], rest[1], created=False)
        # What the add pruned, per state; a read-back does not know (the counts are left out).
        pruned = dict(zip(PRUNABLE_STATES, map(int, rest[2:]), strict=False))
        if pruned.get(DEAD):
            log.warning(
                "pruned %d dead letters to make room for new items "
                "(WALLET_PROXY_TRIGGER_MAX_BYTES)",
                pruned[DEAD],
            )
        return Accepted(rest[0], rest[1], created=True, pruned=sum(pruned.values()))

    def claim(
        self, *, owner: str, now: float, window: float, lease: float, limit: int
    ) -> list[Record]:
        ids = self._run(
            self._claim,
            [owner, repr(now), repr(window), repr(now + lease), limit, self.queue.stale_sending],
        )
        records = self._records([_text(i) for i in ids])
        return sorted(records, key=lambda r: (r.accepted_at, r.id))

    def move(
        self,
        move: str,
        ids: Sequence[str],
        *,
        now: float,
        owner: str = "",
        due_at: float | None = None,
        lease_until: float | None = None,
        reason: str | None = None,
        dispatch_id: str | None = None,
    ) -> list[str]:
        rule = MOVES[move]
        if not ids:
            return []
        fields: dict[str, str] = {"updated_at": repr(now)}
        if rule.target == QUEUED:
            fields.update(owner="", lease_until="0", due_at=repr(due_at or now))
            if not rule.owned:
                fields.update(queued_at=repr(now), attempts="0")
        elif rule.target == SENDING:
            fields["lease_until"] = repr(lease_until if lease_until is not None else now)
        else:
            fields["lease_until"] = "0"
        if reason is not None:
            fields["reason"] = reason
        if dispatch_id is not None:
            fields["dispatch_id"] = dispatch_id
        spec = {
            "sources": list(rule.sources),
            "to": rule.target,
            "owned": rule.owned,
            "owner": owner,
            "attempt": rule.counts_attempt,
            "now": repr(now),
            "fields": fields,
        }
        moved = self._run(self._move, [json.dumps(spec), *ids])
        return [_text(i) for i in moved]

    def take_broadcast_slot(self, *, now: float) -> float:
        wait = self._run(
            self._broadcast, [repr(now), BROADCASTS_PER_MINUTE, f"{now!r}:{uuid.uuid4().hex}"]
        )
        return max(0.0, float(_text(wait)))

    def purge(self, *, now: float) -> int:
        removed = 0
        for state, keep in ((SENT, SENT_RETENTION), (DEAD, DEAD_RETENTION)):
            while True:
                count = int(self._run(self._purge, [state, repr(now - keep), BATCH]))
                removed += count
                if count < BATCH:
                    break
        while int(self._run(self._expire_dedupes, [repr(now), BATCH, COSTS.per_dedupe])) == BATCH:
            pass
        return removed

    def _records(self, ids: list[str]) -> list[Record]:
        if not ids:
            return []
        try:
            pipe = self.client.pipeline(transaction=False)
            for trigger_id in ids:
                pipe.hgetall(f"{self.prefix}t:{trigger_id}")
            found = pipe.execute()
        except redis.RedisError as exc:
            raise OutboxError(f"the trigger store failed: {type(exc).__name__}") from None
        records = (_record(i, fields, self.queue) for i, fields in zip(ids, found, strict=True))
        return [record for record in records if record is not None]

    def _ids(self, key: str, *, newest_first: bool, limit: int) -> list[str]:
        try:
            ids = self.client.zrange(f"{self.prefix}{key}", 0, limit - 1, desc=newest_first)
        except redis.RedisError as exc:
            raise OutboxError(f"the trigger store failed: {type(exc).__name__}") from None
        return [_text(i) for i in ids]

    def get(self, trigger_id: str) -> Record | None:
        found = self._records([trigger_id])
        return found[0] if found else None

    def listed(self, state: str, *, limit: int) -> list[Record]:
        return self._records(self._ids(f"s:{state}", newest_first=state in FINISHED, limit=limit))

    def recent(self, recipient: str, *, limit: int = RECENT_PER_CUSTOMER) -> list[Record]:
        return self._records(self._ids(f"c:{recipient}", newest_first=True, limit=limit))

    def usage(self) -> dict[str, int]:
        try:
            found = self.client.hgetall(f"{ROOT}usage")
        except redis.RedisError as exc:
            raise OutboxError(f"the trigger store failed: {type(exc).__name__}") from None
        return {_text(part): int(size) for part, size in found.items()}

    def checks(self) -> dict[str, str]:
        return {}  # Redis's own health is the wallet cache's check

    def counts(self) -> dict[str, int]:
        try:
            pipe = self.client.pipeline(transaction=False)
            for state in ALL_STATES:
                pipe.zcard(f"{self.prefix}s:{state}")
            return dict(zip(ALL_STATES, pipe.execute(), strict=True))
        except redis.RedisError as exc:
            raise OutboxError(f"the trigger store failed: {type(exc).__name__}") from None

    def oldest_queued(self) -> float | None:
        try:
            first = self.client.zrange(f"{self.prefix}s:{QUEUED}", 0, 0, withscores=True)
        except redis.RedisError as exc:
            raise OutboxError(f"the trigger store failed: {type(exc).__name__}") from None
        return float(first[0][1]) if first else None
