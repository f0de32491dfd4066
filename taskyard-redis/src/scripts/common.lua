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
--  13 prio       ZSET envelope -> score of every ready job with a priority other than
--                the default: higher priority first, first in first out within one
--                (see to_ready). The envelope holds the id, so members are unique, and
--                a prioritised job costs one member and nothing else
--  14 unique     HASH unique key -> its holder, "id" (queued, finished), "id|d"
--                (debounce: held only while that job is scheduled) or "id|end ms"
--                (period)
--  15 uexp       ZSET period-mode key -> when its period ends, for maintain to drop
--                ended keys in bounded steps
--  16 deleted    SET ids of ready jobs deleted while their envelope still sits in the
--                ready list (tombstones): claims drop such envelopes, counts leave them out
--  17 cancelled  ZSET id -> time it was cancelled (ms); its envelope stays in jobs, its
--                history in errors (kept under the dead set's limits, counted apart)
--  18 progress   HASH id -> the latest progress (JSON) its handler reported, only while
--                the job runs under lease
--  19 revoked    HASH token -> ids of its batch cancelled while running ("1,2"), so its
--                heartbeats report them until the batch is gone
--  20 results    HASH id -> "at_ms\thead\n" then "=" and the handler's value (JSON), or
--                "-" (completed with no value while a waiter was registered); `head` is
--                the job's envelope head (up to its payload), its attempts counted
--  21 rexp       ZSET id -> when its result expires, for maintain to drop in bounded steps
--  22 waiting    ZSET id -> deadline of its latest waiter (wait_job), trimmed by maintain
--  23 schedules  HASH schedule name -> "rev\tnext_ms\tlast_ms\tlast_job\tpaused\n" then
--                its definition (opaque JSON; a reader splits at the FIRST newline).
--                last_ms and last_job are '' when none, paused '0' or '1', next_ms the
--                caller's text (u64::MAX when no tick is left: never a Lua number)
-- A queue that uses no option has none of 13-23, so its scripts check for them with one
-- EXISTS per call and then run as before, per job nothing more. Beside the keys, the
-- channel EVENTS (not a key: PUBLISH only) carries "c" when a running job was cancelled
-- and "e" followed by ids ("e1,2") when jobs a waiter waits for ended.
--
-- Why a running job cancelled keeps its batch: the job leaves running at once (its
-- outcome is refused) and its batch counts it out, but the batch and its lease are left
-- as they are even when no job of it runs any more, so the worker's heartbeats still
-- find the token held and learn of the cancel (revoked) instead of taking it for a lost
-- lease; the lease then expires once the worker stops beating it, and maintain forgets
-- the batch.
--
-- Why leases per claim, not per job: a worker claims a batch, heartbeats all of it and
-- finishes most of it together, so one sorted-set entry per batch carries the deadline
-- and the per-job work is one hash field. A lease that expires returns every job of its
-- batch still running; a token that is gone makes every later call naming it stale.
--
-- An envelope is "2\tid\tattempt\tenqueued_ms\tmax_attempts\tkind\tbackoff" then any
-- optional fields as "\tname=value", then "\npayload": one string, so a ready job costs
-- one list entry (or one prio member) and nothing else. The leading "2" is the
-- envelope's version, always one character (then a tab), so every field after it starts
-- at a known place; every script reads envelopes through `fields` below. Optional fields are carried through
-- untouched by every script that does not use them (a script rewrites only the attempt
-- field). Those written so far: `timeout=ms`; `priority=p`, only when p is not the
-- default (50); `unique=<mode>:<key>` with mode q (queued), f (finished), d (debounce)
-- or p<period ms>, always the last field since the key may hold any character but a
-- control one. Scripts read them from the envelope's head alone (before its first
-- newline; see head_priority, head_unique). `attempt` counts the attempts made; while
-- a job runs it still holds the count before the current attempt (claim does not
-- rewrite the envelope), so a running job is on attempt + 1.
local READY, SCHEDULED, JOBS, LEASES = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local DEAD, COMPLETED, ERRORS, META, SIGNAL = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]
local RUNNING, BATCHES, OLD_META = KEYS[10], KEYS[11], KEYS[12]
local PRIO, UNIQUE, UEXP, DELETED = KEYS[13], KEYS[14], KEYS[15], KEYS[16]
local CANCELLED, PROGRESS, REVOKED = KEYS[17], KEYS[18], KEYS[19]
local RESULTS, REXP, WAITING, SCHEDULES = KEYS[20], KEYS[21], KEYS[22], KEYS[23]
-- How many keys a queue has in this layout: release 0.1's follow (upgrade, drop).
local N_KEYS = 23
-- The queue's channel of events: its keys' prefix (META less its name) and "events".
local EVENTS = string.sub(META, 1, -5) .. 'events'

