"""The Redis store's Lua scripts as first merged (issue 5), for the before/after figures.

Kept verbatim from `src/apiguard/storage/_scripts.py` at that commit, so that
`benchmarks/_script_costs.py` can measure their server time beside the current
ones in the same run. The original docstring follows.

The Lua scripts the Redis store runs: one round trip per request, every strategy.

Each script checks every quota of a policy, then counts the request against
all of them or none (Redis runs a script atomically), and returns what the
headers need, so that a request costs one `EVALSHA` whatever the strategy
and the number of quotas. Time is the server's (`TIME`), so that every
worker and host sharing the store agrees on window boundaries; the expiries
are set on the same clock.

KEYS: one per quota, all with one hash tag (one cluster slot).
ARGV: cost, then `amount, window in ms` per quota.
Returns `{admitted, used_1, reset_ms_1, retry_ms_1, used_2, ...}` with
`retry_ms = -1` for a quota that did not refuse.
"""

from __future__ import annotations

_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local cost = tonumber(ARGV[1])
local n = #KEYS
local admitted = 1
local out = {0}
"""

FIXED_WINDOW = (
    _PRELUDE
    + """
local counts, ends, index = {}, {}, {}
for i = 1, n do
  local amount, w = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local idx = math.floor(now / w)
  local state = redis.call('HMGET', KEYS[i], 'i', 'c')
  local count = 0
  if tonumber(state[1]) == idx then count = tonumber(state[2]) or 0 end
  counts[i], ends[i], index[i] = count, (idx + 1) * w, idx
  out[3 * i + 1] = -1
  if count + cost > amount then
    admitted = 0
    out[3 * i + 1] = math.ceil(ends[i] - now)
  end
end
for i = 1, n do
  if admitted == 1 then
    counts[i] = counts[i] + cost
    redis.call('HSET', KEYS[i], 'i', index[i], 'c', counts[i])
    redis.call('PEXPIREAT', KEYS[i], ends[i])
  end
  out[3 * i - 1] = counts[i]
  out[3 * i] = math.ceil(ends[i] - now)
end
out[1] = admitted
return out
"""
)

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

SLIDING_WINDOW_COUNTER = (
    _PRELUDE
    + """
-- seconds until previous * (until_end - x) / w + current < target (see _base.sliding_wait)
local function wait(previous, current, w, until_end, target)
  if target <= 0 then return -2 end
  if previous * until_end / w + current < target then return 0 end
  if current < target then return until_end - w * (target - current) / previous + 1 end
  return until_end + w * (1 - target / current) + 1
end
local cur, prev, ends, index = {}, {}, {}, {}
for i = 1, n do
  local amount, w = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local idx = math.floor(now / w)
  local state = redis.call('HMGET', KEYS[i], 'i', 'c', 'p')
  local at = tonumber(state[1])
  local c, p = 0, 0
  if at == idx then
    c, p = tonumber(state[2]) or 0, tonumber(state[3]) or 0
  elseif at == idx - 1 then
    p = tonumber(state[2]) or 0
  end
  cur[i], prev[i], ends[i], index[i] = c, p, (idx + 1) * w, idx
  local until_end = ends[i] - now
  out[3 * i + 1] = -1
  if math.floor(p * until_end / w + c) + cost > amount then
    admitted = 0
    out[3 * i + 1] = math.ceil(wait(p, c, w, until_end, amount - cost + 1))
  end
end
for i = 1, n do
  local w = tonumber(ARGV[2 * i + 1])
  if admitted == 1 then
    cur[i] = cur[i] + cost
    redis.call('HSET', KEYS[i], 'i', index[i], 'c', cur[i], 'p', prev[i])
    redis.call('PEXPIREAT', KEYS[i], ends[i] + w)
  end
  local until_end = ends[i] - now
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
)

SCRIPTS = {
    "fixed-window": FIXED_WINDOW,
    "moving-window": MOVING_WINDOW,
    "sliding-window-counter": SLIDING_WINDOW_COUNTER,
}
