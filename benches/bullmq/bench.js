#!/usr/bin/env node
// BullMQ's side of `redq bench --compare bullmq`: the same scenarios, on the
// private redis-server `redq bench` started, printing JSON on stdout:
//   {"version": "6.7.0", "values": [["a", 41234.5], ["c50", ...], ...]}
// Ids and units match redq's rows (jobs/s, ms, MiB).
//
//   node bench.js --url redis://127.0.0.1:PORT --jobs 100000 \
//     --concurrency 50,200 --latency-secs 10 --scenarios a,b,c,d,e
//
// It FLUSHALLs the server it is given between scenarios: only ever point it
// at a throw-away server (redq bench refuses to use anything but its own).
'use strict';

const fs = require('node:fs');
const { Queue, Worker } = require('bullmq');
const IORedis = require('ioredis');
const { version } = require('bullmq/package.json');

function parseArgs(argv) {
  const a = {
    url: null,
    jobs: 100000,
    concurrency: [50, 200],
    latencySecs: 10,
    scenarios: 'a,b,c,d,e',
  };
  for (let i = 0; i < argv.length; i += 2) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (v === undefined) throw new Error(`${k} needs a value`);
    if (k === '--url') a.url = v;
    else if (k === '--jobs') a.jobs = Number(v);
    else if (k === '--concurrency') a.concurrency = v.split(',').map(Number);
    else if (k === '--latency-secs') a.latencySecs = Number(v);
    else if (k === '--scenarios') a.scenarios = v;
    else throw new Error(`unknown argument ${k}`);
  }
  if (!a.url) throw new Error('--url is required');
  return a;
}

const args = parseArgs(process.argv.slice(2));
const u = new URL(args.url);
const connection = {
  host: u.hostname,
  port: Number(u.port) || 6379,
  maxRetriesPerRequest: null,
};
const letters = new Set(args.scenarios.split(',').map((s) => s.trim()));
const N = args.jobs;
const PRODUCERS = 50;
const RATE = 1000;
// Completed jobs are removed at once: BullMQ's fastest setting (it keeps
// every completed job otherwise), so the comparison favours BullMQ.
const defaultJobOptions = { removeOnComplete: true, removeOnFail: true };

const admin = new IORedis(connection);
const values = [];
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (...m) => console.error('bullmq bench:', ...m);

async function flush() {
  await admin.flushall();
}

async function usedMemory() {
  const info = await admin.info('memory');
  return Number(/^used_memory:(\d+)/m.exec(info)[1]);
}

function resetPeakRss() {
  try {
    fs.writeFileSync('/proc/self/clear_refs', '5');
    return true;
  } catch {
    return false;
  }
}

function peakRssMiB() {
  const m = /^VmHWM:\s+(\d+) kB/m.exec(fs.readFileSync('/proc/self/status', 'utf8'));
  return m ? Number(m[1]) / 1024 : null;
}

function percentile(sorted, p) {
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(Math.max(rank, 1), sorted.length) - 1];
}

function newQueue(name) {
  return new Queue(name, { connection, defaultJobOptions });
}

// (a) and the fills for (c) and (e): addBulk, 1000 jobs per call.
async function addBatches(name, n, priorities) {
  const q = newQueue(name);
  await q.waitUntilReady();
  const t0 = nowMs();
  for (let i = 0; i < n; i += 1000) {
    const batch = [];
    for (let k = i; k < Math.min(n, i + 1000); k++) {
      batch.push({
        name: 'j',
        data: k,
        opts: priorities ? { priority: 1 + Math.floor(Math.random() * 10) } : undefined,
      });
    }
    await q.addBulk(batch);
  }
  const took = nowMs() - t0;
  await q.close();
  return took;
}

// (b): 50 producers sharing one Queue, one add at a time each.
async function addSingle(name, n) {
  const q = newQueue(name);
  await q.waitUntilReady();
  await q.add('j', -1); // warm-up, like redq's side
  const t0 = nowMs();
  const producers = [];
  for (let p = 0; p < PRODUCERS; p++) {
    const share = Math.floor(n / PRODUCERS) + (p < n % PRODUCERS ? 1 : 0);
    producers.push(
      (async () => {
        for (let k = 0; k < share; k++) await q.add('j', p * 1e6 + k);
      })(),
    );
  }
  await Promise.all(producers);
  const took = nowMs() - t0;
  await q.close();
  return took;
}

