"""The Lua scripts the Redis store runs: one round trip per request, every strategy.

Each script checks every quota of a policy, then counts the request against
all of them or none (Redis runs a script atomically), and returns what the
headers need, so that a request costs one `EVALSHA` whatever the strategy
and the number of quotas. The most common policy, one quota on a fixed
window and a request of one unit, needs no script at all (see
`_remote.py`).

Time: the fixed window and the sliding window counter are aligned on
apiguard's clock, as with every other store: the caller names each
window's counter by its index (one plain string per window, all with the
request's hash tag: one cluster slot) and passes the expiries as
durations. The moving window keeps the server's clock (`TIME`), since
every host's hits share one sorted set and must be stamped on one clock.

Server time per call (`INFO commandstats` usec_per_call, calls one after
the other, redis-server 7.0 on loopback; `python -m benchmarks ratelimit`
prints them), before (the issue-5 scripts: a hash per counter read and
rewritten on every hit, `TIME` in each) and now:

| strategy | quotas | before µs | now µs |
|---|---:|---:|---:|
| fixed window | 1 | 10.0 | 0.4 (`INCRBY`, no script; `SET ... NX` before it since: see below) |
| fixed window | 2 | 14.1 | 5.9 |
| sliding window counter | 1 | 11.4 | 7.9 |
| sliding window counter | 2 | 16.5 | 11.4 |
| moving window | 1 | 15.6 | 14.0 (unchanged) |
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Final

from apiguard.storage._base import Quota, Verdict

# Milliseconds since the epoch, on the server's clock (a whole number: Lua
# turns it into an integer reply exactly).
_NOW = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
"""

# What the moving window and the sliding window counter return:
# `{admitted, used_1, reset_ms_1, retry_ms_1, used_2, ...}`, with
# `retry_ms = -1` for a quota that did not refuse.
_PRELUDE = (
    _NOW
    + """
local cost = tonumber(ARGV[1])
local n = #KEYS
local admitted = 1
local out = {0}
"""
)

#: The fixed window, for a request of several units or a policy of several
#: quotas (one quota and one unit is plain `SET ... NX` + `INCRBY`: see
#: `_remote.py`). The caller names each quota's counter by its window's
#: index on apiguard's clock, and gives the milliseconds it must live.
#: Count against all; when one refuses, take the cost back from all (inside
#: the script: nobody sees the overshoot). Returns the counts after the
#: increment.
FIXED_WINDOW = """
local cost = tonumber(ARGV[1])
local counts = {}
local refused = false
for i = 1, #KEYS do
  local count = redis.call('INCRBY', KEYS[i], cost)
  if count == cost then redis.call('PEXPIRE', KEYS[i], ARGV[2 * i + 1]) end
  counts[i] = count
  if count > tonumber(ARGV[2 * i]) then refused = true end
end
if refused then
  for i = 1, #KEYS do redis.call('DECRBY', KEYS[i], cost) end
end
return counts
"""

#: The moving window, on the server's clock: one sorted-set entry per unit.
#: KEYS: one sorted set per quota. ARGV: cost, then `amount, window ms` per
#: quota.
MOVING_WINDOW = (
    _PRELUDE
    + """
local counts = {}
for i = 1, n do
  local amount, w = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - w)
  local count = redis.call('ZCARD', KEYS[i])
  counts[i] = count
  out[3 * i + 1] = -1
  if count + cost > amount then
    admitted = 0
    -- the hit whose expiry leaves room for this request's cost
    local hit = redis.call('ZRANGE', KEYS[i], count + cost - amount - 1,
                           count + cost - amount - 1, 'WITHSCORES')
    out[3 * i + 1] = math.ceil(tonumber(hit[2]) + w - now)
  end
end
for i = 1, n do
  local w = tonumber(ARGV[2 * i + 1])
  if admitted == 1 then
    local stamp = t[1] .. '.' .. t[2] .. ':'
    for j = 1, cost do
      redis.call('ZADD', KEYS[i], now, stamp .. j)
    end
    redis.call('PEXPIRE', KEYS[i], math.ceil(w))
    counts[i] = counts[i] + cost
  end
  out[3 * i - 1] = counts[i]
  local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
  if oldest[2] then
    out[3 * i] = math.ceil(tonumber(oldest[2]) + w - now)
  else
    out[3 * i] = 0
  end
end
out[1] = admitted
return out
"""
)

