-- complete.lua: record success for a batch of claimed jobs.
-- Fencing: a job completes only if the caller's fence is the job's current
-- fence (holds, lib/lease.lua); otherwise (lease lost, job taken over)
-- nothing changes for it.
-- Works at maxmemory: it frees memory (see allow_when_full).
-- KEYS[1] the queue's base key <prefix>:{<queue>} (lib/keys.lua derives the
--   rest): reads runs; writes active, runs, done, results, resources, unique,
--   events; deletes from jobs, runs, errors, results, resources, history
--   (jobs not kept, or trimmed); group slots: holders, groups, parked, pending,
--   pending:<priority>, wake; reads meta (events cap, group_limit).
-- KEYS[2] the day's usage hash <prefix>:{<queue>}:usage:<day>, when usage is given.
-- ARGV[1] keep_count: completed jobs kept (0 = delete at once)
-- ARGV[2] keep_age_ms: kept jobs older than this are deleted (0 = no age limit)
-- ARGV[3] n: how many jobs
-- ARGV[4..] the batch's usage: field count u, expiry (Unix s), then u field
--   and amount pairs, added (HINCRBYFLOAT) to KEYS[2], the day's usage
--   hash, unless every job of the batch is stale: a batch sent again after
--   its reply was lost adds nothing the second time.
-- then 2 per job: id, fence
-- then, only for jobs that have any, 5 per job: job index (1..n), unique_key
--   ('' = none), result ('' = none), resources JSON ('' = none; kept in
--   `resources` while the job is kept), outcome TTL in ms ('' or '0' = no
--   outcome kept; lib/outcome.lua). Most completions have none, so the
--   common case passes two strings per job.
-- Events (when on): `succeeded` per completed job, with run_ms.
-- Outcomes: a `succeeded` outcome (lib/outcome.lua) for each completed job
--   given an outcome TTL.
-- Group slots (group_concurrency) of completed jobs are given back and parked jobs of their groups go back to pending.
-- Returns: one integer per job: 1 completed, 0 stale fence (nothing changed)
-- A kept job keeps its run entry (attempts, start time) with the fence cleared.
local k = queue_keys(KEYS)
local keep, keep_age, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local first = after_usage(ARGV, 4)
local ids, fences = {}, {}
for i = 1, n do
  ids[i] = ARGV[first + 2 * i - 2]
  fences[i] = ARGV[first + 2 * i - 1]
end
local uniques, results, resources, outcomes = {}, {}, {}, {}
local any_outcome = false
for a = first + 2 * n, #ARGV, 5 do
  local i = tonumber(ARGV[a])
  uniques[i], results[i], resources[i] = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local ttl = tonumber(ARGV[a + 4])
  if ttl and ttl > 0 then
    outcomes[i] = ttl
    any_outcome = true
  end
end
local runs = redis.call('HMGET', k.runs, unpack(ids))
local out, done, idx = {}, {}, {}
for i = 1, n do
  if holds(runs[i], fences[i]) then
    out[i] = 1
    done[#done + 1] = ids[i]
    idx[#done] = i
  else
    out[i] = 0
  end
end
if #done == 0 then return out end

allow_when_full(k)
add_usage(KEYS, ARGV, 4)
redis.call('ZREM', k.active, unpack(done))
if release_groups(k, done) then wake(k) end
for j, id in ipairs(done) do
  local unique = uniques[idx[j]]
  if unique and unique ~= '' then release_unique(k, unique, id) end
end
if any_outcome then
  local now = now_ms()
  for j, id in ipairs(done) do
    local ttl = outcomes[idx[j]]
    if ttl then
      keep_outcome(k, id, ttl, 'succeeded', (parse_run(runs[idx[j]])), results[idx[j]], nil, now)
    end
  end
end
local cap = events_cap(k)
if cap > 0 then
  local now = now_ms()
  for j, id in ipairs(done) do
    local attempts, _, started = parse_run(runs[idx[j]])
    emit(k, cap, 'succeeded', id, attempts, 'run_ms', fmt_int(math.max(now - started, 0)))
  end
end
if keep > 0 then
  local now = now_ms()
  local zargs, rargs, run_args, res_args = {}, {}, {}, {}
  for j, id in ipairs(done) do
    zargs[#zargs + 1] = now
    zargs[#zargs + 1] = id
    local attempts, _, started = parse_run(runs[idx[j]])
    run_args[#run_args + 1] = id
    run_args[#run_args + 1] = run_entry(fmt_int(attempts), '0', fmt_int(started))
    local result = results[idx[j]]
    if result and result ~= '' then
      rargs[#rargs + 1] = id
      rargs[#rargs + 1] = result
    end
    local res = resources[idx[j]]
    if res and res ~= '' then
      res_args[#res_args + 1] = id
      res_args[#res_args + 1] = res
    end
  end
  redis.call('ZADD', k.done, unpack(zargs))
  redis.call('HSET', k.runs, unpack(run_args))
  if #rargs > 0 then redis.call('HSET', k.results, unpack(rargs)) end
  if #res_args > 0 then redis.call('HSET', k.resources, unpack(res_args)) end
  trim_retention(k, k.done, now, keep, keep_age, trim_limit(#done))
else
  hdel_all({ k.runs, k.jobs, k.payloads, k.errors, k.resources, k.history }, done)
end
return out
