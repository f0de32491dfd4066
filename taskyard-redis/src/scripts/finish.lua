-- finish.lua: records how runs ended.
-- ARGV[1] = k, the number of completed runs; ARGV[2..k+1] = their "id|token";
-- ARGV[k+2..2k+1] = their ids. Then per failed run, 5 ARGV: "id|token", id, code,
-- number, error. code: r = retry after number ms; a = retry at number (Unix ms);
-- d = dead. A retry whose attempts are spent goes to dead. A stale token changes nothing.
-- Returns 1 per run recorded, 0 per stale token, completed runs first.
local now = now_ms()
local k = tonumber(ARGV[1])
local res = {}

-- Completed runs: the hot path, a few variadic calls per batch.
if k > 0 then
  local members, ids = {}, {}
  for i = 1, k do
    members[i] = ARGV[1 + i]
    ids[i] = ARGV[1 + k + i]
  end
  local s = scores_of(LEASES, members)
  local held, held_ids = {}, {}
  for i = 1, k do
    if s[i] then
      res[i] = 1
      held[#held + 1] = members[i]
      held_ids[#held_ids + 1] = ids[i]
    else
      res[i] = 0
    end
  end
  if #held > 0 then
    batched('ZREM', LEASES, held)
    local _, _, done_max, done_age = retention()
    if done_max > 0 then
      local done = {}
      for i = 1, #held_ids do
        local id = held_ids[i]
        local env = redis.call('HGET', JOBS, id)
        if env then
          local _, attempt, _, p2 = fields(env)
          redis.call('HSET', JOBS, id, with_attempt(env, id, attempt + 1, p2))
        end
        done[#done + 1] = now
        done[#done + 1] = id
      end
      batched('ZADD', COMPLETED, done)
      trim(COMPLETED, done_max, done_age, now)
    else
      forget(held_ids)
    end
  end
end

-- Failed runs: rarer; each moves to scheduled, ready or dead with its new attempt count.
local first = 2 + 2 * k
local n = (#ARGV - first + 1) / 5
local ready, sched, dead = {}, {}, {}
for j = 0, n - 1 do
  local at = first + 5 * j
  local member, id, code = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local env = redis.call('HGET', JOBS, id)
  if redis.call('ZREM', LEASES, member) == 1 and env then
    res[#res + 1] = 1
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
      redis.call('HDEL', JOBS, id)
    else
      redis.call('HSET', JOBS, id, env)
      sched[#sched + 1] = due
      sched[#sched + 1] = id
    end
  else
    res[#res + 1] = 0
  end
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
