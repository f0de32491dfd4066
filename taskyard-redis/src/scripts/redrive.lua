-- redrive.lua: moves up to 1000 dead jobs matching the filter (see select_dead) back to
-- the tail of ready with a fresh count of attempts; their error history is kept.
-- Returns {how many moved, where the next step resumes or ''}.
check_layout()
local ids, resume = select_dead(1000)
if #ids == 0 then return {0, resume} end
local bodies = redis.call('HMGET', JOBS, unpack(ids))
local ready = {}
for i = 1, #ids do
  if bodies[i] then
    local id, _, _, p2 = fields(bodies[i])
    ready[#ready + 1] = with_attempt(bodies[i], id, 0, p2)
  end
end
redis.call('ZREM', DEAD, unpack(ids))
redis.call('HDEL', JOBS, unpack(ids))
if #ready > 0 then
  batched('RPUSH', READY, ready)
  signal()
end
return {#ids, resume}
