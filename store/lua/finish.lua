-- Move a job to a terminal status and ack its stream entry, idempotently by job id: a job that is
-- already terminal (a duplicate delivery finishing second) changes nothing and is only acked.
-- Succeeded: the reservation becomes a charge and one usage event joins the ledgers.
-- KEYS: 1 job hash, 2 job events, 3 variant stream, 4 account hash, 5 account's active set,
--       6 daily images counter, 7 global ledger stream, 8 account ledger stream, 9 webhook stream
-- ARGV: 1 status, 2 now, 3 stream entry id ('' = none), 4 consumer group, 5 retention seconds,
--       6 terminal-event JSON, 7 number of usage-event field/value pairs (0 unless succeeded),
--       then the usage event's pairs, then extra job record pairs (error, images, expires_at, ...)
local status = redis.call('HGET', KEYS[1], 'status')
local changed = 0
if status == 'queued' or status == 'running' then
  local succeeded = ARGV[1] == 'succeeded'
  local usage_len = tonumber(ARGV[7]) * 2
  redis.call('HSET', KEYS[1], 'status', ARGV[1], 'finished_at', ARGV[2])
  if #ARGV > 7 + usage_len then
    redis.call('HSET', KEYS[1], unpack(ARGV, 8 + usage_len))
  end
  redis.call('HDEL', KEYS[1], 'cancel_requested')
  local charged = settle(KEYS[1], KEYS[4], KEYS[5], KEYS[6], succeeded)
  if succeeded and usage_len > 0 then
    local usage = {unpack(ARGV, 8, 7 + usage_len)}
    table.insert(usage, 'credits')
    table.insert(usage, tostring(charged))
    redis.call('XADD', KEYS[7], '*', unpack(usage))
    redis.call('XADD', KEYS[8], '*', unpack(usage))
  end
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', 2000, '*', 'event', ARGV[1], 'data', ARGV[6])
  if redis.call('HEXISTS', KEYS[1], 'webhook_url') == 1 then
    redis.call('XADD', KEYS[9], '*', 'job', redis.call('HGET', KEYS[1], 'id'), 'status', ARGV[1])
  end
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
