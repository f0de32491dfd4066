-- common.lua: prepended to every taskyard script, after the shebang that declares the
-- script's flags (`Oom` in scripts.rs: Redis reads flags only on the first line).
--
-- KEYS (the same order for every script; all under one hash tag, so one cluster slot):
--   1 ready      LIST of envelopes, claimed from the head
--   2 scheduled  ZSET id -> due time (ms)
--   3 jobs       HASH id -> envelope, for scheduled, dead and retained completed jobs
--   4 leases     ZSET token -> lease end (ms): one entry per claim call, not per job
--   5 dead       ZSET id -> time it died (ms)
--   6 completed  ZSET id -> time it completed (ms), only with retention
--   7 errors     HASH id -> one line per failed attempt: "attempt\tat_ms\tmessage\n"
--   8 meta       HASH layout, paused, max_len and retention settings; seq: release 0.1's
--                id counter of the queue, kept by the upgrade
--   9 signal     LIST a worker blocks on (BLPOP) while idle; holds at most one element
--  10 running    HASH "token|id" -> envelope of every job under lease
--  11 batches    HASH token -> ids claimed with it ("1,2,3"), "#token" -> how many of
--                them are still running, "!token" -> 1 once one of them left running
--                other than by completing (released, failed)
--  12 the meta hash of release 0.1's keys: while it exists, the queue holds 0.1 data
--     that upgrade.lua has yet to move (see check_layout)
--
-- Why leases per claim, not per job: a worker claims a batch, heartbeats all of it and
-- finishes most of it together, so one sorted-set entry per batch carries the deadline
-- and the per-job work is one hash field. A lease that expires returns every job of its
-- batch still running; a token that is gone makes every later call naming it stale.
--
-- An envelope is "2\tid\tattempt\tenqueued_ms\tmax_attempts\tkind\tbackoff" then any
-- optional fields as "\tname=value", then "\npayload": one string, so a ready job costs
-- one list entry and nothing else. The leading "2" is the envelope's version, always one
-- character (then a tab), so every field after it starts at a known place; every script
-- reads envelopes through `fields` below. Optional fields are carried through
-- untouched by every script that does not use them (a script rewrites only the attempt
-- field). `attempt` counts the attempts made; while
-- a job runs it still holds the count before the current attempt (claim does not
-- rewrite the envelope), so a running job is on attempt + 1.
local READY, SCHEDULED, JOBS, LEASES = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local DEAD, COMPLETED, ERRORS, META, SIGNAL = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local RUNNING, BATCHES, OLD_META = KEYS[10], KEYS[11], KEYS[12]

-- The layout of a queue's keys this build reads and writes, kept in META as `layout`.
local LAYOUT = '2'
-- The envelope version this build reads and writes.
local ENVELOPE = '2'

-- Every script calls this first: a queue in another layout is refused before anything
-- is read or written, with "TASKYARD_VERSION layout <found> <reads>". A queue with no
-- layout yet is new (or holds only 0.1 data, which must be upgraded first). `mark`: also
-- record this layout (the scripts that can create a queue).
local function check_layout(mark)
  local v = redis.call('HGET', META, 'layout')
  if v == LAYOUT then return end
  if v then
    return error({err = 'TASKYARD_VERSION layout ' .. v .. ' ' .. LAYOUT})
  end
  if redis.call('EXISTS', OLD_META) == 1 then
    return error({err = 'TASKYARD_UPGRADE queue holds data of taskyard 0.1 to upgrade'})
  end
  if mark then redis.call('HSET', META, 'layout', LAYOUT) end
end

