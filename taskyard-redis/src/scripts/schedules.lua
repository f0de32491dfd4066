-- schedules.lua: lists a queue's schedules (periodic jobs), read only.
-- Returns SCHEDULES whole, as HGETALL does: name, record, name, record, ... in no order
-- (the Rust side sorts by name). A queue's schedules are few: declared by the
-- application.
check_layout()
return redis.call('HGETALL', SCHEDULES)
