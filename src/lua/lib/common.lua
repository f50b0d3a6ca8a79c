-- common.lua: what every file after it uses: integers as Redis takes them,
-- Redis's clock, the bound on one call's batch, the batch argument layout,
-- and the rule that lets a transition run when Redis is full.
-- Keys: meta (field `oom-guard`, never set: only deleted, see allow_when_full).

-- Most jobs one call claims or hands off, and most values passed through
-- one unpack(): Lua's unpack takes at most ~8000 (store::MAX_CALL_JOBS).
local CALL_JOBS_MAX = 1000

-- An integer as text, never in exponent form (a number passed to Redis as a
-- number is formatted as a double).
local function fmt_int(x)
  return string.format('%d', x)
end

-- Redis's clock, so daemons on hosts with drifting clocks agree.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The job ids of a batch's arguments: args[first], then every `stride`-th
-- (each job's fields follow its id).
local function ids_of(args, first, stride)
  local ids = {}
  for i = first, #args, stride do
    ids[#ids + 1] = args[i]
  end
  return ids
end

-- At maxmemory with noeviction, Redis refuses memory-growing commands only
-- in a script that has not written yet (it cannot stop one halfway). Making
-- the first write a delete that never needs memory lets the scripts that
-- free memory or keep leases alive (complete, fail, reap, release, extend,
-- claim) run when Redis is full. Enqueue does not call this: its first write
-- fails with Redis's OOM error and nothing is written.
local function allow_when_full(k)
  redis.call('HDEL', k.meta, 'oom-guard')
end
