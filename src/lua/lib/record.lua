-- record.lua: job records, the values of the `jobs` hash.
-- Keys: jobs (HASH id -> record), read here; written by new_jobs.lua
--   (enqueue_one) and enqueue.lua through make_record, and by import.lua
--   as the Rust side encoded it (job::Record); deleted by retention.lua.
--
-- Record: "<priority>;<max_attempts or 0>;<enqueued_ms>;<document JSON>"
-- (job::StoredJob reads the same form). The header comes first and is
-- short, so the anchored matches below read it without scanning the
-- document.
-- A big payload is kept apart: the Rust client sends a job whose payload
-- is at least job::PAYLOAD_APART_BYTES long as the document "@" .. JSON with
-- "payload":null, and writes the payload itself to `payloads` (HASH id ->
-- payload JSON) with HSETNX in the same MULTI/EXEC as the enqueue call
-- (store::enqueue). No script ever reads `payloads`: every string that
-- enters Lua is copied and hashed byte by byte, which for a 64 KiB payload
-- cost ~700k instructions per crossing, more than the rest of a job's
-- life. The daemon reads the payload with one HGET when the job starts.
-- Every script that deletes a record deletes its `payloads` field too.
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

-- The record's document, decoded ({} when it cannot be). A document kept
-- apart from its payload (see above) decodes with payload = null.
local function record_doc(record)
  local doc = string.match(record, '^%-?%d+;%d+;%d+;@?(.*)$')
  if not doc then return {} end
  local ok, t = pcall(cjson.decode, doc)
  if ok and type(t) == 'table' then return t end
  return {}
end

-- True when `doc`, a document as the Rust client sent it, keeps its
-- payload apart (in `payloads`).
local function payload_apart(doc)
  return string.byte(doc, 1) == 64 -- '@'
end

-- A job whose document `doc` keeps its payload apart was not created
-- (`id` exists, or a live job holds its unique key): the payload its
-- producer staged under `id` in the same transaction is dropped, unless
-- it belongs to the existing job `id` (whose own payload is apart, so the
-- staging HSETNX left it as it was).
local function drop_staged_payload(k, id, doc, exists)
  if not payload_apart(doc) then return end
  if exists then
    local record = redis.call('HGET', k.jobs, id)
    local own = record and string.match(record, '^%-?%d+;%d+;%d+;@')
    if own then return end
  end
  redis.call('HDEL', k.payloads, id)
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