-- The layout of a queue's keys this build reads and writes, kept in META as `layout`.
local LAYOUT = '2'
-- The envelope version this build reads and writes.
local ENVELOPE = '2'

-- Every script calls this first: a queue in another layout is refused before anything
-- is read or written, with "TASKYARD_VERSION layout <found> <reads>". A queue with no
-- layout yet is new (or holds only 0.1 data, which must be upgraded first). `mark`: also
-- record this layout (the scripts that can create a queue), and answer true when the
-- queue is new, so the caller adds its name to the set of queues again (a queue deleted
-- by another process is one its cache of names still holds).
local function check_layout(mark)
  local v = redis.call('HGET', META, 'layout')
  if v == LAYOUT then return false end
  if v then
    return error({err = 'TASKYARD_VERSION layout ' .. v .. ' ' .. LAYOUT})
  end
  if redis.call('EXISTS', OLD_META) == 1 then
    return error({err = 'TASKYARD_UPGRADE queue holds data of taskyard 0.1 to upgrade'})
  end
  if mark then redis.call('HSET', META, 'layout', LAYOUT) end
  return mark
end

-- check_layout() and a read of META's fields `...` in the same call: their values, in
-- order (false where unset). For the scripts a worker calls per batch (claim, finish),
-- which read META anyway: one call fewer per batch.
local function checked_meta(...)
  local v = redis.call('HMGET', META, 'layout', ...)
  if v[1] ~= LAYOUT then check_layout() end
  table.remove(v, 1)
  return v
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

-- The id of an envelope, read as `fields` reads it but without the rest.
local function id_of(env)
  return string.sub(env, 3, string.find(env, '\t', 3, true) - 1)
end

-- Priorities. A ready job of the default priority is an entry of the ready list, as
-- before priorities existed; any other is its envelope as a member of PRIO, scored
-- (100 - priority) * BAND + MID + seq, seq counting up per queue (META `pseq`): higher
-- priorities first, first in first out within one. A released job goes just below the
-- lowest score of its priority, so MID leaves room for 2^39 of them. Scores stay below
-- 2^53, exact in a double, and no two members share one (a walk resumes by score).
-- Nothing is keyed by id: a lookup by id walks PRIO (prio_chunk) as it walks the list.
local DEFAULT_PRIORITY = 50
local BAND = 1099511627776
local MID = 549755813888
-- Scores below this are priorities above the default: claimed before the ready list.
local ABOVE_DEFAULT = (100 - DEFAULT_PRIORITY) * BAND

-- An envelope's priority, from its head (an anchored match: no copy, no payload read).
local function head_priority(env)
  return tonumber(string.match(env, '^[^\n]*\tpriority=(%d+)')) or DEFAULT_PRIORITY
end

-- An envelope's unique mode (q, f, d or p<ms>) and key, or nil.
local function head_unique(env)
  return string.match(env, '^[^\n]*\tunique=([^:\t\n]*):([^\t\n]*)')
end

