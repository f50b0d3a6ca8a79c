// A producer in Node.js (ioredis 5+): enqueue, read a job's status, cancel
// one. redq's own test suite runs it against a private server
// (tests/examples.rs); run it yourself with a URL and a queue name:
//
//     node examples/node/producer.cjs redis://127.0.0.1:6379 emails
//
// It prints one JSON object per step.
'use strict';

const Redis = require('ioredis');

const url = process.argv[2] || 'redis://127.0.0.1:6379';
const queue = process.argv[3] || 'emails';
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
  } finally {
    redis.disconnect();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
