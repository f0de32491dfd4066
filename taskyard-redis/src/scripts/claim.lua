-- claim.lua: claims up to ARGV[1] ready jobs, oldest first, after promoting due ones.
-- ARGV[1] = max, ARGV[2] = lease ms, ARGV[3] = token (unique to this claim call).
-- Each claimed job: lease "id|token" -> now + lease in leases, envelope kept in jobs.
-- The envelope is not rewritten: while a job runs, its attempt field holds the attempts
-- made before this one, and this claim is attempt + 1 (attempts are counted at claim;
-- every path out of running writes the new count). That keeps this hot path to a few
-- string operations per job.
-- Returns {now, ms until the next scheduled job or -1, {envelope...}}. A paused queue
-- claims nothing.
local now = now_ms()
local nxt = -1
local head = redis.call('ZRANGE', SCHEDULED, 0, 0, 'WITHSCORES')
if head[2] then
  if tonumber(head[2]) <= now then
    promote(now, 1000)
    head = redis.call('ZRANGE', SCHEDULED, 0, 0, 'WITHSCORES')
  end
  if head[2] then nxt = math.max(0, tonumber(head[2]) - now) end
end
if redis.call('HEXISTS', META, 'paused') == 1 then return {now, nxt, {}} end
local envs = redis.call('LPOP', READY, tonumber(ARGV[1]))
if not envs then return {now, nxt, {}} end
local lease_end = tostring(now + tonumber(ARGV[2]))
local suffix = '|' .. ARGV[3]
local zs, hs = {}, {}
for i = 1, #envs do
  local env = envs[i]
  local id = string.sub(env, 1, string.find(env, '\t', 1, true) - 1)
  zs[2 * i - 1] = lease_end
  zs[2 * i] = id .. suffix
  hs[2 * i - 1] = id
  hs[2 * i] = env
end
batched('ZADD', LEASES, zs)
batched('HSET', JOBS, hs)
if redis.call('LLEN', READY) > 0 then signal() end
return {now, nxt, envs}
