-- enqueue.lua: adds a batch of jobs, all or nothing.
-- ARGV[1] = count, ARGV[2] = the first id (ids are first .. first+count-1, handed out
--   by the store's counter, taskyard:ids, so they are unique across queues); then per
--   job: due ("" now, "+ms" after store now, "@ms" at),
--   tail = "max_attempts\tkind\tbackoff\npayload".
-- Returns {1, first_id}, or {0, len, max_len} when the queue's max length would be
-- passed (nothing written).
check_layout(true)
local now = now_ms()
local n = tonumber(ARGV[1])
local max_len = tonumber(redis.call('HGET', META, 'max_len') or '0')
if max_len > 0 then
  local len = redis.call('LLEN', READY) + redis.call('ZCARD', SCHEDULED)
  if len + n > max_len then return {0, len, max_len} end
end
local first = tonumber(ARGV[2])
local ready, zs, hs = {}, {}, {}
local head = new_head(now)
for i = 1, n do
  local id = tostring(first + i - 1)
  local due = ARGV[2 * i + 1]
  local env = new_envelope(id, head, ARGV[2 * i + 2])
  local at = nil
  local c = string.sub(due, 1, 1)
  if c == '+' then
    at = now + tonumber(string.sub(due, 2))
  elseif c == '@' then
    at = tonumber(string.sub(due, 2))
  end
  if at and at > now then
    zs[#zs + 1] = at
    zs[#zs + 1] = id
    hs[#hs + 1] = id
    hs[#hs + 1] = env
  else
    ready[#ready + 1] = env
  end
end
if #ready > 0 then batched('RPUSH', READY, ready) end
if #zs > 0 then
  batched('ZADD', SCHEDULED, zs)
  batched('HSET', JOBS, hs)
end
signal()
return {1, first}
