-- promote.lua: move the queue's due scheduled jobs (delayed jobs, retries
-- waiting out their backoff) into pending, and hand them on at once.
-- Run by each daemon's promoter at the earliest due time Redis reported
-- (src/daemon/promoter.rs), so a due job starts on time on an idle or
-- partly busy daemon, whatever its pools are doing. Atomic: a job leaves
-- `scheduled` and joins the tail of its priority's pending list in one step, so two
-- daemons promoting at the same instant move each job once (the second
-- finds nothing due). The moved jobs then go as a claim would hand them:
-- leased directly to idle daemons registered for hand-off (hand_off in
-- lib/handoff.lua), and what is left wakes a daemon. Works at maxmemory (it only
-- moves ids between keys and leases what it hands off).
-- KEYS[1] the queue's base key <prefix>:{<queue>} (lib/keys.lua derives the rest):
--   reads and writes scheduled, jobs, pending, pending:<priority>, idle,
--   meta (events cap, fencing counter, limits), runs, active,
--   handoff:<name>, wake, events.
-- ARGV[1] at most this many jobs per call (capped at CALL_JOBS_MAX)
-- Events (when on): `started` per job handed off (no event for the move).
-- Returns: {now_ms, moved, next_due_ms}: Redis's clock, how many jobs moved,
--   and the earliest due time still in `scheduled` (-1: none; at or before
--   now_ms when more were due than this call moved: call again).
local k = queue_keys(KEYS)
local now = now_ms()
local moved = 0
if redis.call('EXISTS', k.scheduled) == 1 then
  allow_when_full(k)
  moved = promote_due(k, now, math.min(tonumber(ARGV[1]), CALL_JOBS_MAX))
  if moved > 0 and not hand_off(k, now, events_cap(k)) then wake(k) end
end
local head = redis.call('ZRANGE', k.scheduled, 0, 0, 'WITHSCORES')
return { now, moved, tonumber(head[2]) or -1 }
