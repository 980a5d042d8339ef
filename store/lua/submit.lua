-- Admit a job, atomically: check the caller's limits, reserve quota and credits, create the job
-- record and enqueue it. Either everything happens or nothing does.
-- KEYS: 1 job hash, 2 job events, 3 variant stream, 4 variant queued counter, 5 account hash,
--       6 rate window counter, 7 daily images counter, 8 account's active job set,
--       9 idempotency record (any unused name when the request has no Idempotency-Key),
--       10 account's job index (a capped stream of job ids, for listing)
-- ARGV: 1 job id, 2 queued-event JSON, 3 requests/minute (0 = unlimited), 4 seconds left in the
--       rate window, 5 images/day (0 = unlimited), 6 seconds left in the day, 7 concurrent jobs
--       (0 = unlimited), 8 images in this job, 9 milli-credits to reserve, 10 request fingerprint
--       ('' = no Idempotency-Key), 11 idempotency record TTL, 12 most queued jobs for the variant
--       (0 = unlimited), 13.. the job record (field, value)
-- Returns {status, value}: {'ok', queue position} | {'idempotent', job id} | {'idempotency_mismatch', ''}
--   | {'rate', retry seconds} | {'concurrency', limit} | {'daily', retry seconds} | {'credits', balance}
--   | {'queue_full', queued}
local fingerprint = ARGV[10]
if fingerprint ~= '' then
  local previous = redis.call('HMGET', KEYS[9], 'fingerprint', 'job')
  if previous[1] then
    if previous[1] == fingerprint then
      return {'idempotent', previous[2]}
    end
    return {'idempotency_mismatch', ''}
  end
end
-- Overload protection first: a full queue refuses before anything is counted against the caller.
local max_queued = tonumber(ARGV[12])
local queued = tonumber(redis.call('GET', KEYS[4]) or '0')
if max_queued > 0 and queued >= max_queued then
  return {'queue_full', tostring(queued)}
end
local rpm = tonumber(ARGV[3])
if rpm > 0 and tonumber(redis.call('GET', KEYS[6]) or '0') >= rpm then
  return {'rate', ARGV[4]}
end
local concurrency = tonumber(ARGV[7])
if concurrency > 0 and redis.call('SCARD', KEYS[8]) >= concurrency then
  return {'concurrency', ARGV[7]}
end
local images = tonumber(ARGV[8])
local per_day = tonumber(ARGV[5])
if per_day > 0 and tonumber(redis.call('GET', KEYS[7]) or '0') + images > per_day then
  return {'daily', ARGV[6]}
end
local cost = tonumber(ARGV[9])
if cost > 0 then
  local balance = tonumber(redis.call('HGET', KEYS[5], 'balance') or '0')
  if balance < cost then
    return {'credits', tostring(balance)}
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then
  return redis.error_reply('job id exists')
end

-- Admit: count the request and images, take a concurrency slot, reserve the credits.
redis.call('INCR', KEYS[6])
redis.call('EXPIRE', KEYS[6], tonumber(ARGV[4]) + 1)
redis.call('INCRBY', KEYS[7], images)
redis.call('EXPIRE', KEYS[7], tonumber(ARGV[6]) + 3600)
redis.call('SADD', KEYS[8], ARGV[1])
if cost > 0 then
  redis.call('HINCRBY', KEYS[5], 'balance', -cost)
  redis.call('HINCRBY', KEYS[5], 'reserved', cost)
end
redis.call('HSET', KEYS[1], unpack(ARGV, 13))
redis.call('HSET', KEYS[1], 'reserved', cost)
local position = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], 'queue_position', position)
redis.call('XADD', KEYS[3], '*', 'job', ARGV[1])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', 2000, '*', 'event', 'queued', 'data', ARGV[2])
redis.call('XADD', KEYS[10], 'MAXLEN', '~', 1000, '*', 'job', ARGV[1])
if fingerprint ~= '' then
  redis.call('HSET', KEYS[9], 'fingerprint', fingerprint, 'job', ARGV[1])
  redis.call('EXPIRE', KEYS[9], ARGV[11])
end
return {'ok', tostring(position)}