#: The sliding window counter. The caller names each quota's counters by
#: window index on apiguard's clock (this window's, the last one's: plain
#: strings, one MGET) and gives the milliseconds until this window ends.
#: KEYS: `current_1, previous_1, current_2, ...`. ARGV: cost, then per quota
#: `amount, window ms, ms until the window ends, ms the counter must live`.
SLIDING_WINDOW_COUNTER = """
-- ms until previous * (until_end - x) / w + current < target (see _base.sliding_wait)
local function wait(previous, current, w, until_end, target)
  if target <= 0 then return -2 end
  if previous * until_end / w + current < target then return 0 end
  if current < target then return until_end - w * (target - current) / previous + 1 end
  return until_end + w * (1 - target / current) + 1
end
local cost = tonumber(ARGV[1])
local n = #KEYS / 2
local admitted = 1
local out = {0}
local cur, prev = {}, {}
for i = 1, n do
  local amount, w = tonumber(ARGV[4 * i - 2]), tonumber(ARGV[4 * i - 1])
  local until_end = tonumber(ARGV[4 * i])
  local state = redis.call('MGET', KEYS[2 * i - 1], KEYS[2 * i])
  local c, p = tonumber(state[1]) or 0, tonumber(state[2]) or 0
  cur[i], prev[i] = c, p
  out[3 * i + 1] = -1
  if math.floor(p * until_end / w + c) + cost > amount then
    admitted = 0
    out[3 * i + 1] = math.ceil(wait(p, c, w, until_end, amount - cost + 1))
  end
end
for i = 1, n do
  local w, until_end = tonumber(ARGV[4 * i - 1]), tonumber(ARGV[4 * i])
  if admitted == 1 then
    cur[i] = redis.call('INCRBY', KEYS[2 * i - 1], cost)
    -- it lives one window longer: it is the next window's previous count
    if cur[i] == cost then redis.call('PEXPIRE', KEYS[2 * i - 1], ARGV[4 * i + 1]) end
  end
  local used = math.floor(prev[i] * until_end / w + cur[i])
  out[3 * i - 1] = used
  if used > 0 then
    out[3 * i] = math.ceil(wait(prev[i], cur[i], w, until_end, used))
  else
    out[3 * i] = 0
  end
end
out[1] = admitted
return out
"""

SCRIPTS = {
    "fixed-window": FIXED_WINDOW,
    "moving-window": MOVING_WINDOW,
    "sliding-window-counter": SLIDING_WINDOW_COUNTER,
}


# --- what the scripts take and return ---------------------------------------------

_CODES: Final = {"fixed-window": "fw", "moving-window": "mw", "sliding-window-counter": "sw"}


def _bulk(value: int) -> bytes:
    text = b"%d" % value
    return b"$%d\r\n%b\r\n" % (len(text), text)


#: The cost argument, encoded, for the usual small costs.
_COSTS: Final = tuple(_bulk(cost) for cost in range(16))
_INCRBY: Final = b"*3\r\n$6\r\nINCRBY\r\n$"
#: `SET <key> 0 PX <ms> NX`, in pieces around the key and the milliseconds.
_SET: Final = b"*6\r\n$3\r\nSET\r\n$"
_ZERO_PX: Final = b"$1\r\n0\r\n$2\r\nPX\r\n"
_NX: Final = b"$2\r\nNX\r\n"
#: A fixed window's counter outlives its window by this much, so that a
#: host whose clock runs a little ahead cannot expire it early for the others.
_GRACE_MS: Final = 1000

#: A policy's quotas, their key suffixes (`fw:<uid>`), its encoded `amount,
#: window ms` arguments.
_Encoded = tuple[Sequence[Quota], tuple[bytes, ...], bytes]


def _ttl_ms(reset: float) -> int:
    return math.ceil(reset * 1000) + _GRACE_MS


