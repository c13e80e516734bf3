"""The outbox in Redis, shared by every instance: any of them delivers what another accepted.

Each change is one Lua script, so it is atomic and every instance sees the same queue.
Each queue of the outbox (outbox.Queue) has its keys under `wallet-proxy:<queue>:`
(`wallet-proxy:triggers:` for the triggers). Layout under it: `t:<id>` a hash per item;
`s:<state>` a sorted set of ids per state (counts, listings, purging); `q:<target>` the
unclaimed queued ids of one campaign or Canvas by due time, and `targets` each target by
its earliest due time (what to batch next); `leases` claimed and sending ids by lease
end; `d:<key>` de-duplication records that expire by themselves; `c:<external id>` a
customer's recent items; `broadcasts` the last minute's broadcast calls.

Redis holding triggers must persist (appendonly yes) and never evict (maxmemory-policy
noeviction): an evicted key is a lost trigger. `persistence_warnings` reads both when
CONFIG is allowed. A single Redis (or a primary with replicas), not Redis Cluster: the
scripts touch keys they compute.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import Any

import redis

from ..redis_clients import OUTBOX, connect
from .model import QUEUED, SENDING, SENT, Record
from .outbox import (
    ALL_STATES,
    BROADCASTS_PER_MINUTE,
    DEAD_RETENTION,
    FINISHED,
    MOVES,
    RECENT_PER_CUSTOMER,
    SENT_RETENTION,
    TRIGGERS,
    Accepted,
    Dedupe,
    DedupeConflict,
    OutboxError,
    OutboxFull,
    Queue,
    Queued,
)
from .sqlite_outbox import new_id


def prefix_of(queue: Queue) -> str:
    return f"wallet-proxy:{queue.name}:"


PREFIX = prefix_of(TRIGGERS)
BATCH = 1000

_LIB = """
local P = ARGV[1]
local function set_state(id, old, new, score)
  if old then redis.call('ZREM', P .. 's:' .. old, id) end
  redis.call('ZADD', P .. 's:' .. new, score, id)
  redis.call('HSET', P .. 't:' .. id, 'state', new)
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

# ARGV: prefix, id, body, target, recipient, now, dedupe key ('' for none), fingerprint,
# window ms, max waiting, recent per customer, recent ttl s. A dedupe record holds its own
# expiry (the caller's clock decides) and Redis drops it a minute after that.
_ADD = (
    _LIB
    + """
local dk = P .. 'd:' .. ARGV[7]
local found = ARGV[7] ~= '' and redis.call('GET', dk)
if found then
  local record = cjson.decode(found)
  if tonumber(record[3]) > tonumber(ARGV[6]) then
    if record[1] ~= ARGV[8] then return {'conflict'} end
    local state = redis.call('HGET', P .. 't:' .. record[2], 'state')
    return {'found', record[2], state or 'sent'}
  end
end
local waiting = redis.call('ZCARD', P .. 's:queued') + redis.call('ZCARD', P .. 's:sending')
if waiting >= tonumber(ARGV[10]) then return {'full'} end
local id, now = ARGV[2], ARGV[6]
redis.call('HSET', P .. 't:' .. id, 'body', ARGV[3], 'target', ARGV[4], 'recipient', ARGV[5],
  'accepted_at', now, 'queued_at', now, 'due_at', now, 'owner', '', 'lease_until', '0',
  'attempts', '0', 'dispatch_id', '', 'reason', '', 'updated_at', now)
set_state(id, nil, 'queued', now)
enqueue(id, ARGV[4], now)
if ARGV[5] ~= '' then
  local ck = P .. 'c:' .. ARGV[5]
  redis.call('ZADD', ck, now, id)
  redis.call('ZREMRANGEBYRANK', ck, 0, -tonumber(ARGV[11]) - 1)
  redis.call('EXPIRE', ck, ARGV[12])
end
if ARGV[7] ~= '' then
  local expires = tonumber(now) + tonumber(ARGV[9]) / 1000
  redis.call('SET', dk, cjson.encode({ARGV[8], id, tostring(expires)}), 'PX', ARGV[9] + 60000)
end
return {'created', id, 'queued'}
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
_PURGE = """
local P = ARGV[1]
local ids = redis.call('ZRANGEBYSCORE', P .. 's:' .. ARGV[2], '-inf', ARGV[3], 'LIMIT', 0, ARGV[4])
for _, id in ipairs(ids) do
  redis.call('DEL', P .. 't:' .. id)
  redis.call('ZREM', P .. 's:' .. ARGV[2], id)
end
return #ids
"""


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
    def __init__(self, client: redis.Redis, prefix: str = PREFIX, queue: Queue = TRIGGERS):
        self.client = client
        self.prefix = prefix
        self.queue = queue
        self._add = client.register_script(_ADD)
        self._claim = client.register_script(_CLAIM)
        self._move = client.register_script(_MOVE)
        self._broadcast = client.register_script(_BROADCAST)
        self._purge = client.register_script(_PURGE)

    @classmethod
    def from_url(cls, url: str) -> RedisOutbox:
        # The outbox profile: longer timeouts than the cache's, as a slow answer is better
        # than a lost trigger.
        client = connect(url, OUTBOX)
        return cls(client)

    def for_queue(self, queue: Queue) -> RedisOutbox:
        """This outbox's Redis seen through `queue` (closing either closes both)."""
        return RedisOutbox(self.client, prefix_of(queue), queue)

    def _run(self, script: Any, args: Sequence[object]) -> Any:
        try:
            return script(args=[self.prefix, *args])
        except redis.RedisError as exc:
            raise OutboxError(f"the trigger store failed: {type(exc).__name__}") from None

    def close(self) -> None:
        self.client.close()

    def add(
        self, item: Queued, dedupe: Dedupe | None, *, now: float, max_waiting: int
    ) -> Accepted:
        answer = self._run(
            self._add,
            [
                new_id(self.queue),
                item.to_json(),
                item.target,
                item.recipient_index or "",
                repr(now),
                dedupe.key if dedupe else "",
                dedupe.fingerprint if dedupe else "",
                int(dedupe.window * 1000) if dedupe else 0,
                max_waiting,
                RECENT_PER_CUSTOMER,
                DEAD_RETENTION,
            ],
        )
        outcome, *rest = [_text(part) for part in answer]
        if outcome == "conflict":
            raise DedupeConflict()
        if outcome == "full":
            raise OutboxFull()
        return Accepted(rest[0], rest[1], created=outcome == "created")

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
        for state, keep in ((SENT, SENT_RETENTION), ("dead", DEAD_RETENTION)):
            while True:
                count = int(self._run(self._purge, [state, repr(now - keep), BATCH]))
                removed += count
                if count < BATCH:
                    break
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
