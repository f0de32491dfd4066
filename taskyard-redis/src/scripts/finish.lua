-- finish.lua: records how runs ended.
-- ARGV[1] = g, groups of completed runs; per group: token, k, then k ids.
-- Then per failed run, 5 ARGV: token, id, code, number, error. code: r = retry after
-- number ms; a = retry at number (Unix ms); d = dead. A retry whose attempts are spent
-- goes to dead. A run whose lease is gone (stale token) changes nothing.
-- Returns 1 per run recorded, 0 per stale one: completed runs first, in order.
check_layout()
local now = now_ms()
local res = {}
local at = 2
local forgotten = {}
local done_max, done_age

-- Completed runs: the hot path, a few variadic calls per batch.
for _ = 1, tonumber(ARGV[1]) do
  local token, k = ARGV[at], tonumber(ARGV[at + 1])
  local names, ids = {}, {}
  for i = 1, k do
    ids[i] = ARGV[at + 1 + i]
    names[i] = token .. '|' .. ids[i]
  end
  at = at + 2 + k
  local ok = redis.call('ZSCORE', LEASES, token) and 1 or 0
  for i = 1, k do res[#res + 1] = ok end
  if ok == 1 then
    if not done_max then
      local _
      _, _, done_max, done_age = retention()
    end
    if done_max > 0 then
      local envs = hmget_all(RUNNING, names)
      local done = {}
      for i = 1, k do
        if envs[i] then
          local id, before, _, p2 = fields(envs[i])
          redis.call('HSET', JOBS, id, with_attempt(envs[i], id, before + 1, p2))
          done[#done + 1] = now
          done[#done + 1] = id
        end
      end
      if #done > 0 then
        batched('ZADD', COMPLETED, done)
        trim(COMPLETED, done_max, done_age, now)
      end
    else
      for i = 1, k do forgotten[#forgotten + 1] = ids[i] end
    end
    local n = 0
    for i = 1, k, 1000 do
      n = n + redis.call('HDEL', RUNNING, unpack(names, i, math.min(i + 999, k)))
    end
    if n > 0 then settle(token, n) end
  end
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
    local _, before, max, p2 = fields(env)
    local attempt = before + 1
    env = with_attempt(env, id, attempt, p2)
    add_error(id, attempt, now, ARGV[at + 4])
    local due = tonumber(ARGV[at + 3])
    if code == 'r' then due = now + due end
    if code == 'd' or attempt >= max then
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
    res[#res + 1] = 0
  end
  at = at + 5
end
if #ready > 0 then
  batched('RPUSH', READY, ready)
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
