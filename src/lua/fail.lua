-- fail.lua: record failed attempts for a batch of claimed jobs: each is
-- either scheduled for a retry (backoff computed by the caller) or moved to
-- the dead set. Fencing as in complete.lua. Works at maxmemory.
-- KEYS[1] the queue's base key <prefix>:{<queue>} (lib/keys.lua derives the
--   rest): reads runs; writes active, runs, resources, history (each
--   failed attempt, lib/retention.lua), scheduled and errors
--   (retries), <base>:due, dead, errors and unique (deaths), events; deletes
--   from jobs, runs, errors, results, resources (dead set trimmed); group
--   slots: holders, groups, parked, pending, pending:<priority>, wake; reads
--   meta (events cap, group_limit).
-- KEYS[2] the day's usage hash <prefix>:{<queue>}:usage:<day>, when usage is given.
-- ARGV[1] dead_keep: most jobs kept in the dead set
-- ARGV[2] dead_age_ms: dead jobs older than this are deleted (0 = no age limit)
-- ARGV[3..] the batch's usage, as in complete.lua (added unless every job is stale)
-- then 7 per job: id, fence, retry delay in ms (-1 = dead now), error text, unique_key ('' = none),
--   resources JSON of the attempt ('' = none; kept in `resources`), outcome
--   TTL in ms ('0' = none; a `dead` outcome is kept, lib/outcome.lua)
-- Events (when on): `failed` (error, retry_at_ms) per retry, `dead` (error) per death.
-- Publishes: the earliest retry time on <base>:due when a retry is now the
--   queue's earliest scheduled job (see announce_due in lib/scheduled.lua).
-- Group slots are given back as in complete.lua.
-- Returns: one integer per job: 1 retry scheduled, 2 dead, 0 stale fence (nothing changed)
local k = queue_keys(KEYS)
local dead_keep, dead_age = tonumber(ARGV[1]), tonumber(ARGV[2])
local first = after_usage(ARGV, 3)
local ids = ids_of(ARGV, first, 7)
local o = first - 4 -- ARGV offset of the jobs: job i's fields start at o + 7i - 3
local runs = redis.call('HMGET', k.runs, unpack(ids))
local now = now_ms()
local out, mine, held = {}, {}, {}
for i, id in ipairs(ids) do
  if holds(runs[i], ARGV[o + 7 * i - 2]) then
    mine[#mine + 1] = id
    held[i] = true
  end
  out[i] = 0
end
if #mine == 0 then return out end

allow_when_full(k)
add_usage(KEYS, ARGV, 3)
redis.call('ZREM', k.active, unpack(mine))
if release_groups(k, mine) then wake(k) end
local cap = events_cap(k)
local retry_z, dead_ids, dead_errors, errs, run_args, res_args = {}, {}, {}, {}, {}, {}
local dead_attempts, history = {}, {}
for i, id in ipairs(ids) do
  if held[i] then
    local attempts, _, started = parse_run(runs[i])
    local delay, err = tonumber(ARGV[o + 7 * i - 1]), ARGV[o + 7 * i]
    history[#history + 1] = { id, attempts, started, err, ARGV[o + 7 * i + 2] }
    run_args[#run_args + 1] = id
    run_args[#run_args + 1] = run_entry(fmt_int(attempts), '0', fmt_int(started))
    if ARGV[o + 7 * i + 2] ~= '' then
      res_args[#res_args + 1] = id
      res_args[#res_args + 1] = ARGV[o + 7 * i + 2]
    end
    if delay >= 0 then
      out[i] = 1
      retry_z[#retry_z + 1] = now + delay
      retry_z[#retry_z + 1] = id
      errs[#errs + 1] = id
      errs[#errs + 1] = err
      emit(k, cap, 'failed', id, attempts, 'error', event_text(err), 'retry_at_ms', fmt_int(now + delay))
    else
      out[i] = 2
      dead_ids[#dead_ids + 1] = id
      dead_attempts[#dead_ids] = attempts
      dead_errors[#dead_errors + 1] = id
      dead_errors[#dead_errors + 1] = err
      release_unique(k, ARGV[o + 7 * i + 1], id)
      keep_outcome(k, id, ARGV[o + 7 * i + 3], 'dead', attempts, nil, err, now)
    end
  end
end
redis.call('HSET', k.runs, unpack(run_args))
add_history(k, now, history)
if #res_args > 0 then redis.call('HSET', k.resources, unpack(res_args)) end
if #retry_z > 0 then
  redis.call('ZADD', k.scheduled, unpack(retry_z))
  redis.call('HSET', k.errors, unpack(errs))
  -- The promoters run the retries when due (one message when one of them
  -- is now the earliest scheduled job).
  local soonest = retry_z[1]
  for i = 3, #retry_z, 2 do soonest = math.min(soonest, retry_z[i]) end
  announce_due(k, soonest)
end
bury(k, now, dead_ids, dead_errors, dead_keep, dead_age, cap, dead_attempts)
return out
