-- drop.lua: deletes a whole queue: every key of it, in this layout and release 0.1's
-- (the ten after this layout's N_KEYS, as upgrade.lua takes them). UNLINK frees large
-- values off the main
-- thread, so one call does it whatever the queue holds. Outcomes and heartbeats of its
-- running jobs find no lease afterwards and change nothing.
-- Returns how many jobs it held (tombstones left out).
local v = redis.call('HGET', META, 'layout')
if v and v ~= LAYOUT then check_layout() end
local n = redis.call('LLEN', READY) + redis.call('ZCARD', PRIO) - redis.call('SCARD', DELETED) +
  redis.call('ZCARD', SCHEDULED) + redis.call('HLEN', RUNNING) + redis.call('ZCARD', DEAD) +
  redis.call('ZCARD', COMPLETED) + redis.call('ZCARD', CANCELLED)
-- 0.1's ready, scheduled, dead, completed and running jobs, if it left any.
local o = N_KEYS
n = n + redis.call('LLEN', KEYS[o + 1]) + redis.call('ZCARD', KEYS[o + 2]) +
  redis.call('ZCARD', KEYS[o + 5]) + redis.call('ZCARD', KEYS[o + 6]) +
  redis.call('HLEN', KEYS[o + 9])
redis.call('UNLINK', unpack(KEYS))
return n
