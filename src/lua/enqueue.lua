-- enqueue.lua: add a batch of jobs that the Rust client has already checked.
-- Atomic per call: either Redis refuses the first write (OOM) and nothing is
-- written, or every job is added. Ids that exist are no-ops; a live holder of
-- a unique key wins over a newcomer.
-- KEYS[1] the queue's base key <prefix>:{<queue>} (prelude derives the rest).
-- ARGV: 7 per job: id, document JSON, priority, max_attempts (0 = queue's),
--       delay_ms, run_at_ms (0 = none), unique_key ('' = none)
-- Events (when on): `enqueued` per created job.
-- Returns: 2 per job: status ('created' | 'exists' | 'duplicate'), id
local k = queue_keys(KEYS)
local now = now_ms()
local cap = events_cap(k)
local out = {}
for i = 1, #ARGV, 7 do
  local due = now + tonumber(ARGV[i + 4])
  local run_at = tonumber(ARGV[i + 5])
  if run_at > 0 then due = run_at end
  local status, id = enqueue_one(k, now, ARGV[i], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]),
    due, ARGV[i + 6], ARGV[i + 1], cap, 'enqueue')
  out[#out + 1] = status
  out[#out + 1] = id
end
wake(k)
return out
