-- dead_retry.lua: put dead jobs back to pending with a fresh set of attempts.
-- The last error is kept for reference. A job whose unique key another live
-- job now holds stays dead.
-- KEYS[1] the queue's base key <prefix>:{<queue>} (lib/keys.lua derives the
--   rest): reads and writes dead, unique; reads jobs; deletes from runs,
--   and the job's kept outcome <base>:outcome:<id> (lib/outcome.lua);
--   writes pending, pending:<priority>, wake, events; reads meta (events
--   cap).
-- ARGV: job ids
-- Events (when on): `enqueued` (via=dead_retry) per job back to pending.
-- Returns: one integer per id: 1 requeued, 0 not in the dead set, 2 unique key held by a live job
local k = queue_keys(KEYS)
local out = {}
local woke = false
local cap = -1 -- read from meta at the first job put back
for i, id in ipairs(ARGV) do
  out[i] = 0
  if redis.call('ZSCORE', k.dead, id) then
    local record = redis.call('HGET', k.jobs, id)
    if not record then
      redis.call('ZREM', k.dead, id)
    else
      local unique = record_doc(record).unique_key
      local holder = unique and redis.call('HGET', k.unique, unique)
      if holder and holder ~= id and redis.call('HEXISTS', k.jobs, holder) == 1 then
        out[i] = 2
      else
        redis.call('ZREM', k.dead, id)
        redis.call('HDEL', k.runs, id)
        -- Its `dead` outcome is over: waiters from now on wait for its new end.
        redis.call('DEL', outcome_key(k, id))
        if unique then redis.call('HSET', k.unique, unique, id) end
        local priority = record_header(record)
        pending_push(k, priority, { id })
        if cap < 0 then cap = events_cap(k) end
        emit(k, cap, 'enqueued', id, 0, 'via', 'dead_retry', 'priority', fmt_int(priority))
        out[i] = 1
        woke = true
      end
    end
  end
end
if woke then wake(k) end
return out
