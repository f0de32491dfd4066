-- finish.lua: records how runs ended.
-- ARGV[1] = 'r' when this call replays one whose answer was lost (the connection failed
-- after it was sent; the store remembers such calls by their arguments), else ''.
-- ARGV[2] = g, groups of completed runs; per group: token, k, then k ids.
-- Then per failed run (or run completed with a value), 5 ARGV: token, id, code, number,
-- error. code: r = retry after number ms; a = retry at number (Unix ms); d = dead; v =
-- completed, with the value (JSON) in place of the error, kept for the queue's result
-- TTL apart from the job. A retry whose attempts are spent goes to dead. A run whose job its token no longer holds (the lease expired, the job
-- was released or failed) changes nothing and is answered 0 — except in a replay, where
-- a run whose job is gone from running was recorded by the first call (the worker sends
-- one outcome per job) and is answered 1. (If its lease also expired between the two
-- calls, the worker has lost contact for a lease and already counts those leases lost.)
-- Returns 1 per run recorded, 0 per stale one: completed runs first, in order.
-- Every job that leaves running here loses its progress; a job that ends (completed,
-- dead) while a waiter waits for it is told on EVENTS, and one completed with no value
-- then keeps an empty result, so the waiter learns it completed even once it is gone.
local meta = checked_meta(unpack(RETENTION))
local replay = ARGV[1] == 'r'
local gone = replay and 1 or 0
local now = now_ms()
local res = {}
local at = 3
local forgotten = {}
local _, _, done_max, done_age = retention(meta)
-- The options this call may meet, in one check when the queue uses none. A queue
-- holding unique keys reads its completed jobs' envelopes, to give finished-mode keys
-- back; one keeping progress drops it; one with waiters tells them.
local uniq, prog, waits = false, false, false
if redis.call('EXISTS', UNIQUE, PROGRESS, REVOKED, WAITING) > 0 then
  uniq = redis.call('EXISTS', UNIQUE) == 1
  prog = redis.call('EXISTS', PROGRESS) == 1
  waits = redis.call('EXISTS', WAITING) == 1
else
  revoking = false
end
-- Jobs that left running (for progress), jobs that ended (for waiters), and the
-- envelopes of waited ones completed with no value (for their empty results).
local left, ended, unvalued = {}, {}, {}

