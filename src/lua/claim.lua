-- claim.lua: hand up to N ready jobs to one caller, each under a lease.
-- Atomic, so two claimers never get the same job: ZPOPMIN removes the ids
-- from `pending` in the same step that records the new fencing tokens and
-- lease deadlines. Before claiming it moves due scheduled jobs to `pending`
-- and turns inbox documents into jobs (bounded batches). A paused queue
-- hands out nothing.
-- Limits, read from `meta` (written by the daemon at start and reload):
--   rate_jobs, rate_per_ms: at most rate_jobs claims in any rate_per_ms
--     window, over every claimer. `claims` holds the claims of the last
--     window (token -> Redis ms), trimmed each call; a claim hands out at
--     most the room left, and when that stops it while jobs wait, returns
--     throttled = 1 and next_due_ms = when the oldest claim leaves the window.
--     Jobs held back stay in `pending`: no attempt is spent.
--   group_limit: at most this many active jobs per job `group`; a popped job
--     whose group is full is parked (see prelude) and the claim pops on, so
--     other groups are not blocked behind it. Only with group_limit set is
--     a job's document decoded here.
--   parking: set while jobs may be parked; with group_limit gone, the claim
--     moves them back to pending.
-- KEYS: the queue's keys (keys::PARTS order).
-- ARGV[1] how many jobs the caller can start now (0: only promote and drain)
-- ARGV[2] lease length in ms (deadline = Redis now + lease)
-- ARGV[3] at most this many due scheduled jobs are promoted
-- ARGV[4] at most this many inbox documents are taken
-- Events (when on): `enqueued` (via=inbox) per inbox document taken, `started` per job.
-- Returns: {now_ms, next_due_ms (-1 = none), paused (0|1), throttled (0|1),
--           then 4 per job: id, fencing token, attempt number, job record}
local k = queue_keys(KEYS)
local want, lease = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
-- One read of meta: paused, the events cap, the document size limit, limits.
local meta = redis.call('HMGET', k.meta, 'paused', 'events', 'max_doc_bytes',
  'rate_jobs', 'rate_per_ms', 'group_limit', 'parking')
if meta[1] then
  return { now, -1, 1, 0 }
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

local rate_jobs, rate_per = tonumber(meta[4]), tonumber(meta[5])
local group_limit = tonumber(meta[6])
if meta[7] and not group_limit then
  -- The limit was lifted: parked jobs go back in line (bounded per call).
  unpark(k, redis.call('ZRANGE', k.parked, 0, PARK_BATCH - 1))
  if redis.call('EXISTS', k.parked) == 0 then redis.call('HDEL', k.meta, 'parking') end
end

local out = { now, -1, 0, 0 }
-- How many jobs may start: the caller's free slots, less what the rate
-- limit has left in the window ending now.
local budget = want
if rate_jobs and rate_per and want > 0 then
  redis.call('ZREMRANGEBYSCORE', k.claims, '-inf', now - rate_per)
  local room = rate_jobs - redis.call('ZCARD', k.claims)
  if room < budget then budget = math.max(room, 0) end
end

local ids, records = {}, {}
local counts, grouped, parked = {}, {}, {}
local rounds = 0
while #ids < budget and rounds < 8 do
  rounds = rounds + 1
  local popped = redis.call('ZPOPMIN', k.pending, budget - #ids)
  local n = #popped / 2
  if n == 0 then break end
  local batch = {}
  for i = 1, n do batch[i] = popped[2 * i - 1] end
  local recs = redis.call('HMGET', k.jobs, unpack(batch))
  for i = 1, n do
    -- An id without a record has nothing to run; it is not handed out.
    if recs[i] then
      local group
      if group_limit then
        group = record_doc(recs[i]).group
        if type(group) ~= 'string' then group = nil end
      end
      if group then
        local c = counts[group]
        if not c then
          c = tonumber(redis.call('HGET', k.groups, group)) or 0
          counts[group] = c
        end
        if c >= group_limit then
          parked[#parked + 1] = 0
          parked[#parked + 1] = park_member(group, tonumber(popped[2 * i]), batch[i])
          group = false
        else
          counts[group] = c + 1
        end
      end
      if group ~= false then
        ids[#ids + 1] = batch[i]
        records[#ids] = recs[i]
        grouped[#ids] = group
      end
    end
  end
  -- Without parking, one pop is all: a short pop means pending is empty.
  if #parked == 0 then break end
end
if #parked > 0 then
  redis.call('ZADD', k.parked, unpack(parked))
  redis.call('HSET', k.meta, 'parking', '1')
end

local throttled = budget < want and redis.call('ZCARD', k.pending) > 0
if throttled then
  -- Capacity returns when the oldest claim in the window (ours included) leaves it.
  out[4] = 1
  if #ids == 0 then
    local oldest = redis.call('ZRANGE', k.claims, 0, 0, 'WITHSCORES')
    out[2] = (tonumber(oldest[2]) or now) + rate_per
  end
elseif #ids < want then
  local first = redis.call('ZRANGE', k.scheduled, 0, 0, 'WITHSCORES')
  if first[2] then out[2] = tonumber(first[2]) end
end
local n = #ids
if n == 0 then return out end

local runs = redis.call('HMGET', k.runs, unpack(ids))
local last = redis.call('HINCRBY', k.meta, 'fence', n)
local deadline = now + lease
local hargs, zargs, cargs, gargs = {}, {}, {}, {}
for i = 1, n do
  local attempts = parse_run(runs[i]) + 1
  local token = fmt_int(last - n + i)
  hargs[#hargs + 1] = ids[i]
  hargs[#hargs + 1] = run_entry(attempts, token, now)
  zargs[#zargs + 1] = deadline
  zargs[#zargs + 1] = ids[i]
  cargs[#cargs + 1] = now
  cargs[#cargs + 1] = token
  if grouped[i] then
    gargs[#gargs + 1] = ids[i]
    gargs[#gargs + 1] = grouped[i]
  end
  out[#out + 1] = ids[i]
  out[#out + 1] = token
  out[#out + 1] = attempts
  out[#out + 1] = records[i]
  emit(k, cap, 'started', ids[i], attempts, 'lease_until_ms', fmt_int(deadline))
end
redis.call('HSET', k.runs, unpack(hargs))
redis.call('ZADD', k.active, unpack(zargs))
if rate_jobs and rate_per then
  redis.call('ZADD', k.claims, unpack(cargs))
  if throttled then
    local oldest = redis.call('ZRANGE', k.claims, 0, 0, 'WITHSCORES')
    out[2] = (tonumber(oldest[2]) or now) + rate_per
  end
end
if #gargs > 0 then
  redis.call('HSET', k.holders, unpack(gargs))
  local added = {}
  for i = 1, n do
    if grouped[i] then added[grouped[i]] = (added[grouped[i]] or 0) + 1 end
  end
  for g, c in pairs(added) do
    redis.call('HINCRBY', k.groups, g, c)
  end
end
-- The caller took all it could and work remains: wake another daemon.
if n == want and redis.call('ZCARD', k.pending) > 0 then
  wake(k)
end
return out
