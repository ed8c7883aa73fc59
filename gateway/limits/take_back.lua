-- Take back a call one subject admitted when another refused it: on a Redis Cluster the subjects
-- of a call live in different slots and are decided one after the other (see redis_backend.py).
--
-- KEYS[1..3]  the subject's keys, as rate_limit.lua's KEYS[1..3]
-- ARGV[1]  the call's member
-- ARGV[2]  the tokens it reserved ("" when it reserved none)
-- ARGV[3…] the subject's budget window lengths (microseconds)
--
-- Reply: 1.

redis.call("ZREM", KEYS[1], ARGV[1])
if ARGV[2] ~= "" then
  local charge = ARGV[1] .. ":" .. ARGV[2]
  local since = redis.call("ZSCORE", KEYS[2], charge)
  if since then
    redis.call("ZREM", KEYS[2], charge)
    for i = 3, #ARGV do
      local mark = redis.call("HGET", KEYS[3], "w:" .. ARGV[i])
      if mark and tonumber(since) > tonumber(mark) then
        redis.call("HINCRBY", KEYS[3], "u:" .. ARGV[i], -tonumber(ARGV[2]))
      end
    end
  end
end
return 1
