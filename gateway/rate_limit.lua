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
-- Token budgets, when the call carries them, join the same verdict:
-- KEYS[2]  sorted set of the client's token charges: score = time in microseconds,
--          member = the request's unique id, a colon, and the tokens charged
-- ARGV     after the request windows: m, the number of budgets, then m pairs: window length
--          (microseconds), budget in tokens; then the tokens this call reserves
-- Reply    after the request windows' entries: remaining_1, reset_1, ..., remaining_m, reset_m,
--          where remaining counts tokens and reset is the exact wait until the reservation fits
--          (when refused), or until the oldest charge leaves the window (when admitted).
-- A reservation is settled later by settle_tokens.lua, which keeps its time and changes its tokens.

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

local function read_budgets(at)
  local budgets = {}
  local m = tonumber(ARGV[at]) or 0
  for i = 1, m do
    budgets[i] = {length = tonumber(ARGV[at + 2 * i - 1]), limit = tonumber(ARGV[at + 2 * i])}
  end
  return budgets, tonumber(ARGV[at + 2 * m + 1]) or 0
end

-- Charges inside the longest budget window, oldest first: {time, tokens}.
local function read_charges(key, now, budgets)
  local longest = 0
  for _, b in ipairs(budgets) do
    if b.length > longest then
      longest = b.length
    end
  end
  local raw = redis.call("ZRANGEBYSCORE", key, "(" .. int(now - longest), "+inf", "WITHSCORES")
  local charges = {}
  for i = 1, #raw, 2 do
    charges[#charges + 1] = {tonumber(raw[i + 1]), tonumber(string.match(raw[i], ":(%d+)$"))}
  end
  return charges, longest
end

-- For each budget: the tokens charged in (now - length, now], and the wait until enough of them
-- leave for `need` to fit (refused), or until the oldest leaves (admitted).
local function check_budgets(charges, now, budgets, need)
  local admit = true
  for _, b in ipairs(budgets) do
    local since = now - b.length
    b.used = 0
    b.release = 0
    for _, c in ipairs(charges) do
      if c[1] > since then
        b.used = b.used + c[2]
        if b.release == 0 then
          b.release = c[1] + b.length - now
        end
      end
    end
    if b.used + need > b.limit then
      admit = false
      local excess = b.used + need - b.limit
      b.release = b.length
      for _, c in ipairs(charges) do
        if c[1] > since then
          excess = excess - c[2]
          if excess <= 0 then
            b.release = c[1] + b.length - now
            break
          end
        end
      end
    end
  end
  return admit
end

local function record_charge(key, now, longest, member, need)
  redis.call("ZREMRANGEBYSCORE", key, "-inf", int(now - longest))
  redis.call("ZADD", key, int(now), member .. ":" .. int(need))
  redis.call("PEXPIRE", key, int(math.ceil(longest / 1000)))
end

local function reply_budgets(reply, budgets, need, admitted)
  for _, b in ipairs(budgets) do
    if admitted then
      reply[#reply + 1] = b.limit - b.used - need
      if b.used == 0 then
        reply[#reply + 1] = b.length
      else
        reply[#reply + 1] = b.release
      end
    else
      reply[#reply + 1] = math.max(b.limit - b.used, 0)
      reply[#reply + 1] = b.release
    end
  end
end

local now = clock()
local windows, after = read_windows(3)
local budgets, need = read_budgets(after)
local admit = check_log(KEYS[1], now, windows)
local charges, longest = {}, 0
if #budgets > 0 then
  charges, longest = read_charges(KEYS[2], now, budgets)
  admit = check_budgets(charges, now, budgets, need) and admit
end
if admit then
  if #windows > 0 then
    record_log(KEYS[1], now, windows, ARGV[2])
  end
  if #budgets > 0 then
    record_charge(KEYS[2], now, longest, ARGV[2], need)
  end
end
local reply = {admit and 1 or 0}
reply_log(reply, windows, admit)
reply_budgets(reply, budgets, need, admit)
return reply
