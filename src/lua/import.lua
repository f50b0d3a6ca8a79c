-- import.lua: restore exported jobs (redq import), each in its exported
-- state. An id the queue already knows is skipped, so importing a file twice
-- changes nothing. A job exported while active comes back pending (its lease
-- cannot be restored), keeping its attempts.
-- KEYS[1] the queue's base key <prefix>:{<queue>} (lib/keys.lua derives the
--   rest): writes jobs, runs, errors, dead, done, results, scheduled (and
--   publishes on <base>:due), pending, pending:<priority>, unique, wake.
-- ARGV: 8 per job: id, record ("<priority>;<max_attempts>;<enqueued_ms>;<document>"),
--       state (pending|scheduled|retrying|active|dead|succeeded),
--       time in ms (due time when scheduled/retrying; time of death or completion), attempts,
--       last error ('' = none), result ('' = none), unique_key ('' = none)
-- Returns: one integer per job: 1 imported, 0 skipped (id exists)
local k = queue_keys(KEYS)
local out = {}
local woke = false
for i = 1, #ARGV, 8 do
  local id, record, state, at = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  local attempts, err, result, unique = tonumber(ARGV[i + 4]), ARGV[i + 5], ARGV[i + 6], ARGV[i + 7]
  if redis.call('HEXISTS', k.jobs, id) == 1 then
    out[#out + 1] = 0
  else
    out[#out + 1] = 1
    redis.call('HSET', k.jobs, id, record)
    if attempts > 0 then redis.call('HSET', k.runs, id, run_entry(fmt_int(attempts), '0', '0')) end
    if err ~= '' then redis.call('HSET', k.errors, id, err) end
    if state == 'dead' then
      redis.call('ZADD', k.dead, at, id)
    elseif state == 'succeeded' then
      redis.call('ZADD', k.done, at, id)
      if result ~= '' then redis.call('HSET', k.results, id, result) end
    else
      if state == 'scheduled' or state == 'retrying' then
        redis.call('ZADD', k.scheduled, at, id)
        announce_due(k, at)
      else
        pending_push(k, record_header(record), { id })
      end
      if unique ~= '' and not redis.call('HGET', k.unique, unique) then
        redis.call('HSET', k.unique, unique, id)
      end
      woke = true
    end
  end
end
if woke then wake(k) end
return out
