-- parking.lua: jobs held back by a group or tenant limit, and group slots.
-- Keys: parked, tenant_parked (ZSETs of park members, all scores 0),
--   groups (HASH group -> active jobs), holders (HASH id -> group), reads
--   meta field `group_limit`; unparked jobs go back to pending.
--   (claim.lua parks jobs, reserves places with meta `seq`, and keeps
--   `tenant_due`.)
--
-- Group concurrency (meta `group_limit`; absent = no limit). A claimed job
-- with a `group` counts in `groups` (group -> active jobs) and is named in
-- `holders` (id -> group) until it leaves `active`. A popped job whose group
-- is full waits in `parked` (all scores 0, ordered by member) instead of
-- blocking the jobs behind it; its member keeps its priority and place
-- among the pending jobs (park_score), so it goes back ahead of the jobs
-- that were behind it.
-- Invariants: a job is named in `holders`, and counted in `groups` under its
-- group, exactly while it is active with a group slot; a parked member keeps
-- the job's priority and place, so unparked jobs go back in the order they
-- were popped.

-- Order key of a parked job (see park_member): its priority band, then its
-- place among the pending jobs within the band, so parked jobs go back in their order.
local SEQ_SPAN = 4398046511104 -- 2^42 places per priority band
local function park_score(priority, seq)
  return (PRIORITY_MAX - priority) * SEQ_SPAN + seq % SEQ_SPAN
end

local function park_priority(score)
  return PRIORITY_MAX - math.floor(score / SEQ_SPAN)
end

-- Most parked jobs one call moves back to pending when nothing else bounds
-- it (a limit lifted): bounds the call's work; the next calls move the rest.
local PARK_BATCH = 1000

local function park_prefix(group)
  return fmt_int(#group) .. ':' .. group .. ':'
end

-- The park_score is written in 17 digits, wider than any (below
-- 2001 * 2^42 < 10^16), so members of one group sort by it as text.
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
