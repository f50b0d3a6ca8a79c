-- cron_enqueue.lua: enqueue one tick of a [[cron]] entry, at most once
-- whatever the number of daemons offering it (src/daemon/cron.rs).
-- The `cron` hash keeps, per entry, the last tick handled (Unix ms, Redis's
-- clock). A tick is enqueued only when it is later than that one, and the
-- record moves to it in the same step (compare-and-set), so a late daemon,
-- or one offering a tick whose job already ran and was deleted, enqueues
-- nothing. An entry with no record starts now: its tick is recorded, not
-- enqueued (no backfill). The daemon offers missed ticks oldest first, one
-- call each, so catching up after a hand-over keeps every tick once.
-- KEYS[1] the queue's base key <prefix>:{<queue>} (lib/keys.lua derives the
--   rest): writes jobs, pending, pending:<priority>, wake, events; reads
--   meta (events cap).
-- KEYS[2] <prefix>:{<queue>}:cron (HASH entry key -> last tick handled).
-- ARGV: entry key, tick (Unix ms), job id, document JSON, priority
-- Returns: status, the entry's last tick handled; status is 'created',
--   'exists' (the job id was known: nothing added), 'started' (first sight
--   of the entry: recorded only), 'seen' (not later than the last tick) or
--   'future' (after Redis's clock: refused; the last tick returned is now).
local k = queue_keys(KEYS)
local cron = KEYS[#KEYS]
local entry, tick = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
if tick > now then
  return { 'future', now }
end
local last = tonumber(redis.call('HGET', cron, entry))
if last and tick <= last then
  return { 'seen', last }
end
redis.call('HSET', cron, entry, fmt_int(tick))
if not last then
  return { 'started', tick }
end
local status = enqueue_one(k, now, ARGV[3], tonumber(ARGV[5]), 0, now, '', ARGV[4], events_cap(k), 'cron')
wake(k)
return { status, tick }
