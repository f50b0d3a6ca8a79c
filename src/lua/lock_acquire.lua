-- lock_acquire.lua: take a named lock if nobody holds it.
-- Atomic: the existence check, the fencing increment and the SET happen in
-- one step, so two callers can never both get the lock. The fencing number
-- only grows (it survives the lock's expiry), so a resource guarded by the
-- lock can refuse writes carrying an older number.
-- KEYS[1] <prefix>:lock:{<name>}        the lock: "<token>:<fence>", expires with the TTL
-- KEYS[2] <prefix>:lock:{<name>}:fence  the fencing counter (no expiry)
-- ARGV[1] the caller's token (random, unique per acquisition)
-- ARGV[2] TTL in ms
-- Returns: {1, fence} when acquired; {0, ms until the current holder's lock expires}
if redis.call('EXISTS', KEYS[1]) == 1 then
  return { 0, redis.call('PTTL', KEYS[1]) }
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. fence, 'PX', ARGV[2])
return { 1, fence }
