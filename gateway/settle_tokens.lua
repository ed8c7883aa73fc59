-- Settle a token reservation to what the call used: the charge keeps its time, so it leaves the
-- budget windows when the reservation would have, and takes the new number of tokens.
--
-- KEYS[1]  the client's token charges (rate_limit.lua's KEYS[2])
-- ARGV[1]  the reservation's member: the request's unique id, a colon, the tokens reserved
-- ARGV[2]  the member it becomes: the same id, a colon, the tokens used
--
-- Reply: 1, or 0 when the reservation is gone (its windows have passed: nothing left to settle).

local at = redis.call("ZSCORE", KEYS[1], ARGV[1])
if not at then
  return 0
end
redis.call("ZREM", KEYS[1], ARGV[1])
redis.call("ZADD", KEYS[1], at, ARGV[2])
return 1
