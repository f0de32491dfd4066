-- finish.lua: records how runs ended. Per run, 4 ARGV: "id|token", code, number, error.
-- code: c = completed; r = retry after number ms; a = retry at number (Unix ms);
-- d = dead. A retry whose attempts are spent goes to dead. A stale token changes nothing.
-- Returns 1 per run recorded, 0 per stale token.
local now = now_ms()
local dead_max, dead_age, done_max, done_age = retention()
local n = #ARGV / 4
local members = {}
for i = 1, n do members[i] = ARGV[4 * i - 3] end
local s = scores_of(LEASES, members)
local res, held, gone, ready, sched, dead, done = {}, {}, {}, {}, {}, {}, {}
for i = 1, n do
  if not s[i] then
    res[i] = 0
  else
    res[i] = 1
    held[#held + 1] = members[i]
    local id = id_of_member(members[i])
    local code = ARGV[4 * i - 2]
    if code == 'c' then
      if done_max > 0 then
        done[#done + 1] = now
        done[#done + 1] = id
      else
        gone[#gone + 1] = id
      end
    else
      local env = redis.call('HGET', JOBS, id)
      if env then
        local _, attempt, max = fields(env)
        add_error(id, attempt, now, ARGV[4 * i])
        local at = tonumber(ARGV[4 * i - 1])
        if code == 'r' then at = now + at end
        if code == 'd' or attempt >= max then
          dead[#dead + 1] = now
          dead[#dead + 1] = id
        elseif at <= now then
          ready[#ready + 1] = env
          redis.call('HDEL', JOBS, id)
        else
          sched[#sched + 1] = at
          sched[#sched + 1] = id
        end
      end
    end
  end
end
if #held > 0 then batched('ZREM', LEASES, held) end
forget(gone)
if #ready > 0 then
  batched('RPUSH', READY, ready)
  signal()
end
if #sched > 0 then
  batched('ZADD', SCHEDULED, sched)
  signal()
end
if #dead > 0 then
  batched('ZADD', DEAD, dead)
  trim(DEAD, dead_max, dead_age, now)
end
if #done > 0 then
  batched('ZADD', COMPLETED, done)
  trim(COMPLETED, done_max, done_age, now)
end
return res
