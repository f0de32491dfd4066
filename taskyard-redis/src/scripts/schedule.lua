-- schedule.lua: stores or removes one schedule (periodic job) of a queue, layout checked
-- like every write. A record is "rev\tnext_ms\tlast_ms\tlast_job\tpaused\n" then the
-- definition (see SCHEDULES in common.lua).
-- ARGV[1] = 'put': ARGV[2] = name, ARGV[3] = the revision the caller read ('0': none
--   stored), ARGV[4] = the revision to write (one higher; the caller counts, so no
--   revision is ever a Lua number), ARGV[5] = next_ms, ARGV[6] = last_ms ('' none),
--   ARGV[7] = last_job ('' none), ARGV[8] = paused ('0' or '1'), ARGV[9] = definition.
--   A compare-and-set: writes only if the stored revision is still ARGV[3]. Returns 0
--   (nothing written), 1 (written) or 2 (written, and the queue is new: see
--   check_layout).
-- ARGV[1] = 'remove': ARGV[2] = name. Returns 1 if there was one, else 0.
check_layout()
local op, name = ARGV[1], ARGV[2]
if op == 'remove' then return redis.call('HDEL', SCHEDULES, name) end
if op ~= 'put' then
  return error({err = 'unknown schedule operation ' .. tostring(op)})
end
local rec = redis.call('HGET', SCHEDULES, name)
local stored = rec and string.match(rec, '^[^\t\n]*') or '0'
if stored ~= ARGV[3] then return 0 end
-- Only now, so a refused write leaves even a new queue untouched.
local fresh = check_layout(true)
redis.call('HSET', SCHEDULES, name, ARGV[4] .. '\t' .. ARGV[5] .. '\t' .. ARGV[6] .. '\t' ..
  ARGV[7] .. '\t' .. ARGV[8] .. '\n' .. ARGV[9])
return fresh and 2 or 1
