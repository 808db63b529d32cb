"""
The Lua scripts the shared state runs in Redis, and its key layout: every
key under L{PREFIX}, client identities and upstream URLs only as hashes.

Each script is one atomic step; the state's logic around them is
L{pylon_ai.gateway._redis.RedisState}.
"""

from __future__ import annotations

import hashlib

PREFIX = "pylon:"

# Time is Redis's own (TIME), so that instances with skewed clocks agree.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: KEYS: requests window, leases, tokens.  ARGV: requests per minute,
#: concurrency, tokens per minute, lease id, lease ms, window ms.
#: Returns {0} (admitted) or {1 requests | 2 concurrency | 3 tokens, wait ms}.
ADMIT = (
    _NOW
    + """
local rpm, conc, tpm = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local lease, ttl, window = ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
if conc > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZCARD', KEYS[2]) >= conc then return {2, 1000} end
end
if tpm > 0 then
  local minute = math.floor(now / 60000)
  local cur = tonumber(redis.call('HGET', KEYS[3], minute) or '0')
  local prev = tonumber(redis.call('HGET', KEYS[3], minute - 1) or '0')
  if prev * (1 - (now % 60000) / 60000) + cur >= tpm then
    return {3, 60000 - now % 60000}
  end
end
if rpm > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  if redis.call('ZCARD', KEYS[1]) >= rpm then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    return {1, tonumber(oldest[2]) + window - now}
  end
  redis.call('ZADD', KEYS[1], now, lease)
  redis.call('PEXPIRE', KEYS[1], window)
end
if conc > 0 then
  redis.call('ZADD', KEYS[2], now + ttl, lease)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return {0, 0}
"""
)

#: Per finished request, KEYS: its leases and its tokens; ARGV: its lease
#: id and the tokens it used.  Requests that end in the same reactor turn
#: share one call.
FINISH = (
    _NOW
    + """
local minute = math.floor(now / 60000)
for i = 1, #KEYS / 2 do
  redis.call('ZREM', KEYS[2 * i - 1], ARGV[2 * i - 1])
  local tokens = tonumber(ARGV[2 * i])
  if tokens > 0 then
    local key = KEYS[2 * i]
    redis.call('HINCRBY', key, minute, tokens)
    redis.call('HDEL', key, minute - 2)
    redis.call('PEXPIRE', key, 120000)
  end
end
return #KEYS / 2
"""
)

#: KEYS: the leases' sets.  ARGV: lease ms, then one lease id per key.
RENEW = (
    _NOW
    + """
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, 'XX', now + ttl, ARGV[i + 1])
  redis.call('PEXPIRE', key, ttl)
end
return #KEYS
"""
)

#: ARGV: prefix, instance id, ms the counts live, then per deployment its
#: key and this instance's count.  Returns per deployment the other
#: instances' count and the cooldown's ms left (negative: none).
EXCHANGE = (
    _NOW
    + """
local p, me, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local inst = p .. 'instances'
redis.call('ZADD', inst, now + ttl, me)
redis.call('ZREMRANGEBYSCORE', inst, '-inf', now)
redis.call('PEXPIRE', inst, ttl)
local mine = p .. 'busy:' .. me
local n = (#ARGV - 3) / 2
for i = 1, n do
  redis.call('HSET', mine, ARGV[2 + 2 * i], ARGV[3 + 2 * i])
end
redis.call('PEXPIRE', mine, ttl)
local others = redis.call('ZRANGE', inst, 0, -1)
local out = {}
for i = 1, n do
  local dep = ARGV[2 + 2 * i]
  local busy = 0
  for _, o in ipairs(others) do
    if o ~= me then
      busy = busy + tonumber(redis.call('HGET', p .. 'busy:' .. o, dep) or '0')
    end
  end
  out[#out + 1] = busy
  out[#out + 1] = redis.call('PTTL', p .. 'cool:' .. dep)
end
return out
"""
)

#: KEYS: failures, cooldown.  ARGV: failures that start a cooldown, its ms,
#: ms a failure count lives.  Returns the cooldown's ms, or 0.
FAILED = """
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if n >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  redis.call('DEL', KEYS[1])
  return tonumber(ARGV[2])
end
return 0
"""


def _hashed(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]
