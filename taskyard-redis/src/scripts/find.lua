-- find.lua: one bounded step of looking a job up by id, in whatever state.
-- ARGV[1] = id, ARGV[2] = where the last step stopped ('' = the start): a walk cursor
--   (see ready_chunk in common.lua).
-- Returns {state, envelope, time or '', errors or '', progress (running) or result
-- (completed) or ''} when found, {} when there is no such job, or {cursor} when the walk
-- of ready jobs goes on in another call. A completed job not kept is found by its result
-- while the result lasts: its envelope is then the head kept with it (no payload).
--
-- Scheduled, dead, completed and cancelled jobs are keyed by id in `jobs`; a running job is found
-- among the running hash's fields (as many as jobs run at once). A ready job is keyed
-- by nothing: the walk (ready_chunk) reads prio, then the list, WALK_STEP entries a
-- call. The last call looks in the keyed places again, for a job that left ready while
-- the walk went on. A tombstone (a deleted job still in the list) is no job.
check_layout()
local id, cursor = ARGV[1], ARGV[2]

local function placed()
  local errs = redis.call('HGET', ERRORS, id) or ''
  local rec = redis.call('HGET', RESULTS, id)
  local env = redis.call('HGET', JOBS, id)
  if env then
    for _, place in ipairs({{SCHEDULED, 'scheduled'}, {DEAD, 'dead'},
        {COMPLETED, 'completed'}, {CANCELLED, 'cancelled'}}) do
      local s = redis.call('ZSCORE', place[1], id)
      if s then
        local value = ''
        if rec and place[2] == 'completed' then
          local _
          _, _, value = result_parts(rec)
        end
        return {place[2], env, s, errs, value}
      end
    end
  end
  local suffix = '|' .. id
  local names = redis.call('HKEYS', RUNNING)
  for i = 1, #names do
    local f = names[i]
    if string.sub(f, -#suffix) == suffix then
      local token = string.sub(f, 1, #f - #suffix)
      return {'running', redis.call('HGET', RUNNING, f),
        redis.call('ZSCORE', LEASES, token) or '', errs,
        redis.call('HGET', PROGRESS, id) or ''}
    end
  end
  if rec then
    local done_at, head, value = result_parts(rec)
    return {'completed', head, done_at, errs, value}
  end
  return nil
end

if cursor == '' then
  local found = placed()
  if found then return found end
end
local chunk, n_prio, after = ready_chunk(cursor)
for i = 1, #chunk do
  if is_job(chunk[i], id) then
    if i > n_prio and redis.call('SISMEMBER', DELETED, id) == 1 then
      return placed() or {}
    end
    return {'ready', chunk[i], '', redis.call('HGET', ERRORS, id) or '', ''}
  end
end
if after ~= '' then return {after} end
return placed() or {}
