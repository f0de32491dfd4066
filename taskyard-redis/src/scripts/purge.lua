-- purge.lua: deletes up to 1000 dead jobs matching the filter (see select_dead).
-- Returns {how many were deleted, where the next step resumes or ''}.
check_layout()
local ids, resume = select_dead(1000)
if #ids == 0 then return {0, resume} end
redis.call('ZREM', DEAD, unpack(ids))
forget(ids)
return {#ids, resume}
