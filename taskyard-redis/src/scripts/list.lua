-- list.lua: jobs in one state. ARGV[1] = state, ARGV[2] = offset, ARGV[3] = limit.
-- Returns {envelope, time or '', errors or '', ...}.
check_layout()
local state, skip, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local out = {}
local function add(env, at)
  local id = fields(env)
  out[#out + 1] = env
  out[#out + 1] = at
  out[#out + 1] = redis.call('HGET', ERRORS, id) or ''
end
if state == 'ready' then
  local envs = redis.call('LRANGE', READY, skip, skip + limit - 1)
  for i = 1, #envs do add(envs[i], '') end
  return out
end
if state == 'running' then
  -- Earliest lease end first, batch by batch.
  local leases = redis.call('ZRANGE', LEASES, 0, -1, 'WITHSCORES')
  for i = 1, #leases, 2 do
    local envs = hmget_all(RUNNING, batch_fields(leases[i]))
    for j = 1, #envs do
      if envs[j] then
        if skip > 0 then
          skip = skip - 1
        else
          add(envs[j], leases[i + 1])
          if #out / 3 >= limit then return out end
        end
      end
    end
  end
  return out
end
local set, rev = SCHEDULED, false
if state == 'dead' then set, rev = DEAD, true
elseif state == 'completed' then set, rev = COMPLETED, true end
local cmd = rev and 'ZREVRANGE' or 'ZRANGE'
local entries = redis.call(cmd, set, skip, skip + limit - 1, 'WITHSCORES')
for i = 1, #entries, 2 do
  local env = redis.call('HGET', JOBS, entries[i])
  if env then add(env, entries[i + 1]) end
end
return out
