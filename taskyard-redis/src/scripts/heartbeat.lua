-- heartbeat.lua: extends leases still held. ARGV[1] = lease ms, ARGV[2..] = "id|token".
-- Returns 1 per lease still held (now extended), 0 per stale token.
local now = now_ms()
local lease_end = now + tonumber(ARGV[1])
local members = {}
for i = 2, #ARGV do members[#members + 1] = ARGV[i] end
local s = scores_of(LEASES, members)
local res, zs = {}, {}
for i = 1, #members do
  if s[i] then
    res[i] = 1
    zs[#zs + 1] = lease_end
    zs[#zs + 1] = members[i]
  else
    res[i] = 0
  end
end
for i = 1, #zs, 1000 do
  redis.call('ZADD', LEASES, 'XX', unpack(zs, i, math.min(i + 999, #zs)))
end
return res
