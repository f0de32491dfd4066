-- heartbeat.lua: extends the leases still held, records progress, reports cancels.
-- ARGV[1] = lease ms, ARGV[2] = n, ARGV[3..2+n] = tokens; then per progress report 3
-- ARGV: token, id, progress (JSON).
-- Returns {{1 per token still held (now extended), 0 per token gone (its lease expired
-- and its jobs were returned: they may run elsewhere now)}, {ids of these tokens' jobs
-- cancelled while running}}.
-- A report is kept only while its job runs under that token (a job finished, released
-- or cancelled meanwhile keeps none). A queue with no progress reports and no cancels
-- costs one EXISTS per call more than leases alone.
check_layout()
local now = now_ms()
local lease_end = now + tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local tokens = {}
for i = 3, 2 + n do tokens[#tokens + 1] = ARGV[i] end
local s = scores_of(LEASES, tokens)
local res, zs = {}, {}
for i = 1, #tokens do
  if s[i] then
    res[i] = 1
    zs[#zs + 1] = lease_end
    zs[#zs + 1] = tokens[i]
  else
    res[i] = 0
  end
end
for i = 1, #zs, 1000 do
  redis.call('ZADD', LEASES, 'XX', unpack(zs, i, math.min(i + 999, #zs)))
end
local reports = {}
for i = 3 + n, #ARGV, 3 do
  if redis.call('HEXISTS', RUNNING, ARGV[i] .. '|' .. ARGV[i + 1]) == 1 then
    reports[#reports + 1] = ARGV[i + 1]
    reports[#reports + 1] = ARGV[i + 2]
  end
end
if #reports > 0 then batched('HSET', PROGRESS, reports) end
local cancelled = {}
if #zs > 0 and redis.call('EXISTS', REVOKED) == 1 then
  local held = {}
  for i = 2, #zs, 2 do held[#held + 1] = zs[i] end
  for _, ids in ipairs(hmget_all(REVOKED, held)) do
    if ids then
      for id in string.gmatch(ids, '[^,]+') do cancelled[#cancelled + 1] = id end
    end
  end
end
return {res, cancelled}
