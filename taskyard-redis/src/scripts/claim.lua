-- claim.lua: claims up to ARGV[1] ready jobs, oldest first, after promoting due ones.
-- ARGV[1] = max, ARGV[2] = lease ms, ARGV[3] = the claimer's nonce.
-- Each claimed job: attempt + 1 (attempts are counted at claim), body kept in jobs,
-- lease "id|attempt:nonce" -> now + lease in leases.
-- Returns {now, ms until the next scheduled job or -1, envelope...}. A paused queue
-- claims nothing.
local now = now_ms()
local out = {now, -1}
if redis.call('HEXISTS', META, 'paused') == 1 then return out end
promote(now, 1000)
local envs = redis.call('LPOP', READY, tonumber(ARGV[1]))
if envs then
  local lease_end = now + tonumber(ARGV[2])
  local suffix = ':' .. ARGV[3]
  local zs, hs = {}, {}
  for i = 1, #envs do
    local env = envs[i]
    local id, attempt, _, p2 = fields(env)
    attempt = attempt + 1
    env = with_attempt(env, id, attempt, p2)
    zs[#zs + 1] = lease_end
    zs[#zs + 1] = id .. '|' .. attempt .. suffix
    hs[#hs + 1] = id
    hs[#hs + 1] = env
    out[#out + 1] = env
  end
  batched('ZADD', LEASES, zs)
  batched('HSET', JOBS, hs)
  if redis.call('LLEN', READY) > 0 then signal() end
end
local nxt = redis.call('ZRANGE', SCHEDULED, 0, 0, 'WITHSCORES')
if nxt[2] then out[2] = math.max(0, tonumber(nxt[2]) - now) end
return out
