-- outcome.lua: a finished job's outcome, kept for a while for its producer.
-- Keys: <base>:outcome:<id> (not one of the parts: one per job that keeps
--   its outcome; it extends the base key, so it keeps the hash tag), a LIST
--   of one element, the JSON object
--   {"id","state","attempts","result","last_error","finished_ms"}, expiring
--   after the job's `outcome_ttl_ms` or the queue's (meta `outcome_ttl_ms`,
--   written from queues.<q>.outcome_ttl). Reads meta `outcome_ttl_ms`.
--
-- Written when a job ends: `succeeded` (complete.lua), `dead` (fail.lua,
-- reap.lua, an oversize record) or `cancelled` (cancel.lua); deleted when a
-- dead job is retried (dead_retry.lua), so that waiters then wait for its
-- new end. Only for jobs that keep an outcome: the others pay nothing.
--
-- Why a list of one element: a waiter runs `BLMOVE <key> <key> RIGHT RIGHT
-- <timeout>`, which answers at once with the element when it is there and
-- otherwise blocks until the RPUSH below. Moving the one element onto the
-- same list leaves the list as it was (TTL included), so Redis serves every
-- blocked waiter in turn and later readers still find it: no polling, no
-- race between "is it done?" and "wait for it". (XREAD on a stream would
-- block read-only, but a stream of one entry costs ~4.7 KB against ~250 B.)
-- Invariant: the key exists only after the job ended, and holds that end.

local function outcome_key(k, id)
  return k.base .. ':outcome:' .. id
end

-- How long the outcome of the job with `record` is kept, in ms (nil: not
-- kept): its own outcome_ttl_ms, else the queue's. For the paths where
-- Lua alone knows the job ended (reaper, cancel, oversize); complete.lua
-- and fail.lua are told by the daemon, which has the document decoded.
local function outcome_ttl(k, record)
  if record then
    local ttl = tonumber(record_doc(record).outcome_ttl_ms)
    if ttl and ttl > 0 then return ttl end
  end
  local ttl = tonumber(redis.call('HGET', k.meta, 'outcome_ttl_ms'))
  if ttl and ttl > 0 then return ttl end
  return nil
end

-- Keeps job `id`'s outcome for `ttl` ms (nothing when ttl is nil or 0).
-- `result` and `err` are strings or nil.
local function keep_outcome(k, id, ttl, state, attempts, result, err, now)
  ttl = tonumber(ttl)
  if not ttl or ttl <= 0 then return end
  local key = outcome_key(k, id)
  redis.call('DEL', key)
  redis.call('RPUSH', key, cjson.encode({
    id = id,
    state = state,
    attempts = attempts,
    result = (result and result ~= '') and result or cjson.null,
    last_error = (err and err ~= '') and err or cjson.null,
    finished_ms = now,
  }))
  redis.call('PEXPIRE', key, ttl)
end

-- The kept outcome of job `id` (its JSON text), or nil.
local function kept_outcome(k, id)
  local v = redis.call('LINDEX', outcome_key(k, id), 0)
  if v then return v end
  return nil
end
