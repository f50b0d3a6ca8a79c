-- lease.lua: run entries, fences and leases.
-- Keys: runs (HASH id -> run entry), active (ZSET id -> lease deadline,
--   Redis ms), meta field `fence` (the last fence issued); lease_jobs emits
--   to events.
--
-- Run entry (field of `runs`): "<attempts>,<fence>,<started_ms>"; fence 0 =
-- not held (inspect.rs reads the same form). A job is held while its entry
-- carries a fence other than 0 and it is in `active`, its score the lease's
-- deadline.
-- Invariant: only the caller holding a job's current fence (holds) may
-- renew, complete, fail or release it; a job taken over gets a new fence,
-- so the old holder's late calls change nothing.

-- Attempts, fence and start time of a run entry (0, '0', 0 when absent).
local function parse_run(v)
  if not v then return 0, '0', 0 end
  local a, t, s = string.match(v, '^(%d+),(%d+),(%d+)$')
  return tonumber(a) or 0, t or '0', tonumber(s) or 0
end

-- The fence of a run entry that holds one ('0' or nil when not held).
local function run_fence(v)
  return string.match(v, '^%d+,(%d+),')
end

-- The one Lua encoder of a run entry: "<attempts>,<fence>,<started_ms>",
-- each already integer text (fmt_int), so no number is formatted as a
-- double (store::inspect reads the same form).
local function run_entry(attempts, fence, started)
  return attempts .. ',' .. fence .. ',' .. started
end

-- The fencing check: true when the run entry `run` (nil: none) is held
-- under `fence`, the caller's fence as text. complete, fail, extend and
-- release act on a job only when it holds.
local function holds(run, fence)
  local held = run and run_fence(run)
  return held ~= nil and held ~= '0' and held == fence
end

-- Fences of a queue's jobs: n consecutive numbers from the first
-- returned, each larger than any issued before, even by a Redis that lost
-- its latest writes (a failover to a replica that lagged, an AOF cut short
-- by a power loss). The counter (meta `fence`) alone would hand out again
-- the numbers the lost writes had issued, and two holders of one job would
-- then share a fence. So a fence is at least Redis's clock in ms times
-- FENCES_PER_MS: after a restart that lost the last seconds, new fences
-- start above every fence issued before the restart, as long as fences were
-- issued at fewer than FENCES_PER_MS per ms on average (the counter runs
-- ahead of the clock only past that rate) and Redis's clock did not go back.
-- Fences stay below 2^53 (exact in Lua's numbers) until the year 2255.
local FENCES_PER_MS = 1000
local function take_fences(k, now, n)
  local last = tonumber(redis.call('HGET', k.meta, 'fence')) or 0
  local first = math.max(last + 1, now * FENCES_PER_MS)
  redis.call('HSET', k.meta, 'fence', fmt_int(first + n - 1))
  return first
end

-- Leases `ids` (just taken from the head of the pending jobs; `records` their job
-- records, all present) to one caller until now + lease: the attempt
-- number from `runs`, fences from take_fences (consecutive: the
-- i-th job holds first + i - 1), run entries, lease deadlines in `active`,
-- `started` events. Appends id, attempt, record per job to `out`; returns
-- the first fence. Per job only table stores and one integer format:
-- numbers passed to Redis as numbers would each be formatted as a double.
local function lease_jobs(k, ids, records, now, lease, cap, out)
  local n = #ids
  local runs = redis.call('HMGET', k.runs, unpack(ids))
  local last = take_fences(k, now, n) + n - 1
  local until_ms = fmt_int(now + lease)
  local nows = fmt_int(now)
  local hargs, zargs = {}, {}
  local o = #out
  for i = 1, n do
    local id = ids[i]
    local attempts = 1
    if runs[i] then attempts = parse_run(runs[i]) + 1 end
    hargs[2 * i - 1] = id
    hargs[2 * i] = run_entry(attempts == 1 and '1' or fmt_int(attempts), fmt_int(last - n + i), nows)
    zargs[2 * i - 1] = until_ms
    zargs[2 * i] = id
    out[o + 1] = id
    out[o + 2] = attempts
    out[o + 3] = records[i]
    o = o + 3
    if cap > 0 then emit(k, cap, 'started', id, attempts, 'lease_until_ms', until_ms) end
  end
  redis.call('HSET', k.runs, unpack(hargs))
  redis.call('ZADD', k.active, unpack(zargs))
  return last - n + 1
end
