-- wait.lua: registers a waiter for job ARGV[1] until ARGV[2] ms from now (wait_job), and
-- says whether the job has ended already (dead, cancelled, completed and kept, or its
-- result kept). While registered, the job's end is told on EVENTS and a completion with
-- no value keeps an empty result (finish.lua). A later deadline replaces an earlier one
-- (GT): several waiters on one job share its entry; maintain drops it once it passed.
-- Returns 1 when the job has ended, else 0.
check_layout()
local id = ARGV[1]
redis.call('ZADD', WAITING, 'GT', now_ms() + tonumber(ARGV[2]), id)
if redis.call('ZSCORE', DEAD, id) or redis.call('ZSCORE', CANCELLED, id) or
    redis.call('ZSCORE', COMPLETED, id) or redis.call('HEXISTS', RESULTS, id) == 1 then
  return 1
end
return 0
