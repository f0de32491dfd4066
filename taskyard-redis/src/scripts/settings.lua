-- settings.lua: reads or changes a queue's settings, layout checked like every write.
-- ARGV[1] = 'get': returns the values of the fields ARGV[2..] (false where unset);
--           'set': sets field/value pairs ARGV[2..];
--           'pause' / 'resume': pauses or resumes claims (resume wakes an idle worker);
--           these return 1, or 2 when the queue is new (see check_layout).
local op = ARGV[1]
if op == 'get' then
  check_layout()
  local names = {}
  for i = 2, #ARGV do names[#names + 1] = ARGV[i] end
  return redis.call('HMGET', META, unpack(names))
end
local fresh = check_layout(true)
if op == 'set' then
  local pairs_ = {}
  for i = 2, #ARGV do pairs_[#pairs_ + 1] = ARGV[i] end
  redis.call('HSET', META, unpack(pairs_))
elseif op == 'pause' then
  redis.call('HSET', META, 'paused', 1)
elseif op == 'resume' then
  redis.call('HDEL', META, 'paused')
  -- Idle workers would otherwise sleep until their wait times out.
  signal()
else
  return error({err = 'unknown settings operation ' .. tostring(op)})
end
return fresh and 2 or 1
