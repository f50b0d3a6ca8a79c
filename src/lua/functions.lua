-- functions.lua: the `redq` Redis Function library (Redis >= 7.0), for
-- producers in any language. src/scripts.rs prepends the library header and
-- the library files (src/lua/lib/), and loads it with FUNCTION LOAD REPLACE
-- when the version differs.
--
-- FCALL redq_enqueue 1 <prefix>:{<queue>} '<job JSON>'  -> the job id
--   Checks the document like the Rust client does; refuses with
--   "ERR invalid job: <field and rule>" and writes nothing. The function
--   derives the queue's other keys from the one base key (same hash tag,
--   same slot). An id that exists, or a unique key a live job holds, returns
--   that job's id. With events on for the queue, a new job emits `enqueued`
--   (via=fcall) on <prefix>:{<queue>}:events.
--   A delayed job that is now the queue's earliest publishes its due time
--   on <prefix>:{<queue>}:due, which the daemons' promoters listen to.
--   Keys touched (derived from the base key): reads meta (document limit,
--   events cap, limits) and writes its `idseq`; writes jobs, unique,
--   scheduled, pending, pending:<priority>, wake, events; hands jobs to idle
--   daemons as enqueue.lua does, but only the job it creates and only when
--   nothing else is pending (idle, <base>:handoff:<name>, runs, active, meta
--   `fence`): it never reads another job's record, so a producer's ACL user
--   needs no read access to `jobs` (the rules: docs/operating.md).
--   Commands it runs (each checked against the caller's ACL rules): TIME,
--   EXISTS, HEXISTS, HGET, HMGET, HGETALL, HSET, HDEL, HINCRBY, ZADD, ZRANGE,
--   LPUSH, RPUSH, PEXPIRE, XADD, PUBLISH.
-- FCALL_RO redq_status 1 <prefix>:{<queue>} <id> -> a JSON object
--   {"id", "state", "attempts", "result", "last_error"}: state is one of
--   pending, scheduled, retrying, active, succeeded, dead, or unknown (never
--   enqueued, or removed: completed jobs are removed at once unless the
--   queue keeps them, keep_completed); result and last_error are null when
--   there are none. A removed job whose outcome is kept (outcome_ttl_ms,
--   lib/outcome.lua) answers with that outcome: state succeeded, dead or
--   cancelled, plus finished_ms. Reads jobs, runs, active, scheduled, dead,
--   done, results, errors, <base>:outcome:<id>.
-- FCALL redq_cancel 1 <prefix>:{<queue>} <id> -> the state the job was in
--   (pending, scheduled, retrying and active ones are cancelled: removed
--   with their record and unique key, a running one's daemon stops its
--   handler when it hears the notice on <base>:due, or at the latest at
--   its next lease renewal; succeeded, dead and unknown ones are
--   left as they are). See lib/cancel.lua for the keys it touches.
-- FCALL_RO redq_version 0 -> the library version (a hash of its source)

local function keys_from_base(base)
  return queue_keys({ base })
end

-- The error of a call whose key is not one queue's base key; nil when it is.
local function bad_base(name, keys)
  if #keys ~= 1 or not string.match(keys[1], '^[%w_%.%-:]+:{[%w_%.%-:]+}$') then
    return redis.error_reply('ERR ' .. name .. ' takes one key, <prefix>:{<queue>}, e.g. redq:{emails}')
  end
  return nil
end

-- The error of a call whose one argument is not a job id; nil when it is.
local function bad_id(name, args)
  if #args ~= 1 or not string.match(args[1], '^[%w_%.%-:]+$') or #args[1] > 128 then
    return redis.error_reply('ERR ' .. name .. ' takes one argument: a job id (1-128 characters from A-Z a-z 0-9 _ . - :)')
  end
  return nil
end

local function fcall_status(keys, args)
  local bad = bad_base('redq_status', keys) or bad_id('redq_status', args)
  if bad then return bad end
  local k, id = keys_from_base(keys[1]), args[1]
  local state = job_state(k, id)
  if state == 'unknown' then
    -- Removed (or never enqueued): its kept outcome, if it has one.
    local kept = kept_outcome(k, id)
    if kept then return kept end
  end
  local attempts = parse_run(redis.call('HGET', k.runs, id))
  return cjson.encode({
    id = id,
    state = state,
    attempts = attempts,
    result = redis.call('HGET', k.results, id) or cjson.null,
    last_error = redis.call('HGET', k.errors, id) or cjson.null,
  })
end

local function fcall_cancel(keys, args)
  local bad = bad_base('redq_cancel', keys) or bad_id('redq_cancel', args)
  if bad then return bad end
  local k = keys_from_base(keys[1])
  allow_when_full(k)
  return cancel_job(k, args[1], events_cap(k))
end

local function fcall_enqueue(keys, args)
  local base = keys[1]
  local bad = bad_base('redq_enqueue', keys)
  if bad then return bad end
  if #args ~= 1 then
    return redis.error_reply('ERR redq_enqueue takes one argument: the job JSON document, e.g. \'{"payload":{}}\'')
  end
  local k = keys_from_base(base)
  local now = now_ms()
  local max_bytes, cap = doc_limits(k)
  local ok, job = pcall(check_doc, args[1], max_bytes, now)
  if not ok then
    return redis.error_reply('ERR invalid job: ' .. tostring(job))
  end
  local _, id, record = enqueue_doc(k, now, job, args[1], cap, 'fcall', true)
  -- Only the job just made goes to an idle daemon, never pending jobs
  -- ahead of it: handing those off reads their records, and Redis checks
  -- every command a function runs against the caller's ACL rules, so a
  -- producer's user would need read access to every payload (see the ACL
  -- rules in docs/operating.md). With nothing pending this job is next.
  local handed = false
  if record and pending_empty(k) then
    handed = hand_off(k, now, cap, { job.priority or 0, id, record })
  elseif record then
    pending_push(k, job.priority or 0, { id })
  end
  if not handed then wake(k) end
  return id
end

redis.register_function('redq_enqueue', fcall_enqueue)
redis.register_function('redq_cancel', fcall_cancel)
redis.register_function {
  function_name = 'redq_status',
  callback = fcall_status,
  flags = { 'no-writes' },
}
redis.register_function {
  function_name = 'redq_version',
  callback = function() return REDQ_LIBRARY_VERSION end,
  flags = { 'no-writes' },
}
