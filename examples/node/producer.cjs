// A producer in Node.js (ioredis 5+): enqueue, read a job's status, cancel
// one, wait for one's outcome. redq's own test suite runs it against a
// private server (tests/examples.rs); run it yourself with a URL, a queue
// name and the name of a queue a daemon serves (for the wait):
//
//     node examples/node/producer.cjs redis://127.0.0.1:6379 emails reports
//
// It prints one JSON object per step.
'use strict';

const Redis = require('ioredis');

const url = process.argv[2] || 'redis://127.0.0.1:6379';
const queue = process.argv[3] || 'emails';
const served = process.argv[4] || 'reports';
const base = `redq:{${queue}}`; // the queue's key: <prefix>:{<queue>}

const show = (step, value) => console.log(JSON.stringify({ step, value }));

async function main() {
  const redis = new Redis(url);
  try {
    // Enqueue: the reply is the job's id.
    const id = await redis.fcall('redq_enqueue', 1, base,
      JSON.stringify({ payload: { to: 'ann@example.com' }, priority: 5 }));
    show('enqueued', id);

    // A bad document is refused, saying which field and why; nothing is written.
    try {
      await redis.fcall('redq_enqueue', 1, base, JSON.stringify({ payload: {}, priority: 'high' }));
    } catch (err) {
      show('refused', err.message);
    }

    // Its status: a JSON object (state, attempts, result, last_error).
    show('status', JSON.parse(await redis.fcall_ro('redq_status', 1, base, id)));

    // A delayed job, cancelled before it runs: the reply is where it was.
    const later = await redis.fcall('redq_enqueue', 1, base,
      JSON.stringify({ payload: {}, delay_ms: 60000 }));
    show('cancelled', await redis.fcall('redq_cancel', 1, base, later));
    show('status after cancel', JSON.parse(await redis.fcall_ro('redq_status', 1, base, later)));

    // Keep a job's outcome for 10 minutes and wait up to 30 s for it. BLMOVE
    // from the outcome key onto itself answers at once if the job has ended,
    // or when it ends, and leaves the outcome for other readers. It blocks,
    // so it gets a connection of its own.
    const servedBase = `redq:{${served}}`;
    const job = await redis.fcall('redq_enqueue', 1, servedBase,
      JSON.stringify({ payload: { report: 7 }, outcome_ttl_ms: 600000 }));
    const key = `${servedBase}:outcome:${job}`;
    const waiter = new Redis(url);
    try {
      const outcome = await waiter.blmove(key, key, 'RIGHT', 'RIGHT', 30);
      show('outcome', outcome ? JSON.parse(outcome) : null);
    } finally {
      waiter.disconnect();
    }
  } finally {
    redis.disconnect();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
