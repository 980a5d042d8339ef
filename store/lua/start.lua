-- A worker takes a delivered job. Returns 'run' when the worker should run it, otherwise the job's
-- status (a terminal one: cancelled while queued, already finished by an earlier delivery, ...)
-- or 'missing', and the worker just acks the entry.
-- KEYS: job hash, job events stream, variant queued counter
-- ARGV: worker consumer name, now (unix seconds), running-event JSON
local status = redis.call('HGET', KEYS[1], 'status')
if not status then
  return 'missing'
end
if status == 'queued' then
  redis.call('DECR', KEYS[3])
  redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[2], 'worker', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 2000, '*', 'event', 'running', 'data', ARGV[3])
  return 'run'
end
if status == 'running' then
  -- Redelivered after its worker died mid-batch: run it again on this worker.
  redis.call('HSET', KEYS[1], 'worker', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  return 'run'
end
return status
