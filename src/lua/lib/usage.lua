-- usage.lua: handler usage (tokens, cost, ...) of finished attempts, added
-- up per queue, tenant and day.
-- Keys: KEYS[2] of complete.lua and fail.lua, the day's usage hash
--   <prefix>:{<queue>}:usage:<day> (HASH field -> amount), passed by the
--   caller (QueueKeys::usage_day); usage::Tally::script_args encodes the
--   section, its fields and amounts.
--
-- Usage of a batch of finished attempts (complete.lua, fail.lua): ARGV[at]
-- fields, ARGV[at + 1] when the day's hash expires (Unix s), then field and
-- amount pairs, added to the day's hash KEYS[2].
-- The index of the first ARGV after the usage section that starts at `at`.
local function after_usage(args, at)
  return at + 2 + 2 * tonumber(args[at])
end

-- Adds the usage section that starts at `at`. Call after allow_when_full.
local function add_usage(keys, args, at)
  local n = tonumber(args[at])
  if n == 0 then return end
  local key = keys[2]
  for a = at + 2, at + 2 * n, 2 do
    redis.call('HINCRBYFLOAT', key, args[a], args[a + 1])
  end
  redis.call('EXPIREAT', key, args[at + 1])
end
