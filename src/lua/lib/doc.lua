-- doc.lua: the rules of a job document, as producers send it (Rust twin:
-- job::check_doc; the limits are job.rs's constants of the same names).
-- Keys: reads meta fields `max_doc_bytes` and `events` (doc_limits); no
--   writes.
-- Invariant: a document check_doc accepts is one the Rust client accepts,
-- and a refusal names the field and the rule.

local MAX_DELAY_MS = 315360000000 -- ten years
local MAX_ATTEMPTS = 1000
local MAX_TIMEOUT_MS = 604800000 -- one week
local MAX_OUTCOME_TTL_MS = 604800000 -- one week
local MAX_TEXT_LEN = 512
-- A job id (like a queue name): 1 to MAX_NAME_LEN of these characters
-- (keys::MAX_NAME_LEN, keys::is_valid_name).
local NAME_PATTERN = '^[%w_%.%-:]+$'
local MAX_NAME_LEN = 128

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
    timeout_ms = 1, unique_key = 1, tenant = 1, group = 1, id = 1, outcome_ttl_ms = 1 }
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
      '; allowed: payload, priority, delay_ms, run_at, max_attempts, timeout_ms, unique_key, tenant, group, id, outcome_ttl_ms', 0)
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
  int('outcome_ttl_ms', 1, MAX_OUTCOME_TTL_MS)
  if job.delay_ms and job.run_at then
    error('fields "delay_ms" and "run_at": give one or the other, not both', 0)
  end
  text('unique_key')
  text('tenant')
  text('group')
  text('id')
  if job.id and (#job.id > MAX_NAME_LEN or not string.match(job.id, NAME_PATTERN)) then
    error('field "id": must be 1-128 characters from A-Z a-z 0-9 _ . - :', 0)
  end
  return job
end

-- The document size limit and the events cap, in one read of meta.
local function doc_limits(k)
  local v = redis.call('HMGET', k.meta, 'max_doc_bytes', 'events')
  return tonumber(v[1]) or DEFAULT_MAX_DOC_BYTES, tonumber(v[2]) or 0
end
