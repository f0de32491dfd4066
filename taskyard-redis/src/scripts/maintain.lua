-- maintain.lua: promotes due scheduled jobs, returns expired leases to ready (or to dead
-- once their attempts are spent), trims dead and completed jobs past retention.
-- Idempotent: every worker runs it, no leader. Up to 1000 of each per call.
-- Returns {promoted, expired}.
local now = now_ms()
local dead_max, dead_age, done_max, done_age = retention()
local promoted = promote(now, 1000)
local expired = redis.call('ZRANGEBYSCORE', LEASES, '-inf', '(' .. now, 'LIMIT', 0, 1000)
local ready, dead = {}, {}
for i = 1, #expired do
  local id = id_of_member(expired[i])
  local env = redis.call('HGET', JOBS, id)
  if env then
    -- The envelope of a running job holds the attempts before this one.
    local _, before, max, p2 = fields(env)
    local attempt = before + 1
    env = with_attempt(env, id, attempt, p2)
    add_error(id, attempt, now, 'lease expired: the worker died or stalled')
    if attempt >= max then
      redis.call('HSET', JOBS, id, env)
      dead[#dead + 1] = now
      dead[#dead + 1] = id
    else
      ready[#ready + 1] = env
      redis.call('HDEL', JOBS, id)
    end
  end
end
if #expired > 0 then batched('ZREM', LEASES, expired) end
if #ready > 0 then batched('RPUSH', READY, ready) end
if #dead > 0 then batched('ZADD', DEAD, dead) end
trim(DEAD, dead_max, dead_age, now)
trim(COMPLETED, done_max, done_age, now)
if #ready > 0 or promoted > 0 then signal() end
return {promoted, #expired}
