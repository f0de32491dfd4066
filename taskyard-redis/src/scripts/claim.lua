-- claim.lua: claims up to ARGV[1] ready jobs, highest priority first and oldest first
-- within one, after promoting due ones: jobs in prio above the default priority, then
-- the ready list, then prio's lower ones.
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
local paused = checked_meta('paused')[1]
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
if paused then return {now, nxt, {}} end
local max = tonumber(ARGV[1])

-- The ready list's head, without tombstones: where there are some, popped in chunks, a
-- tombstone dropped (and forgotten), jobs popped past `n` pushed back. Bounded: at most
-- 10,000 tombstones are dropped per call; a claim then takes fewer, and signals so that
-- the next goes on at once (`capped`).
local capped = false
local function pop_ready(n)
  if redis.call('EXISTS', DELETED) == 0 then return redis.call('LPOP', READY, n) or {} end
  local out, dropped = {}, 0
  while #out < n and dropped < 10000 do
    local want = math.max(n - #out, 100)
    local envs = redis.call('LPOP', READY, want)
    if not envs then break end
    local ids = {}
    for i = 1, #envs do ids[i] = id_of(envs[i]) end
    local gone = tombstones(ids) or {}
    local back, forget = {}, {}
    for i = 1, #envs do
      if gone[ids[i]] then
        forget[#forget + 1] = ids[i]
      elseif #out < n then
        out[#out + 1] = envs[i]
      else
        -- LPUSH puts each in front of the one before: reversed, they keep their order.
        table.insert(back, 1, envs[i])
      end
    end
    if #forget > 0 then batched('SREM', DELETED, forget) end
    if #back > 0 then batched('LPUSH', READY, back) end
    dropped = dropped + #forget
    if #envs < want then break end
  end
  if #out < n and dropped >= 10000 then capped = true end
  return out
end

-- Up to `max` ready jobs in claim order, off their places. Prio's members are the
-- envelopes, so each job is one pop: with the ready list empty, prio's order is the
-- claim order (ZPOPMIN); otherwise the members above the default priority (the lowest
-- ranks: read, then removed by rank), the list, then prio's lower ones. Nothing popped
-- is ever put back.
local function take()
  local out
  if redis.call('LLEN', READY) == 0 then
    out = {}
  else
    out = redis.call('ZRANGEBYSCORE', PRIO, '-inf', string.format('(%.0f', ABOVE_DEFAULT),
      'LIMIT', 0, max)
    if #out > 0 then redis.call('ZREMRANGEBYRANK', PRIO, 0, #out - 1) end
    if #out == max then return out end
    local listed = pop_ready(max - #out)
    for i = 1, #listed do out[#out + 1] = listed[i] end
  end
  -- Lower priorities wait while default-priority jobs may still sit behind tombstones.
  if #out < max and not capped then
    local popped = redis.call('ZPOPMIN', PRIO, max - #out)
    for i = 1, #popped, 2 do out[#out + 1] = popped[i] end
  end
  return out
end

-- A queue using no option has none of prio, deleted and unique: one check, then the
-- plain path as it always was.
local options = redis.call('EXISTS', PRIO, DELETED, UNIQUE) > 0
local envs
if options then
  envs = take()
  if #envs == 0 then envs = nil end
else
  envs = redis.call('LPOP', READY, max)
end
if not envs then
  if capped then signal() end
  return {now, nxt, {}}
end
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
-- A queued or debounced job's key is free once a worker has it.
if options and redis.call('EXISTS', UNIQUE) == 1 then
  for i = 1, #envs do free_key(envs[i], ids[i], 'qd') end
end
redis.call('HSET', BATCHES, token, table.concat(ids, ','), '#' .. token, #envs)
redis.call('ZADD', LEASES, now + tonumber(ARGV[2]), token)
if capped or (#envs == max and (redis.call('LLEN', READY) > 0 or (options and
    redis.call('EXISTS', PRIO) == 1))) then
  signal()
end
return {now, nxt, envs}
