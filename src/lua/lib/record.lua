-- record.lua: job records, the values of the `jobs` hash.
-- Keys: jobs (HASH id -> record), read here; written by new_jobs.lua
--   (enqueue_one) and enqueue.lua through make_record, and by import.lua
--   as the Rust side encoded it (job::Record); deleted by retention.lua.
--
-- Record: "<priority>;<max_attempts or 0>;<enqueued_ms>;<document JSON>"
-- (job::StoredJob reads the same form). The header comes first and is
-- short, so the anchored matches below read it without scanning the
-- document.
-- Invariant: a record's priority is within PRIORITY_MIN..PRIORITY_MAX (the
-- document rules, doc.lua, enforce it; the order key of a parked job,
-- parking.lua, relies on it).

local PRIORITY_MIN, PRIORITY_MAX = -1000, 1000
-- The document size limit when meta `max_doc_bytes` is absent (the
-- default of daemon.max_payload_bytes, job::DEFAULT_MAX_DOC_BYTES: 1 MiB).
local DEFAULT_MAX_DOC_BYTES = 1048576

-- The one Lua encoder of a record: header fields already as integer text
-- (the enqueue fast path passes the client's own text; others fmt_int), so
-- no number is formatted as a double.
local function make_record(priority, max_attempts, enqueued_ms, doc)
  return priority .. ';' .. max_attempts .. ';' .. enqueued_ms .. ';' .. doc
end

-- The record's priority and max_attempts (0: the queue's default).
local function record_header(record)
  local p, m = string.match(record, '^(%-?%d+);(%d+);')
  return tonumber(p) or 0, tonumber(m) or 0
end

-- The record's document, decoded ({} when it cannot be).
local function record_doc(record)
  local doc = string.match(record, '^%-?%d+;%d+;%d+;(.*)$')
  if not doc then return {} end
  local ok, t = pcall(cjson.decode, doc)
  if ok and type(t) == 'table' then return t end
  return {}
end

-- A job record whose document is larger than the queue's limit (written
-- straight into Redis, past every check) is never handed to a daemon, which
-- would have to load it whole: oversize() says how many bytes its document
-- has when it is over `max_bytes` (nil otherwise), and bury_oversize
-- (retention.lua) moves it to the dead set with the reason. The anchored
-- match reads only the record's short header.
local function oversize(record, max_bytes)
  if #record <= max_bytes then return nil end
  local header = string.match(record, '^%-?%d+;%d+;%d+;')
  local bytes = #record - (header and #header or 0)
  if bytes > max_bytes then return bytes end
  return nil
end
