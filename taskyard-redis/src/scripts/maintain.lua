-- maintain.lua: promotes due scheduled jobs, returns the jobs of expired leases to ready
-- (or to dead once their attempts are spent; their progress goes, their waiters are
-- told), trims dead, cancelled and completed jobs past retention, drops unique keys
-- whose period ended, expired results and waiters whose wait is over (up to 1000 each).
-- Idempotent: every worker runs it, no leader. Bounded work per call.
-- Returns {promoted, expired jobs, 1 if a 0.1 process wrote to the queue since its upgrade}.
check_layout()
local now = now_ms()
local dead_max, dead_age, done_max, done_age = retention()
local promoted = promote(now, 1000)
local uniq = redis.call('EXISTS', UNIQUE) == 1
local tokens = redis.call('ZRANGEBYSCORE', LEASES, '-inf', '(' .. now, 'LIMIT', 0, 100)
local ready, dead = {}, {}
local left, ended = {}, {}
for t = 1, #tokens do
  local token = tokens[t]
  local names = batch_fields(token)
  if #names > 0 then
    local envs = hmget_all(RUNNING, names)
    for i = 1, #names do
      local env = envs[i]
      if env then
        -- The envelope of a running job holds the attempts before this one.
        local id, before, max, p2 = fields(env)
        left[#left + 1] = id
        local attempt = before + 1
        env = with_attempt(env, id, attempt, p2)
        add_error(id, attempt, now, '@LEASE_EXPIRED@')
        if attempt >= max then
          if uniq then free_key(env, id, 'f') end
          redis.call('HSET', JOBS, id, env)
          dead[#dead + 1] = now
          dead[#dead + 1] = id
          ended[#ended + 1] = id
        else
          ready[#ready + 1] = env
        end
      end
    end
    batched('HDEL', RUNNING, names)
  end
  forget_batch(token)
end
to_ready(ready)
if #dead > 0 then batched('ZADD', DEAD, dead) end
drop_progress(left)
tell_waiters(ended, now)
trim(DEAD, dead_max, dead_age, now)
trim(CANCELLED, dead_max, dead_age, now)
trim(COMPLETED, done_max, done_age, now)
-- Results past their time, and waiters past their deadline.
local expired = redis.call('ZRANGEBYSCORE', REXP, '-inf', now, 'LIMIT', 0, 1000)
if #expired > 0 then
  batched('HDEL', RESULTS, expired)
  batched('ZREM', REXP, expired)
end
local over = redis.call('ZRANGEBYSCORE', WAITING, '-inf', '(' .. now, 'LIMIT', 0, 1000)
if #over > 0 then batched('ZREM', WAITING, over) end
-- A period key's entry outlives its period until here; one a later job took again (a
-- new period, or another mode) is left to it.
local ended = redis.call('ZRANGEBYSCORE', UEXP, '-inf', now, 'LIMIT', 0, 1000)
if #ended > 0 then
  local held = hmget_all(UNIQUE, ended)
  local gone = {}
  for i = 1, #ended do
    local tag = held[i] and tonumber(string.match(held[i], '|(%d+)$'))
    if tag and tag <= now then gone[#gone + 1] = ended[i] end
  end
  if #gone > 0 then batched('HDEL', UNIQUE, gone) end
  batched('ZREM', UEXP, ended)
end
if #ready > 0 or promoted > 0 then signal() end
-- A release 0.1 process still running after the upgrade writes under 0.1's keys, where
-- no 0.2 process looks: say so (the Rust side logs it), never move such jobs blindly —
-- their ids come from 0.1's counter and could collide with new ones.
return {promoted, #ready + #dead / 2, redis.call('EXISTS', OLD_META)}
