-- Create a job and enqueue it, atomically: either the job exists and is queued, or nothing changed.
-- KEYS: job hash, job events stream, variant stream, variant queued counter
-- ARGV: job id, queued-event JSON, then the job record as field, value pairs
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('job id exists')
end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
local position = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], 'queue_position', position)
redis.call('XADD', KEYS[3], '*', 'job', ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 2000, '*', 'event', 'queued', 'data', ARGV[2])
return position
