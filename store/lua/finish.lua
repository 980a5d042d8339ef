-- Move a job to a terminal status and ack its stream entry, idempotently by job id: a job that is
-- already terminal (a duplicate delivery finishing second) changes nothing and is only acked.
-- KEYS: job hash, job events stream, variant stream
-- ARGV: status, now, stream entry id, consumer group, retention seconds, terminal-event JSON,
--       then extra field, value pairs for the record (error, images, expires_at, ...)
local status = redis.call('HGET', KEYS[1], 'status')
local changed = 0
if status == 'queued' or status == 'running' then
  redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[2])
  if #ARGV > 6 then
    redis.call('HSET', KEYS[1], unpack(ARGV, 7))
  end
  redis.call('HDEL', KEYS[1], 'cancel_requested')
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 2000, '*', 'event', ARGV[1], 'data', ARGV[6])
  changed = 1
end
if status then
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
if ARGV[3] ~= '' then
  redis.call('XACK', KEYS[3], ARGV[4], ARGV[3])
  redis.call('XDEL', KEYS[3], ARGV[3])
end
return changed
