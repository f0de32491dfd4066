-- stats.lua: counts per state, read atomically. Ready counts the ready list and prio,
-- less the tombstones still in the list.
-- Returns {ready, scheduled, running, completed, dead, paused (0/1), cancelled}.
check_layout()
return {
  redis.call('LLEN', READY) + redis.call('ZCARD', PRIO) - redis.call('SCARD', DELETED),
  redis.call('ZCARD', SCHEDULED), redis.call('HLEN', RUNNING),
  redis.call('ZCARD', COMPLETED), redis.call('ZCARD', DEAD), redis.call('HEXISTS', META, 'paused'),
  redis.call('ZCARD', CANCELLED)
}