-- Completed runs: the hot path, a few variadic calls per batch. A token holds each of
-- its jobs, not the batch: a job released or failed meanwhile is not this run's to
-- complete, even while others of its batch run. Such an exit marks the batch (`left_early`),
-- and a marked batch is checked job by job (one HMGET of the envelopes, which a queue
-- keeping completed jobs or holding unique keys reads anyway). In an unmarked batch every job that left ran to
-- completion, so HDEL's count alone tells: all named jobs were held, or the call names
-- one twice or one this token never claimed — then each is answered by whether its
-- token claimed it (recorded, by this call or an earlier one).
for _ = 1, tonumber(ARGV[2]) do
  local token, k = ARGV[at], tonumber(ARGV[at + 1])
  local names, ids = {}, {}
  for i = 1, k do
    ids[i] = ARGV[at + 1 + i]
    names[i] = token .. '|' .. ids[i]
  end
  at = at + 2 + k
  if waits then
    -- Waited jobs' envelopes, read before they leave running: few, and only while
    -- someone waits on the queue.
    local w = scores_of(WAITING, ids)
    for i = 1, k do
      if w[i] then
        local env = redis.call('HGET', RUNNING, names[i])
        if env then unvalued[ids[i]] = env end
      end
    end
  end
  local marked = done_max > 0 or uniq or redis.call('HEXISTS', BATCHES, '!' .. token) == 1
  if marked then
    local envs = hmget_all(RUNNING, names)
    local held, done = {}, {}
    for i = 1, k do
      if envs[i] then
        res[#res + 1] = 1
        held[#held + 1] = names[i]
        if uniq then free_key(envs[i], ids[i], 'f') end
        if done_max > 0 then
          local id, before, _, p2 = fields(envs[i])
          redis.call('HSET', JOBS, id, with_attempt(envs[i], id, before + 1, p2))
          done[#done + 1] = now
          done[#done + 1] = id
        else
          forgotten[#forgotten + 1] = ids[i]
        end
      else
        res[#res + 1] = gone
      end
    end
    if #done > 0 then
      batched('ZADD', COMPLETED, done)
      trim(COMPLETED, done_max, done_age, now)
    end
    names = held
  end
  -- Settle by what HDEL removed: an id named twice in one call counts once.
  local n = 0
  for i = 1, #names, 1000 do
    n = n + redis.call('HDEL', RUNNING, unpack(names, i, math.min(i + 999, #names)))
  end
  if not marked then
    local claimed
    if n < k and not replay then
      claimed = {}
      for id in string.gmatch(redis.call('HGET', BATCHES, token) or '', '[^,]+') do
        claimed[id] = true
      end
    end
    for i = 1, k do
      if not claimed or claimed[ids[i]] then
        res[#res + 1] = 1
        forgotten[#forgotten + 1] = ids[i]
      else
        res[#res + 1] = 0
      end
    end
  end
  if (prog or waits) and n > 0 then
    for i = 1, #names do
      local id = string.sub(names[i], #token + 2)
      left[#left + 1] = id
      ended[#ended + 1] = id
    end
  end
  if n > 0 then settle(token, n) end
end

-- A job completed with a value: as one completed in a group, checked alone.
local function complete(token, id, field, env, value)
  local running_env = env
  redis.call('HDEL', RUNNING, field)
  settle(token, 1)
  if uniq then free_key(env, id, 'f') end
  local _, before, _, p2 = fields(env)
  env = with_attempt(env, id, before + 1, p2)
  if done_max > 0 then
    redis.call('HSET', JOBS, id, env)
    redis.call('ZADD', COMPLETED, now, id)
    trim(COMPLETED, done_max, done_age, now)
  else
    forgotten[#forgotten + 1] = id
  end
  local ttl = result_ttl()
  keep_result(id, env, now, value, ttl)
  -- With no result kept (a TTL of 0), a waiter still gets its mark below.
  if ttl > 0 then
    unvalued[id] = nil
  elseif waits then
    unvalued[id] = running_env
  end
  left[#left + 1] = id
  ended[#ended + 1] = id
end

-- Failed runs: rarer; each moves to scheduled, ready or dead with its new attempt count.
local ready, sched, dead = {}, {}, {}
while at <= #ARGV do
  local token, id, code = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local field = token .. '|' .. id
  local env = redis.call('HGET', RUNNING, field)
  if env and code == 'v' then
    res[#res + 1] = 1
    complete(token, id, field, env, ARGV[at + 4])
  elseif env then
    res[#res + 1] = 1
    left[#left + 1] = id
    redis.call('HDEL', RUNNING, field)
    settle(token, 1)
    left_early(token)
    local _, before, max, p2 = fields(env)
    local attempt = before + 1
    env = with_attempt(env, id, attempt, p2)
    add_error(id, attempt, now, ARGV[at + 4])
    local due = tonumber(ARGV[at + 3])
    if code == 'r' then due = now + due end
    if code == 'd' or attempt >= max then
      if uniq then free_key(env, id, 'f') end
      redis.call('HSET', JOBS, id, env)
      dead[#dead + 1] = now
      dead[#dead + 1] = id
      ended[#ended + 1] = id
    elseif due <= now then
      ready[#ready + 1] = env
    else
      redis.call('HSET', JOBS, id, env)
      sched[#sched + 1] = due
      sched[#sched + 1] = id
    end
  else
    res[#res + 1] = gone
  end
  at = at + 5
end
if #ready > 0 then
  to_ready(ready)
  signal()
end
if #sched > 0 then
  batched('ZADD', SCHEDULED, sched)
  signal()
end
if #dead > 0 then
  local dead_max, dead_age = retention()
  batched('ZADD', DEAD, dead)
  trim(DEAD, dead_max, dead_age, now)
end
-- A completed job's error history (from earlier attempts) goes with it; most queues
-- have no history at all, and then there is nothing to delete.
if #forgotten > 0 and redis.call('EXISTS', ERRORS) == 1 then batched('HDEL', ERRORS, forgotten) end
if prog then drop_progress(left) end
local waited = waits and tell_waiters(ended, now)
if waited then
  -- A waiter's mark outlives a short TTL (or none), so the waiter woken now finds it.
  local ttl = math.max(result_ttl(), 60000)
  for id, env in pairs(unvalued) do
    if waited[id] then
      local _, before, _, p2 = fields(env)
      keep_result(id, with_attempt(env, id, before + 1, p2), now, nil, ttl)
    end
  end
end
return res
