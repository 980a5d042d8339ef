-- Cancel a job. A queued job becomes 'canceled' at once (its stream entry is acked by the worker
-- that reads it, which never runs it); a running one is flagged and stops at its next step.
-- KEYS: job hash, job events stream, variant queued counter
-- ARGV: now, retention seconds, canceled-event JSON
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' then
  redis.call('DECR', KEYS[3])
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', ARGV[1])
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 2000, '*', 'event', 'canceled', 'data', ARGV[3])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  return 'canceled'
end
if status == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  return 'cancel_requested'
end
return status or 'missing'
