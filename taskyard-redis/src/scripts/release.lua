-- release.lua: gives leased jobs back without charging the attempt (shutdown).
-- ARGV = token, id, token, id, ... The jobs go back to the head of ready, each at the
-- head of its priority, as they were claimed (a running job's envelope holds the
-- attempts made before the current one).
-- Returns 1 per job released, 0 per job no longer held (a job cancelled meanwhile is
-- not: it left running). A released job's progress goes.
check_layout()
local res = {}
local released = false
local left = {}
for i = 1, #ARGV, 2 do
  local token, id = ARGV[i], ARGV[i + 1]
  local field = token .. '|' .. id
  local env = redis.call('HGET', RUNNING, field)
  if env then
    to_ready_head(env)
    redis.call('HDEL', RUNNING, field)
    settle(token, 1)
    left_early(token)
    released = true
    left[#left + 1] = id
    res[#res + 1] = 1
  else
    res[#res + 1] = 0
  end
end
drop_progress(left)
if released then signal() end
return res
