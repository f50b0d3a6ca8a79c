-- claim.lua: hand up to N ready jobs to one caller, each under a lease.
-- Atomic, so two claimers never get the same job: LPOP removes the ids from
-- the head of the pending jobs (see pending_pop in lib/pending.lua) in the same step that
-- records the new fences and lease deadlines. Before claiming it
-- moves due scheduled jobs into pending and turns inbox documents into jobs
-- (bounded batches). A paused queue hands out nothing.
-- Limits, read from `meta` (written by the daemon at start and reload):
--   rate_jobs, rate_per_ms: at most rate_jobs claims in any rate_per_ms
--     window, over every claimer. `claims` holds the claims of the last
--     window (fence -> Redis ms), trimmed each call; a claim hands out at
--     most the room left, and when that stops it while jobs wait, returns
--     throttled = 1 and next_due_ms = when the oldest claim leaves the window.
--     Jobs held back stay pending: no attempt is spent.
--   group_limit: at most this many active jobs per job `group`; a popped job
--     whose group is full is parked (see lib/parking.lua) and the claim pops on, so
--     other groups are not blocked behind it. Only with group_limit set is
--     a job's document decoded here.
--   tenant_rate: "<jobs>,<per_ms>,<overrides 0|1>" (jobs 0: no default):
--     at most jobs claims of one job `tenant` in any per_ms window, over
--     every claimer; `tenant_limits` (tenant -> "<jobs>,<per_ms>") overrides
--     it per tenant when the flag is 1. Each tenant's window is its own ZSET
--     `<claims>:<tenant>`, the one key name this script builds: it extends
--     the `claims` key it was given, so it has the same {queue} hash tag and
--     Cluster slot, and expires one window after the tenant's last claim.
--     A popped job whose tenant has no room is parked in `tenant_parked`
--     (like a group's, so it keeps its place among the pending jobs; no attempt spent) and
--     the claim pops on, so other tenants are not held back. `tenant_due`
--     holds when each tenant with parked jobs has room again; each claim
--     first moves the parked jobs of due tenants back to pending (as many
--     as their room, bounded) and reschedules the rest, and next_due_ms
--     includes the earliest such time. Jobs without a tenant are not
--     tenant-limited; with tenant_rate absent no document is decoded for it.
--   parking: set while jobs may be parked (group or tenant); with the limit
--     gone, the claim moves them back to pending.
-- All of this is one script, so the counts it reads cannot change before its
-- claims are recorded: over all daemons no window ever holds more claims
-- than its limit.
-- KEYS[1] the queue's base key <prefix>:{<queue>} (lib/keys.lua derives the rest).
-- ARGV[1] how many jobs the caller can start now (0: only promote and drain;
--   at most CALL_JOBS_MAX are handed out per call)
-- ARGV[2] lease length in ms (deadline = Redis now + lease)
-- ARGV[3] at most this many due scheduled jobs are promoted
-- ARGV[4] at most this many inbox documents are taken
-- ARGV[5] the caller's name for hand-off, "<daemon id>.<pool number>" ('' or
--   absent: no registration)
-- ARGV[6] how long a registration lasts (ms)
--   When the claim leaves the caller with free slots (fewer jobs than
--   ARGV[1]) on a queue with no limit and not throttled, it registers the
--   caller in `idle` for direct hand-off of the next enqueued jobs (see
--   hand_off in lib/handoff.lua) with that many slots; any other claim by the
--   caller ends its registration, since the caller is busy or its slots are
--   counted again.
-- Events (when on): `enqueued` (via=inbox) per inbox document taken, `started` per job,
--   `dead` per job whose record is over the document limit (buried unread).
-- Returns: {now_ms, next_due_ms (-1 = none), paused (0|1), throttled (0|1),
--           first fence (0 = no job), then 3 per job: id, attempt number, job record}
--   The jobs' fences are consecutive: the i-th job (from 0) holds
--   first fence + i, so the reply carries one number, not one per job.
--   next_due_ms: when fewer than ARGV[1] jobs were handed out, the soonest of
--   the next scheduled job, the queue's room (throttled) and a tenant's room;
--   now_ms when jobs may be ready that this call had no rounds left to reach.
--   throttled is about the queue's rate limit only: tenant-parked jobs are
--   not pending.
local TENANT_BATCH = 100 -- due tenants handled per call
local k = queue_keys(KEYS)
local want, lease = math.min(tonumber(ARGV[1]), CALL_JOBS_MAX), tonumber(ARGV[2])
local now = now_ms()
-- One read of meta: paused, the events cap, the document size limit, limits.
local meta = redis.call('HMGET', k.meta, 'paused', 'events', 'max_doc_bytes',
  'rate_jobs', 'rate_per_ms', 'group_limit', 'parking', 'tenant_rate')
