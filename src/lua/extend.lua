-- extend.lua: renew the leases of a batch of claimed jobs.
-- Fencing: only the current fence's holder may renew. Works at maxmemory
-- (renewing must not fail because Redis is full: that would lose leases).
-- KEYS[1] the queue's base key <prefix>:{<queue>} (lib/keys.lua derives the
--   rest): reads runs; writes active (existing members only).
-- ARGV[1] lease length in ms (new deadline = Redis now + lease)
-- ARGV[2..] 2 per job: id, fence
-- Returns: {now_ms, then one integer per job: 1 renewed, 0 stale fence
--   (taken over; nothing changed), 2 the job is gone (cancelled or deleted:
--   its record too; see lib/cancel.lua)}
local k = queue_keys(KEYS)
local lease = tonumber(ARGV[1])
local ids = ids_of(ARGV, 2, 2)
local runs = redis.call('HMGET', k.runs, unpack(ids))
local now = now_ms()
local out, zargs = { now }, {}
local until_ms = fmt_int(now + lease)
for i, id in ipairs(ids) do
  if holds(runs[i], ARGV[2 * i + 1]) then
    out[i + 1] = 1
    zargs[#zargs + 1] = until_ms
    zargs[#zargs + 1] = id
  elseif not runs[i] and redis.call('HEXISTS', k.jobs, id) == 0 then
    out[i + 1] = 2
  else
    out[i + 1] = 0
  end
end
if #zargs > 0 then
  allow_when_full(k)
  redis.call('ZADD', k.active, 'XX', unpack(zargs))
end
return out
