-- handoff.lua: direct hand-off of pending jobs to idle daemons.
-- Keys: idle (HASH "<daemon id>.<pool number>" ->
--   "<slots>,<lease_ms>,<expires_ms>"), the lists <base>:handoff:<name>;
--   reads meta (paused, limits, max_doc_bytes); pops pending, reads jobs,
--   leases through lease.lua (runs, active, meta `fence`, events), buries
--   oversize records (dead, errors).
--
-- A daemon's pool whose claim left it with free slots
-- registers in `idle` (claim.lua: "<daemon id>.<pool number>" ->
-- "<slots>,<lease_ms>,<expires_ms>"), and the daemon blocks on that name's
-- hand-off list <base>:handoff:<name> (same hash tag). An enqueue then
-- leases the jobs at the head of the pending jobs to such a daemon itself, exactly
-- as a claim would (same order, fences, run entries, deadlines), and pushes
-- them as one element onto that list: enqueue -> handler start is one hop
-- instead of wake marker -> pop -> claim. Only for queues with no limit
-- that needs the claim's checks (rate, group, tenant) and not paused. A
-- registration counts down the slots it offered and ends when they are used
-- or it expires; a daemon that died stops getting jobs once its
-- registration expires, and what it got comes back through lease expiry
-- like any job of a crashed daemon. The list expires with the lease, so a
-- dead daemon's list does not stay.
-- Element (store::parse_handoff reads it): "<now_ms>,<first fence>" then
-- per job "\n<id>,<attempt>,<record length in bytes>\n<record>". Lengths,
-- not JSON: the record is passed through as it is, with no escaping.
local function handoff_key(k, daemon)
  return k.base .. ':handoff:' .. daemon
end

-- The one Lua encoder of a registration in `idle`:
-- "<free slots>,<lease_ms>,<expires_ms>" (store::Registration is the Rust
-- twin; hand_off below reads it).
local function registration_value(slots, lease, expires)
  return fmt_int(slots) .. ',' .. fmt_int(lease) .. ',' .. fmt_int(expires)
end

local function handoff_element(now, first_fence, out)
  local parts = { fmt_int(now) .. ',' .. fmt_int(first_fence) }
  for j = 1, #out, 3 do
    local record = out[j + 2]
    parts[#parts + 1] = '\n' .. out[j] .. ',' .. fmt_int(out[j + 1]) .. ',' .. fmt_int(#record) .. '\n' .. record
  end
  return table.concat(parts)
end

-- Registers a claim's caller `daemon` (claim.lua) in `idle` with its `free`
-- slots, leases of `lease` ms, for `ttl` ms, when it may take hand-offs
-- (`open`: a queue without limits, not throttled); otherwise ends its
-- registration, since the caller is busy or its slots are counted again.
local function register_for_handoff(k, now, daemon, free, lease, ttl, open)
  if daemon == '' then return end
  if open and free > 0 then
    redis.call('HSET', k.idle, daemon, registration_value(free, lease, now + tonumber(ttl)))
  else
    redis.call('HDEL', k.idle, daemon)
  end
end

-- Hands the head of the pending jobs to registered idle daemons. `fresh`,
-- when given, is the one job this call just created, due now, not yet
-- pending ({ priority, id, record }): with nothing pending it is the next to
-- run, so it is leased without the round trip through a list (the single
-- enqueue into an idle queue, where latency counts); otherwise it becomes
-- pending first. Returns true when nothing is left pending (no wake-up
-- needed).
local function hand_off(k, now, cap, fresh)
  local idle = redis.call('HGETALL', k.idle)
  local blocked = #idle == 0
  local max_bytes
  if not blocked then
    local meta = redis.call('HMGET', k.meta, 'paused', 'rate_jobs', 'group_limit', 'tenant_rate', 'parking',
      'max_doc_bytes')
    blocked = meta[1] or meta[2] or meta[3] or meta[4] or meta[5]
    max_bytes = tonumber(meta[6]) or DEFAULT_MAX_DOC_BYTES
  end
  if fresh and (blocked or not pending_empty(k)) then
    pending_push(k, fresh[1], { fresh[2] })
    fresh = nil
  end
  if blocked then return false end
  for i = 1, #idle, 2 do
    local daemon = idle[i]
    local left, lease, expires = string.match(idle[i + 1], '^(%d+),(%d+),(%d+)$')
    left, lease, expires = tonumber(left), tonumber(lease), tonumber(expires)
    if not left or left < 1 or expires <= now then
      redis.call('HDEL', k.idle, daemon)
    else
      local ids, records
      local direct = fresh ~= nil
      local asked = math.min(left, CALL_JOBS_MAX)
      if direct then
        ids, records = { fresh[2] }, { fresh[3] }
        fresh = nil
      else
        ids = pending_pop(k, asked)
        if #ids == 0 then return true end
        records = redis.call('HMGET', k.jobs, unpack(ids))
      end
      -- An id without a record has nothing to run, and an oversize
      -- record is buried unread (as in claim.lua).
      local live, recs = {}, {}
      for j = 1, #ids do
        local big = records[j] and oversize(records[j], max_bytes)
        if big then
          bury_oversize(k, now, ids[j], big, max_bytes, cap)
        elseif records[j] then
          live[#live + 1] = ids[j]
          recs[#live] = records[j]
        end
      end
      if #live > 0 then
        local out = {}
        local first = lease_jobs(k, live, recs, now, lease, cap, out)
        local key = handoff_key(k, daemon)
        redis.call('RPUSH', key, handoff_element(now, first, out))
        redis.call('PEXPIRE', key, lease)
        left = left - #live
      end
      if left < 1 then
        redis.call('HDEL', k.idle, daemon)
      else
        redis.call('HSET', k.idle, daemon, registration_value(left, lease, expires))
      end
      -- A short pop left nothing pending.
      if direct or #ids < asked then return true end
    end
  end
  -- Every registration had expired: the fresh job stays pending.
  if fresh then pending_push(k, fresh[1], { fresh[2] }) end
  return false
end
