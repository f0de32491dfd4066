-- claim.lua: claims up to ARGV[1] ready jobs, oldest first, after promoting due ones.
-- ARGV[1] = max, ARGV[2] = lease ms, ARGV[3] = token (unique to this claim call, no '|'
-- or ',').
-- The batch gets one lease (token -> now + lease); each job one running field
-- "token|id" -> envelope. The envelope is not rewritten: while a job runs, its attempt
-- field holds the attempts made before this one, and this claim is attempt + 1
-- (attempts are counted at claim; every path out of running writes the new count).
-- Returns {now, ms until the next scheduled job or -1, {envelope...}}. A paused queue
-- claims nothing.
-- A token already in use names a claim made before: this call is its retry after the
-- reply was lost (a cut connection). It answers with the jobs the token still holds and
-- renews their lease; it claims nothing more and counts no attempt.
check_layout()
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
if redis.call('HEXISTS', BATCHES, '#' .. ARGV[3]) == 1 then
  local held = {}
  for _, env in ipairs(hmget_all(RUNNING, batch_fields(ARGV[3]))) do
    if env then held[#held + 1] = env end
  end
  redis.call('ZADD', LEASES, 'XX', now + tonumber(ARGV[2]), ARGV[3])
  return {now, nxt, held}
end
if redis.call('HEXISTS', META, 'paused') == 1 then return {now, nxt, {}} end
local envs = redis.call('LPOP', READY, tonumber(ARGV[1]))
if not envs then return {now, nxt, {}} end
local token = ARGV[3]
local prefix = token .. '|'
local names, ids = {}, {}
for i = 1, #envs do
  local env = envs[i]
  -- The id, read as `fields` reads it but inline: this loop runs once per claimed job,
  -- and a Lua call per job was measurable here.
  local id = string.sub(env, 3, string.find(env, '\t', 3, true) - 1)
  ids[i] = id
  names[2 * i - 1] = prefix .. id
  names[2 * i] = env
end
batched('HSET', RUNNING, names)
redis.call('HSET', BATCHES, token, table.concat(ids, ','), '#' .. token, #envs)
redis.call('ZADD', LEASES, now + tonumber(ARGV[2]), token)
if #envs == tonumber(ARGV[1]) and redis.call('LLEN', READY) > 0 then signal() end
return {now, nxt, envs}
