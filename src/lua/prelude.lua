-- prelude.lua: helpers shared by every redq script and by the `redq` Redis
-- Function library. src/scripts.rs puts this text in front of each script
-- when it builds it, so each script Redis runs is self-contained.
--
-- Keys: every script receives the queue's base key "<prefix>:{<queue>}" as
-- KEYS[1] (then any extra key it documents); queue_keys() derives the rest.
-- All carry the same {queue} hash tag, so a script never leaves its Redis
-- Cluster slot.
--
-- Job record (field of `jobs`): "<priority>;<max_attempts or 0>;<enqueued_ms>;<document JSON>"
-- Run entry  (field of `runs`): "<attempts>,<fence>,<started_ms>"; fence 0 = not held.

local PRIORITY_MIN, PRIORITY_MAX = -1000, 1000
local MAX_DELAY_MS = 315360000000 -- ten years
local MAX_ATTEMPTS = 1000
local MAX_TIMEOUT_MS = 604800000 -- one week
local MAX_TEXT_LEN = 512
local DEFAULT_MAX_DOC_BYTES = 1048576
local NAME_PATTERN = '^[%w_%.%-:]+$'
-- Most jobs one call claims or hands off, and most values passed through
-- one unpack(): Lua's unpack takes at most ~8000 (store::MAX_CALL_JOBS).
local CALL_JOBS_MAX = 1000

-- The parts of a queue's keyspace (keys::PARTS lists the same names).
local QUEUE_PARTS = {
  'jobs', 'pending', 'scheduled', 'active', 'dead', 'done', 'runs', 'errors', 'results', 'unique',
  'meta', 'inbox', 'rejected', 'wake', 'resources', 'events', 'claims', 'parked', 'groups',
  'holders', 'tenant_limits', 'tenant_parked', 'tenant_due', 'idle',
}
local IS_PART = {}
-- (A numeric loop: this runs when the Function library loads, where Redis
-- offers no ipairs.)
for i = 1, #QUEUE_PARTS do IS_PART[QUEUE_PARTS[i]] = true end

-- The queue's keys, named by part (k.jobs, k.pending, ...), derived from
-- the base key K[1] = "<prefix>:{<queue>}" the first time each is used.
-- Every derived key carries the base key's {queue} hash tag, so it lives on
-- the slot Redis Cluster routed the call to. Passing one key instead of
-- all of them spares every call (a single enqueue above all) turning ~20
-- key names into Redis and Lua strings it mostly never uses.
local function queue_keys(K)
  local base = K[1]
  return setmetatable({ base = base }, {
    __index = function(t, part)
      if not IS_PART[part] then error('redq: no key part named ' .. tostring(part)) end
      local key = base .. ':' .. part
      rawset(t, part, key)
      return key
    end,
  })
end

local function fmt_int(x)
  return string.format('%d', x)
end

-- Redis's clock, so daemons on hosts with drifting clocks agree.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Pending jobs: the jobs ready to run, in the order claims take them. Per
-- priority a LIST `pending:<priority>` of ids, head first; `pending` (ZSET
-- priority -> -priority) names the priorities whose list is not empty,
-- highest first. Jobs enter at the tail (enqueue, promotion, retry from the
-- dead set) or go back to the head (lease expired, released at shutdown,
-- unparked) and leave only from the head (claim, hand-off): nothing is
-- removed from the middle, which is what lets a list hold them. A list
-- entry costs ~a tenth of a sorted-set entry (no score, no skiplist node, no
-- dict entry), which is most of what a pending job costs in Redis besides
-- its record.
-- Invariant: a priority is in `pending` exactly when its list exists.
local function pending_key(k, level)
  return k.pending .. ':' .. level
end

