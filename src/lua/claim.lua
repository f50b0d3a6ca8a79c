-- claim.lua: hand up to N ready jobs to one caller, each under a lease.
-- Atomic, so two claimers never get the same job: LPOP removes the ids from
-- the head of the pending jobs (see pending_pop in lib/pending.lua) in the
-- same step that records the new fences and lease deadlines. Before claiming
-- it moves due scheduled jobs into pending and turns inbox documents into
-- jobs (bounded batches). A paused queue hands out nothing.
-- Limits, read from `meta` (written by the daemon at start and reload):
--   rate_jobs, rate_per_ms: at most rate_jobs claims in any rate_per_ms
--     window, over every claimer. `claims` holds the claims of the last
--     window (fence -> Redis ms), trimmed each call; a claim hands out at
--     most the room left, and when that stops it while jobs wait, returns
--     throttled = 1 and next_due_ms = when the oldest claim leaves the window.
--     Jobs held back stay pending: no attempt is spent.
--   group_limit: at most this many active jobs per job `group`; a popped job
--     whose group is full is parked (see lib/parking.lua) and the claim pops
--     on, so other groups are not blocked behind it. Only with group_limit
--     set is a job's document decoded here.
--   tenant_rate: "<jobs>,<per_ms>,<overrides 0|1>" (jobs 0: no default):
--     at most jobs claims of one job `tenant` in any per_ms window, over
--     every claimer; `tenant_limits` (tenant -> "<jobs>,<per_ms>") overrides
--     it per tenant when the flag is 1. Each tenant's window is its own ZSET
--     `<claims>:<tenant>`, the one key name this script builds: it extends
--     the `claims` key it was given, so it has the same {queue} hash tag and
--     Cluster slot, and expires one window after the tenant's last claim.
--     A popped job whose tenant has no room is parked in `tenant_parked`
--     (like a group's, so it keeps its place among the pending jobs; no
--     attempt spent) and the claim pops on, so other tenants are not held
--     back. `tenant_due` holds when each tenant with parked jobs has room
--     again; each claim first moves the parked jobs of due tenants back to
--     pending (as many as their room, bounded) and reschedules the rest, and
--     next_due_ms includes the earliest such time. Jobs without a tenant are
--     not tenant-limited; with tenant_rate absent no document is decoded for
--     it.
--   parking: set while jobs may be parked (group or tenant); with the limit
--     gone, the claim moves them back to pending.
-- All of this is one script, so the counts it reads cannot change before its
-- claims are recorded: over all daemons no window ever holds more claims
-- than its limit.
-- KEYS[1] the queue's base key <prefix>:{<queue>} (lib/keys.lua derives the
--   rest): reads meta (settings; writes its `fence`, `seq`, `parking`) and
--   tenant_limits; moves scheduled jobs to pending and pending:<priority>;
--   pops inbox into jobs (as enqueue does: unique, scheduled, <base>:due) or
--   rejected; pops pending, reads jobs; writes runs and active (the leases),
--   claims, claims:<tenant>, parked, tenant_parked, tenant_due, groups,
--   holders, idle, wake, events; dead and errors for oversize records.
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
-- The steps (lib/limits.lua unless named otherwise): claim_settings, one
--   read of meta (a paused queue stops there); promote_due
--   (lib/scheduled.lua); take_inbox (lib/new_jobs.lua); unpark_lifted;
--   release_due_tenants; rate_budget; pop_runnable; park_held; next_due;
--   register_for_handoff (lib/handoff.lua); lease_jobs (lib/lease.lua);
--   record_limits; then a wake-up when work remains.
local k = queue_keys(KEYS)
local want, lease = math.min(tonumber(ARGV[1]), CALL_JOBS_MAX), tonumber(ARGV[2])
local now = now_ms()
local c = claim_settings(k, now)
local daemon = ARGV[5] or ''
if c.paused then
  if daemon ~= '' then redis.call('HDEL', k.idle, daemon) end
  return { now, -1, 1, 0, 0 }
end
allow_when_full(k)

local promote = tonumber(ARGV[3])
if promote > 0 then promote_due(k, now, promote) end
take_inbox(k, now, tonumber(ARGV[4]), c.max_bytes, c.cap)
if c.parking then unpark_lifted(c) end
if c.tenant_on or c.parking then release_due_tenants(c) end

local out = { now, -1, 0, 0, 0 }
local budget = rate_budget(c, want)
local got = pop_runnable(c, budget)
park_held(c, got, budget, out)
local n = #got.ids
local throttled = next_due(c, out, want, budget, n)
local limited = c.rate_jobs or c.group_limit or c.tenant_on or c.parking
register_for_handoff(k, now, daemon, want - n, lease, ARGV[6], not (throttled or limited))
if n == 0 then return out end

out[5] = lease_jobs(k, got.ids, got.records, now, lease, c.cap, out)
record_limits(c, got, out[5], throttled, out)
-- The caller took all it could and work remains: wake another daemon.
if n == want and not pending_empty(k) then
  wake(k)
end
return out
