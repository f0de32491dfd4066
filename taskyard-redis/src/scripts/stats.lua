-- stats.lua: counts per state, read atomically.
-- Returns {ready, scheduled, running, completed, dead, paused (0/1)}.
check_layout()
return {
  redis.call('LLEN', READY), redis.call('ZCARD', SCHEDULED), redis.call('HLEN', RUNNING),
  redis.call('ZCARD', COMPLETED), redis.call('ZCARD', DEAD), redis.call('HEXISTS', META, 'paused')
}