-- Store time: every deadline and due time comes from here, never from a client.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Calls a variadic command in slices: Lua's unpack() has a small stack limit.
local function batched(cmd, key, args)
  for i = 1, #args, 1000 do
    redis.call(cmd, key, unpack(args, i, math.min(i + 999, #args)))
  end
end

-- A variadic read in slices, its replies joined: one value (or false) per argument.
local function read_sliced(cmd, key, args)
  local out = {}
  for i = 1, #args, 1000 do
    local part = redis.call(cmd, key, unpack(args, i, math.min(i + 999, #args)))
    for j = 1, #part do out[#out + 1] = part[j] end
  end
  return out
end

local function scores_of(key, members) return read_sliced('ZMSCORE', key, members) end
local function hmget_all(key, names) return read_sliced('HMGET', key, names) end

-- The one reader of envelopes: the id, attempt and max attempts, and where the attempt
-- field ends (p2) and the max-attempts field ends (p4). Every envelope version keeps
-- these first fields where version 2 has them (later versions add optional fields
-- only), so a script can move a job of any version without misreading it and never has
-- to fail half-way through its writes; the Rust side refuses to run a version it does
-- not know.
local function fields(env)
  local p0 = 2
  local p1 = string.find(env, '\t', p0 + 1, true)
  local p2 = string.find(env, '\t', p1 + 1, true)
  local p3 = string.find(env, '\t', p2 + 1, true)
  local p4 = string.find(env, '\t', p3 + 1, true)
  return string.sub(env, p0 + 1, p1 - 1), tonumber(string.sub(env, p1 + 1, p2 - 1)),
    tonumber(string.sub(env, p3 + 1, p4 - 1)), p2, p4, p0
end

-- A new envelope: the script's part (version, id, attempt 0, enqueue time) in front of
-- the client's (max attempts, kind, backoff, optional fields, payload). `head` is
-- new_head(now), made once per batch.
local function new_head(now)
  return '\t0\t' .. now .. '\t'
end

local function new_envelope(id, head, tail)
  return ENVELOPE .. '\t' .. id .. head .. tail
end

-- Whether an envelope is job `id`'s, without reading the rest (scans of the ready list).
local function is_job(env, id)
  return string.sub(env, 3, #id + 3) == id .. '\t'
end

-- The envelope with a new attempt count; its version and every other field unchanged.
local function with_attempt(env, id, attempt, p2)
  return string.sub(env, 1, 2) .. id .. '\t' .. attempt .. string.sub(env, p2)
end

-- A pattern matching the envelopes of one kind: the kind is the sixth field of every
-- envelope version, and a backoff field always follows it. One `string.find` per
-- envelope and no string made: a scan by kind examines thousands per call.
local function kind_pattern(kind)
  return '^' .. string.rep('[^\t]*\t', 5) .. (string.gsub(kind, '[%.%-]', '%%%0')) .. '\t'
end

-- One job of a batch is done (or gone): forget the batch once none is left running.
local function settle(token, n)
  if redis.call('HINCRBY', BATCHES, '#' .. token, -n) <= 0 then
    redis.call('HDEL', BATCHES, token, '#' .. token, '!' .. token)
    redis.call('ZREM', LEASES, token)
  end
end

-- A job left its batch other than by completing (released, failed; call after settle):
-- while the batch still runs, mark it ("!token"), so finish checks its completions job
-- by job from now on (see finish.lua).
local function left_early(token)
  if redis.call('HEXISTS', BATCHES, '#' .. token) == 1 then
    redis.call('HSET', BATCHES, '!' .. token, 1)
  end
end

-- The running fields of a batch, "token|id" each.
local function batch_fields(token)
  local names = {}
  local ids = redis.call('HGET', BATCHES, token)
  if ids then
    for id in string.gmatch(ids, '[^,]+') do names[#names + 1] = token .. '|' .. id end
  end
  return names
end

-- Wakes one idle worker. One pending element is enough: the worker it wakes signals
-- again when its claim leaves jobs behind.
local function signal()
  if redis.call('LLEN', SIGNAL) == 0 then redis.call('RPUSH', SIGNAL, '1') end
end

-- Moves due scheduled jobs to the tail of ready.
local function promote(now, limit)
  local due = redis.call('ZRANGEBYSCORE', SCHEDULED, '-inf', now, 'LIMIT', 0, limit)
  if #due == 0 then return 0 end
  local bodies = redis.call('HMGET', JOBS, unpack(due))
  local ready = {}
  for i = 1, #due do
    if bodies[i] then ready[#ready + 1] = bodies[i] end
  end
  if #ready > 0 then batched('RPUSH', READY, ready) end
  redis.call('HDEL', JOBS, unpack(due))
  redis.call('ZREM', SCHEDULED, unpack(due))
  return #due
end

local function add_error(id, attempt, now, message)
  local line = attempt .. '\t' .. now .. '\t' .. message .. '\n'
  local prev = redis.call('HGET', ERRORS, id)
  if prev then line = prev .. line end
  redis.call('HSET', ERRORS, id, line)
end

-- Retention settings, with the defaults of QueueConfig filled in by the Rust side.
local function retention()
  local v = redis.call('HMGET', META, 'dead_max', 'dead_max_age_ms', 'completed_max',
    'completed_max_age_ms')
  return tonumber(v[1]) or @DEAD_MAX@, tonumber(v[2]) or @DEAD_MAX_AGE_MS@,
    tonumber(v[3]) or @COMPLETED_MAX@, tonumber(v[4]) or @COMPLETED_MAX_AGE_MS@
end

local function forget(ids)
  if #ids > 0 then
    batched('HDEL', JOBS, ids)
    batched('HDEL', ERRORS, ids)
  end
end

-- Keeps a finished set (dead or completed) within its count and age, so memory never
-- grows without bound. At most 1000 removals per call; maintenance calls it often.
local function trim(set, max, max_age, now)
  local n = redis.call('ZCARD', set)
  if n > max then
    local old = redis.call('ZRANGE', set, 0, math.min(n - max, 1000) - 1)
    forget(old)
    batched('ZREM', set, old)
  end
  local old = redis.call('ZRANGEBYSCORE', set, '-inf', now - max_age, 'LIMIT', 0, 1000)
  if #old > 0 then
    forget(old)
    batched('ZREM', set, old)
  end
end

-- One step's dead job ids matching a filter, and where the next step resumes ('' when
-- nothing is left): ARGV[1] = 'ids' | 'kind' | 'all', ARGV[2] = kind, ARGV[3] = where
-- the last step stopped ('' = the start), ARGV[4..] = ids (at most `limit`).
-- Ids: the given ones that are dead. All: the oldest `limit` (they leave the set, so the
-- next step starts at the start again). Kind: the matching ones among at most
-- 1.25 * `limit` examined from the rank the last step stopped at, their bodies read 250
-- at a time until `limit` match; the ones it takes leave the set, so that rank is where
-- the unexamined ones begin. Examining more per step (it was 10 * `limit`) held Redis
-- for 30 ms per step on a large dead set; 1.25 lets a step of a common kind still take
-- a full `limit`.
local function select_dead(limit)
  local mode = ARGV[1]
  local out = {}
  if mode == 'ids' then
    local ids = {}
    for i = 4, #ARGV do ids[#ids + 1] = ARGV[i] end
    if #ids == 0 then return out, '' end
    local s = scores_of(DEAD, ids)
    local seen = {}
    for i = 1, #ids do
      -- An id given twice is moved once: a job must never be in two places.
      if s[i] and not seen[ids[i]] and #out < limit then
        seen[ids[i]] = true
        out[#out + 1] = ids[i]
      end
    end
    return out, ''
  elseif mode == 'all' then
    out = redis.call('ZRANGE', DEAD, 0, limit - 1)
    return out, (#out == limit) and '0' or ''
  end
  local start = tonumber(ARGV[3]) or 0
  local examine = limit + math.floor(limit / 4)
  local ids = redis.call('ZRANGE', DEAD, start, start + examine - 1)
  if #ids == 0 then return out, '' end
  local examined = 0
  local of_kind = kind_pattern(ARGV[2])
  for from = 1, #ids, 250 do
    local to = math.min(from + 249, #ids)
    local bodies = redis.call('HMGET', JOBS, unpack(ids, from, to))
    for i = from, to do
      examined = i
      local body = bodies[i - from + 1]
      if body and string.find(body, of_kind) then out[#out + 1] = ids[i] end
      if #out >= limit then break end
    end
    if #out >= limit then break end
  end
  if #out < limit and #ids < examine then return out, '' end
  return out, tostring(start + examined - #out)
end
