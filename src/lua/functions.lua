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
-- FCALL_RO redq_version 0 -> the library version (a hash of its source)

local function keys_from_base(base)
  return queue_keys({ base })
end

local function fcall_enqueue(keys, args)
  local base = keys[1]
  if #keys ~= 1 or not string.match(base, '^[%w_%.%-:]+:{[%w_%.%-:]+}$') then
    return redis.error_reply('ERR redq_enqueue takes one key, <prefix>:{<queue>}, e.g. redq:{emails}')
  end
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
redis.register_function {
  function_name = 'redq_version',
  callback = function() return REDQ_LIBRARY_VERSION end,
  flags = { 'no-writes' },
}
