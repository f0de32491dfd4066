-- fire.lua: fires a schedule (Store::fire): enqueues its jobs and moves it to its next
-- tick in one script, only if its revision is still the one the caller read and it is
-- not paused. enqueue.lua's body follows this prelude (scripts.rs joins them), so the
-- jobs are enqueued exactly as an enqueue does: same envelopes, ids, priorities, max
-- length; and like enqueue this script declares no allow-oom flag, so Redis refuses it
-- before it runs when at its memory limit.
-- ARGV[1] = name, ARGV[2] = the revision read, ARGV[3] = the revision to write (one
--   higher), ARGV[4] = next_ms, ARGV[5] = last_ms ('' none); then enqueue.lua's ARGV
--   (count, first id, per job ...), which this prelude takes off the front for it. The
--   jobs hold no unique key (the Rust side refuses one), so every job is added: the
--   max length check below is the one enqueue.lua makes, made first, because a script
--   cannot roll back and the record must move only with its jobs.
-- Returns {-1} when the schedule is not fired (gone, its revision moved, or paused) and
-- {0, len, max_len} when its jobs would pass the max length: nothing written either
-- way. Else what enqueue.lua returns, or {1} when there are no jobs (missed ticks
-- skipped: only the record moves). The record's last_job is the last job's id; with no
-- jobs it stays.
do
  check_layout()
  local name, rev, new_rev = ARGV[1], ARGV[2], ARGV[3]
  local rec = redis.call('HGET', SCHEDULES, name)
  if not rec then return {-1} end
  local nl = string.find(rec, '\n', 1, true)
  local stored, last_job, paused
  if nl then
    stored, last_job, paused = string.match(string.sub(rec, 1, nl - 1),
      '^([^\t]*)\t[^\t]*\t[^\t]*\t([^\t]*)\t([^\t]*)$')
  end
  if not stored then
    return error({err = 'TASKYARD_CORRUPT schedule ' .. name .. ' has a malformed record'})
  end
  if stored ~= rev or paused ~= '0' then return {-1} end
  local count = tonumber(ARGV[6])
  if count > 0 then
    local max_len = tonumber(redis.call('HGET', META, 'max_len') or '0')
    if max_len > 0 then
      local len = waiting()
      if len + count > max_len then return {0, len, max_len} end
    end
    last_job = tostring(tonumber(ARGV[7]) + count - 1)
  end
  redis.call('HSET', SCHEDULES, name, new_rev .. '\t' .. ARGV[4] .. '\t' .. ARGV[5] .. '\t' ..
    last_job .. '\t0' .. string.sub(rec, nl))
  if count == 0 then return {1} end
  for _ = 1, 5 do table.remove(ARGV, 1) end
end
