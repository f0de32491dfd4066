-- heartbeat.lua: extends the leases still held. ARGV[1] = lease ms, ARGV[2..] = tokens.
-- Returns 1 per token still held (now extended), 0 per token gone (its lease expired
-- and its jobs were returned: they may run elsewhere now).
check_layout()
local now = now_ms()
local lease_end = now + tonumber(ARGV[1])
local tokens = {}
for i = 2, #ARGV do tokens[#tokens + 1] = ARGV[i] end
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
return res
