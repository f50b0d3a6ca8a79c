-- cancel.lua: a job's state as producers read it, and ending a job by hand
-- (cancel a live one, delete a finished one), and running a scheduled one
-- now (promote).
-- Keys: reads jobs, runs, active, scheduled, dead, done; cancel writes
--   active, scheduled, pending and pending:<priority>, parked and
--   tenant_parked, holders and groups
--   (release_groups), unique, and deletes the job's fields (delete_jobs);
--   counts it in meta `cancelled_total`; emits `cancelled` to events; publishes "cancel <id> <fence>" on
--   <base>:due for a running job; keeps a `cancelled` outcome
--   (lib/outcome.lua) for a job that keeps one.
-- Invariant: a cancelled job has no record left and no parked member, so
-- whatever still names it (a hand-off element, its old holder's renewal)
-- finds nothing to run: claims skip an id without a record, and extend
-- answers its holder that the job is gone.

-- The state of job `id`: 'unknown', 'active', 'scheduled', 'retrying',
-- 'dead', 'succeeded' or 'pending' (also a job parked by a group or tenant
-- limit). As store::inspect derives it, from the same sets.
local function job_state(k, id)
  if redis.call('HEXISTS', k.jobs, id) == 0 then return 'unknown' end
  if redis.call('ZSCORE', k.active, id) then return 'active' end
  if redis.call('ZSCORE', k.scheduled, id) then
    if parse_run(redis.call('HGET', k.runs, id)) > 0 then return 'retrying' end
    return 'scheduled'
  end
  if redis.call('ZSCORE', k.dead, id) then return 'dead' end
  if redis.call('ZSCORE', k.done, id) then return 'succeeded' end
  return 'pending'
end

-- Removes job `id`'s member from the parked sets (held back by its group's
-- or its tenant's limit, parking.lua), so that unparking cannot later bring
-- back another job given the same id. A member is found by the job's group
-- (or tenant) prefix, then its id, so this costs O(the members parked for
-- that group or tenant): an operator's act, like the LREM above.
local function forget_parked(k, doc, id)
  for _, place in ipairs({ { k.parked, doc.group }, { k.tenant_parked, doc.tenant } }) do
    local set, name = place[1], place[2]
    if type(name) == 'string' then
      local p = park_prefix(name)
      local from = 0
      while true do
        local page = redis.call('ZRANGEBYLEX', set, '[' .. p, '(' .. p .. ';', 'LIMIT', from, 1000)
        for _, m in ipairs(page) do
          local _, parked_id = parked_entry(m)
          if parked_id == id then
            redis.call('ZREM', set, m)
            return
          end
        end
        if #page < 1000 then break end
        from = from + #page
      end
    end
  end
end

-- Cancels live job `id`; returns the state it was in (for 'unknown',
-- 'dead' and 'succeeded' nothing changes). A pending job leaves its
-- priority's list with LREM, the one removal from the middle of a pending
-- list, whose cost grows with that list: an operator's act, not the hot
-- path. A running job leaves `active` and its group slot; its holder hears
-- at once (a message on the due channel) and stops the handler, or at the
-- latest at its next renewal.
local function cancel_job(k, id, cap)
  local state = job_state(k, id)
  if state == 'unknown' or state == 'dead' or state == 'succeeded' then return state end
  local record = redis.call('HGET', k.jobs, id)
  local doc = record_doc(record)
  if state == 'active' then
    redis.call('ZREM', k.active, id)
    if release_groups(k, { id }) then wake(k) end
    -- Tell its holder now, on the channel every daemon serving the queue
    -- listens to (the due channel, scheduled.lua): "cancel <id> <fence>".
    -- The holder stops the handler at once instead of at its next lease
    -- renewal, which stays the guarantee when the message is missed (the
    -- job's record is gone, so renewal answers "gone").
    local _, fence = parse_run(redis.call('HGET', k.runs, id))
    redis.call('PUBLISH', due_channel(k), 'cancel ' .. id .. ' ' .. fence)
  elseif state == 'scheduled' or state == 'retrying' then
    redis.call('ZREM', k.scheduled, id)
  else
    local level = fmt_int(record_header(record))
    local key = pending_key(k, level)
    if redis.call('LREM', key, 1, id) == 1 then
      if redis.call('EXISTS', key) == 0 then redis.call('ZREM', k.pending, level) end
    else
      forget_parked(k, doc, id)
    end
  end
  release_unique(k, doc.unique_key, id)
  local attempts = parse_run(redis.call('HGET', k.runs, id))
  delete_jobs(k, { id })
  redis.call('HINCRBY', k.meta, 'cancelled_total', 1)
  emit(k, cap, 'cancelled', id, attempts, 'was', state)
  keep_outcome(k, id, outcome_ttl(k, record), 'cancelled', attempts, nil, 'cancelled while ' .. state, now_ms())
  return state
end

-- Runs scheduled (or retrying) job `id` now: out of `scheduled`, onto the
-- tail of its priority's pending jobs, a daemon woken; returns the state it
-- was in (any other job is left as it is). Its attempts are unchanged.
local function promote_job(k, id, cap)
  local state = job_state(k, id)
  if state ~= 'scheduled' and state ~= 'retrying' then return state end
  redis.call('ZREM', k.scheduled, id)
  local priority = record_header(redis.call('HGET', k.jobs, id))
  pending_push(k, priority, { id })
  wake(k)
  emit(k, cap, 'enqueued', id, 0, 'via', 'promote', 'priority', fmt_int(priority))
  return state
end

-- Deletes finished job `id` (dead, or kept after success); returns the
-- state it was in (a live or unknown job is left as it is).
local function delete_job(k, id)
  local state = job_state(k, id)
  if state == 'dead' then
    redis.call('ZREM', k.dead, id)
  elseif state == 'succeeded' then
    redis.call('ZREM', k.done, id)
  else
    return state
  end
  delete_jobs(k, { id })
  return state
end
