-- upgrade.lua: moves a queue written by taskyard 0.1 into this layout, a bounded step
-- per call, so a large old queue never blocks Redis for long. The caller repeats until
-- it returns 0; while 0.1's meta key exists every other script refuses the queue
-- (check_layout), so nothing reads a half-moved queue. Steps from two processes at once
-- are safe: each call is atomic and moves what is left.
--
-- KEYS 1-N_KEYS as in common.lua (12 is 0.1's meta); the ten after them are 0.1's other
-- keys: ready, scheduled, jobs, leases, dead, completed, errors, signal, running,
-- batches.
-- 0.1's envelope is this layout's without the version: "id\tattempt\t...\npayload".
-- Every job keeps its id, attempts, error history, due time and lease.
local o = N_KEYS
local O_READY, O_SCHEDULED, O_JOBS, O_LEASES = KEYS[o + 1], KEYS[o + 2], KEYS[o + 3], KEYS[o + 4]
local O_DEAD, O_COMPLETED, O_ERRORS = KEYS[o + 5], KEYS[o + 6], KEYS[o + 7]
local O_SIGNAL, O_RUNNING, O_BATCHES = KEYS[o + 8], KEYS[o + 9], KEYS[o + 10]
local STEP = 1000

-- A queue already in this layout is never upgraded again: 0.1 keys written after its
-- upgrade (a 0.1 process still running) are reported by maintain.lua, not moved.
local v = redis.call('HGET', META, 'layout')
if v == LAYOUT then return 0 end
if v then check_layout() end
if redis.call('EXISTS', OLD_META) == 0 then return 0 end

local function convert(env) return ENVELOPE .. '\t' .. env end

-- Error histories travel with their jobs.
local function move_errors(ids)
  if #ids == 0 then return end
  local lines = hmget_all(O_ERRORS, ids)
  local hs = {}
  for i = 1, #ids do
    if lines[i] then
      hs[#hs + 1] = ids[i]
      hs[#hs + 1] = lines[i]
    end
  end
  if #hs > 0 then batched('HSET', ERRORS, hs) end
  batched('HDEL', O_ERRORS, ids)
end

-- Settings first, once. 0.1 numbered jobs per queue: its counter is kept as `seq`, and
-- the store raises its own counter (taskyard:ids) above every queue's, so new ids never
-- repeat an old one.
if redis.call('HEXISTS', META, 'upgrading') == 0 then
  local old = redis.call('HGETALL', OLD_META)
  local hs = {}
  for i = 1, #old, 2 do
    if old[i] ~= 'seq' then
      hs[#hs + 1] = old[i]
      hs[#hs + 1] = old[i + 1]
    end
  end
  local seq = math.max(tonumber(redis.call('HGET', OLD_META, 'seq') or '0'),
    tonumber(redis.call('HGET', META, 'seq') or '0'))
  hs[#hs + 1] = 'seq'
  hs[#hs + 1] = seq
  hs[#hs + 1] = 'upgrading'
  hs[#hs + 1] = '1'
  redis.call('HSET', META, unpack(hs))
end

-- Running jobs keep their lease: it expires on time and maintenance returns them.
local tokens = redis.call('ZRANGE', O_LEASES, 0, 99, 'WITHSCORES')
if #tokens > 0 then
  for t = 1, #tokens, 2 do
    local token = tokens[t]
    local ids = redis.call('HGET', O_BATCHES, token)
    local left = redis.call('HGET', O_BATCHES, '#' .. token)
    local names, list = {}, {}
    if ids then
      for id in string.gmatch(ids, '[^,]+') do
        list[#list + 1] = id
        names[#names + 1] = token .. '|' .. id
      end
    end
    if #names > 0 then
      local envs = hmget_all(O_RUNNING, names)
      local hs = {}
      for i = 1, #names do
        if envs[i] then
          hs[#hs + 1] = names[i]
          hs[#hs + 1] = convert(envs[i])
        end
      end
      if #hs > 0 then batched('HSET', RUNNING, hs) end
      batched('HDEL', O_RUNNING, names)
      move_errors(list)
    end
    -- Marked as a batch some job may have left early: 0.1 kept no such mark, so finish
    -- checks these (few) batches job by job.
    if ids then
      redis.call('HSET', BATCHES, token, ids, '#' .. token, left or #list, '!' .. token, 1)
    end
    redis.call('ZADD', LEASES, tokens[t + 1], token)
    redis.call('HDEL', O_BATCHES, token, '#' .. token)
    redis.call('ZREM', O_LEASES, token)
  end
  return 1
end

-- Scheduled, dead and completed jobs: an entry in a sorted set and a body in jobs.
for _, pair in ipairs({{O_SCHEDULED, SCHEDULED}, {O_DEAD, DEAD}, {O_COMPLETED, COMPLETED}}) do
  local from, to = pair[1], pair[2]
  local entries = redis.call('ZRANGE', from, 0, STEP - 1, 'WITHSCORES')
  if #entries > 0 then
    local ids, zs = {}, {}
    for i = 1, #entries, 2 do
      ids[#ids + 1] = entries[i]
      zs[#zs + 1] = entries[i + 1]
      zs[#zs + 1] = entries[i]
    end
    local bodies = hmget_all(O_JOBS, ids)
    local hs = {}
    for i = 1, #ids do
      if bodies[i] then
        hs[#hs + 1] = ids[i]
        hs[#hs + 1] = convert(bodies[i])
      end
    end
    if #hs > 0 then batched('HSET', JOBS, hs) end
    batched('ZADD', to, zs)
    batched('HDEL', O_JOBS, ids)
    batched('ZREM', from, ids)
    move_errors(ids)
    return 1
  end
end

-- Ready jobs, from 0.1's tail to this layout's head: they keep their order and go
-- before anything enqueued since.
local envs = redis.call('RPOP', O_READY, STEP)
if envs then
  local out, ids = {}, {}
  for i = 1, #envs do
    out[i] = convert(envs[i])
    ids[i] = string.sub(envs[i], 1, string.find(envs[i], '\t', 1, true) - 1)
  end
  batched('LPUSH', READY, out)
  move_errors(ids)
  return 1
end

-- Nothing left to move: what remains of 0.1's keys holds no job.
redis.call('DEL', O_JOBS, O_ERRORS, O_SIGNAL, O_RUNNING, O_BATCHES, OLD_META)
redis.call('HDEL', META, 'upgrading')
redis.call('HSET', META, 'layout', LAYOUT)
signal()
return 0