// (c): a no-op Worker on n pre-added jobs, timed from its creation until
// n jobs have completed.
async function processJobs(name, n, concurrency, measureRss) {
  const reset = measureRss && resetPeakRss();
  const t0 = nowMs();
  let done = 0;
  let finish;
  const finished = new Promise((r) => (finish = r));
  const w = new Worker(name, async () => {}, { connection, concurrency });
  w.on('completed', () => {
    if (++done === n) finish();
  });
  w.on('failed', (_job, err) => log('job failed', err && err.message));
  await finished;
  const took = nowMs() - t0;
  const rss = reset ? peakRssMiB() : null;
  await w.close();
  return { took, rss };
}

// (d): an idle running Worker; jobs added at a steady 1000/s, each stamped
// just before its add call; the processor stamps its start on the same clock.
async function latency(secs) {
  const name = 'latency';
  const total = Math.max(1, Math.round(secs * RATE));
  const enq = new Float64Array(total);
  const start = new Float64Array(total);
  let seen = 0;
  let allSeen;
  const allDone = new Promise((r) => (allSeen = r));
  const w = new Worker(
    name,
    async (job) => {
      const at = nowMs();
      const i = job.data;
      if (i >= 0 && i < total && start[i] === 0) {
        start[i] = at;
        if (++seen === total) allSeen();
      }
    },
    { connection, concurrency: 50 },
  );
  const q = newQueue(name);
  await q.waitUntilReady();
  await w.waitUntilReady();
  await q.add('j', -1); // warm-up
  await sleep(500); // let the worker settle into idle
  let failures = 0;
  let next = 0;
  const t0 = nowMs();
  await new Promise((resolve) => {
    const timer = setInterval(() => {
      const due = Math.min(total, Math.floor((nowMs() - t0) * (RATE / 1000)) + 1);
      while (next < due) {
        const i = next++;
        enq[i] = nowMs();
        q.add('j', i).catch(() => failures++);
      }
      if (next >= total) {
        clearInterval(timer);
        resolve();
      }
    }, 1);
  });
  await Promise.race([allDone, sleep(30000)]);
  await w.close();
  await q.close();
  if (failures || seen < total) {
    throw new Error(`latency: ${seen} of ${total} jobs started, ${failures} adds failed`);
  }
  const ms = Array.from(start, (s, i) => Math.max(0, s - enq[i])).sort((a, b) => a - b);
  return [percentile(ms, 50), percentile(ms, 95), percentile(ms, 99), ms[ms.length - 1]];
}

async function main() {
  const perSec = (ms) => N / (ms / 1000);
  if (letters.has('a')) {
    await flush();
    values.push(['a', perSec(await addBatches('bench', N, false))]);
  }
  if (letters.has('b')) {
    await flush();
    values.push(['b', perSec(await addSingle('bench', N))]);
  }
  let rssC200 = null;
  if (letters.has('c')) {
    for (const prio of [false, true]) {
      for (const c of args.concurrency) {
        await flush();
        await addBatches('bench', N, prio);
        const measure = c === 200 && !prio && letters.has('e');
        const { took, rss } = await processJobs('bench', N, c, measure);
        if (measure) rssC200 = rss;
        values.push([`c${c}${prio ? 'p' : ''}`, perSec(took)]);
      }
    }
  }
  if (letters.has('d')) {
    await flush();
    const [p50, p95, p99, max] = await latency(args.latencySecs);
    values.push(['d_p50', p50], ['d_p95', p95], ['d_p99', p99], ['d_max', max]);
  }
  if (letters.has('e')) {
    if (rssC200 === null) {
      await flush();
      await addBatches('bench', N, false);
      rssC200 = (await processJobs('bench', N, 200, true)).rss;
    }
    if (rssC200 !== null) values.push(['e_rss', rssC200]);
    await flush();
    const before = await usedMemory();
    await addBatches('bench', N, true);
    const after = await usedMemory();
    values.push(['e_mem', (((after - before) * 100000) / N) / (1024 * 1024)]);
  }
  await flush();
  await admin.quit();
  process.stdout.write(JSON.stringify({ version, values }) + '\n');
}

main().then(
  () => process.exit(0),
  (e) => {
    log(e && e.stack ? e.stack : e);
    process.exit(1);
  },
);
