-- keys.lua: a queue's key names, derived from the one key a script is given.
--
-- Every script receives the queue's base key "<prefix>:{<queue>}" as
-- KEYS[1] (then any extra key it documents); queue_keys() derives the rest
-- as "<base>:<part>". All carry the same {queue} hash tag, so a script never
-- leaves its Redis Cluster slot. keys::PARTS (src/keys.rs) lists the same
-- parts in the same order, with each one's type and value; a test compares
-- the two lists.
--
-- The library file that holds each part's format and rules (the transitions
-- write some parts directly, e.g. results and resources in complete.lua):
--   jobs (records), payloads ............... record.lua
--   pending, pending:<priority>, wake ...... pending.lua
--   scheduled, <base>:due (channel) ........ scheduled.lua
--   runs, active, meta `fence` ............. lease.lua
--   events ................................. events.lua
--   done, dead, errors, results,
--   resources, unique, history ............. retention.lua (new jobs set unique)
--   idle, <base>:handoff:<name> ............ handoff.lua
--   inbox, rejected, meta `idseq` .......... new_jobs.lua
--   parked, tenant_parked, groups, holders . parking.lua
--   claims, claims:<tenant>, tenant_due,
--   meta `seq` and `parking` ............... limits.lua
--   meta settings, tenant_limits ........... configure.lua writes them (src/store/setup.rs
--                                            encodes them); the files above read them
--   the day's usage hash (KEYS[2]) ......... usage.lua
--   meta `oom-guard` (never set) ........... common.lua
-- Names built beyond the parts (each extends a derived key, so it keeps the
-- hash tag): pending:<priority>, <base>:due, <base>:handoff:<name>,
-- claims:<tenant>. (The `cron` hash, cron_enqueue.lua's KEYS[2], and the
-- usage hash are passed by the caller.)
--
-- Invariant: a script touches only keys derived here from KEYS[1], and the
-- extra keys it is passed (usage:<day>, cron).

-- The parts of a queue's keyspace (keys::PARTS lists the same names).
local QUEUE_PARTS = {
  'jobs', 'pending', 'scheduled', 'active', 'dead', 'done', 'runs', 'errors', 'results', 'unique',
  'meta', 'inbox', 'rejected', 'wake', 'resources', 'events', 'claims', 'parked', 'groups',
  'holders', 'tenant_limits', 'tenant_parked', 'tenant_due', 'idle', 'history', 'payloads',
}
local IS_PART = {}
-- (A numeric loop: this runs when the Function library loads, where Redis
-- offers no ipairs.)
for i = 1, #QUEUE_PARTS do IS_PART[QUEUE_PARTS[i]] = true end

-- The queue's keys, named by part (k.jobs, k.pending, ...), derived from
-- the base key K[1] = "<prefix>:{<queue>}" the first time each is used.
-- Every derived key carries the base key's {queue} hash tag, so it lives on
-- the slot Redis Cluster routed the call to. Passing one key instead of
-- all of them spares every call (a single enqueue above all) turning ~20
-- key names into Redis and Lua strings it mostly never uses.
local function queue_keys(K)
  local base = K[1]
  return setmetatable({ base = base }, {
    __index = function(t, part)
      if not IS_PART[part] then error('redq: no key part named ' .. tostring(part)) end
      local key = base .. ':' .. part
      rawset(t, part, key)
      return key
    end,
  })
end
