-- pending.lua: the pending jobs (ready to run) and the wake-up marker.
-- Keys: pending (ZSET priority -> -priority), pending:<priority> (LISTs of
--   ids), wake (LIST, at most one element).
--
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

-- Leaves one element in `wake` so an idle daemon blocked on it wakes up.
local function wake(k)
  if redis.call('EXISTS', k.wake) == 0 then
    redis.call('RPUSH', k.wake, '1')
  end
end