-- Adds ids (in order) to the pending jobs of priority `priority`: at the
-- tail, or at the head when `front` (ids[1] then the next to run).
local function pending_push(k, priority, ids, front)
  local level = fmt_int(priority)
  local key, n, len = pending_key(k, level), #ids, 0
  -- In pieces of CALL_JOBS_MAX (a batch enqueue may hold more).
  if front then
    -- LPUSH puts each argument at the head in turn: from the last id back,
    -- so ids[1] ends first.
    for hi = n, 1, -CALL_JOBS_MAX do
      local part = {}
      for i = hi, math.max(1, hi - CALL_JOBS_MAX + 1), -1 do part[#part + 1] = ids[i] end
      len = redis.call('LPUSH', key, unpack(part))
    end
  else
    for lo = 1, n, CALL_JOBS_MAX do
      len = redis.call('RPUSH', key, unpack(ids, lo, math.min(n, lo + CALL_JOBS_MAX - 1)))
    end
  end
  if len == n then redis.call('ZADD', k.pending, -priority, level) end
end

-- Adds { priority, id } pairs, in order, one push per priority.
local function pending_push_all(k, entries, front)
  local by, order = {}, {}
  for _, e in ipairs(entries) do
    local ids = by[e[1]]
    if not ids then
      ids = {}
      by[e[1]] = ids
      order[#order + 1] = e[1]
    end
    ids[#ids + 1] = e[2]
  end
  for _, p in ipairs(order) do pending_push(k, p, by[p], front) end
end

-- Takes up to n pending ids from the head, highest priority first.
-- Returns the ids and, parallel, their priorities. One ZRANGE and one LPOP
-- per priority visited, plus EXISTS when a pop took exactly what it asked
-- (the list may just have emptied; `pending` must then lose the level).
local function pending_pop(k, n)
  local ids, levels = {}, {}
  while #ids < n do
    local top = redis.call('ZRANGE', k.pending, 0, 0)[1]
    if not top then break end
    local key, asked = pending_key(k, top), n - #ids
    local got = redis.call('LPOP', key, asked)
    if not got or #got < asked or redis.call('EXISTS', key) == 0 then
      redis.call('ZREM', k.pending, top)
    end
    if got then
      local p = tonumber(top)
      for _, id in ipairs(got) do
        ids[#ids + 1] = id
        levels[#ids] = p
      end
    end
  end
  return ids, levels
end

-- True when no job is pending.
local function pending_empty(k)
  return redis.call('EXISTS', k.pending) == 0
end

-- Order key of a parked job (see park_member): its priority band, then its
-- place among the pending jobs within the band, so parked jobs go back in their order.
local SEQ_SPAN = 4398046511104 -- 2^42 places per priority band
local function park_score(priority, seq)
  return (PRIORITY_MAX - priority) * SEQ_SPAN + seq % SEQ_SPAN
end

local function park_priority(score)
  return PRIORITY_MAX - math.floor(score / SEQ_SPAN)
end

local function record_header(record)
  local p, m = string.match(record, '^(%-?%d+);(%d+);')
  return tonumber(p) or 0, tonumber(m) or 0
end

local function record_doc(record)
  local doc = string.match(record, '^%-?%d+;%d+;%d+;(.*)$')
  if not doc then return {} end
  local ok, t = pcall(cjson.decode, doc)
  if ok and type(t) == 'table' then return t end
  return {}
end

local function parse_run(v)
  if not v then return 0, '0', 0 end
  local a, t, s = string.match(v, '^(%d+),(%d+),(%d+)$')
  return tonumber(a) or 0, t or '0', tonumber(s) or 0
end

-- The fence of a run entry that holds one ('0' or nil when not held).
local function run_fence(v)
  return string.match(v, '^%d+,(%d+),')
end

local function run_entry(attempts, fence, started)
  return fmt_int(attempts) .. ',' .. fence .. ',' .. fmt_int(started)
end

-- Leaves one element in `wake` so an idle daemon blocked on it wakes up.
local function wake(k)
  if redis.call('EXISTS', k.wake) == 0 then
    redis.call('RPUSH', k.wake, '1')
  end
end

-- Scheduled jobs wait in `scheduled` (ZSET id -> due time, Redis ms) until
-- they are due. Every daemon's promoter sleeps until the earliest due time
-- of the queues it serves, as Redis reports it, then runs promote.lua; it
-- re-arms when told of an earlier one. Whatever schedules a job (enqueue
-- with a delay, a retry with backoff, import) calls announce_due, which
-- publishes the due time on the queue's channel `<base>:due` when the job
-- is now the earliest: every subscribed daemon hears it at once, so none
-- polls, and a job scheduled behind the earliest needs no message (the
-- promoters are armed for an earlier time and read the next one then).
-- The channel carries the queue's {hash tag}, so it is a shard channel
-- candidate on Redis Cluster. Claims promote due jobs too (claim.lua), so a
-- busy pool never waits on the promoter.
local function due_channel(k)
  return k.base .. ':due'
end

-- Publishes `due` when it is the earliest due time in `scheduled` (ties
-- too: harmless, the promoters take the earlier of what they hold).
local function announce_due(k, due)
  local head = redis.call('ZRANGE', k.scheduled, 0, 0, 'WITHSCORES')
  local first = tonumber(head[2])
  if first and due <= first then
    redis.call('PUBLISH', due_channel(k), fmt_int(first))
  end
end

-- Moves up to n scheduled jobs due by `now` to the tail of the pending jobs, in due
-- order; returns how many. Ids without a record are dropped from
-- `scheduled` (nothing to run). Call after allow_when_full when the caller
-- must work at maxmemory.
local function promote_due(k, now, n)
  local due = redis.call('ZRANGEBYSCORE', k.scheduled, '-inf', now, 'LIMIT', 0, n)
  if #due == 0 then return 0 end
  redis.call('ZREM', k.scheduled, unpack(due))
  local records = redis.call('HMGET', k.jobs, unpack(due))
  local entries = {}
  for i, id in ipairs(due) do
    if records[i] then entries[#entries + 1] = { record_header(records[i]), id } end
  end
  pending_push_all(k, entries, false)
  return #entries
end

-- At maxmemory with noeviction, Redis refuses memory-growing commands only
-- in a script that has not written yet (it cannot stop one halfway). Making
-- the first write a delete that never needs memory lets the scripts that
-- free memory or keep leases alive (complete, fail, reap, release, extend,
-- claim) run when Redis is full. Enqueue does not call this: its first write
-- fails with Redis's OOM error and nothing is written.
local function allow_when_full(k)
  redis.call('HDEL', k.meta, 'oom-guard')
end

-- Lifecycle events, opt-in per queue: the meta field `events` holds the cap
-- of the `events` stream (absent or 0: off). A script reads it once per call
-- (events_cap, or folded into a read of meta it does anyway) and passes it to
-- emit, which writes nothing when events are off. XADD may need memory, so a
-- script that must work at maxmemory emits only after allow_when_full.
-- Fields: event, id, attempt, then pairs of extras; the entry id is the time.
local EVENT_TEXT_MAX = 1024

local function events_cap(k)
  return tonumber(redis.call('HGET', k.meta, 'events')) or 0
end

-- A nil cap (a caller that does not know about events) means off.
local function emit(k, cap, event, id, attempt, ...)
  if cap and cap > 0 then
    redis.call('XADD', k.events, 'MAXLEN', '~', cap, '*',
      'event', event, 'id', id, 'attempt', attempt, ...)
  end
end

-- An error text as an event carries it: at most EVENT_TEXT_MAX bytes.
local function event_text(s)
  if #s > EVENT_TEXT_MAX then return string.sub(s, 1, EVENT_TEXT_MAX) end
  return s
end

-- A job record whose document is larger than the queue's limit (written
-- straight into Redis, past every check) is never handed to a daemon, which
-- would have to load it whole: oversize() says how many bytes its document
-- has when it is over `max_bytes` (nil otherwise), and bury_oversize moves
-- it to the dead set with the reason. The anchored match reads only the
-- record's short header.
local function oversize(record, max_bytes)
  if #record <= max_bytes then return nil end
  local header = string.match(record, '^%-?%d+;%d+;%d+;')
  local bytes = #record - (header and #header or 0)
  if bytes > max_bytes then return bytes end
  return nil
end

local function bury_oversize(k, now, id, bytes, max_bytes, cap)
  local reason = string.format(
    'the job document is %d bytes; the limit is %d bytes (daemon.max_payload_bytes): not run', bytes, max_bytes)
  redis.call('ZADD', k.dead, now, id)
  redis.call('HSET', k.errors, id, reason)
  emit(k, cap, 'dead', id, 0, 'error', reason)
end

-- Fences of a queue's jobs: n consecutive numbers from the first
-- returned, each larger than any issued before, even by a Redis that lost
-- its latest writes (a failover to a replica that lagged, an AOF cut short
-- by a power loss). The counter (meta `fence`) alone would hand out again
-- the numbers the lost writes had issued, and two holders of one job would
-- then share a fence. So a fence is at least Redis's clock in ms times
-- FENCES_PER_MS: after a restart that lost the last seconds, new fences
-- start above every fence issued before the restart, as long as fences were
-- issued at fewer than FENCES_PER_MS per ms on average (the counter runs
-- ahead of the clock only past that rate) and Redis's clock did not go back.
-- Fences stay below 2^53 (exact in Lua's numbers) until the year 2255.
local FENCES_PER_MS = 1000
local function take_fences(k, now, n)
  local last = tonumber(redis.call('HGET', k.meta, 'fence')) or 0
  local first = math.max(last + 1, now * FENCES_PER_MS)
  redis.call('HSET', k.meta, 'fence', fmt_int(first + n - 1))
  return first
end

-- Leases `ids` (just taken from the head of the pending jobs; `records` their job
-- records, all present) to one caller until now + lease: the attempt
-- number from `runs`, fences from take_fences (consecutive: the
-- i-th job holds first + i - 1), run entries, lease deadlines in `active`,
-- `started` events. Appends id, attempt, record per job to `out`; returns
-- the first fence. Per job only table stores and one integer format:
-- numbers passed to Redis as numbers would each be formatted as a double.
local function lease_jobs(k, ids, records, now, lease, cap, out)
  local n = #ids
  local runs = redis.call('HMGET', k.runs, unpack(ids))
  local last = take_fences(k, now, n) + n - 1
  local until_ms = fmt_int(now + lease)
  local tail = ',' .. fmt_int(now)
  local hargs, zargs = {}, {}
  local o = #out
  for i = 1, n do
    local id = ids[i]
    local attempts = 1
    if runs[i] then attempts = parse_run(runs[i]) + 1 end
    hargs[2 * i - 1] = id
    hargs[2 * i] = (attempts == 1 and '1' or fmt_int(attempts)) .. ',' .. fmt_int(last - n + i) .. tail
    zargs[2 * i - 1] = until_ms
    zargs[2 * i] = id
    out[o + 1] = id
    out[o + 2] = attempts
    out[o + 3] = records[i]
    o = o + 3
    if cap > 0 then emit(k, cap, 'started', id, attempts, 'lease_until_ms', until_ms) end
  end
  redis.call('HSET', k.runs, unpack(hargs))
  redis.call('ZADD', k.active, unpack(zargs))
  return last - n + 1
end

-- Direct hand-off. A daemon's pool whose claim left it with free slots
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

local function handoff_element(now, first_fence, out)
  local parts = { fmt_int(now) .. ',' .. fmt_int(first_fence) }
  for j = 1, #out, 3 do
    local record = out[j + 2]
    parts[#parts + 1] = '\n' .. out[j] .. ',' .. fmt_int(out[j + 1]) .. ',' .. fmt_int(#record) .. '\n' .. record
  end
  return table.concat(parts)
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
        redis.call('HSET', k.idle, daemon, fmt_int(left) .. ',' .. fmt_int(lease) .. ',' .. fmt_int(expires))
      end
      -- A short pop left nothing pending.
      if direct or #ids < asked then return true end
    end
  end
  -- Every registration had expired: the fresh job stays pending.
  if fresh then pending_push(k, fresh[1], { fresh[2] }) end
  return false
end

local function ids_of(args, first, stride)
  local ids = {}
  for i = first, #args, stride do
    ids[#ids + 1] = args[i]
  end
  return ids
end

local function release_unique(k, unique, id)
  if unique and unique ~= '' and redis.call('HGET', k.unique, unique) == id then
    redis.call('HDEL', k.unique, unique)
  end
end

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

-- HDEL of `ids` from each hash that exists. Most queues never write some
-- of them (errors without failures, results and resources without
-- retention): EXISTS once spares passing every id to a missing key.
local function hdel_all(hashes, ids)
  for _, h in ipairs(hashes) do
    if redis.call('EXISTS', h) == 1 then redis.call('HDEL', h, unpack(ids)) end
  end
end

local function delete_jobs(k, ids)
  hdel_all({ k.jobs, k.runs, k.errors, k.results, k.resources }, ids)
end

-- Bounds a retention set (`done` or `dead`): drops members older than
-- max_age_ms (when > 0), then the oldest beyond `keep`, at most `limit` per
-- call, deleting their records too.
local function trim_retention(k, set, now, keep, max_age_ms, limit)
  local victims = {}
  if max_age_ms > 0 then
    victims = redis.call('ZRANGEBYSCORE', set, '-inf', now - max_age_ms, 'LIMIT', 0, limit)
  end
  if #victims == 0 then
    local over = redis.call('ZCARD', set) - keep
    if over > 0 then
      victims = redis.call('ZRANGE', set, 0, math.min(over, limit) - 1)
    end
  end
  if #victims > 0 then
    redis.call('ZREM', set, unpack(victims))
    delete_jobs(k, victims)
  end
end

-- Moves jobs to the dead set with their last error; with events on (cap > 0)
-- emits `dead` for each, attempts[i] being the attempt of ids[i].
local function bury(k, now, ids, errors_args, dead_keep, dead_age_ms, cap, attempts)
  if #ids == 0 then return end
  local zargs = {}
  for i, id in ipairs(ids) do
    zargs[2 * i - 1] = now
    zargs[2 * i] = id
  end
  redis.call('ZADD', k.dead, unpack(zargs))
  redis.call('HSET', k.errors, unpack(errors_args))
  if cap and cap > 0 then
    for i, id in ipairs(ids) do
      emit(k, cap, 'dead', id, attempts[i], 'error', event_text(errors_args[2 * i]))
    end
  end
  trim_retention(k, k.dead, now, dead_keep, dead_age_ms, math.max(100, 2 * #ids))
end

-- Adds one job; the caller has checked it. Returns status, id where status is
-- 'created', 'exists' (this id is already known: no-op) or 'duplicate'
-- (a live job holds the unique key; id is that job's). A created job emits
-- `enqueued` (with `via`, the way it came in) when cap > 0.
local function enqueue_one(k, now, id, priority, max_attempts, due, unique, doc, cap, via)
  if redis.call('HEXISTS', k.jobs, id) == 1 then
    return 'exists', id
  end
  if unique ~= '' then
    local holder = redis.call('HGET', k.unique, unique)
    if holder and redis.call('HEXISTS', k.jobs, holder) == 1 then
      return 'duplicate', holder
    end
  end
  redis.call('HSET', k.jobs, id,
    fmt_int(priority) .. ';' .. fmt_int(max_attempts) .. ';' .. fmt_int(now) .. ';' .. doc)
  if unique ~= '' then
    redis.call('HSET', k.unique, unique, id)
  end
  if due > now then
    redis.call('ZADD', k.scheduled, due, id)
    announce_due(k, due)
    emit(k, cap, 'enqueued', id, 0, 'via', via or '-', 'priority', fmt_int(priority), 'due_ms', fmt_int(due))
  else
    pending_push(k, priority, { id })
    emit(k, cap, 'enqueued', id, 0, 'via', via or '-', 'priority', fmt_int(priority))
  end
  return 'created', id
end

-- The position of the first byte of `s` that does not start a valid UTF-8
-- sequence (overlong forms, surrogates and code points past U+10FFFF
-- included), or nil. JSON is UTF-8 text, and cjson passes invalid bytes
-- inside strings through; the Rust side refuses them, so this does too.
-- Costs one scan in C for an ASCII document; byte checks per non-ASCII
-- character otherwise.
local function bad_utf8(s)
  local n = #s
  local i = string.find(s, '[\128-\255]')
  while i do
    local c = string.byte(s, i)
    local len, lo, hi = 0, 128, 191
    if c >= 194 and c <= 223 then len = 1
    elseif c == 224 then len, lo = 2, 160
    elseif c == 237 then len, hi = 2, 159
    elseif c >= 225 and c <= 239 then len = 2
    elseif c == 240 then len, lo = 3, 144
    elseif c >= 241 and c <= 243 then len = 3
    elseif c == 244 then len, hi = 3, 143
    else return i end
    if i + len > n then return i end
    local b = string.byte(s, i + 1)
    if b < lo or b > hi then return i end
    for j = 2, len do
      b = string.byte(s, i + j)
      if b < 128 or b > 191 then return i end
    end
    i = string.find(s, '[\128-\255]', i + len + 1)
  end
  return nil
end

-- The rules of a job document (Rust twin: job::check_doc). Raises a message
-- naming the field and the rule. Returns the decoded document.
local strict_json
local function check_doc(doc, max_bytes, now)
  if #doc > max_bytes then
    error(string.format('field "payload": the job document is %d bytes; the limit is %d bytes (daemon.max_payload_bytes)', #doc, max_bytes), 0)
  end
  local bad = bad_utf8(doc)
  if bad then
    error(string.format('not valid UTF-8 (byte %d of the document); send JSON text encoded as UTF-8', bad), 0)
  end
  if not strict_json then
    strict_json = cjson.new()
    strict_json.decode_invalid_numbers(false)
  end
  local ok, job = pcall(strict_json.decode, doc)
  if not ok then
    error('not valid JSON (' .. tostring(job) .. '); send a JSON object such as {"payload":{...}}', 0)
  end
  if type(job) ~= 'table' then
    error('the job must be a JSON object such as {"payload":{...}}', 0)
  end
  local allowed = { payload = 1, priority = 1, delay_ms = 1, run_at = 1, max_attempts = 1,
    timeout_ms = 1, unique_key = 1, tenant = 1, group = 1, id = 1 }
  local unknown = {}
  for name in pairs(job) do
    if type(name) ~= 'string' then
      error('the job must be a JSON object such as {"payload":{...}}, not an array', 0)
    end
    if not allowed[name] then unknown[#unknown + 1] = '"' .. name .. '"' end
  end
  if #unknown > 0 then
    table.sort(unknown)
    error('unknown field(s) ' .. table.concat(unknown, ', ') ..
      '; allowed: payload, priority, delay_ms, run_at, max_attempts, timeout_ms, unique_key, tenant, group, id', 0)
  end
  if job.payload == nil then
    error('field "payload": required (any JSON value)', 0)
  end
  local function int(name, lo, hi)
    local v = job[name]
    if v == nil or v == cjson.null then job[name] = nil return end
    if type(v) ~= 'number' or v ~= v or v ~= math.floor(v) or v < lo or v > hi then
      error(string.format('field "%s": must be an integer from %s to %s', name, fmt_int(lo), fmt_int(hi)), 0)
    end
  end
  local function text(name)
    local v = job[name]
    if v == nil or v == cjson.null then job[name] = nil return end
    if type(v) ~= 'string' or #v == 0 or #v > MAX_TEXT_LEN then
      error(string.format('field "%s": must be a string of 1 to %d bytes', name, MAX_TEXT_LEN), 0)
    end
  end
  int('priority', PRIORITY_MIN, PRIORITY_MAX)
  int('delay_ms', 0, MAX_DELAY_MS)
  int('run_at', 0, now + MAX_DELAY_MS)
  int('max_attempts', 1, MAX_ATTEMPTS)
  int('timeout_ms', 1, MAX_TIMEOUT_MS)
  if job.delay_ms and job.run_at then
    error('fields "delay_ms" and "run_at": give one or the other, not both', 0)
  end
  text('unique_key')
  text('tenant')
  text('group')
  text('id')
  if job.id and (#job.id > 128 or not string.match(job.id, NAME_PATTERN)) then
    error('field "id": must be 1-128 characters from A-Z a-z 0-9 _ . - :', 0)
  end
  return job
end

-- Job ids in the Rust client's form (job::new_id): 26 characters of
-- Crockford's base32, the first 10 the time in ms (so ids sort by time).
local CROCKFORD = '0123456789ABCDEFGHJKMNPQRSTVWXYZ'
local function base32(n, width)
  local t = {}
  for i = width, 1, -1 do
    local d = n % 32
    t[i] = string.sub(CROCKFORD, d + 1, d + 1)
    n = (n - d) / 32
  end
  return table.concat(t)
end

-- An id made inside Redis: Redis time, then 40 bits of a per-queue counter
-- (unique within the queue) and 40 pseudo-random bits. Every number stays
-- below 2^53, exact in Lua's doubles.
local function new_job_id(k, now)
  local n = redis.call('HINCRBY', k.meta, 'idseq', 1)
  return base32(now, 10) .. base32(n % 1099511627776, 8)
    .. base32(math.random(0, 1048575) * 1048576 + math.random(0, 1048575), 8)
end

-- The document size limit and the events cap, in one read of meta.
local function doc_limits(k)
  local v = redis.call('HMGET', k.meta, 'max_doc_bytes', 'events')
  return tonumber(v[1]) or DEFAULT_MAX_DOC_BYTES, tonumber(v[2]) or 0
end

-- Enqueues a document that check_doc accepted.
local function enqueue_doc(k, now, job, doc, cap, via)
  local id = job.id or new_job_id(k, now)
  local due = now
  if job.run_at then due = job.run_at elseif job.delay_ms then due = now + job.delay_ms end
  return enqueue_one(k, now, id, job.priority or 0, job.max_attempts or 0, due, job.unique_key or '',
    doc, cap, via)
end

-- Group concurrency (meta `group_limit`; absent = no limit). A claimed job
-- with a `group` counts in `groups` (group -> active jobs) and is named in
-- `holders` (id -> group) until it leaves `active`. A popped job whose group
-- is full waits in `parked` (all scores 0, ordered by member) instead of
-- blocking the jobs behind it; its member keeps its priority and place
-- among the pending jobs (park_score), so it goes back ahead of the jobs
-- that were behind it.
local PARK_BATCH = 1000

local function park_prefix(group)
  return fmt_int(#group) .. ':' .. group .. ':'
end

local function park_member(group, score, id)
  return park_prefix(group) .. string.format('%017d', score) .. ':' .. id
end

-- A parked member's park_score and id, after the group's prefix.
local function parked_entry(member)
  local len, rest = string.match(member, '^(%d+):(.*)$')
  if not len then return nil end
  local score, id = string.match(string.sub(rest, tonumber(len) + 2), '^(%d+):(.*)$')
  return tonumber(score), id
end

-- Moves members of a parked set (`parked`, or `tenant_parked` when `set` is
-- given) back to the head of the pending jobs, in their order (they were popped
-- from the head, ahead of every job still pending); returns how many.
local function unpark(k, members, set)
  if #members == 0 then return 0 end
  redis.call('ZREM', set or k.parked, unpack(members))
  local back = {}
  for _, m in ipairs(members) do
    local score, id = parked_entry(m)
    if score then back[#back + 1] = { score, id } end
  end
  -- Members of several groups or tenants come sorted per group only.
  table.sort(back, function(a, b) return a[1] < b[1] end)
  for _, e in ipairs(back) do e[1] = park_priority(e[1]) end
  pending_push_all(k, back, true)
  return #back
end

-- Gives back the group slots of jobs leaving `active` (`ids`), and moves
-- parked jobs of those groups back to pending, as many as slots are free.
-- Costs one HMGET of `holders` when no job holds a slot. Call after
-- allow_when_full. Returns true when jobs went back to pending (wake them).
local function release_groups(k, ids)
  -- Without group limits no job holds a slot: skip the per-job lookup.
  if redis.call('EXISTS', k.holders) == 0 then return false end
  local held = redis.call('HMGET', k.holders, unpack(ids))
  local freed, gone = {}, {}
  for i = 1, #ids do
    local g = held[i]
    if g then
      gone[#gone + 1] = ids[i]
      freed[g] = (freed[g] or 0) + 1
    end
  end
  if #gone == 0 then return false end
  redis.call('HDEL', k.holders, unpack(gone))
  local limit = tonumber(redis.call('HGET', k.meta, 'group_limit'))
  local moved = 0
  for g, n in pairs(freed) do
    local left = redis.call('HINCRBY', k.groups, g, -n)
    if left <= 0 then
      redis.call('HDEL', k.groups, g)
      left = 0
    end
    -- No limit any more: every parked job of the group may run (bounded).
    local room = PARK_BATCH
    if limit then room = limit - left end
    if room > 0 then
      local p = park_prefix(g)
      moved = moved + unpark(k,
        redis.call('ZRANGEBYLEX', k.parked, '[' .. p, '(' .. p .. ';', 'LIMIT', 0, room))
    end
  end
  return moved > 0
end
