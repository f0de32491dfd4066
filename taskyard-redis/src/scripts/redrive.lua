-- redrive.lua: moves up to 500 dead jobs (1000 named ones) matching the filter (see select_in; ARGV[1] =
-- 'ids' | 'kind' | 'all', ARGV[2] = kind, ARGV[3] = cursor, ARGV[4..] = ids) back to the
-- tail of ready, each at its priority, with a fresh count of attempts; their error
-- history is kept. A job with a unique key (other than a period's) takes it again; while
-- another job holds it, the job stays dead and is reported.
-- Returns {how many moved, where the next step resumes or '', then per job left dead:
-- its id, the holder's id}.
check_layout()
-- A walk (kind, all) takes 500 a step, not the 1000 a purge takes: each job moved is
-- parsed for its unique key and routed by priority, and a step of 1000 came within
-- 10 ms of Redis CPU. Named jobs (at most 1000, the client's chunk) are all taken.
local limit = ARGV[1] == 'ids' and 1000 or 500
local ids, resume = select_in(DEAD, limit, ARGV[1], ARGV[2], ARGV[3], 4)
if #ids == 0 then return {0, resume(0)} end
local bodies = redis.call('HMGET', JOBS, unpack(ids))
local now = now_ms()
local moved, ready, held = {}, {}, {}
for i = 1, #ids do
  local id, body = ids[i], bodies[i]
  local blocked = nil
  -- Read whether or not any key is held now: the job takes its own again.
  if body then
    local mode, key = head_unique(body)
    if mode and string.sub(mode, 1, 1) ~= 'p' then
      blocked = holder(redis.call('HGET', UNIQUE, key), now)
      if blocked == id then blocked = nil end
      if not blocked then redis.call('HSET', UNIQUE, key, holding(id, mode, now)) end
    end
  end
  if blocked then
    held[#held + 1] = id
    held[#held + 1] = blocked
  else
    moved[#moved + 1] = id
    if body then
      local _, _, _, p2 = fields(body)
      ready[#ready + 1] = with_attempt(body, id, 0, p2)
    end
  end
end
local out = {#moved, resume(#held / 2)}
if #moved == 0 then
  for i = 1, #held do out[#out + 1] = held[i] end
  return out
end
redis.call('ZREM', DEAD, unpack(moved))
redis.call('HDEL', JOBS, unpack(moved))
if #ready > 0 then
  to_ready(ready)
  signal()
end
for i = 1, #held do out[#out + 1] = held[i] end
return out
