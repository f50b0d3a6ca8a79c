-- cancel.lua: cancel live jobs, delete finished ones, or run scheduled
-- ones now, by id (see lib/cancel.lua). One call, atomic: a job is never half cancelled, and a
-- claim, completion or renewal runs wholly before or after it.
-- Works at maxmemory (it frees memory).
-- KEYS[1] the queue's base key <prefix>:{<queue>} (lib/keys.lua derives the
--   rest; the keys lib/cancel.lua names).
-- ARGV[1] 'cancel', 'delete' or 'promote'
-- ARGV[2..] job ids
-- Returns: per id, the state it was in ('unknown', 'pending', 'scheduled',
--   'retrying', 'active', 'dead', 'succeeded'); cancel changed the live
--   ones, delete the dead and succeeded ones, promote the scheduled and
--   retrying ones.
local k = queue_keys(KEYS)
allow_when_full(k)
local cap = events_cap(k)
local out = {}
for i = 2, #ARGV do
  if ARGV[1] == 'delete' then
    out[#out + 1] = delete_job(k, ARGV[i])
  elseif ARGV[1] == 'promote' then
    out[#out + 1] = promote_job(k, ARGV[i], cap)
  else
    out[#out + 1] = cancel_job(k, ARGV[i], cap)
  end
end
return out
