-- lock_renew.lua: extend a held lock's TTL; only the holder's token may.
-- KEYS[1] <prefix>:lock:{<name>}
-- ARGV[1] the holder's "<token>:<fence>"
-- ARGV[2] new TTL in ms
-- Returns: 1 renewed, 0 not held by this token (expired, or taken by another)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
