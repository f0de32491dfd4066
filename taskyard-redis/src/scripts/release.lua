-- release.lua: gives leases back without charging the attempt (shutdown).
-- ARGV = "id|token"... The jobs go back to the head of ready as they were claimed
-- (a running job's envelope holds the attempts made before the current one).
-- Returns 1 per lease released, 0 per stale token.
local members = ARGV
local s = scores_of(LEASES, members)
local res, held = {}, {}
for i = 1, #members do
  res[i] = 0
  if s[i] then
    local id = id_of_member(members[i])
    local env = redis.call('HGET', JOBS, id)
    if env then
      redis.call('LPUSH', READY, env)
      redis.call('HDEL', JOBS, id)
    end
    held[#held + 1] = members[i]
    res[i] = 1
  end
end
if #held > 0 then
  batched('ZREM', LEASES, held)
  signal()
end
return res
