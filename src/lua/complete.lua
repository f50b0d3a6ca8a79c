-- complete.lua: record success for a batch of claimed jobs.
-- Fencing: a job completes only if the caller's token is the job's current
-- token; otherwise (lease lost, job taken over) nothing changes for it.
-- Works at maxmemory: it frees memory (see allow_when_full).
-- KEYS: the queue's keys (keys::PARTS order).
-- ARGV[1] keep_count: completed jobs kept (0 = delete at once)
-- ARGV[2] keep_age_ms: kept jobs older than this are deleted (0 = no age limit)
-- ARGV[3..] 5 per job: id, token, unique_key ('' = none), result ('' = none),
--   resources JSON ('' = none; kept in `resources` while the job is kept)
-- Events (when on): `succeeded` per completed job, with run_ms.
-- Group slots (group_concurrency) of completed jobs are given back and parked jobs of their groups go back in line.
-- Returns: one integer per job: 1 completed, 0 stale token (nothing changed)
-- A kept job keeps its run entry (attempts, start time) with the token cleared.
local k = queue_keys(KEYS)
local keep, keep_age = tonumber(ARGV[1]), tonumber(ARGV[2])
local ids = ids_of(ARGV, 3, 5)
local runs = redis.call('HMGET', k.runs, unpack(ids))
local out, done, at, idx = {}, {}, {}, {}
for i, id in ipairs(ids) do
  local _, token = parse_run(runs[i])
  if token ~= '0' and token == ARGV[5 * i - 1] then
    out[i] = 1
    done[#done + 1] = id
    at[#done] = 5 * i - 2
    idx[#done] = i
  else
    out[i] = 0
  end
end
if #done == 0 then return out end

allow_when_full(k)
redis.call('ZREM', k.active, unpack(done))
if release_groups(k, done) then wake(k) end
for j, id in ipairs(done) do
  release_unique(k, ARGV[at[j] + 2], id)
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
    run_args[#run_args + 1] = run_entry(attempts, '0', started)
    local result = ARGV[at[j] + 3]
    if result ~= '' then
      rargs[#rargs + 1] = id
      rargs[#rargs + 1] = result
    end
    local res = ARGV[at[j] + 4]
    if res ~= '' then
      res_args[#res_args + 1] = id
      res_args[#res_args + 1] = res
    end
  end
  redis.call('ZADD', k.done, unpack(zargs))
  redis.call('HSET', k.runs, unpack(run_args))
  if #rargs > 0 then redis.call('HSET', k.results, unpack(rargs)) end
  if #res_args > 0 then redis.call('HSET', k.resources, unpack(res_args)) end
  trim_retention(k, k.done, now, keep, keep_age, math.max(100, 2 * #done))
else
  redis.call('HDEL', k.runs, unpack(done))
  redis.call('HDEL', k.jobs, unpack(done))
  redis.call('HDEL', k.errors, unpack(done))
  redis.call('HDEL', k.resources, unpack(done))
end
return out
