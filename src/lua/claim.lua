-- claim.lua: hand up to N ready jobs to one caller, each under a lease.
-- Atomic, so two claimers never get the same job: ZPOPMIN removes the ids
-- from `pending` in the same step that records the new fencing tokens and
-- lease deadlines. Before claiming it moves due scheduled jobs to `pending`
-- and turns inbox documents into jobs (bounded batches). A paused queue
-- hands out nothing.
-- KEYS: the queue's keys (keys::PARTS order).
-- ARGV[1] how many jobs the caller can start now (0: only promote and drain)
-- ARGV[2] lease length in ms (deadline = Redis now + lease)
-- ARGV[3] at most this many due scheduled jobs are promoted
-- ARGV[4] at most this many inbox documents are taken
-- Events (when on): `enqueued` (via=inbox) per inbox document taken, `started` per job.
-- Returns: {now_ms, next_due_ms (-1 = none or jobs were handed out), paused (0|1),
--           then 4 per job: id, fencing token, attempt number, job record}
local k = queue_keys(KEYS)
local want, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
-- One read of meta: paused, the events cap, the document size limit.
local meta = redis.call('HMGET', k.meta, 'paused', 'events', 'max_doc_bytes')
if meta[1] then
  return { now, -1, 1 }
end
local cap = tonumber(meta[2]) or 0
allow_when_full(k)

local promote = tonumber(ARGV[3])
if promote > 0 then
  local due = redis.call('ZRANGEBYSCORE', k.scheduled, '-inf', now, 'LIMIT', 0, promote)
  if #due > 0 then
    redis.call('ZREM', k.scheduled, unpack(due))
    local records = redis.call('HMGET', k.jobs, unpack(due))
    local last = redis.call('HINCRBY', k.meta, 'seq', #due)
    local zargs = {}
    for i, id in ipairs(due) do
      if records[i] then
        zargs[#zargs + 1] = pending_score(record_header(records[i]), last - #due + i)
        zargs[#zargs + 1] = id
      end
    end
    if #zargs > 0 then redis.call('ZADD', k.pending, unpack(zargs)) end
  end
end

local inbox = tonumber(ARGV[4])
if inbox > 0 then
  local docs = redis.call('RPOP', k.inbox, inbox)
  if docs then
    local max_bytes = tonumber(meta[3]) or DEFAULT_MAX_DOC_BYTES
    for _, doc in ipairs(docs) do
      local ok, job = pcall(check_doc, doc, max_bytes, now)
      if ok then
        enqueue_doc(k, now, job, doc, cap, 'inbox')
      else
        redis.call('LPUSH', k.rejected,
          cjson.encode({ reason = 'invalid job: ' .. tostring(job), document = doc, rejected_at = now }))
      end
    end
  end
end

local out = { now, -1, 0 }
local popped = {}
if want > 0 then popped = redis.call('ZPOPMIN', k.pending, want) end
local n = #popped / 2
if n < want then
  local first = redis.call('ZRANGE', k.scheduled, 0, 0, 'WITHSCORES')
  if first[2] then out[2] = tonumber(first[2]) end
end
if n == 0 then return out end

local ids = {}
for i = 1, n do ids[i] = popped[2 * i - 1] end
local records = redis.call('HMGET', k.jobs, unpack(ids))
local runs = redis.call('HMGET', k.runs, unpack(ids))
local last = redis.call('HINCRBY', k.meta, 'fence', n)
local deadline = now + lease
local hargs, zargs = {}, {}
for i = 1, n do
  -- An id without a record has nothing to run; it is not handed out.
  if records[i] then
    local attempts = parse_run(runs[i]) + 1
    local token = fmt_int(last - n + i)
    hargs[#hargs + 1] = ids[i]
    hargs[#hargs + 1] = run_entry(attempts, token, now)
    zargs[#zargs + 1] = deadline
    zargs[#zargs + 1] = ids[i]
    out[#out + 1] = ids[i]
    out[#out + 1] = token
    out[#out + 1] = attempts
    out[#out + 1] = records[i]
    emit(k, cap, 'started', ids[i], attempts, 'lease_until_ms', fmt_int(deadline))
  end
end
if #hargs > 0 then
  redis.call('HSET', k.runs, unpack(hargs))
  redis.call('ZADD', k.active, unpack(zargs))
end
-- The caller took all it could and work remains: wake another daemon.
if n == want and redis.call('ZCARD', k.pending) > 0 then
  wake(k)
end
return out
