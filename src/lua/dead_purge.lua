-- dead_purge.lua: delete dead jobs for good, by id or by age.
-- Works at maxmemory (it frees memory).
-- KEYS[1] the queue's base key <prefix>:{<queue>} (lib/keys.lua derives the
--   rest): reads and writes dead; deletes from jobs, runs, errors, results,
--   resources.
-- ARGV[1] mode: 'ids' (ARGV[3..] are job ids) or 'age'
-- ARGV[2] for 'age': delete jobs dead for at least this many ms (0 = all);
--   at most PURGE_BATCH per call
-- Returns: {deleted, more}: the number of jobs deleted, and 1 when the call
--   stopped at PURGE_BATCH (more may be due: call again), else 0.

-- Most dead jobs one 'age' call deletes: each costs a ZREM member and up to
-- five HDEL fields, and a call holds Redis while it runs; the caller
-- (Store::dead_purge_older) calls again while `more` says so.
local PURGE_BATCH = 1000
local k = queue_keys(KEYS)
local victims = {}
if ARGV[1] == 'ids' then
  for i = 3, #ARGV do
    if redis.call('ZSCORE', k.dead, ARGV[i]) then victims[#victims + 1] = ARGV[i] end
  end
else
  victims = redis.call('ZRANGEBYSCORE', k.dead, '-inf', now_ms() - tonumber(ARGV[2]), 'LIMIT', 0, PURGE_BATCH)
end
if #victims == 0 then return { 0, 0 } end
local more = (ARGV[1] ~= 'ids' and #victims == PURGE_BATCH) and 1 or 0
allow_when_full(k)
redis.call('ZREM', k.dead, unpack(victims))
delete_jobs(k, victims)
return { #victims, more }
