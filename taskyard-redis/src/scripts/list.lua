-- list.lua: jobs in one state. ARGV[1] = state, ARGV[2] = offset, ARGV[3] = limit.
-- Returns {envelope, time or '', errors or '', ...}.
local state, first = ARGV[1], tonumber(ARGV[2])
local last = first + tonumber(ARGV[3]) - 1
local out = {}
if state == 'ready' then
  local envs = redis.call('LRANGE', READY, first, last)
  for i = 1, #envs do
    local id = fields(envs[i])
    out[#out + 1] = envs[i]
    out[#out + 1] = ''
    out[#out + 1] = redis.call('HGET', ERRORS, id) or ''
  end
  return out
end
local set, rev = SCHEDULED, false
if state == 'running' then set = LEASES
elseif state == 'dead' then set, rev = DEAD, true
elseif state == 'completed' then set, rev = COMPLETED, true end
local cmd = rev and 'ZREVRANGE' or 'ZRANGE'
local entries = redis.call(cmd, set, first, last, 'WITHSCORES')
for i = 1, #entries, 2 do
  local id = entries[i]
  if state == 'running' then id = id_of_member(id) end
  local env = redis.call('HGET', JOBS, id)
  if env then
    out[#out + 1] = env
    out[#out + 1] = entries[i + 1]
    out[#out + 1] = redis.call('HGET', ERRORS, id) or ''
  end
end
return out