local daemon = ARGV[5] or ''
if meta[1] then
  if daemon ~= '' then redis.call('HDEL', k.idle, daemon) end
  return { now, -1, 1, 0, 0 }
end
local cap = tonumber(meta[2]) or 0
local max_bytes = tonumber(meta[3]) or DEFAULT_MAX_DOC_BYTES
allow_when_full(k)

local promote = tonumber(ARGV[3])
if promote > 0 then promote_due(k, now, promote) end

local inbox = tonumber(ARGV[4])
if inbox > 0 then
  local docs = redis.call('RPOP', k.inbox, inbox)
  if docs then
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
local tenant_on = meta[8] and true or false
local t_jobs, t_per, t_over
if tenant_on then
  local j, p, o = string.match(meta[8], '^(%d+),(%d+),([01])$')
  t_jobs, t_per, t_over = tonumber(j), tonumber(p), o == '1'
end

-- Per tenant met in this call: its window {jobs, per, key, used} (used
-- counts this call's claims too), or false when the tenant has no limit.
local tenants = {}
local function tenant_window(t)
  local w = tenants[t]
  if w ~= nil then return w end
  local jobs, per = t_jobs, t_per
  if t_over then
    local j, p = string.match(redis.call('HGET', k.tenant_limits, t) or '', '^(%d+),(%d+)$')
    if j then jobs, per = tonumber(j), tonumber(p) end
  end
  if not jobs or jobs < 1 or not per or per < 1 then
    tenants[t] = false
    return false
  end
  local key = k.claims .. ':' .. t
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - per)
  w = { jobs = jobs, per = per, key = key, used = redis.call('ZCARD', key) }
  tenants[t] = w
  return w
end
-- When a full tenant has room again: its oldest claim leaves the window
-- (a claim of this call, not yet recorded, leaves it at now + per).
local function room_at(w)
  local oldest = redis.call('ZRANGE', w.key, 0, 0, 'WITHSCORES')
  return (tonumber(oldest[2]) or now) + w.per
end
local function tenant_range(t)
  local p = park_prefix(t)
  return '[' .. p, '(' .. p .. ';'
end

if meta[7] then
  if not group_limit then
    -- The limit was lifted: parked jobs go back to pending (bounded per call).
    unpark(k, redis.call('ZRANGE', k.parked, 0, PARK_BATCH - 1))
  end
  if redis.call('EXISTS', k.parked, k.tenant_parked) == 0 then redis.call('HDEL', k.meta, 'parking') end
end
if tenant_on or meta[7] then
  -- Tenants whose room has returned: their parked jobs go back to pending, as
  -- many as fit (all, bounded, when the tenant has no limit any more); the
  -- pop below checks them again. The rest wait for the next room. With
  -- tenant limits lifted, every tenant is due.
  local due
  if tenant_on then
    due = redis.call('ZRANGEBYSCORE', k.tenant_due, '-inf', now, 'LIMIT', 0, TENANT_BATCH)
  else
    due = redis.call('ZRANGE', k.tenant_due, 0, TENANT_BATCH - 1)
  end
  for _, t in ipairs(due) do
    local w = tenant_on and tenant_window(t)
    local room = PARK_BATCH
    if w then room = w.jobs - w.used end
    local lo, hi = tenant_range(t)
    if room > 0 then
      unpark(k, redis.call('ZRANGEBYLEX', k.tenant_parked, lo, hi, 'LIMIT', 0, room), k.tenant_parked)
    end
    if redis.call('ZLEXCOUNT', k.tenant_parked, lo, hi) == 0 then
      redis.call('ZREM', k.tenant_due, t)
    else
      redis.call('ZADD', k.tenant_due, w and room_at(w) or now, t)
    end
  end
end

local out = { now, -1, 0, 0, 0 }
-- next_due_ms: the soonest of the times given.
local function sooner(t)
  if t and (out[2] < 0 or t < out[2]) then out[2] = t end
