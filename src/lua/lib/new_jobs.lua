-- new_jobs.lua: adding a job: ids made inside Redis, one checked job, one
-- document that check_doc (doc.lua) accepted, the documents of the inbox.
-- Keys: jobs (writes the record), unique (HASH unique_key -> id), scheduled
--   or pending (and <base>:due through announce_due), meta field `idseq`
--   (the id counter), inbox (LIST of documents producers LPUSH), rejected
--   (LIST of {reason, document, rejected_at} JSON); emits `enqueued` to
--   events.
-- Invariant: an id that exists is a no-op, and a unique key held by a live
--   job wins over a newcomer.

-- Adds one job; the caller has checked it. Returns status, id where status is
-- 'created', 'exists' (this id is already known: no-op) or 'duplicate'
-- (a live job holds the unique key; id is that job's). A created job emits
-- `enqueued` (with `via`, the way it came in) when cap > 0. With `hold`, a
-- created job due now is not made pending: its record is returned third,
-- for the caller to hand off or push (hand_off's `fresh`).
local function enqueue_one(k, now, id, priority, max_attempts, due, unique, doc, cap, via, hold)
  if redis.call('HEXISTS', k.jobs, id) == 1 then
    return 'exists', id
  end
  if unique ~= '' then
    local holder = redis.call('HGET', k.unique, unique)
    if holder and redis.call('HEXISTS', k.jobs, holder) == 1 then
      return 'duplicate', holder
    end
  end
  local record = make_record(fmt_int(priority), fmt_int(max_attempts), fmt_int(now), doc)
  redis.call('HSET', k.jobs, id, record)
  if unique ~= '' then
    redis.call('HSET', k.unique, unique, id)
  end
  if due > now then
    redis.call('ZADD', k.scheduled, due, id)
    announce_due(k, due)
    emit(k, cap, 'enqueued', id, 0, 'via', via or '-', 'priority', fmt_int(priority), 'due_ms', fmt_int(due))
  else
    if not hold then pending_push(k, priority, { id }) end
    emit(k, cap, 'enqueued', id, 0, 'via', via or '-', 'priority', fmt_int(priority))
    if hold then return 'created', id, record end
  end
  return 'created', id
end

-- Job ids in the Rust client's form (job::new_id): 26 characters of
-- Crockford's base32, the first 10 the time in ms (so ids sort by time).
local CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
local function base32(n, width)
  local t = {}
  for i = width, 1, -1 do
    local d = n % 32
    t[i] = string.sub(CROCKFORD, d + 1, d + 1)
    n = (n - d) / 32
  end
  return table.concat(t)
end

-- An id made inside Redis: Redis time, then 40 bits of a per-queue counter
-- (unique within the queue) and 40 pseudo-random bits. Every number stays
-- below 2^53, exact in Lua's doubles. The random bits are two draws of 20:
-- math.random's bounds must fit a C int.
local TWO_20, TWO_40 = 1048576, 1099511627776 -- 8 base32 digits hold 40 bits
local function new_job_id(k, now)
  local n = redis.call('HINCRBY', k.meta, 'idseq', 1)
  return base32(now, 10) .. base32(n % TWO_40, 8)
    .. base32(math.random(0, TWO_20 - 1) * TWO_20 + math.random(0, TWO_20 - 1), 8)
end

-- Enqueues a document that check_doc accepted (`hold`: see enqueue_one).
local function enqueue_doc(k, now, job, doc, cap, via, hold)
  local id = job.id or new_job_id(k, now)
  local due = now
  if job.run_at then due = job.run_at elseif job.delay_ms then due = now + job.delay_ms end
  return enqueue_one(k, now, id, job.priority or 0, job.max_attempts or 0, due, job.unique_key or '',
    doc, cap, via, hold)
end

-- Takes up to n inbox documents (claim.lua): each one check_doc accepts is
-- enqueued, the others go to `rejected` with the reason.
local function take_inbox(k, now, n, max_bytes, cap)
  if n <= 0 then return end
  local docs = redis.call('RPOP', k.inbox, n)
  if not docs then return end
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
