-- Free a request's stream slot and settle its reservation to what it really spent.
-- KEYS: stream leases, the day's ledger, reservations held by requests in progress.
-- ARGV: ticket, ask_tokens, ask_nano_usd, input_tokens, output_tokens, spent_nano_usd,
--       ledger_ttl_s
-- A reservation is settled once: by this, or (released unbilled) by an admission that found
-- its lease lapsed. Run again for the same ticket, or for a ticket that was never admitted
-- (an admission whose reply was lost may or may not have run), this changes nothing.
local held = redis.call('HDEL', KEYS[3], ARGV[1]) == 1
redis.call('ZREM', KEYS[1], ARGV[1])
if not held then return 0 end

local function release(field, amount)
  local left = (tonumber(redis.call('HGET', KEYS[2], field)) or 0) - tonumber(amount)
  if left < 0 then left = 0 end
  redis.call('HSET', KEYS[2], field, left)
end

release('reserved_tokens', ARGV[2])
release('reserved_nano_usd', ARGV[3])
redis.call('HINCRBY', KEYS[2], 'input_tokens', ARGV[4])
redis.call('HINCRBY', KEYS[2], 'output_tokens', ARGV[5])
redis.call('HINCRBY', KEYS[2], 'spent_nano_usd', ARGV[6])
redis.call('HINCRBY', KEYS[2], 'requests', 1)
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[7]))
return 0
