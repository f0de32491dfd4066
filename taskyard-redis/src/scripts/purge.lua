-- purge.lua: deletes up to 1000 dead jobs matching the filter (see select_dead).
-- Returns how many were deleted; the caller repeats until 0.
check_layout()
local ids = select_dead(1000)
if #ids == 0 then return 0 end
redis.call('ZREM', DEAD, unpack(ids))
forget(ids)
return #ids
