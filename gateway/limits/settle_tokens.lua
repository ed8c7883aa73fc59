-- Settle a token reservation to what the call used: the charge keeps its time, so it leaves the
-- budget windows when the reservation would have, and takes the new number of tokens; the
-- running totals that still count it change by the difference (see rate_limit.lua). The same
-- for every subject of the call that has budgets.
--
-- KEYS[2s-1]  subject s's token charges (rate_limit.lua's KEYS[3s-1])
-- KEYS[2s]    subject s's running totals (rate_limit.lua's KEYS[3s])
-- ARGV[1]  the reservation's member: the request's unique id, a colon, the tokens reserved
-- ARGV[2]  the member it becomes: the same id, a colon, the tokens used
-- ARGV[3]  tokens used minus tokens reserved
-- ARGV[4…] for each subject: the number of its budgets, then their window lengths (microseconds)
--
-- Reply: how many subjects held the reservation (0 when its windows have passed everywhere).

local settled = 0
local at = 4
for s = 1, #KEYS / 2 do
  local charges, totals = KEYS[2 * s - 1], KEYS[2 * s]
  local count = tonumber(ARGV[at])
  local since = redis.call("ZSCORE", charges, ARGV[1])
  if since then
    redis.call("ZREM", charges, ARGV[1])
    redis.call("ZADD", charges, since, ARGV[2])
    for i = at + 1, at + count do
      local mark = redis.call("HGET", totals, "w:" .. ARGV[i])
      if mark and tonumber(since) > tonumber(mark) then
        redis.call("HINCRBY", totals, "u:" .. ARGV[i], ARGV[3])
      end
    end
    settled = settled + 1
  end
  at = at + count + 1
end
return settled
