-- reap.lua: rescue jobs whose lease expired (their daemon died or lost
-- Redis). The expired attempt counts: the job goes back to the front of its
-- priority band, or, when it has used all its attempts, to the dead set with
-- the reason. Bounded per call; safe when many daemons reap at once (a job
-- is rescued by the one call that removes it from `active`). The old fence
-- is cleared, so the old holder's late writes are refused. Works at maxmemory.
-- KEYS[1] the queue's base key <prefix>:{<queue>} (lib/keys.lua derives the
--   rest): reads active, jobs, runs; writes active, runs, history (each
--   expired attempt), pending,
--   pending:<priority>, errors, wake, dead and unique (deaths), events;
--   deletes from jobs, runs, errors, results, resources (dead set trimmed);
--   group slots: holders, groups, parked; reads meta (events cap,
--   group_limit).
-- ARGV[1] at most this many jobs
-- ARGV[2] max attempts for jobs that did not set their own
-- ARGV[3] dead_keep, ARGV[4] dead_age_ms (as in fail.lua)
-- ARGV[5] takeover grace in ms (store::TAKEOVER_GRACE; absent = 0): a lease
--   counts as expired only this long after its deadline. Its holder stops
--   the job a safety margin before the deadline on its own clock; the grace
--   keeps the takeover after that stop even when the holder's timer ran
--   late, so two runs of one job never overlap.
-- Events (when on): `lease_expired` (error) per job back to pending, `dead` (error) per death.
-- Outcomes: a `dead` outcome per death of a job that keeps one (lib/outcome.lua).
-- Returns: {requeued, dead}
local k = queue_keys(KEYS)
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', k.active, '-inf', now - (tonumber(ARGV[5]) or 0),
  'LIMIT', 0, tonumber(ARGV[1]))
if #expired == 0 then return { 0, 0 } end

allow_when_full(k)
redis.call('ZREM', k.active, unpack(expired))
-- A crashed holder's group slot returns with its lease.
if release_groups(k, expired) then wake(k) end
local cap = events_cap(k)
local records = redis.call('HMGET', k.jobs, unpack(expired))
local runs = redis.call('HMGET', k.runs, unpack(expired))
local default_max = tonumber(ARGV[2])
local back, run_args, errs, dead_ids, dead_errors, dead_attempts = {}, {}, {}, {}, {}, {}
local history = {}
for i, id in ipairs(expired) do
  local attempts, _, started = parse_run(runs[i])
  run_args[#run_args + 1] = id
  run_args[#run_args + 1] = run_entry(fmt_int(attempts), '0', fmt_int(started))
  if records[i] then
    local priority, max = record_header(records[i])
    if max == 0 then max = default_max end
    if attempts >= max then
      dead_ids[#dead_ids + 1] = id
      dead_attempts[#dead_ids] = attempts
      dead_errors[#dead_errors + 1] = id
      dead_errors[#dead_errors + 1] = string.format(
        'lease expired on attempt %d of %d: the worker died or lost contact with Redis', attempts, max)
      release_unique(k, record_doc(records[i]).unique_key, id)
      keep_outcome(k, id, outcome_ttl(k, records[i]), 'dead', attempts, nil, dead_errors[#dead_errors], now)
      history[#history + 1] = { id, attempts, started, dead_errors[#dead_errors], '' }
    else
      back[#back + 1] = { priority, id }
      errs[#errs + 1] = id
      errs[#errs + 1] = string.format(
        'lease expired on attempt %d: the worker died or lost contact with Redis', attempts)
      emit(k, cap, 'lease_expired', id, attempts, 'error', errs[#errs])
      history[#history + 1] = { id, attempts, started, errs[#errs], '' }
    end
  end
end
redis.call('HSET', k.runs, unpack(run_args))
add_history(k, now, history)
if #back > 0 then
  pending_push_all(k, back, true)
  redis.call('HSET', k.errors, unpack(errs))
  wake(k)
end
bury(k, now, dead_ids, dead_errors, tonumber(ARGV[3]), tonumber(ARGV[4]), cap, dead_attempts)
return { #back, #dead_ids }
