-- events.lua: lifecycle events, opt-in per queue.
-- Keys: events (STREAM); meta field `events` (read only: its cap).
--
-- The meta field `events` holds the cap of the `events` stream (absent or 0:
-- off). A script reads it once per call (events_cap, or folded into a read
-- of meta it does anyway) and passes it to emit, which writes nothing when
-- events are off. XADD may need memory, so a script that must work at
-- maxmemory emits only after allow_when_full.
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
