-- enqueue.lua: add a batch of jobs that the Rust client has already checked.
-- Atomic per call: either Redis refuses the first write (OOM) and nothing is
-- written, or every job is added. Ids that exist are no-ops; a live holder of
-- a unique key wins over a newcomer.
-- KEYS[1] the queue's base key <prefix>:{<queue>} (prelude derives the rest).
-- ARGV: 7 per job: id, document JSON, priority, max_attempts (0 = queue's),
--       delay_ms, run_at_ms (0 = none), unique_key ('' = none)
-- Events (when on): `enqueued` per created job; `started` per job handed
--   off to an idle daemon (see hand_off in the prelude).
-- Returns: 2 per job: status ('created' | 'exists' | 'duplicate'), id
local k = queue_keys(KEYS)
local now = now_ms()
local cap = events_cap(k)
-- One place in line per job, reserved at once (unused ones leave gaps,
-- which only order jobs). Also the call's first write: at maxmemory Redis
-- refuses it and nothing is written.
local seq = redis.call('HINCRBY', k.meta, 'seq', #ARGV / 7) - #ARGV / 7
local nows = fmt_int(now)
local out, zargs = {}, {}
local fresh_record -- the record of the last job created due now
for i = 1, #ARGV, 7 do
  local id, doc, unique = ARGV[i], ARGV[i + 1], ARGV[i + 6]
  local due = now + tonumber(ARGV[i + 4])
  local run_at = tonumber(ARGV[i + 5])
  if run_at > 0 then due = run_at end
  seq = seq + 1
  local status
  if unique == '' and due <= now then
    -- The common case, two element operations: HSETNX both checks that
    -- the id is new and stores the record (priority and max_attempts are
    -- the integers the client sent, as text); the pending entries go in
    -- one ZADD below.
    local record = ARGV[i + 2] .. ';' .. ARGV[i + 3] .. ';' .. nows .. ';' .. doc
    if redis.call('HSETNX', k.jobs, id, record) == 1 then
      fresh_record = record
      status = 'created'
      zargs[#zargs + 1] = fmt_int(pending_score(tonumber(ARGV[i + 2]), seq))
      zargs[#zargs + 1] = id
      if cap > 0 then
        emit(k, cap, 'enqueued', id, 0, 'via', 'enqueue', 'priority', ARGV[i + 2])
      end
    else
      status = 'exists'
    end
  else
    status, id = enqueue_one(k, now, id, tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]),
      due, unique, doc, cap, 'enqueue', seq)
  end
  out[#out + 1] = status
  out[#out + 1] = id
end
-- An idle daemon that registered takes the head of the line directly;
-- what is left wakes one that did not. One new job (a single enqueue) goes
-- to hand_off as it is: into an empty queue it is leased without passing
-- through `pending` (three commands fewer on the latency path).
local fresh = nil
if #zargs == 2 then
  fresh = { zargs[1], zargs[2], fresh_record }
elseif #zargs > 0 then
  redis.call('ZADD', k.pending, unpack(zargs))
end
if not hand_off(k, now, cap, fresh) then wake(k) end
return out