end
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
local tparked, tfull, tenant_of = {}, {}, {}
local rounds, drained = 0, false
while #ids < budget and rounds < 8 do
  rounds = rounds + 1
  local asked = budget - #ids
  local batch, levels = pending_pop(k, asked)
  local n = #batch
  if n < asked then drained = true end
  if n == 0 then break end
  -- Parking keeps each job's place among the pending jobs: places for this round, reserved
  -- at once (one HINCRBY, only under limits that may park).
  local seq = 0
  if group_limit or tenant_on then seq = redis.call('HINCRBY', k.meta, 'seq', n) - n end
  local recs = redis.call('HMGET', k.jobs, unpack(batch))
  for i = 1, n do
    -- An id without a record has nothing to run; it is not handed out.
    -- Nor is an oversize record: it goes to the dead set unread.
    local big = recs[i] and oversize(recs[i], max_bytes)
    if big then
      bury_oversize(k, now, batch[i], big, max_bytes, cap)
    elseif recs[i] then
      local doc, group, w
      if group_limit or tenant_on then doc = record_doc(recs[i]) end
      if group_limit then
        group = doc.group
        if type(group) ~= 'string' then group = nil end
      end
      if tenant_on and type(doc.tenant) == 'string' then
        w = tenant_window(doc.tenant)
      end
      if w and w.used >= w.jobs then
        -- The tenant's window is full: park the job (a group slot is not taken).
        tparked[#tparked + 1] = 0
        tparked[#tparked + 1] = park_member(doc.tenant, park_score(levels[i], seq + i), batch[i])
        tfull[doc.tenant] = w
        group = false
      elseif group then
        local c = counts[group]
        if not c then
          c = tonumber(redis.call('HGET', k.groups, group)) or 0
          counts[group] = c
        end
        if c >= group_limit then
          parked[#parked + 1] = 0
          parked[#parked + 1] = park_member(group, park_score(levels[i], seq + i), batch[i])
          group = false
        else
          counts[group] = c + 1
        end
      end
      if group ~= false then
        ids[#ids + 1] = batch[i]
        records[#ids] = recs[i]
        grouped[#ids] = group
        if w then
          w.used = w.used + 1
          tenant_of[#ids] = w
        end
      end
    end
  end
  -- Without parking, one pop is all: a short pop means nothing is pending.
  if #parked == 0 and #tparked == 0 then break end
end
if #parked > 0 then
  redis.call('ZADD', k.parked, unpack(parked))
end
if #tparked > 0 then
  redis.call('ZADD', k.tenant_parked, unpack(tparked))
  for t, w in pairs(tfull) do
    redis.call('ZADD', k.tenant_due, room_at(w), t)
  end
end
if #parked > 0 or #tparked > 0 then
  redis.call('HSET', k.meta, 'parking', '1')
  -- Out of rounds with room left and jobs maybe ready: come back at once.
  if #ids < budget and not drained then sooner(now) end
end
if tenant_on or meta[7] then
  local first = redis.call('ZRANGE', k.tenant_due, 0, 0, 'WITHSCORES')
  sooner(tonumber(first[2]))
end

local throttled = budget < want and not pending_empty(k)
if throttled then
  -- Capacity returns when the oldest claim in the window (ours included) leaves it.
  out[4] = 1
  if #ids == 0 then
    local oldest = redis.call('ZRANGE', k.claims, 0, 0, 'WITHSCORES')
    sooner((tonumber(oldest[2]) or now) + rate_per)
  end
elseif #ids < want then
  local first = redis.call('ZRANGE', k.scheduled, 0, 0, 'WITHSCORES')
  sooner(tonumber(first[2]))
end
local n = #ids
if daemon ~= '' then
  if n < want and out[4] == 0 and not (rate_jobs or group_limit or tenant_on or meta[7]) then
    redis.call('HSET', k.idle, daemon,
      fmt_int(want - n) .. ',' .. fmt_int(lease) .. ',' .. fmt_int(now + tonumber(ARGV[6])))
  else
    redis.call('HDEL', k.idle, daemon)
  end
end
if n == 0 then return out end

out[5] = lease_jobs(k, ids, records, now, lease, cap, out)
local started = fmt_int(now)
local cargs, gargs, targs = {}, {}, {}
if rate_jobs or group_limit or tenant_on then
  for i = 1, n do
    local fence = fmt_int(out[5] + i - 1)
    if rate_jobs then
      cargs[2 * i - 1] = started
      cargs[2 * i] = fence
    end
    if grouped[i] then
      gargs[#gargs + 1] = ids[i]
      gargs[#gargs + 1] = grouped[i]
    end
    local w = tenant_of[i]
    if w then
      local a = targs[w]
      if not a then
        a = {}
        targs[w] = a
      end
      a[#a + 1] = started
      a[#a + 1] = fence
    end
  end
end
if rate_jobs and rate_per then
  redis.call('ZADD', k.claims, unpack(cargs))
  if throttled then
    local oldest = redis.call('ZRANGE', k.claims, 0, 0, 'WITHSCORES')
    sooner((tonumber(oldest[2]) or now) + rate_per)
  end
end
for w, a in pairs(targs) do
  redis.call('ZADD', w.key, unpack(a))
  redis.call('PEXPIRE', w.key, w.per)
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
if n == want and not pending_empty(k) then
  wake(k)
end
return out
