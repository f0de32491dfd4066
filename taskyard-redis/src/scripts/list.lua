-- list.lua: a page of jobs in one state. ARGV[1] = state, ARGV[2] = cursor ('' = the
-- start), ARGV[3] = limit.
-- Returns {next cursor or '', envelope, time or '', errors or '', progress (running) or
-- result (completed) or '', ...}.
--
-- Cursors: scheduled, dead, completed and cancelled (sorted sets) resume after "score:id", the last
-- job returned — by its rank while it is still there, else by its score and id (equal
-- scores are ordered by id as a string) — so a job that stays in the set is seen once
-- however the set changes. Ready and running page by position: claims at the head of
-- ready meanwhile shift it.
check_layout()
local state, after, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])
local out = {''}
-- Where a job's progress or result is, for the states that have one: looked up per job
-- only on a queue that keeps any.
local extra = nil
if state == 'running' and redis.call('EXISTS', PROGRESS) == 1 then extra = PROGRESS end
if state == 'completed' and redis.call('EXISTS', RESULTS) == 1 then extra = RESULTS end
local function add(env, at)
  local id = fields(env)
  out[#out + 1] = env
  out[#out + 1] = at
  out[#out + 1] = redis.call('HGET', ERRORS, id) or ''
  local value = extra and redis.call('HGET', extra, id) or ''
  if value ~= '' and extra == RESULTS then
    local _
    _, _, value = result_parts(value)
  end
  out[#out + 1] = value
end
local function position()
  if after == '' then return 0 end
  local n = tonumber(after)
  if not n then return error({err = 'TASKYARD_CURSOR ' .. after}) end
  return n
end
if state == 'ready' then
  -- In claim order: prio's jobs above the default priority, the ready list, prio's
  -- lower ones; a position counts entries of all three, tombstones included (they are
  -- not shown). A page reads at most 10 slices, so one full of tombstones ends short.
  local pos = position()
  local above = redis.call('ZCOUNT', PRIO, '-inf', string.format('(%.0f', ABOVE_DEFAULT))
  local listed = redis.call('LLEN', READY)
  local total = listed + redis.call('ZCARD', PRIO)
  local shown = 0
  for _ = 1, 10 do
    if shown >= limit or pos >= total then break end
    local want = limit - shown
    if pos < above or pos >= above + listed then
      local rank = pos < above and pos or pos - listed
      local last = pos < above and math.min(above, pos + want) - 1 or rank + want - 1
      local envs = redis.call('ZRANGE', PRIO, rank, last)
      if #envs == 0 then break end
      for i = 1, #envs do add(envs[i], '') end
      shown = shown + #envs
      pos = pos + #envs
    else
      local envs = redis.call('LRANGE', READY, pos - above,
        math.min(pos - above + want, listed) - 1)
      if #envs == 0 then break end
      local ids = {}
      for i = 1, #envs do ids[i] = id_of(envs[i]) end
      local gone = tombstones(ids) or {}
      for i = 1, #envs do
        if not gone[ids[i]] then
          add(envs[i], '')
          shown = shown + 1
        end
      end
      pos = pos + #envs
    end
  end
  if pos < total then out[1] = tostring(pos) end
  return out
end
if state == 'running' then
  -- Earliest lease end first, batch by batch.
  local skip = position()
  local seen = 0
  local leases = redis.call('ZRANGE', LEASES, 0, -1, 'WITHSCORES')
  for i = 1, #leases, 2 do
    local envs = hmget_all(RUNNING, batch_fields(leases[i]))
    for j = 1, #envs do
      if envs[j] then
        seen = seen + 1
        if seen > skip then
          if (#out - 1) / 4 >= limit then
            out[1] = tostring(skip + limit)
            return out
          end
          add(envs[j], leases[i + 1])
        end
      end
    end
  end
  return out
end
local set, rev = SCHEDULED, false
if state == 'dead' then set, rev = DEAD, true
elseif state == 'completed' then set, rev = COMPLETED, true
elseif state == 'cancelled' then set, rev = CANCELLED, true end
-- Where the page starts: the rank after the cursor's job.
local start = 0
local score, member
if after ~= '' then
  local sep = string.find(after, ':', 1, true)
  if not sep then return error({err = 'TASKYARD_CURSOR ' .. after}) end
  score, member = tonumber(string.sub(after, 1, sep - 1)), string.sub(after, sep + 1)
  if not score then return error({err = 'TASKYARD_CURSOR ' .. after}) end
  local r = redis.call(rev and 'ZREVRANK' or 'ZRANK', set, member)
  if r then
    start, score = r + 1, nil
  elseif rev then
    start = redis.call('ZCOUNT', set, '(' .. score, '+inf')
  else
    start = redis.call('ZCOUNT', set, '-inf', '(' .. score)
  end
end
local cmd = rev and 'ZREVRANGE' or 'ZRANGE'
local taken, last = 0, nil
while taken <= limit do
  local entries = redis.call(cmd, set, start, start + limit, 'WITHSCORES')
  if #entries == 0 then break end
  for i = 1, #entries, 2 do
    local id, s = entries[i], tonumber(entries[i + 1])
    -- The cursor's job has left: skip the ones at its score that came before it.
    local before = score and s == score and ((not rev and id <= member) or (rev and id >= member))
    if not before then
      score = nil
      if taken == limit then
        out[1] = last
        return out
      end
      local env = redis.call('HGET', JOBS, id)
      if env then add(env, entries[i + 1]) end
      taken = taken + 1
      last = entries[i + 1] .. ':' .. id
    end
  end
  start = start + #entries / 2
end
return out
