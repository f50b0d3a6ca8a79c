-- dead_purge.lua: delete dead jobs for good, by id or by age.
-- KEYS[1] the queue's base key <prefix>:{<queue>} (lib/keys.lua derives the rest).
-- ARGV[1] mode: 'ids' (ARGV[3..] are job ids) or 'age'
-- ARGV[2] for 'age': delete jobs dead for at least this many ms (0 = all); at most 1000 per call
-- Returns: the number of jobs deleted
local k = queue_keys(KEYS)
local victims = {}
if ARGV[1] == 'ids' then
  for i = 3, #ARGV do
    if redis.call('ZSCORE', k.dead, ARGV[i]) then victims[#victims + 1] = ARGV[i] end
  end
else
  victims = redis.call('ZRANGEBYSCORE', k.dead, '-inf', now_ms() - tonumber(ARGV[2]), 'LIMIT', 0, 1000)
end
if #victims == 0 then return 0 end
allow_when_full(k)
redis.call('ZREM', k.dead, unpack(victims))
delete_jobs(k, victims)
return #victims
