-- finish.lua: records how runs ended.
-- ARGV[1] = 'r' when this call replays one whose answer was lost (the connection failed
-- after it was sent; the store remembers such calls by their arguments), else ''.
-- ARGV[2] = g, groups of completed runs; per group: token, k, then k ids.
-- Then per failed run, 5 ARGV: token, id, code, number, error. code: r = retry after
-- number ms; a = retry at number (Unix ms); d = dead. A retry whose attempts are spent
-- goes to dead. A run whose job its token no longer holds (the lease expired, the job
-- was released or failed) changes nothing and is answered 0 — except in a replay, where
-- a run whose job is gone from running was recorded by the first call (the worker sends
-- one outcome per job) and is answered 1. (If its lease also expired between the two
-- calls, the worker has lost contact for a lease and already counts those leases lost.)
-- Returns 1 per run recorded, 0 per stale one: completed runs first, in order.
check_layout()
local replay = ARGV[1] == 'r'
local gone = replay and 1 or 0
local now = now_ms()
local res = {}
local at = 3
local forgotten = {}
local done_max, done_age
-- A queue holding unique keys reads its completed jobs' envelopes, to give finished-mode
-- keys back; any other skips that (one check per call).
local uniq = redis.call('EXISTS', UNIQUE) == 1

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
  if not done_max then
    local _
    _, _, done_max, done_age = retention()
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
  if n > 0 then settle(token, n) end
end
-- A completed job's error history (from earlier attempts) goes with it; most queues
-- have no history at all, and then there is nothing to delete.
if #forgotten > 0 and redis.call('EXISTS', ERRORS) == 1 then batched('HDEL', ERRORS, forgotten) end

-- Failed runs: rarer; each moves to scheduled, ready or dead with its new attempt count.
local ready, sched, dead = {}, {}, {}
while at <= #ARGV do
  local token, id, code = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local field = token .. '|' .. id
  local env = redis.call('HGET', RUNNING, field)
  if env then
    res[#res + 1] = 1
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
return res
