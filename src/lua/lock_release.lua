-- lock_release.lua: compare-and-delete; only the holder's token may release.
-- KEYS[1] <prefix>:lock:{<name>}
-- ARGV[1] the holder's "<token>:<fence>"
-- Returns: 1 released, 0 not held by this token (nothing changed)
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
