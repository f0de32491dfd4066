-- act.lua: one bounded step of an operator's run-now, delete or cancel.
-- ARGV[1] = 'run' (scheduled jobs become ready now, each at its priority, attempts kept),
--   'delete' (ready and scheduled jobs are removed, their unique keys freed) or
--   'cancel' (ready, scheduled and running jobs end in `cancelled`, attempts and history
--   kept, their unique keys freed as a delete frees them);
-- ARGV[2] = 'ids' | 'kind' | 'all', ARGV[3] = kind, ARGV[4] = where the last step
-- stopped ('' = the start), ARGV[5..] = ids (at most 1000).
-- Returns {how many acted on, where the next step resumes or '', then per named job not
-- acted on: its id, its state or '' when there is no such job}.
--
-- By ids: jobs keyed by id (scheduled, dead, completed) and running ones are found at
-- once; the others may be ready, in prio or the list, which are walked WALK_STEP
-- entries per call (ready_chunk), cursor "walk cursor|indexes of the ids still sought".
-- A ready job in prio is deleted by removing its member, in the call that found it; one
-- in the list by a tombstone (added to `deleted` in the call that found it, so no claim
-- can take it in between): claims drop its envelope, counts and listings skip it. Named
-- jobs the walk did not find are looked up in the keyed places once more at its end (a
-- claim may have taken one meanwhile).
-- By kind or all: run-now walks scheduled (select_in). Delete walks scheduled, then
-- prio, then the ready list, cursor "s:rank", then "p:" and for a kind the last score
-- read (prio_chunk) or for all nothing (popped from the head, STEP a call), then for a
-- kind "w:walk cursor" (tombstones) and for all "r:entries left" (popped from the head:
-- every job in the list when the phase began, or as many).
-- A cancel walks as a delete, then the running jobs, cursor "u:" and the HSCAN cursor of
-- the running hash. A cancelled ready or scheduled job is kept as a dead one is (its
-- envelope in `jobs`, its id in `cancelled`, trimmed under the dead set's limits); a
-- tombstone keeps a listed one from being claimed. A running one leaves running at once
-- with its attempt counted: its outcome is refused, its batch counts it out, its id goes
-- to `revoked` for its batch's heartbeats to report, and "c" on EVENTS wakes the
-- workers waiting for cancels. Waiters for any job cancelled are told.
check_layout()
local cancel = ARGV[1] == 'cancel'
local del = ARGV[1] == 'delete' or cancel
local mode, kind, cursor = ARGV[2], ARGV[3], ARGV[4]
local STEP = 1000
-- Steps that move each job they take (run-now routes each to ready at its priority) or
-- remove it from a sorted set (a delete by kind in prio) take half as many: at STEP,
-- such a step was seen to use 6-10 ms of Redis CPU on a busy 2-core machine.
local MOVE_STEP = STEP / 2
local uniq = del and redis.call('EXISTS', UNIQUE) == 1
local errors = del and not cancel and redis.call('EXISTS', ERRORS) == 1
local done = 0
local out = {0, ''}
local histories = {}
local now = cancel and now_ms()
-- A cancel's jobs: (time, id) pairs for `cancelled`, ids that ended, whether a running
-- one was among them, and the ids whose progress goes.
local cancels, ended, stopped, unrun = {}, {}, false, {}

-- Takes a job whose envelope left its place: deleted, its history and its key go with
-- it; cancelled, its key goes and it is kept (`keyed`: its envelope is in `jobs`).
local function gone(id, env, keyed)
  if uniq and env then free_key(env, id, 'qfd') end
  if cancel then
    if env and not keyed then redis.call('HSET', JOBS, id, env) end
    cancels[#cancels + 1] = now
    cancels[#cancels + 1] = id
    ended[#ended + 1] = id
  elseif errors then
    histories[#histories + 1] = id
  end
  done = done + 1
end

-- Cancels a running job, given its running field "token|id" and envelope.
local function cancel_running(field, env)
  local bar = string.find(field, '|', 1, true)
  local token, id = string.sub(field, 1, bar - 1), string.sub(field, bar + 1)
  redis.call('HDEL', RUNNING, field)
  -- Counted out of its batch, which stays with its lease even when empty (common.lua).
  redis.call('HINCRBY', BATCHES, '#' .. token, -1)
  redis.call('HSET', BATCHES, '!' .. token, 1)
  local prev = redis.call('HGET', REVOKED, token)
  redis.call('HSET', REVOKED, token, prev and prev .. ',' .. id or id)
  local _, before, _, p2 = fields(env)
  gone(id, with_attempt(env, id, before + 1, p2))
  unrun[#unrun + 1] = id
  stopped = true
end

-- The reply, once the histories of deleted jobs are gone too, and a cancel's jobs are
-- kept, trimmed and told.
local function reply()
  if #histories > 0 then batched('HDEL', ERRORS, histories) end
  if #cancels > 0 then
    batched('ZADD', CANCELLED, cancels)
    local dead_max, dead_age = retention()
    trim(CANCELLED, dead_max, dead_age, now)
    drop_progress(unrun)
    if stopped then redis.call('PUBLISH', EVENTS, 'c') end
    tell_waiters(ended, now)
  end
  out[1] = done
  return out
end

-- Acts on scheduled jobs: their bodies leave `jobs` (a cancel keeps them).
local function act_keyed(ids)
  if #ids == 0 then return end
  local bodies = hmget_all(JOBS, ids)
  batched('ZREM', SCHEDULED, ids)
  if not cancel then batched('HDEL', JOBS, ids) end
  if del then
    for i = 1, #ids do gone(ids[i], bodies[i], true) end
    return
  end
  local envs = {}
  for i = 1, #ids do
    if bodies[i] then envs[#envs + 1] = bodies[i] end
  end
  -- A debounced job made ready holds its key no more.
  if redis.call('EXISTS', UNIQUE) == 1 then
    for i = 1, #envs do free_key(envs[i], id_of(envs[i]), 'd') end
  end
  done = done + to_ready(envs)
  signal()
end

-- Deletes jobs of prio, given their envelopes (its members).
local function delete_prio(envs)
  if #envs == 0 then return end
  batched('ZREM', PRIO, envs)
  for i = 1, #envs do gone(id_of(envs[i]), envs[i]) end
end

if mode == 'ids' then
  local ids = {}
  for i = 5, #ARGV do ids[#ids + 1] = ARGV[i] end
  local function skip(id, state)
    out[#out + 1] = id
    out[#out + 1] = state or ''
  end
  local running = nil
  -- A job's state by its keyed places, or nil (ready, or no such job). A completed job
  -- not kept is known by its result, while it lasts.
  local function keyed(id)
    if redis.call('ZSCORE', SCHEDULED, id) then return 'scheduled' end
    if redis.call('ZSCORE', DEAD, id) then return 'dead' end
    if redis.call('ZSCORE', COMPLETED, id) then return 'completed' end
    if redis.call('ZSCORE', CANCELLED, id) then return 'cancelled' end
    if not running then
      running = {}
      for _, f in ipairs(redis.call('HKEYS', RUNNING)) do
        running[string.sub(f, string.find(f, '|', 1, true) + 1)] = f
      end
    end
    if running[id] then return 'running' end
    if redis.call('HEXISTS', RESULTS, id) == 1 then return 'completed' end
    return nil
  end
  -- Acts on a job found in a keyed place, or says it was skipped.
  local function act_on(id, state)
    if state == 'scheduled' then
      act_keyed({id})
    elseif state == 'running' and cancel then
      local field = running[id]
      running[id] = nil
      cancel_running(field, redis.call('HGET', RUNNING, field))
    else
      skip(id, state)
    end
  end

  local sought, walk = {}, ''
  if cursor == '' then
    local seen = {}
    for i = 1, #ids do
      local id = ids[i]
      if not seen[id] then
        seen[id] = true
        local state = keyed(id)
        if state then
          act_on(id, state)
        else
          sought[#sought + 1] = i
        end
      end
    end
  else
    local bar = string.find(cursor, '|', 1, true)
    if not bar then return error({err = 'TASKYARD_CURSOR ' .. cursor}) end
    walk = string.sub(cursor, 1, bar - 1)
    for i in string.gmatch(string.sub(cursor, bar + 1), '%d+') do
      sought[#sought + 1] = tonumber(i)
    end
  end

  if #sought > 0 then
    local want = {}
    for _, i in ipairs(sought) do want[ids[i]] = i end
    local chunk, n_prio, after = ready_chunk(walk)
    local found, envs, in_prio, listed = {}, {}, {}, {}
    for i = 1, #chunk do
      local id = id_of(chunk[i])
      if want[id] then
        found[#found + 1] = id
        envs[#envs + 1] = chunk[i]
        in_prio[#found] = i <= n_prio
        if i > n_prio then listed[#listed + 1] = id end
      end
    end
    local dead = tombstones(listed) or {}
    local marks, members = {}, {}
    for i = 1, #found do
      local id = found[i]
      if not dead[id] or in_prio[i] then
        want[id] = nil
        if not del then
          skip(id, 'ready')
        elseif in_prio[i] then
          members[#members + 1] = envs[i]
        else
          marks[#marks + 1] = id
          gone(id, envs[i])
        end
      end
    end
    delete_prio(members)
    if #marks > 0 then batched('SADD', DELETED, marks) end
    local unfound = {}
    for _, i in ipairs(sought) do
      if want[ids[i]] then unfound[#unfound + 1] = i end
    end
    if after ~= '' and #unfound > 0 then
      out[2] = after .. '|' .. table.concat(unfound, ',')
    else
      for _, i in ipairs(unfound) do act_on(ids[i], keyed(ids[i])) end
    end
  end
  return reply()
end

-- By kind or all.
local phase, at = string.sub(cursor, 1, 1), string.sub(cursor, 3)
if cursor == '' then phase, at = 's', '' end
if phase ~= 's' and not del then return error({err = 'TASKYARD_CURSOR ' .. cursor}) end
-- Where a delete goes after prio, and after the ready list (a cancel: running).
local function after_prio()
  return mode == 'all' and 'r:' .. redis.call('LLEN', READY) or 'w:'
end
local function after_list()
  return cancel and 'u:' or ''
end
if phase == 's' then
  local ids, resume = select_in(SCHEDULED, del and STEP or MOVE_STEP, mode, kind, at,
    #ARGV + 1)
  act_keyed(ids)
  local nxt = resume(0)
  if nxt ~= '' then
    out[2] = 's:' .. nxt
  elseif del then
    out[2] = 'p:'
  end
elseif phase == 'p' and mode == 'all' then
  local popped = redis.call('ZPOPMIN', PRIO, STEP)
  local envs = {}
  for i = 1, #popped, 2 do envs[#envs + 1] = popped[i] end
  for i = 1, #envs do gone(id_of(envs[i]), envs[i]) end
  out[2] = #envs == STEP and 'p:' or after_prio()
elseif phase == 'p' then
  -- A kind in prio: a walk by score, each match removed.
  local chunk, after = prio_chunk(at, MOVE_STEP)
  local of_kind = kind_pattern(kind)
  local envs = {}
  for i = 1, #chunk do
    if string.find(chunk[i], of_kind) then envs[#envs + 1] = chunk[i] end
  end
  delete_prio(envs)
  out[2] = after ~= '' and 'p:' .. after or after_prio()
elseif phase == 'r' then
  -- All of the ready list: popped from the head, tombstones dropped uncounted.
  local left = tonumber(at)
  if not left then return error({err = 'TASKYARD_CURSOR ' .. cursor}) end
  local envs = left > 0 and redis.call('LPOP', READY, math.min(left, STEP)) or {}
  local ids = {}
  for i = 1, #envs do ids[i] = id_of(envs[i]) end
  local dead = tombstones(ids) or {}
  local forget = {}
  for i = 1, #envs do
    if dead[ids[i]] then
      forget[#forget + 1] = ids[i]
    else
      gone(ids[i], envs[i])
    end
  end
  if #forget > 0 then batched('SREM', DELETED, forget) end
  left = left - #envs
  out[2] = (left > 0 and #envs == STEP) and 'r:' .. left or after_list()
elseif phase == 'w' then
  -- A kind in the ready list: a walk, each match tombstoned.
  local pos, restarts = walk_from(at)
  local chunk, after = walk_chunk(pos, restarts)
  local of_kind = kind_pattern(kind)
  local found, envs = {}, {}
  for i = 1, #chunk do
    if string.find(chunk[i], of_kind) then
      found[#found + 1] = id_of(chunk[i])
      envs[#envs + 1] = chunk[i]
    end
  end
  local dead = tombstones(found) or {}
  local marks = {}
  for i = 1, #found do
    if not dead[found[i]] then
      marks[#marks + 1] = found[i]
      gone(found[i], envs[i])
    end
  end
  if #marks > 0 then batched('SADD', DELETED, marks) end
  out[2] = after ~= '' and 'w:' .. after or after_list()
elseif phase == 'u' and cancel then
  -- Running jobs, by HSCAN of the running hash: a field there for the whole walk is
  -- seen, and removing fields meanwhile is allowed. COUNT is a hint Redis may pass by a
  -- few fields; 900 keeps a step within STEP.
  local got = redis.call('HSCAN', RUNNING, at == '' and '0' or at, 'COUNT', 900)
  local of_kind = mode == 'kind' and kind_pattern(kind)
  local entries = got[2]
  for i = 1, #entries, 2 do
    if not of_kind or string.find(entries[i + 1], of_kind) then
      cancel_running(entries[i], entries[i + 1])
    end
  end
  if got[1] ~= '0' then out[2] = 'u:' .. got[1] end
else
  return error({err = 'TASKYARD_CURSOR ' .. cursor})
end
return reply()
