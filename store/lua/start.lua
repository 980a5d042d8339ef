-- A worker takes a delivered job. Returns {'run', field, value, ...} (the record as now started)
-- when the worker should run it, otherwise {status}: a terminal one (cancelled while queued, already
-- finished by an earlier delivery, expired just now because its deadline passed before it started)
-- or 'missing'; the worker then only acks.
-- KEYS: 1 job hash, 2 job events, 3 variant queued counter, 4 account hash, 5 account's active set,
--       6 daily images counter, 7 webhook stream
-- ARGV: 1 worker consumer name, 2 now (unix seconds), 3 running-event JSON, 4 expired-event JSON,
--       5 retention seconds
local status = redis.call('HGET', KEYS[1], 'status')
local function run()
  local record = redis.call('HGETALL', KEYS[1])
  table.insert(record, 1, 'run')
  return record
end
if not status then
  return {'missing'}
end
if status == 'queued' then
  redis.call('DECR', KEYS[3])
  local deadline = tonumber(redis.call('HGET', KEYS[1], 'deadline') or '0')
  if deadline > 0 and tonumber(ARGV[2]) > deadline then
    redis.call('HSET', KEYS[1], 'status', 'expired', 'finished_at', ARGV[2],
               'error', 'the job expired: it was not started before its deadline')
    settle(KEYS[1], KEYS[4], KEYS[5], KEYS[6], false)
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', 2000, '*', 'event', 'expired', 'data', ARGV[4])
    if redis.call('HEXISTS', KEYS[1], 'webhook_url') == 1 then
      redis.call('XADD', KEYS[7], '*', 'job', redis.call('HGET', KEYS[1], 'id'), 'status', 'expired')
    end
    redis.call('EXPIRE', KEYS[1], ARGV[5])
    redis.call('EXPIRE', KEYS[2], ARGV[5])
    return {'expired'}
  end
  redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[2], 'worker', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 2000, '*', 'event', 'running', 'data', ARGV[3])
  return run()
end
if status == 'running' then
  -- Redelivered after its worker died mid-batch: run it again on this worker.
  redis.call('HSET', KEYS[1], 'worker', ARGV[1])
  redis.call('HINCRBY', KEYS[1], 'attempts', 1)
  return run()
end
return {status}
