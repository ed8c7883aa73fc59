-- Sliding-log rate limit: one atomic decision over every window; the request is recorded
-- only if every window admits it, so a refused request consumes nothing.
--
-- KEYS[1]  sorted set of the client's admitted requests: score = time in microseconds,
--          member = a unique id
-- ARGV[1]  the time in microseconds, or "" to read Redis TIME (so every replica agrees)
-- ARGV[2]  the unique member recording this request
-- ARGV[3]  n, the number of request windows, then n pairs: window length (microseconds), limit
--
-- Reply: {allowed, remaining_1, reset_1, ..., remaining_n, reset_n}. reset_i is the number of
-- microseconds until window i frees a unit (0 when it holds nothing); when refused, the windows
-- with remaining 0 are the ones that refused, and the largest of their resets is the exact wait.
--
-- Later checks (token budgets) add their own keys, their own ARGV section after the request
-- windows and their own reply entries after these, and join the same `admit` verdict.

-- Lua's tostring keeps 14 digits; microsecond times need 16.
local function int(x)
  return string.format("%.0f", x)
end

local function clock()
  if ARGV[1] ~= "" then
    return tonumber(ARGV[1])
  end
  local t = redis.call("TIME")
  return tonumber(t[1]) * 1000000 + tonumber(t[2])
end

local function read_windows(at)
  local windows = {}
  local n = tonumber(ARGV[at])
  for i = 1, n do
    windows[i] = {length = tonumber(ARGV[at + 2 * i - 1]), limit = tonumber(ARGV[at + 2 * i])}
  end
  return windows, at + 2 * n + 1
end

-- For each window: the requests admitted in (now - length, now], and the time until the entry
-- whose expiry would let one more in leaves the window.
local function check_log(key, now, windows)
  local admit = true
  for _, w in ipairs(windows) do
    local since = "(" .. int(now - w.length)
    w.count = redis.call("ZCOUNT", key, since, "+inf")
    w.release = 0
    if w.count > 0 then
      local skip = 0
      if w.count >= w.limit then
        skip = w.count - w.limit
        admit = false
      end
      local entry = redis.call("ZRANGEBYSCORE", key, since, "+inf", "WITHSCORES", "LIMIT", skip, 1)
      w.release = tonumber(entry[2]) + w.length - now
    end
  end
  return admit
end

local function record_log(key, now, windows, member)
  local longest = 0
  for _, w in ipairs(windows) do
    if w.length > longest then
      longest = w.length
    end
  end
  redis.call("ZREMRANGEBYSCORE", key, "-inf", int(now - longest))
  redis.call("ZADD", key, int(now), member)
  redis.call("PEXPIRE", key, int(math.ceil(longest / 1000)))
end

local function reply_log(reply, windows, admitted)
  for _, w in ipairs(windows) do
    if admitted then
      reply[#reply + 1] = w.limit - w.count - 1
      if w.count == 0 then
        reply[#reply + 1] = w.length
      else
        reply[#reply + 1] = w.release
      end
    else
      reply[#reply + 1] = math.max(w.limit - w.count, 0)
      reply[#reply + 1] = w.release
    end
  end
end

local now = clock()
local windows = read_windows(3)
local admit = check_log(KEYS[1], now, windows)
if admit then
  record_log(KEYS[1], now, windows, ARGV[2])
end
local reply = {admit and 1 or 0}
reply_log(reply, windows, admit)
return reply