def _encode_policy(quotas: Sequence[Quota], code: bytes) -> _Encoded:
    suffixes = tuple(b"%b:%b" % (code, quota.uid.encode()) for quota in quotas)
    arguments = b"".join(_bulk(quota.amount) + _bulk(quota.window * 1000) for quota in quotas)
    return quotas, suffixes, arguments


def _fixed_keys(
    tagged: bytes, quotas: Sequence[Quota], now: float
) -> tuple[list[bytes], list[float]]:
    """Each quota's counter for the window `now` is in, and the seconds until it ends.

    Fixed windows are aligned on apiguard's clock (as with the memory store):
    the counter is named by the window's index, so a window's count never
    outlives it, whatever happens to the expiry. `tagged` is the request's
    [`tag`][apiguard.storage._keys.tag]: every counter in one cluster slot.
    """
    names = []
    resets = []
    for quota in quotas:
        index = now // quota.window
        names.append(b"%bfw:%b:%d" % (tagged, quota.uid.encode(), index))
        resets.append((index + 1) * quota.window - now)
    return names, resets


def _sliding_args(
    tagged: bytes, quotas: Sequence[Quota], cost: int, now: float
) -> tuple[list[bytes], list[int]]:
    """The sliding window counter script's keys and arguments, on apiguard's clock.

    Per quota, this window's counter and the last one's, named by index (it
    lives one window past its end: it is the next window's previous count).
    """
    keys: list[bytes] = []
    arguments = [cost]
    for quota in quotas:
        index = now // quota.window
        until_end = math.ceil(((index + 1) * quota.window - now) * 1000)
        name = b"%bsw:%b:" % (tagged, quota.uid.encode())
        keys += (b"%b%d" % (name, index), b"%b%d" % (name, index - 1))
        window = quota.window * 1000
        arguments += (quota.amount, window, until_end, until_end + window + _GRACE_MS)
    return keys, arguments


def _encode(keys: list[bytes], arguments: list[int]) -> bytes:
    """Keys and arguments as RESP bulk strings, for a script's tail."""
    parts = [b"$%d\r\n%b\r\n" % (len(name), name) for name in keys]
    parts += [_COSTS[a] if 0 <= a < len(_COSTS) else _bulk(a) for a in arguments]
    return b"".join(parts)


def _fixed_tail(entry: _Encoded, tagged: bytes, cost: int, now: float) -> tuple[bytes, list[float]]:
    """The encoded keys and arguments of the fixed-window script, and each quota's reset."""
    quotas, suffixes, _ = entry
    parts = []
    resets = []
    arguments = [_COSTS[cost] if cost < len(_COSTS) else _bulk(cost)]
    for quota, suffix in zip(quotas, suffixes, strict=True):
        index = now // quota.window
        reset = (index + 1) * quota.window - now
        name = b"%b%b:%d" % (tagged, suffix, index)
        parts.append(b"$%d\r\n%b\r\n" % (len(name), name))
        arguments += (_bulk(quota.amount), _bulk(_ttl_ms(reset)))
        resets.append(reset)
    return b"".join(parts + arguments), resets


def _fixed_verdict(
    counts: list[int], quotas: Sequence[Quota], cost: int, resets: list[float]
) -> Verdict:
    """The fixed-window script's counts (after the increment) as a verdict."""
    violated = tuple([i for i, quota in enumerate(quotas) if counts[i] > quota.amount])
    if not violated:
        return Verdict(True, tuple(counts), tuple(resets))
    # Refused: the script took the cost back. A counter may stand above its
    # amount (refused one-unit requests are not taken back): report it full.
    used = tuple([min(counts[i] - cost, quota.amount) for i, quota in enumerate(quotas)])
    retry = max(resets[i] for i in violated)
    return Verdict(False, used, tuple(resets), retry, violated)


def _parse_reply(reply: list[int], count: int) -> Verdict:
    admitted = bool(reply[0])
    used = tuple([int(reply[3 * i + 1]) for i in range(count)])
    reset = tuple([int(reply[3 * i + 2]) / 1000 for i in range(count)])
    violated = tuple([i for i in range(count) if int(reply[3 * i + 3]) >= 0])
    retry = max((int(reply[3 * i + 3]) / 1000 for i in violated), default=0.0)
    return Verdict(admitted, used, reset, retry, violated)
