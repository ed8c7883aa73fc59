-- Sliding-log rate limit: one atomic decision over every window of every subject of a call (the
-- client's address, and the gateway key it presented when that key has limits of its own). The
-- request is recorded only if every window admits it, so a refused request consumes nothing.
--
-- For each subject s (s = 1, 2, ...), three keys in one hash tag:
-- KEYS[3s-2]  sorted set of its admitted requests: score = time in microseconds,
--             member = a unique id
-- KEYS[3s-1]  sorted set of its token charges: score = time in microseconds,
--             member = the request's unique id, a colon, and the tokens charged
-- KEYS[3s]    hash of running totals, per budget window length L: "u:L", the tokens charged in
--             the window as of "w:L", the time up to which charges that left it were subtracted
-- ARGV[1]  the time in microseconds, or "" to read Redis TIME (so every replica agrees)
-- ARGV[2]  the unique member recording this request, or "" to look without counting anything
-- ARGV[3]  the number of subjects; then for each subject: n, the number of request windows, and
--          n pairs: window length (microseconds), limit; then m, the number of token budgets
--          (0 when the call carries no tokens), and m pairs: window length, budget in tokens
-- ARGV[last]  the tokens this call reserves in every budget
--
-- A member already recorded (the same call sent twice) is answered as admitted, not counted again.
--
-- Reply: {allowed, then for each subject remaining_1, reset_1, ... over its windows, then its
-- budgets}. For a window, remaining counts requests and reset is the number of microseconds
-- until it frees a unit (0 when it holds nothing); when refused, the windows with remaining 0
-- are the ones that refused, and the largest of their resets is the exact wait. For a budget,
-- remaining counts tokens and reset is the exact wait until the reservation fits (when refused),
-- or until the oldest charge leaves the window (when admitted).
-- The totals make a decision cost the charges that left a window since the last one, not every
-- charge of the day. A reservation is settled later by settle_tokens.lua, which keeps its time
-- and changes its tokens (and the totals that still count it).

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

-- Reads a count n at ARGV[at], then n pairs (window length in microseconds, limit): the request
-- windows and the token budgets are passed alike. Returns them and the index after them.
local function read_limits(at)
  local limits = {}
  local n = tonumber(ARGV[at]) or 0
  for i = 1, n do
    limits[i] = {length = tonumber(ARGV[at + 2 * i - 1]), limit = tonumber(ARGV[at + 2 * i])}
  end
  return limits, at + 2 * n + 1
end

local function longest(limits)
  local length = 0
  for _, l in ipairs(limits) do
    if l.length > length then
      length = l.length
    end
  end
  return length
end

-- Trims a log to its longest window, records `member` at `now`, and lets the key expire when
-- the longest window has passed.
local function record(key, now, limits, member)
  local keep = longest(limits)
  redis.call("ZREMRANGEBYSCORE", key, "-inf", int(now - keep))
  redis.call("ZADD", key, int(now), member)
  redis.call("PEXPIRE", key, int(math.ceil(keep / 1000)))
  return keep
end

-- For each window: the requests admitted in (now - length, now], and the time until the entry
-- whose expiry would let one more in leaves the window.
local function check_log(key, now, windows)
  local admit = true
  for _, w in ipairs(windows) do
    local since = "(" .. int(now - w.length)
    w.used = redis.call("ZCOUNT", key, since, "+inf")
    w.release = 0
    if w.used > 0 then
      local skip = 0
      if w.used >= w.limit then
        skip = w.used - w.limit
        admit = false
      end
      local entry = redis.call("ZRANGEBYSCORE", key, since, "+inf", "WITHSCORES", "LIMIT", skip, 1)
      w.release = tonumber(entry[2]) + w.length - now
    end
  end
  return admit
end

-- Appends (remaining, reset) for each check; `used` is what it held before this call, `need`
-- what this call adds to it if admitted (1 for a request window, the reservation for a budget;
-- 0 for a look, which reports the wait as it is).
local function reply_checks(reply, checks, need, admitted)
  for _, c in ipairs(checks) do
    if admitted then
      reply[#reply + 1] = c.limit - c.used - need
      if c.used == 0 and need > 0 then
        reply[#reply + 1] = c.length
      else
        reply[#reply + 1] = c.release
      end
    else
      reply[#reply + 1] = math.max(c.limit - c.used, 0)
      reply[#reply + 1] = c.release
    end
  end
end

local function tokens_of(member)
  return tonumber(string.match(member, ":(%d+)$"))
end

local function sum(members)
  local total = 0
  for _, member in ipairs(members) do
    total = total + tokens_of(member)
  end
  return total
end

-- Each budget's tokens charged in (now - length, now]: the running total, less what left the
-- window since its watermark (or, with no total yet, a full count).
local function read_budget(key, totals, now, b)
  b.cut = now - b.length
  local mark = redis.call("HGET", totals, "w:" .. b.length)
  if not mark then
    b.used = sum(redis.call("ZRANGEBYSCORE", key, "(" .. int(b.cut), "+inf"))
    return
  end
  mark = tonumber(mark)
  b.used = tonumber(redis.call("HGET", totals, "u:" .. b.length)) or 0
  if b.cut > mark then
    b.used = b.used - sum(redis.call("ZRANGEBYSCORE", key, "(" .. int(mark), int(b.cut)))
  else
    b.cut = mark
  end
end

-- The wait until the oldest charge leaves (admitted), or until enough have left for `need` to
-- fit (refused); charges are read oldest first, a few at a time, only as far as needed.
local function release(key, now, b, excess)
  local offset = 0
  while true do
    local page = redis.call(
      "ZRANGEBYSCORE", key, "(" .. int(b.cut), "+inf", "WITHSCORES", "LIMIT", offset, 32)
    if #page == 0 then
      return b.length
    end
    for i = 1, #page, 2 do
      excess = excess - tokens_of(page[i])
      if excess <= 0 then
        return tonumber(page[i + 1]) + b.length - now
      end
    end
    offset = offset + #page / 2
  end
end

local function check_budgets(key, totals, now, budgets, need)
  local admit = true
  for _, b in ipairs(budgets) do
    read_budget(key, totals, now, b)
    if b.used + need > b.limit then
      admit = false
      b.release = release(key, now, b, b.used + need - b.limit)
    elseif b.used > 0 then
      b.release = release(key, now, b, 0)
    else
      b.release = 0
    end
  end
  return admit
end

local function record_charge(key, totals, now, budgets, member, need)
  for _, b in ipairs(budgets) do
    redis.call("HSET", totals, "u:" .. b.length, int(b.used + need), "w:" .. b.length, int(b.cut))
  end
  local keep = record(key, now, budgets, member .. ":" .. int(need))
  redis.call("PEXPIRE", totals, int(math.ceil(keep / 1000)))
end

local now = clock()
local member = ARGV[2]
local subjects = {}
local at = 4
for i = 1, tonumber(ARGV[3]) do
  local s = {log = KEYS[3 * i - 2], charges = KEYS[3 * i - 1], totals = KEYS[3 * i]}
  s.windows, at = read_limits(at)
  s.budgets, at = read_limits(at)
  subjects[i] = s
end
local need = tonumber(ARGV[at]) or 0

local function check(s, tokens)
  local admit = check_log(s.log, now, s.windows)
  if #s.budgets > 0 then
    admit = check_budgets(s.charges, s.totals, now, s.budgets, tokens) and admit
  end
  return admit
end

local function answer(admitted, window_need, budget_need)
  local reply = {admitted and 1 or 0}
  for _, s in ipairs(subjects) do
    reply_checks(reply, s.windows, window_need, admitted)
    reply_checks(reply, s.budgets, budget_need, admitted)
  end
  return reply
end

-- A look, or a call sent again with the same member (its connection broke before the answer came
-- back, and it was recorded the first time): answered as admitted, nothing counted.
local function recorded(s)
  return (#s.windows > 0 and redis.call("ZSCORE", s.log, member))
    or (#s.budgets > 0 and redis.call("ZSCORE", s.charges, member .. ":" .. int(need)))
end
if member == "" or recorded(subjects[1]) then
  for _, s in ipairs(subjects) do
    check(s, 0)
  end
  return answer(true, 0, 0)
end

local admit = true
for _, s in ipairs(subjects) do
  admit = check(s, need) and admit
end
if admit then
  for _, s in ipairs(subjects) do
    if #s.windows > 0 then
      record(s.log, now, s.windows, member)
    end
    if #s.budgets > 0 then
      record_charge(s.charges, s.totals, now, s.budgets, member, need)
    end
  end
end
return answer(admit, 1, need)
