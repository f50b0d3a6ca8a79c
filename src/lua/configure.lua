-- configure.lua: write a queue's settings as the daemon's config has them:
-- the `meta` fields the scripts read (document size limit, events cap, rate
-- and group limits, tenant default), the tenant overrides, and the encoding
-- pins. Atomic, so a claim sees a queue's old settings or its new ones,
-- never half of each. Works at maxmemory (a handful of small fields, needed
-- to drain with the right limits): a daemon can start on a full Redis.
-- KEYS[1] the queue's base key <prefix>:{<queue>} (lib/keys.lua derives the rest):
--   writes meta, tenant_limits, runs (pin field), active (pin member).
-- ARGV[1] 'pins' to write the encoding pins ('' not), ARGV[2] the `runs` pin
--   field, ARGV[3] its value, ARGV[4] the `active` pin member (store.rs says why)
-- ARGV[5] n, then n pairs: meta field, value ('' = delete the field)
-- then 'tenants' to replace `tenant_limits` whole with the pairs that follow
--   (tenant, "<jobs>,<per_ms>"), or '' to leave it as it is
-- Returns: 1
local k = queue_keys(KEYS)
allow_when_full(k)
if ARGV[1] == 'pins' then
  redis.call('HSET', k.runs, ARGV[2], ARGV[3])
  redis.call('ZADD', k.active, '+inf', ARGV[4])
end
local n = tonumber(ARGV[5])
local set, gone = {}, {}
for i = 6, 5 + 2 * n, 2 do
  if ARGV[i + 1] == '' then
    gone[#gone + 1] = ARGV[i]
  else
    set[#set + 1] = ARGV[i]
    set[#set + 1] = ARGV[i + 1]
  end
end
if #gone > 0 then redis.call('HDEL', k.meta, unpack(gone)) end
if #set > 0 then redis.call('HSET', k.meta, unpack(set)) end
local t = 6 + 2 * n
if ARGV[t] == 'tenants' then
  redis.call('DEL', k.tenant_limits)
  if #ARGV > t then redis.call('HSET', k.tenant_limits, unpack(ARGV, t + 1)) end
end
return 1
