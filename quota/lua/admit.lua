-- Check every limit of one request and take them all, or take nothing.
-- KEYS: tenant rate window, user rate window, stream leases, the day's ledger, reservations
--       held by requests in progress (ticket -> "day:tokens:nano_usd"); one hash tag.
-- ARGV: now_ms, ticket, rpm, user_rpm (0: none), streams, lease_ms, window_ms,
--       ask_tokens, ask_nano_usd, daily_tokens, daily_nano_usd (-1: none), ledger_ttl_s, day
-- Returns {refusal, retry_after_ms, held_by_reservations}; refusal 0 means admitted.
local now = tonumber(ARGV[1])
local ticket = ARGV[2]
local rpm, user_rpm, streams = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local lease, window = tonumber(ARGV[6]), tonumber(ARGV[7])
local ask_tokens, ask_usd = tonumber(ARGV[8]), tonumber(ARGV[9])
local daily_tokens, daily_usd = tonumber(ARGV[10]), tonumber(ARGV[11])

local function window_wait(key, limit)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  if redis.call('ZCARD', key) < limit then return nil end
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return tonumber(oldest[2]) + window - now
end

-- Run twice for one ticket (a client retry after a lost reply), it has already admitted it.
if redis.call('HEXISTS', KEYS[5], ticket) == 1 then return {0, 0, 0} end

local wait = window_wait(KEYS[1], rpm)
if wait then return {1, wait, 0} end
if user_rpm > 0 then
  wait = window_wait(KEYS[2], user_rpm)
  if wait then return {2, wait, 0} end
end
local function release(field, amount)
  local left = (tonumber(redis.call('HGET', KEYS[4], field)) or 0) - tonumber(amount)
  if left < 0 then left = 0 end
  redis.call('HSET', KEYS[4], field, left)
end

-- Leases that lapsed belong to requests whose replica died before settling: free their
-- stream slots and give back what they reserved from today's budget.
for _, lapsed in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now)) do
  local hold = redis.call('HGET', KEYS[5], lapsed)
  if hold then
    local day, tokens, usd = string.match(hold, '^(%d+):(%d+):(%d+)$')
    if day == ARGV[13] then
      release('reserved_tokens', tokens)
      release('reserved_nano_usd', usd)
    end
    redis.call('HDEL', KEYS[5], lapsed)
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('ZCARD', KEYS[3]) >= streams then return {3, 1000, 0} end

local day = redis.call('HMGET', KEYS[4], 'input_tokens', 'output_tokens', 'reserved_tokens',
                       'spent_nano_usd', 'reserved_nano_usd')
local spent_tokens = (tonumber(day[1]) or 0) + (tonumber(day[2]) or 0)
if spent_tokens + (tonumber(day[3]) or 0) + ask_tokens > daily_tokens then
  return {4, 0, spent_tokens + ask_tokens <= daily_tokens and 1 or 0}
end
if daily_usd >= 0 then
  local spent_usd = tonumber(day[4]) or 0
  if spent_usd + (tonumber(day[5]) or 0) + ask_usd > daily_usd then
    return {5, 0, spent_usd + ask_usd <= daily_usd and 1 or 0}
  end
end

redis.call('ZADD', KEYS[1], now, ticket)
redis.call('PEXPIRE', KEYS[1], window)
if user_rpm > 0 then
  redis.call('ZADD', KEYS[2], now, ticket)
  redis.call('PEXPIRE', KEYS[2], window)
end
local ttl = tonumber(ARGV[12])
redis.call('ZADD', KEYS[3], now + lease, ticket)
redis.call('EXPIRE', KEYS[3], ttl)
redis.call('HSET', KEYS[5], ticket, ARGV[13] .. ':' .. ARGV[8] .. ':' .. ARGV[9])
redis.call('EXPIRE', KEYS[5], ttl)
redis.call('HINCRBY', KEYS[4], 'reserved_tokens', ask_tokens)
redis.call('HINCRBY', KEYS[4], 'reserved_nano_usd', ask_usd)
redis.call('EXPIRE', KEYS[4], ttl)
return {0, 0, 0}
