-- retention.lua: how jobs leave: the dead set, the kept completed jobs, and
-- deleting a job's data.
-- Keys: dead (ZSET id -> time of death, Redis ms), done (ZSET id -> time of
--   completion), errors (HASH id -> last error), results, resources, unique
--   (HASH unique_key -> id of the live job holding it); deletes from jobs and
--   runs; emits `dead` to events.
-- Invariant: a job deleted here loses every hash field it had (delete_jobs),
-- and a job that ends releases its unique key only when it still holds it.

-- Most members one call trims from a retention set is twice what it just
-- added, and at least TRIM_MIN: each call removes more than it adds, so a
-- set over its bound (keep lowered, an age limit newly set) comes back under
-- it within a few calls, while a call's work stays in proportion to its
-- batch.
local TRIM_MIN = 100
local function trim_limit(added)
  return math.max(TRIM_MIN, 2 * added)
end

-- HDEL of `ids` from each hash that exists. Most queues never write some
-- of them (errors without failures, results and resources without
-- retention): EXISTS once spares passing every id to a missing key.
local function hdel_all(hashes, ids)
  for _, h in ipairs(hashes) do
    if redis.call('EXISTS', h) == 1 then redis.call('HDEL', h, unpack(ids)) end
  end
end

local function delete_jobs(k, ids)
  hdel_all({ k.jobs, k.payloads, k.runs, k.errors, k.results, k.resources, k.history }, ids)
end

-- Bounds a retention set (`done` or `dead`): drops members older than
-- max_age_ms (when > 0), then the oldest beyond `keep`, at most `limit` per
-- call, deleting their records too.
local function trim_retention(k, set, now, keep, max_age_ms, limit)
  local victims = {}
  if max_age_ms > 0 then
    victims = redis.call('ZRANGEBYSCORE', set, '-inf', now - max_age_ms, 'LIMIT', 0, limit)
  end
  if #victims == 0 then
    local over = redis.call('ZCARD', set) - keep
    if over > 0 then
      victims = redis.call('ZRANGE', set, 0, math.min(over, limit) - 1)
    end
  end
  if #victims > 0 then
    redis.call('ZREM', set, unpack(victims))
    delete_jobs(k, victims)
  end
end

-- The most failed attempts a job's history keeps, and how much of each error.
local HISTORY_MAX, HISTORY_ERROR_BYTES = 5, 1000

-- Adds failed attempts to their jobs' histories (`history`, id -> JSON array,
-- oldest first, the last HISTORY_MAX kept). `entries`: per job, { id,
-- attempt, started_ms, error, resources JSON text or '' }. On the failure
-- paths only (fail.lua, reap.lua): a job that succeeds at once never has one.
local function add_history(k, now, entries)
  if #entries == 0 then return end
  local ids = {}
  for i, e in ipairs(entries) do ids[i] = e[1] end
  local old = redis.call('HMGET', k.history, unpack(ids))
  local args = {}
  for i, e in ipairs(entries) do
    local list = {}
    if old[i] then
      local ok, t = pcall(cjson.decode, old[i])
      if ok and type(t) == 'table' then list = t end
    end
    local res = cjson.null
    if e[5] and e[5] ~= '' then
      local ok, t = pcall(cjson.decode, e[5])
      if ok then res = t end
    end
    list[#list + 1] = {
      attempt = e[2],
      started_ms = e[3],
      ended_ms = now,
      error = string.sub(e[4] or '', 1, HISTORY_ERROR_BYTES),
      resources = res,
    }
    while #list > HISTORY_MAX do table.remove(list, 1) end
    args[#args + 1] = e[1]
    args[#args + 1] = cjson.encode(list)
  end
  redis.call('HSET', k.history, unpack(args))
end

-- Moves jobs to the dead set with their last error; with events on (cap > 0)
-- emits `dead` for each, attempts[i] being the attempt of ids[i].
local function bury(k, now, ids, errors_args, dead_keep, dead_age_ms, cap, attempts)
  if #ids == 0 then return end
  local zargs = {}
  for i, id in ipairs(ids) do
    zargs[2 * i - 1] = now
    zargs[2 * i] = id
  end
  redis.call('ZADD', k.dead, unpack(zargs))
  redis.call('HSET', k.errors, unpack(errors_args))
  if cap and cap > 0 then
    for i, id in ipairs(ids) do
      emit(k, cap, 'dead', id, attempts[i], 'error', event_text(errors_args[2 * i]))
    end
  end
  trim_retention(k, k.dead, now, dead_keep, dead_age_ms, trim_limit(#ids))
end

-- Moves a job whose record is oversize (record.lua) to the dead set with
-- the reason, unread (so its outcome is kept only by the queue's outcome_ttl).
local function bury_oversize(k, now, id, bytes, max_bytes, cap)
  local reason = string.format(
    'the job document is %d bytes; the limit is %d bytes (daemon.max_payload_bytes): not run', bytes, max_bytes)
  redis.call('ZADD', k.dead, now, id)
  redis.call('HSET', k.errors, id, reason)
  emit(k, cap, 'dead', id, 0, 'error', reason)
  keep_outcome(k, id, outcome_ttl(k, nil), 'dead', 0, nil, reason, now)
end

-- Frees the unique key `unique` of a job that ended, if the job still holds it.
local function release_unique(k, unique, id)
  if unique and unique ~= '' and redis.call('HGET', k.unique, unique) == id then
    redis.call('HDEL', k.unique, unique)
  end
end
