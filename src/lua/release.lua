-- release.lua: give claimed jobs back without spending an attempt (used on
-- shutdown). Each goes back to the head of its priority's pending list.
-- Fencing as in complete.lua. Works at maxmemory.
-- KEYS[1] the queue's base key <prefix>:{<queue>} (lib/keys.lua derives the
--   rest): reads runs and jobs; writes runs, active, pending,
--   pending:<priority>, wake, events; group slots: holders, groups, parked;
--   reads meta (events cap, group_limit).
-- ARGV: 2 per job: id, fence
-- Events (when on): `released` per job, with the attempt it gave back.
-- Group slots are given back as in complete.lua.
-- Returns: one integer per job: 1 released, 0 stale fence (nothing changed)
local k = queue_keys(KEYS)
local ids = ids_of(ARGV, 1, 2)
local runs = redis.call('HMGET', k.runs, unpack(ids))
local out, mine = {}, {}
for i = 1, #ids do
  out[i] = 0
  if holds(runs[i], ARGV[2 * i]) then
    mine[#mine + 1] = i
  end
end
if #mine == 0 then return out end

allow_when_full(k)
local cap = events_cap(k)
local records = redis.call('HMGET', k.jobs, unpack(ids))
local back, run_args, gone = {}, {}, {}
for _, i in ipairs(mine) do
  local id = ids[i]
  local attempts, _, started = parse_run(runs[i])
  out[i] = 1
  gone[#gone + 1] = id
  run_args[#run_args + 1] = id
  run_args[#run_args + 1] = run_entry(fmt_int(math.max(attempts - 1, 0)), '0', fmt_int(started))
  emit(k, cap, 'released', id, attempts)
  if records[i] then
    back[#back + 1] = { record_header(records[i]), id }
  end
end
redis.call('ZREM', k.active, unpack(gone))
if release_groups(k, gone) then wake(k) end
redis.call('HSET', k.runs, unpack(run_args))
if #back > 0 then
  pending_push_all(k, back, true)
  wake(k)
end
return out
