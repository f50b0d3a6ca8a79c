-- limits.lua: the limits a claim enforces (rate, group and tenant; the
-- rules are in claim.lua's header), as the named steps claim.lua runs. They
-- live in the library, not in claim.lua, so the function library makes
-- them once when it loads, not on every claim.
-- Keys: reads meta (settings; writes `seq`, `parking`) and tenant_limits;
--   claims (ZSET fence -> claim time, Redis ms: the rate window),
--   claims:<tenant> (the same, per tenant; expires one window after the
--   tenant's last claim), tenant_due (ZSET tenant -> when it has room
--   again), parked and tenant_parked (lib/parking.lua), groups and holders;
--   pops pending, reads jobs, buries oversize records (dead, errors).
-- Invariant: over all claimers no window ever holds more claims than its
--   limit, and no group more active jobs than group_limit: each claim reads
--   the counts and records its own in one script.

local TENANT_BATCH = 100 -- due tenants handled per call
-- Most pop rounds per claim. A round pops what is still wanted; only a
-- round that parked jobs (their group or tenant full) calls for another.
-- The bound keeps one call, which holds Redis, short however many jobs a
-- full group or tenant holds at the head; out of rounds with room left, the
-- claim answers next_due_ms = now and the caller comes straight back.
local POP_ROUNDS_MAX = 8

-- This claim's context: the queue's keys, Redis's time, the settings in one
-- read of meta (paused, the events cap, the document size limit, limits),
-- and the tenant windows read so far.
local function claim_settings(k, now)
  local meta = redis.call('HMGET', k.meta, 'paused', 'events', 'max_doc_bytes',
    'rate_jobs', 'rate_per_ms', 'group_limit', 'parking', 'tenant_rate')
  local c = {
    k = k,
    now = now,
    paused = meta[1] and true or false,
    cap = tonumber(meta[2]) or 0,
    max_bytes = tonumber(meta[3]) or DEFAULT_MAX_DOC_BYTES,
    rate_jobs = tonumber(meta[4]),
    rate_per = tonumber(meta[5]),
    group_limit = tonumber(meta[6]),
    parking = meta[7] and true or false,
    tenant_on = meta[8] and true or false,
    -- Per tenant met in this call: its window {jobs, per, key, used} (used
    -- counts this call's claims too), or false when the tenant has no limit.
    tenants = {},
  }
  if c.tenant_on then
    local j, p, o = string.match(meta[8], '^(%d+),(%d+),([01])$')
    c.t_jobs, c.t_per, c.t_over = tonumber(j), tonumber(p), o == '1'
  end
  return c
end

-- Tenant t's window (false: no limit), read once per call.
local function tenant_window(c, t)
  local w = c.tenants[t]
  if w ~= nil then return w end
  local jobs, per = c.t_jobs, c.t_per
  if c.t_over then
    local j, p = string.match(redis.call('HGET', c.k.tenant_limits, t) or '', '^(%d+),(%d+)$')
    if j then jobs, per = tonumber(j), tonumber(p) end
  end
  if not jobs or jobs < 1 or not per or per < 1 then
    c.tenants[t] = false
    return false
  end
  local key = c.k.claims .. ':' .. t
  redis.call('ZREMRANGEBYSCORE', key, '-inf', c.now - per)
  w = { jobs = jobs, per = per, key = key, used = redis.call('ZCARD', key) }
  c.tenants[t] = w
  return w
end

-- When a full tenant has room again: its oldest claim leaves the window
-- (a claim of this call, not yet recorded, leaves it at now + per).
local function room_at(c, w)
  local oldest = redis.call('ZRANGE', w.key, 0, 0, 'WITHSCORES')
  return (tonumber(oldest[2]) or c.now) + w.per
end

-- When the queue's rate window has room again: its oldest claim leaves it.
local function queue_room_at(c)
  local oldest = redis.call('ZRANGE', c.k.claims, 0, 0, 'WITHSCORES')
  return (tonumber(oldest[2]) or c.now) + c.rate_per
end

local function tenant_range(t)
  local p = park_prefix(t)
  return '[' .. p, '(' .. p .. ';'
end

-- While jobs may be parked: with the group limit lifted, parked jobs go
-- back to pending (bounded per call); with nothing parked, the flag goes.
local function unpark_lifted(c)
  local k = c.k
  if not c.group_limit then
    -- The limit was lifted: parked jobs go back to pending (bounded per call).
    unpark(k, redis.call('ZRANGE', k.parked, 0, PARK_BATCH - 1))
  end
  if redis.call('EXISTS', k.parked, k.tenant_parked) == 0 then redis.call('HDEL', k.meta, 'parking') end
end

-- Tenants whose room has returned: their parked jobs go back to pending, as
-- many as fit (all, bounded, when the tenant has no limit any more); the
-- pop checks them again. The rest wait for the next room. With tenant
-- limits lifted, every tenant is due.
local function release_due_tenants(c)
  local k, now = c.k, c.now
  local due
  if c.tenant_on then
    due = redis.call('ZRANGEBYSCORE', k.tenant_due, '-inf', now, 'LIMIT', 0, TENANT_BATCH)
  else
    due = redis.call('ZRANGE', k.tenant_due, 0, TENANT_BATCH - 1)
  end
  for _, t in ipairs(due) do
    local w = c.tenant_on and tenant_window(c, t)
    local room = PARK_BATCH
    if w then room = w.jobs - w.used end
    local lo, hi = tenant_range(t)
    if room > 0 then
      unpark(k, redis.call('ZRANGEBYLEX', k.tenant_parked, lo, hi, 'LIMIT', 0, room), k.tenant_parked)
    end
    if redis.call('ZLEXCOUNT', k.tenant_parked, lo, hi) == 0 then
      redis.call('ZREM', k.tenant_due, t)
    else
      redis.call('ZADD', k.tenant_due, w and room_at(c, w) or now, t)
    end
  end
end

-- next_due_ms (out[2]): the soonest of the times given.
local function sooner(out, t)
  if t and (out[2] < 0 or t < out[2]) then out[2] = t end
end

-- How many jobs may start: the caller's free slots, less what the rate
-- limit has left in the window ending now.
local function rate_budget(c, want)
  local budget = want
  if c.rate_jobs and c.rate_per and want > 0 then
    redis.call('ZREMRANGEBYSCORE', c.k.claims, '-inf', c.now - c.rate_per)
    local room = c.rate_jobs - redis.call('ZCARD', c.k.claims)
    if room < budget then budget = math.max(room, 0) end
  end
  return budget
end

-- Pops up to `budget` pending jobs that may start, in order. An id without
-- a record is dropped and an oversize record buried; a job whose tenant's
-- window or group is full is held back to park (park_held) and the claim
-- pops on, for at most POP_ROUNDS_MAX rounds. Returns:
--   ids, records: the jobs to lease;
--   grouped[i]: the group whose slot job i takes (nil: none);
--   tenant_of[i]: the window of job i's tenant (nil: not tenant-limited);
--   parked, tparked: ZADD arguments for `parked` and `tenant_parked`;
--   tfull: tenant -> window, for each tenant that held jobs back;
--   drained: a pop came up short (nothing more was pending).
local function pop_runnable(c, budget)
  local k, now, group_limit, tenant_on = c.k, c.now, c.group_limit, c.tenant_on
  local ids, records, grouped, tenant_of = {}, {}, {}, {}
  local parked, tparked, tfull = {}, {}, {}
  local counts = {}
  local rounds, drained = 0, false
  while #ids < budget and rounds < POP_ROUNDS_MAX do
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
      local big = recs[i] and oversize(recs[i], c.max_bytes)
      if big then
        bury_oversize(k, now, batch[i], big, c.max_bytes, c.cap)
      elseif recs[i] then
        local doc, group, w
        if group_limit or tenant_on then doc = record_doc(recs[i]) end
        if group_limit then
          group = doc.group
          if type(group) ~= 'string' then group = nil end
        end
        if tenant_on and type(doc.tenant) == 'string' then
          w = tenant_window(c, doc.tenant)
        end
        if w and w.used >= w.jobs then
          -- The tenant's window is full: park the job (a group slot is not taken).
          tparked[#tparked + 1] = 0
          tparked[#tparked + 1] = park_member(doc.tenant, park_score(levels[i], seq + i), batch[i])
          tfull[doc.tenant] = w
          group = false
        elseif group then
          local used = counts[group]
          if not used then
            used = tonumber(redis.call('HGET', k.groups, group)) or 0
            counts[group] = used
          end
          if used >= group_limit then
            parked[#parked + 1] = 0
            parked[#parked + 1] = park_member(group, park_score(levels[i], seq + i), batch[i])
            group = false
          else
            counts[group] = used + 1
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
  return { ids = ids, records = records, grouped = grouped, tenant_of = tenant_of,
    parked = parked, tparked = tparked, tfull = tfull, drained = drained }
end

-- Parks the jobs pop_runnable held back, notes when each full tenant has
-- room again, and marks the queue as parking.
local function park_held(c, got, budget, out)
  local k = c.k
  if #got.parked > 0 then
    redis.call('ZADD', k.parked, unpack(got.parked))
  end
  if #got.tparked > 0 then
    redis.call('ZADD', k.tenant_parked, unpack(got.tparked))
    for t, w in pairs(got.tfull) do
      redis.call('ZADD', k.tenant_due, room_at(c, w), t)
    end
  end
  if #got.parked > 0 or #got.tparked > 0 then
    redis.call('HSET', k.meta, 'parking', '1')
    -- Out of rounds with room left and jobs maybe ready: come back at once.
    if #got.ids < budget and not got.drained then sooner(out, c.now) end
  end
end

-- Sets next_due_ms for what this claim could not hand out (a tenant's
-- room; the queue's room when throttled, else the next scheduled job) and
-- out[4]; returns whether the rate limit held pending jobs back.
local function next_due(c, out, want, budget, n)
  local k = c.k
  if c.tenant_on or c.parking then
    local first = redis.call('ZRANGE', k.tenant_due, 0, 0, 'WITHSCORES')
    sooner(out, tonumber(first[2]))
  end
  local throttled = budget < want and not pending_empty(k)
  if throttled then
    -- Capacity returns when the oldest claim in the window (ours included) leaves it.
    out[4] = 1
    if n == 0 then sooner(out, queue_room_at(c)) end
  elseif n < want then
    local first = redis.call('ZRANGE', k.scheduled, 0, 0, 'WITHSCORES')
    sooner(out, tonumber(first[2]))
  end
  return throttled
end

-- Counts the leased jobs against the limits: each claim in the queue's rate
-- window (`claims`, fence -> Redis ms) and in its tenant's window, and each
-- grouped job's slot (`holders`, `groups`). `first` is the first fence.
local function record_limits(c, got, first, throttled, out)
  local k, n, ids, grouped = c.k, #got.ids, got.ids, got.grouped
  local started = fmt_int(c.now)
  local cargs, gargs, targs = {}, {}, {}
  if c.rate_jobs or c.group_limit or c.tenant_on then
    for i = 1, n do
      local fence = fmt_int(first + i - 1)
      if c.rate_jobs then
        cargs[2 * i - 1] = started
        cargs[2 * i] = fence
      end
      if grouped[i] then
        gargs[#gargs + 1] = ids[i]
        gargs[#gargs + 1] = grouped[i]
      end
      local w = got.tenant_of[i]
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
  if c.rate_jobs and c.rate_per then
    redis.call('ZADD', k.claims, unpack(cargs))
    if throttled then sooner(out, queue_room_at(c)) end
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
    for g, count in pairs(added) do
      redis.call('HINCRBY', k.groups, g, count)
    end
  end
end
