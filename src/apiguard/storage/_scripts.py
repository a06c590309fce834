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
| fixed window | 1 | 10.0 | 0.4 (`INCRBY`, no script) |
| fixed window | 2 | 14.1 | 5.9 |
| sliding window counter | 1 | 11.4 | 7.9 |
| sliding window counter | 2 | 16.5 | 11.4 |
| moving window | 1 | 15.6 | 14.0 (unchanged) |
"""

from __future__ import annotations

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
#: quotas (one quota and one unit is plain `INCRBY` + `PEXPIRE`: see
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