-- Adds jobs to prio at the tail of their priorities: `zs` holds pairs (band score,
-- envelope), and each gets the next number of the queue's counter, in order (first in,
-- first out).
local function add_to_prio(zs)
  -- The counter starts again whenever prio is empty (no score depends on it then), so
  -- it stays far below the 2^39 that would let one priority's scores reach the next's.
  if redis.call('EXISTS', PRIO) == 0 then redis.call('HSET', META, 'pseq', 0) end
  local seq = redis.call('HINCRBY', META, 'pseq', #zs / 2) - #zs / 2
  for i = 1, #zs, 2 do
    seq = seq + 1
    zs[i] = zs[i] + seq
  end
  batched('ZADD', PRIO, zs)
end

-- Puts jobs at the tail of ready, each at its priority; returns how many.
local function to_ready(envs)
  local list, zs = {}, {}
  for i = 1, #envs do
    local env = envs[i]
    local p = head_priority(env)
    if p == DEFAULT_PRIORITY then
      list[#list + 1] = env
    else
      zs[#zs + 1] = (100 - p) * BAND + MID
      zs[#zs + 1] = env
    end
  end
  if #list > 0 then batched('RPUSH', READY, list) end
  if #zs > 0 then add_to_prio(zs) end
  return #envs
end

-- Puts one job at the head of ready, at its priority (a release).
local function to_ready_head(env)
  local p = head_priority(env)
  if p == DEFAULT_PRIORITY then
    redis.call('LPUSH', READY, env)
    return
  end
  local low = (100 - p) * BAND
  -- '%.0f': Lua's own number format keeps 14 digits, fewer than a score has.
  local first = redis.call('ZRANGEBYSCORE', PRIO, low, string.format('(%.0f', low + BAND),
    'WITHSCORES', 'LIMIT', 0, 1)
  redis.call('ZADD', PRIO, first[2] and tonumber(first[2]) - 1 or low + MID, env)
end

-- Unique keys. The holder a UNIQUE value names while it still holds the key, or nil:
-- a period ends at its time; a debounced job holds its key only while it is scheduled.
-- The second value says the holder is a debounced (scheduled) job.
local function holder(v, now)
  if not v then return nil end
  local bar = string.find(v, '|', 1, true)
  if not bar then return v end
  local id, tag = string.sub(v, 1, bar - 1), string.sub(v, bar + 1)
  if tag == 'd' then
    if redis.call('ZSCORE', SCHEDULED, id) then return id, true end
    return nil
  end
  if tonumber(tag) > now then return id end
  return nil
end

-- What UNIQUE keeps for job `id` holding a key in `mode` (q, f, d or p<ms>).
local function holding(id, mode, now)
  local c = string.sub(mode, 1, 1)
  if c == 'd' then return id .. '|d' end
  if c == 'p' then return id .. '|' .. (now + tonumber(string.sub(mode, 2))) end
  return id
end

-- Gives job `id`'s key back if its mode is one of `modes` (mode letters) and the job
-- still holds it (a key is never taken from another job). Period keys are never given
-- back early: callers leave p out of `modes`.
local function free_key(env, id, modes)
  local mode, key = head_unique(env)
  if mode and string.find(modes, string.sub(mode, 1, 1), 1, true) then
    local v = redis.call('HGET', UNIQUE, key)
    if v and string.match(v, '^[^|]*') == id then redis.call('HDEL', UNIQUE, key) end
  end
end

-- Walks of the ready list, WALK_STEP entries per call. The list has no index by id (it
-- would cost every queued job bytes), so a lookup or a bulk action by id or kind reads
-- it in chunks, and no call holds Redis for long however long the list is. Between
-- calls the list moves: claims pop its head, releases push to it. A walk's cursor
-- ("position:anchor id:restarts") names the last entry read (the anchor); the next call
-- finds it again among the WALK_STEP entries around its old place and goes on after it.
-- Where it is not there the list moved by more than a step: if the anchor was claimed,
-- so was everything before it and the walk goes on from the head, which is exact; if a
-- large release pushed it back, the walk starts over (a restart; after MAX_RESTARTS the
-- walk gives up with TASKYARD_BUSY rather than go on forever).
local WALK_STEP, MAX_RESTARTS = 2000, 8

-- Where a walk resumes: the position of its next entry, and its restarts so far.
local function walk_from(cursor)
  if cursor == '' then return 0, 0 end
  local p1 = string.find(cursor, ':', 1, true)
  local p2 = p1 and string.find(cursor, ':', p1 + 1, true)
  local pos = p2 and tonumber(string.sub(cursor, 1, p1 - 1))
  local restarts = p2 and tonumber(string.sub(cursor, p2 + 1))
  if not pos or not restarts or pos < 1 then
    return error({err = 'TASKYARD_CURSOR ' .. cursor})
  end
  local anchor = string.sub(cursor, p1 + 1, p2 - 1)
  local at = redis.call('LINDEX', READY, pos - 1)
  if at and is_job(at, anchor) then return pos, restarts end
  -- Where the anchor is now: within a step of where it was, or gone.
  local from = math.max(0, pos - 1 - WALK_STEP)
  local near = redis.call('LRANGE', READY, from, pos - 1 + WALK_STEP)
  for i = #near, 1, -1 do
    if is_job(near[i], anchor) then return from + i, restarts end
  end
  if restarts >= MAX_RESTARTS then
    return error({err = 'TASKYARD_BUSY the ready list moved too much during a walk of it; ' ..
      'try again'})
  end
  return 0, restarts + 1
end

-- The next chunk of a walk, `n` entries (WALK_STEP unless told), and the cursor after
-- it ('' at the end of the list).
local function walk_chunk(pos, restarts, n)
  n = n or WALK_STEP
  local chunk = redis.call('LRANGE', READY, pos, pos + n - 1)
  if #chunk < n then return chunk, '' end
  return chunk, (pos + #chunk) .. ':' .. id_of(chunk[#chunk]) .. ':' .. restarts
end

-- Walks of prio, WALK_STEP members per call in score order, the cursor the last score
-- read ('' = the start). A member keeps its score while it stays and no two share one,
-- so a walk resumes exactly after it however claims and deletes moved the set. As with
-- the list, a job that enters prio behind the cursor meanwhile (a release, a promotion
-- to a higher priority) is not seen by that walk. Returns the envelopes and the cursor
-- after them ('' at the end). `n` (WALK_STEP unless told) members a call.
local function prio_chunk(after, n)
  n = n or WALK_STEP
  local from = after == '' and '-inf' or '(' .. after
  local got = redis.call('ZRANGEBYSCORE', PRIO, from, '+inf', 'WITHSCORES', 'LIMIT', 0, n)
  local chunk = {}
  for i = 1, #got, 2 do chunk[#chunk + 1] = got[i] end
  if #chunk < n then return chunk, '' end
  -- Redis's own text of the score: exact, where Lua's would keep 14 digits.
  return chunk, got[#got]
end

-- Walks of every ready job: prio, then the ready list, WALK_STEP entries per call in
-- all (a call that reaches prio's end goes on into the list). Cursor: '' the start,
-- "p:score" in prio, "l:walk cursor" in the list. Returns a chunk, how many of its first
-- entries are prio's, and the next cursor ('' at the end).
local function ready_chunk(cursor)
  local phase, at = string.sub(cursor, 1, 2), string.sub(cursor, 3)
  local chunk, n_prio = {}, 0
  if cursor == '' or phase == 'p:' then
    local after
    chunk, after = prio_chunk(at)
    if after ~= '' then return chunk, #chunk, 'p:' .. after end
    n_prio, at = #chunk, ''
  elseif phase ~= 'l:' then
    return error({err = 'TASKYARD_CURSOR ' .. cursor})
  end
  local pos, restarts = walk_from(at)
  local listed, after = walk_chunk(pos, restarts, WALK_STEP - n_prio)
  for i = 1, #listed do chunk[#chunk + 1] = listed[i] end
  return chunk, n_prio, after == '' and '' or 'l:' .. after
end

-- Of these ids, the ones that are tombstones (deleted, their envelope still in ready),
-- as a set; nil when there are none at all.
local function tombstones(ids)
  if #ids == 0 or redis.call('EXISTS', DELETED) == 0 then return nil end
  local member = read_sliced('SMISMEMBER', DELETED, ids)
  local out = {}
  for i = 1, #ids do
    if member[i] == 1 then out[ids[i]] = true end
  end
  return out
end

-- How many jobs wait (ready and scheduled), for the max length.
local function waiting()
  return redis.call('LLEN', READY) + redis.call('ZCARD', PRIO) +
    redis.call('ZCARD', SCHEDULED) - redis.call('SCARD', DELETED)
end

-- Whether the queue has cancels of running jobs to report (REVOKED): nil until a script
-- asks (once per call; finish sets it from its own check of the option keys).
local revoking = nil

-- Forgets a batch: its fields, its lease and the cancels its heartbeats reported.
local function forget_batch(token)
  redis.call('HDEL', BATCHES, token, '#' .. token, '!' .. token)
  redis.call('ZREM', LEASES, token)
  if revoking == nil then revoking = redis.call('EXISTS', REVOKED) == 1 end
  if revoking then redis.call('HDEL', REVOKED, token) end
end

-- One job of a batch is done (or gone): forget the batch once none is left running —
-- unless one of its jobs was cancelled while running: then the batch stays with its
-- lease until maintenance expires it, so the worker's heartbeats go on reporting the
-- cancel (and its handler hears "cancelled", not "lease lost").
local function settle(token, n)
  if redis.call('HINCRBY', BATCHES, '#' .. token, -n) <= 0 then
    if revoking == nil then revoking = redis.call('EXISTS', REVOKED) == 1 end
    if revoking and redis.call('HEXISTS', REVOKED, token) == 1 then return end
    forget_batch(token)
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

-- Moves due scheduled jobs to the tail of ready, each at its priority.
local function promote(now, limit)
  local due = redis.call('ZRANGEBYSCORE', SCHEDULED, '-inf', now, 'LIMIT', 0, limit)
  if #due == 0 then return 0 end
  local bodies = redis.call('HMGET', JOBS, unpack(due))
  local ready = {}
  for i = 1, #due do
    if bodies[i] then ready[#ready + 1] = bodies[i] end
  end
  -- Bodies first out of jobs: to_ready puts prioritised ones back.
  redis.call('HDEL', JOBS, unpack(due))
  redis.call('ZREM', SCHEDULED, unpack(due))
  to_ready(ready)
  return #due
end

local function add_error(id, attempt, now, message)
  local line = attempt .. '\t' .. now .. '\t' .. message .. '\n'
  local prev = redis.call('HGET', ERRORS, id)
  if prev then line = prev .. line end
  redis.call('HSET', ERRORS, id, line)
end

-- Retention settings, with the defaults of QueueConfig filled in by the Rust side.
-- `v`: these settings as checked_meta read them (RETENTION), else they are read here.
local RETENTION = {'dead_max', 'dead_max_age_ms', 'completed_max', 'completed_max_age_ms'}
local function retention(v)
  v = v or redis.call('HMGET', META, unpack(RETENTION))
  return tonumber(v[1]) or @DEAD_MAX@, tonumber(v[2]) or @DEAD_MAX_AGE_MS@,
    tonumber(v[3]) or @COMPLETED_MAX@, tonumber(v[4]) or @COMPLETED_MAX_AGE_MS@
end

-- How long a result is kept (ms; 0 keeps none).
local function result_ttl()
  return tonumber(redis.call('HGET', META, 'result_ttl_ms')) or @RESULT_TTL_MS@
end

-- Keeps a completed job's result apart from the job, for `ttl` ms: `value` is its JSON,
-- or nil for the empty marker (completed with no value). `env` is the job's envelope,
-- of which the head is kept (its kind and counts, for a lookup once the job is gone).
local function keep_result(id, env, now, value, ttl)
  if ttl <= 0 then return end
  local nl = string.find(env, '\n', 1, true)
  local head = nl and string.sub(env, 1, nl) or env .. '\n'
  redis.call('HSET', RESULTS, id, now .. '\t' .. head .. (value and '=' .. value or '-'))
  redis.call('ZADD', REXP, now + ttl, id)
end

-- A result record split: completion time, envelope head (an envelope with no payload),
-- value ('' when none).
local function result_parts(rec)
  local tab = string.find(rec, '\t', 1, true)
  local nl = string.find(rec, '\n', tab + 1, true)
  local value = ''
  if string.sub(rec, nl + 1, nl + 1) == '=' then value = string.sub(rec, nl + 2) end
  return string.sub(rec, 1, tab - 1), string.sub(rec, tab + 1, nl), value
end

-- Of jobs that just ended (completed, dead, cancelled), the ones a waiter waits for
-- (wait_job; its deadline not passed), told on EVENTS in one message. Returns them as a
-- set, or nil when none. Costs one EXISTS when nobody waits on the queue.
local function tell_waiters(ids, now)
  if #ids == 0 or redis.call('EXISTS', WAITING) == 0 then return nil end
  local s = scores_of(WAITING, ids)
  local waited, set = {}, {}
  for i = 1, #ids do
    if s[i] and tonumber(s[i]) >= now and not set[ids[i]] then
      set[ids[i]] = true
      waited[#waited + 1] = ids[i]
    end
  end
  if #waited == 0 then return nil end
  redis.call('PUBLISH', EVENTS, 'e' .. table.concat(waited, ','))
  return set
end

-- Drops the progress of jobs that left running (any way): one EXISTS when the queue
-- keeps none.
local function drop_progress(ids)
  if #ids > 0 and redis.call('EXISTS', PROGRESS) == 1 then batched('HDEL', PROGRESS, ids) end
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

-- One step's ids of a sorted set keyed by id (dead, scheduled) matching a filter, and a
-- function that says where the next step resumes ('' when nothing is left) given how
-- many of those ids the step left in the set. `mode` = 'ids' | 'kind' | 'all', `kind`
-- the kind, `after` where the last step stopped ('' = the start), ARGV[first_id..] the
-- ids (at most `limit`).
-- Ids: the given ones in the set. All: the `limit` from the rank the last step stopped
-- at (those that leave the set move the next step's start back). Kind: the matching
-- ones among at most 1.25 * `limit` examined from that rank, their bodies read 250 at
-- a time until `limit` match. Examining more per step (it was 10 * `limit`) held Redis
-- for 30 ms per step on a large dead set; 1.25 lets a step of a common kind still take
-- a full `limit`.
local function select_in(set, limit, mode, kind, after, first_id)
  local out = {}
  if mode == 'ids' then
    local ids = {}
    for i = first_id, #ARGV do ids[#ids + 1] = ARGV[i] end
    local function done() return '' end
    if #ids == 0 then return out, done end
    local s = scores_of(set, ids)
    local seen = {}
    for i = 1, #ids do
      -- An id given twice is taken once: a job must never be in two places.
      if s[i] and not seen[ids[i]] and #out < limit then
        seen[ids[i]] = true
        out[#out + 1] = ids[i]
      end
    end
    return out, done
  end
  local start = tonumber(after) or 0
  if mode == 'all' then
    out = redis.call('ZRANGE', set, start, start + limit - 1)
    return out, function(stayed)
      return (#out == limit) and tostring(start + stayed) or ''
    end
  end
  local examine = limit + math.floor(limit / 4)
  local ids = redis.call('ZRANGE', set, start, start + examine - 1)
  local examined = 0
  local of_kind = kind_pattern(kind)
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
  return out, function(stayed)
    if #out < limit and #ids < examine then return '' end
    return tostring(start + examined - #out + stayed)
  end
end
