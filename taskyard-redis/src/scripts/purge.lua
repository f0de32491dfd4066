-- purge.lua: deletes up to 1000 dead jobs matching the filter (see select_in; ARGV as
-- redrive.lua's). Dead jobs hold no key but a period's, which runs its course.
-- Returns {how many were deleted, where the next step resumes or ''}.
check_layout()
local ids, resume = select_in(DEAD, 1000, ARGV[1], ARGV[2], ARGV[3], 4)
if #ids == 0 then return {0, resume(0)} end
redis.call('ZREM', DEAD, unpack(ids))
forget(ids)
return {#ids, resume(0)}
