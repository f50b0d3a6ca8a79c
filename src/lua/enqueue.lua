-- enqueue.lua: add a batch of jobs that the Rust client has already checked.
-- Atomic per call: either Redis refuses the first write (OOM) and nothing is
-- written, or every job is added. Ids that exist are no-ops; a live holder of
-- a unique key wins over a newcomer.
-- KEYS[1] the queue's base key <prefix>:{<queue>} (lib/keys.lua derives the
--   rest): writes jobs, unique, scheduled (and publishes on <base>:due),
--   pending, pending:<priority>, wake, events; hand-off: reads and writes
--   idle, writes <base>:handoff:<name>, runs, active, meta `fence`, dead and
--   errors (oversize records); reads meta (events cap, limits).
-- ARGV: 7 per job: id, document JSON, priority, max_attempts (0 = queue's),
--       delay_ms, run_at_ms (0 = none), unique_key ('' = none). A document
--       "@{...}" keeps its payload apart: the caller staged it in `payloads`
--       in the same transaction (see lib/record.lua); a job not created
--       drops what was staged for it.
-- Events (when on): `enqueued` per created job; `started` per job handed
--   off to an idle daemon (see hand_off in lib/handoff.lua).
-- Publishes: a delayed job's due time on <base>:due when it is now the
--   queue's earliest scheduled job (see announce_due in lib/scheduled.lua).
-- Returns: 2 per job: status ('created' | 'exists' | 'duplicate'), id
local k = queue_keys(KEYS)
local now = now_ms()
local cap = events_cap(k)
local nows = fmt_int(now)
local out, created = {}, {}
local fresh_record -- the record of the last job created due now
for i = 1, #ARGV, 7 do
  local id, doc, unique = ARGV[i], ARGV[i + 1], ARGV[i + 6]
  local due = now + tonumber(ARGV[i + 4])
  local run_at = tonumber(ARGV[i + 5])
  if run_at > 0 then due = run_at end
  local status
  if unique == '' and due <= now then
    -- The common case, two element operations: HSETNX both checks that
    -- the id is new and stores the record (priority and max_attempts are
    -- the integers the client sent, as text); the ids become pending below,
    -- one push per priority. HSETNX is also the call's first write: at
    -- maxmemory Redis refuses it and nothing is written.
    local record = make_record(ARGV[i + 2], ARGV[i + 3], nows, doc)
    if redis.call('HSETNX', k.jobs, id, record) == 1 then
      fresh_record = record
      status = 'created'
      created[#created + 1] = { tonumber(ARGV[i + 2]), id }
      if cap > 0 then
        emit(k, cap, 'enqueued', id, 0, 'via', 'enqueue', 'priority', ARGV[i + 2])
      end
    else
      status = 'exists'
      drop_staged_payload(k, id, doc, true)
    end
  else
    local asked = id
    status, id = enqueue_one(k, now, id, tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]),
      due, unique, doc, cap, 'enqueue')
    if status ~= 'created' then drop_staged_payload(k, asked, doc, status == 'exists') end
  end
  out[#out + 1] = status
  out[#out + 1] = id
end
-- An idle daemon that registered takes the head of the pending jobs directly;
-- what is left wakes one that did not. One new job (a single enqueue) goes
-- to hand_off as it is: into an empty queue it is leased without passing
-- through the pending lists (two commands fewer on the latency path).
local fresh = nil
if #created == 1 then
  fresh = { created[1][1], created[1][2], fresh_record }
elseif #created > 0 then
  pending_push_all(k, created, false)
end
if not hand_off(k, now, cap, fresh) then wake(k) end
return out
