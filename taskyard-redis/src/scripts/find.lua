-- find.lua: one bounded step of looking a job up by id, in whatever state.
-- ARGV[1] = id, ARGV[2] = where the last step stopped ('' = the start), as
--   "position:anchor id:restarts".
-- Returns {state, envelope, time or '', errors or ''} when found, {} when there is no
-- such job, or {cursor} when the walk of the ready list goes on in another call.
--
-- Scheduled, dead and completed jobs are keyed by id in `jobs`; a running job is found
-- among the running hash's fields (as many as jobs run at once). A ready job is keyed by
-- nothing — an index would cost every queued job bytes — so the walk reads the ready
-- list FIND_STEP entries per call, and no call holds Redis for long however long the
-- list is. Between calls the list moves: claims pop its head, releases push to it. The
-- cursor names the last entry read (the anchor); the next call finds it again among the
-- FIND_STEP entries around its old place and goes on after it. Where it is not there
-- the list moved by more than a step: if the anchor was claimed, so was everything
-- before it and the walk goes on from the head, which is exact; if a large release
-- pushed it back, the walk starts over (a restart; after MAX_RESTARTS the lookup gives
-- up with TASKYARD_BUSY rather than walk forever). The last call looks in the keyed
-- places again, for a job that left ready while the walk went on.
local FIND_STEP, MAX_RESTARTS = 2000, 8
check_layout()
local id, cursor = ARGV[1], ARGV[2]

local function placed()
  local errs = redis.call('HGET', ERRORS, id) or ''
  local env = redis.call('HGET', JOBS, id)
  if env then
    local s = redis.call('ZSCORE', SCHEDULED, id)
    if s then return {'scheduled', env, s, errs} end
    s = redis.call('ZSCORE', DEAD, id)
    if s then return {'dead', env, s, errs} end
    s = redis.call('ZSCORE', COMPLETED, id)
    if s then return {'completed', env, s, errs} end
  end
  local suffix = '|' .. id
  local names = redis.call('HKEYS', RUNNING)
  for i = 1, #names do
    local f = names[i]
    if string.sub(f, -#suffix) == suffix then
      local token = string.sub(f, 1, #f - #suffix)
      return {'running', redis.call('HGET', RUNNING, f),
        redis.call('ZSCORE', LEASES, token) or '', errs}
    end
  end
  return nil
end

local pos, restarts = 0, 0
if cursor == '' then
  local found = placed()
  if found then return found end
else
  local p1 = string.find(cursor, ':', 1, true)
  local p2 = p1 and string.find(cursor, ':', p1 + 1, true)
  pos = p2 and tonumber(string.sub(cursor, 1, p1 - 1))
  restarts = p2 and tonumber(string.sub(cursor, p2 + 1))
  if not pos or not restarts or pos < 1 then
    return error({err = 'TASKYARD_CURSOR ' .. cursor})
  end
  local anchor = string.sub(cursor, p1 + 1, p2 - 1)
  local at = redis.call('LINDEX', READY, pos - 1)
  if not (at and is_job(at, anchor)) then
    -- Where the anchor is now: within a step of where it was, or gone.
    local from = math.max(0, pos - 1 - FIND_STEP)
    local near = redis.call('LRANGE', READY, from, pos - 1 + FIND_STEP)
    local moved = nil
    for i = #near, 1, -1 do
      if is_job(near[i], anchor) then
        moved = from + i
        break
      end
    end
    if moved then
      pos = moved
    else
      pos = 0
      restarts = restarts + 1
      if restarts > MAX_RESTARTS then
        return error({err = 'TASKYARD_BUSY the ready list moved too much while job ' .. id ..
          ' was looked up; try again'})
      end
    end
  end
end

local chunk = redis.call('LRANGE', READY, pos, pos + FIND_STEP - 1)
for i = 1, #chunk do
  if is_job(chunk[i], id) then
    return {'ready', chunk[i], '', redis.call('HGET', ERRORS, id) or ''}
  end
end
if #chunk == FIND_STEP then
  local last = fields(chunk[#chunk])
  return {(pos + #chunk) .. ':' .. last .. ':' .. restarts}
end
return placed() or {}
