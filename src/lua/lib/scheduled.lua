-- scheduled.lua: jobs waiting for their due time.
-- Keys: scheduled (ZSET id -> due time, Redis ms), the channel <base>:due;
--   reads jobs (the priority of promoted jobs), writes pending.
--
-- Scheduled jobs wait in `scheduled` until they are due. Every daemon's
-- promoter sleeps until the earliest due time of the queues it serves, as
-- Redis reports it, then runs promote.lua; it re-arms when told of an
-- earlier one. Whatever schedules a job (enqueue with a delay, a retry with
-- backoff, import) calls announce_due, which publishes the due time on the
-- queue's channel `<base>:due` when the job is now the earliest: every
-- subscribed daemon hears it at once, so none polls, and a job scheduled
-- behind the earliest needs no message (the promoters are armed for an
-- earlier time and read the next one then). The channel carries the queue's
-- {hash tag}, so it is a shard channel candidate on Redis Cluster. Claims
-- promote due jobs too (claim.lua), so a busy pool never waits on the
-- promoter.
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
