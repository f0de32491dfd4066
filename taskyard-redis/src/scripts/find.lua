-- find.lua: one job by id, in whatever state. ARGV[1] = id.
-- Returns {state, envelope, time or '', errors or ''}, or {} if there is no such job.
-- Running and ready jobs have no entry keyed by id alone, so finding one scans the
-- running hash (bounded by the workers' concurrency) or the ready list: fine for an
-- operator's lookup, not for a hot path.
check_layout()
local id = ARGV[1]
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
    return {'running', redis.call('HGET', RUNNING, f), redis.call('ZSCORE', LEASES, token) or '', errs}
  end
end
local len = redis.call('LLEN', READY)
for start = 0, len - 1, 1000 do
  local chunk = redis.call('LRANGE', READY, start, start + 999)
  for i = 1, #chunk do
    if is_job(chunk[i], id) then return {'ready', chunk[i], '', errs} end
  end
end
return {}
