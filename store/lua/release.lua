-- Shared by finish.lua and cancel.lua (prepended to them): settle or release a job's reservation.
-- Called once per job, when it first becomes terminal.
--   job: the job hash key; account, active, daily: account keys; succeeded: boolean.
-- A succeeded job's reserved credits become a charge (they already left the balance); any other
-- terminal job gets its credits and its daily images back: nothing is charged that made no image.
local function settle(job, account, active, daily, succeeded)
  local fields = redis.call('HMGET', job, 'id', 'reserved', 'n')
  local reserved = tonumber(fields[2] or '0')
  redis.call('SREM', active, fields[1])
  if reserved > 0 then
    redis.call('HINCRBY', account, 'reserved', -reserved)
  end
  if succeeded then
    redis.call('HSET', job, 'charged', reserved)
    if reserved > 0 then
      redis.call('HINCRBY', account, 'spent', reserved)
    end
  else
    if reserved > 0 then
      redis.call('HINCRBY', account, 'balance', reserved)
    end
    if redis.call('EXISTS', daily) == 1 then
      redis.call('DECRBY', daily, tonumber(fields[3] or '0'))
    end
    redis.call('HSET', job, 'charged', 0)
  end
  return reserved
end
