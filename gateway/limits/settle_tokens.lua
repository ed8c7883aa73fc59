-- Settle a token reservation to what the call used: the charge keeps its time, so it leaves the
-- budget windows when the reservation would have, and takes the new number of tokens; the
-- running totals that still count it change by the difference (see rate_limit.lua).
--
-- KEYS[1]  the client's token charges (rate_limit.lua's KEYS[2])
-- KEYS[2]  the client's running totals (rate_limit.lua's KEYS[3])
-- ARGV[1]  the reservation's member: the request's unique id, a colon, the tokens reserved
-- ARGV[2]  the member it becomes: the same id, a colon, the tokens used
-- ARGV[3]  tokens used minus tokens reserved
-- ARGV[4…] the budget window lengths (microseconds)
--
-- Reply: 1, or 0 when the reservation is gone (its windows have passed: nothing left to settle).

local at = redis.call("ZSCORE", KEYS[1], ARGV[1])
if not at then
  return 0
end
redis.call("ZREM", KEYS[1], ARGV[1])
redis.call("ZADD", KEYS[1], at, ARGV[2])
for i = 4, #ARGV do
  local mark = redis.call("HGET", KEYS[2], "w:" .. ARGV[i])
  if mark and tonumber(at) > tonumber(mark) then
    redis.call("HINCRBY", KEYS[2], "u:" .. ARGV[i], ARGV[3])
  end
end
return 1
