-- Cancel a job. A queued job becomes 'canceled' at once and its reservation is released (its
-- stream entry is acked by the worker that reads it, which never runs it); a running one is
-- flagged and stops at its next step.
-- KEYS: 1 job hash, 2 job events, 3 variant queued counter, 4 account hash, 5 account's active set,
--       6 daily images counter, 7 webhook stream
-- ARGV: 1 now, 2 retention seconds, 3 canceled-event JSON
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'queued' then
  redis.call('DECR', KEYS[3])
  redis.call('HSET', KEYS[1], 'status', 'canceled', 'finished_at', ARGV[1])
  settle(KEYS[1], KEYS[4], KEYS[5], KEYS[6], false)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 2000, '*', 'event', 'canceled', 'data', ARGV[3])
  if redis.call('HEXISTS', KEYS[1], 'webhook_url') == 1 then
    redis.call('XADD', KEYS[7], '*', 'job', redis.call('HGET', KEYS[1], 'id'), 'status', 'canceled')
  end
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  return 'canceled'
end
if status == 'running' then
  redis.call('HSET', KEYS[1], 'cancel_requested', '1')
  return 'cancel_requested'
end
return status or 'missing'
