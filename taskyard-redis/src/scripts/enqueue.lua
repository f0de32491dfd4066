-- enqueue.lua: adds a batch of jobs, all or nothing.
-- ARGV[1] = count, ARGV[2] = the first id (ids are first .. first+count-1, handed out
--   by the store's counter, taskyard:ids, so they are unique across queues); then per
--   job: due ("" now, "+ms" after store now, "@ms" at),
--   tail = "max_attempts\tkind\tbackoff[\tname=value...]\npayload";
--   and only in a batch where some job has a priority or a unique key, three more:
--   priority ("" for the default), unique mode ("" none, q, f, d, p<period ms>), key.
-- Returns {1, first_id, then per duplicate: its index (1-based), the holder's id} (2
-- instead of 1 when the queue is new: see check_layout), or {0, len, max_len} when the
-- queue's max length would be passed (nothing written).
-- A duplicate (its key held: see `holder`) adds nothing and keeps its id unused; in a
-- batch the first job of a key wins. A debounced duplicate of a scheduled debounced
-- holder gives the holder its envelope (payload, options) and due time instead.
local written = check_layout(true) and 2 or 1
local now = now_ms()
local n = tonumber(ARGV[1])
local first = tonumber(ARGV[2])
local stride = (#ARGV - 2) / n
local max_len = tonumber(redis.call('HGET', META, 'max_len') or '0')
local head = new_head(now)

-- When a job is due, or nil for now.
local function due_at(due)
  local at = nil
  local c = string.sub(due, 1, 1)
  if c == '+' then
    at = now + tonumber(string.sub(due, 2))
  elseif c == '@' then
    at = tonumber(string.sub(due, 2))
  end
  if at and at > now then return at end
  return nil
end

if stride == 2 then
  -- No option in the batch: the plain path, per job nothing but its envelope.
  if max_len > 0 then
    local len = waiting()
    if len + n > max_len then return {0, len, max_len} end
  end
  local ready, zs, hs = {}, {}, {}
  for i = 1, n do
    local id = tostring(first + i - 1)
    local env = new_envelope(id, head, ARGV[2 * i + 2])
    local at = due_at(ARGV[2 * i + 1])
    if at then
      zs[#zs + 1] = at
      zs[#zs + 1] = id
      hs[#hs + 1] = id
      hs[#hs + 1] = env
    else
      ready[#ready + 1] = env
    end
  end
  if #ready > 0 then batched('RPUSH', READY, ready) end
  if #zs > 0 then
    batched('ZADD', SCHEDULED, zs)
    batched('HSET', JOBS, hs)
  end
  signal()
  return {written, first}
end

-- The payload of an envelope or a tail: all after the first newline.
local function payload_of(text)
  return string.sub(text, string.find(text, '\n', 1, true) + 1)
end

-- A batch with options. First who is a duplicate (nothing written yet, so a full queue
-- refuses the batch whole), then the writes.
local jobs, dups = {}, {}
-- key -> {id = holder, job = index of a new job of this batch, deb = holder is debounced}
local holders = {}
-- Scheduled debounced holders of earlier batches given a new envelope: id -> {tail, at}.
local replaced, replaced_order = {}, {}
local added = 0
for i = 1, n do
  local b = 2 + (i - 1) * 5
  local job = {id = tostring(first + i - 1), at = due_at(ARGV[b + 1]), tail = ARGV[b + 2],
    prio = ARGV[b + 3], mode = ARGV[b + 4], key = ARGV[b + 5]}
  jobs[i] = job
  local h = false
  if job.mode ~= '' then
    h = holders[job.key]
    if h == nil then
      local id, deb = holder(redis.call('HGET', UNIQUE, job.key), now)
      h = id and {id = id, deb = deb} or false
      holders[job.key] = h
    end
    if h and h.job then
      -- A debounced job of this batch holds its key only while it is scheduled.
      local j = jobs[h.job]
      if j.mode == 'd' and not j.at then h = false end
    elseif h and h.deb and replaced[h.id] and not replaced[h.id].at then
      -- A debounced holder made ready by an earlier duplicate of this batch.
      h = false
    end
  end
  if h then
    job.dup = true
    dups[#dups + 1] = i
    dups[#dups + 1] = h.id
    if job.mode == 'd' then
      -- Debounce replaces the holder's payload and due time; the rest stays the holder's.
      if h.job then
        local j = jobs[h.job]
        if j.mode == 'd' then
          j.tail = string.sub(j.tail, 1, string.find(j.tail, '\n', 1, true)) .. payload_of(job.tail)
          j.at = job.at
        end
      elseif h.deb then
        if not replaced[h.id] then replaced_order[#replaced_order + 1] = h.id end
        replaced[h.id] = {payload = payload_of(job.tail), at = job.at}
      end
    end
  else
    added = added + 1
    if job.mode ~= '' then holders[job.key] = {id = job.id, job = i} end
  end
end
if max_len > 0 and added > 0 then
  local len = waiting()
  if len + added > max_len then return {0, len, max_len} end
end

-- Scheduled holders that took a duplicate's payload: the rest of the envelope is theirs;
-- due at the duplicate's time, or ready at once (and then the key is free).
for _, id in ipairs(replaced_order) do
  local r = replaced[id]
  local old = redis.call('HGET', JOBS, id)
  if old then
    local env = string.sub(old, 1, string.find(old, '\n', 1, true)) .. r.payload
    if r.at then
      redis.call('ZADD', SCHEDULED, r.at, id)
      redis.call('HSET', JOBS, id, env)
    else
      redis.call('ZREM', SCHEDULED, id)
      redis.call('HDEL', JOBS, id)
      free_key(old, id, 'd')
      to_ready({env})
    end
  end
end

-- New jobs: scheduled, ready in the list (default priority) or in prio.
local ready, zs, hs, ps, us, uexp = {}, {}, {}, {}, {}, {}
for i = 1, n do
  local job = jobs[i]
  if not job.dup then
    local env = new_envelope(job.id, head, job.tail)
    if job.at then
      zs[#zs + 1] = job.at
      zs[#zs + 1] = job.id
      hs[#hs + 1] = job.id
      hs[#hs + 1] = env
    elseif job.prio == '' then
      ready[#ready + 1] = env
    else
      ps[#ps + 1] = (100 - tonumber(job.prio)) * BAND + MID
      ps[#ps + 1] = env
    end
    -- A debounced job due now holds nothing.
    if job.mode ~= '' and not (job.mode == 'd' and not job.at) then
      us[#us + 1] = job.key
      us[#us + 1] = holding(job.id, job.mode, now)
      if string.sub(job.mode, 1, 1) == 'p' then
        uexp[#uexp + 1] = now + tonumber(string.sub(job.mode, 2))
        uexp[#uexp + 1] = job.key
      end
    end
  end
end
if #ready > 0 then batched('RPUSH', READY, ready) end
if #zs > 0 then batched('ZADD', SCHEDULED, zs) end
if #ps > 0 then add_to_prio(ps) end
if #hs > 0 then batched('HSET', JOBS, hs) end
if #us > 0 then batched('HSET', UNIQUE, us) end
if #uexp > 0 then batched('ZADD', UEXP, uexp) end
signal()
local out = {written, first}
for i = 1, #dups do out[#out + 1] = dups[i] end
return out
