'use strict';
// legacy_load.js: a legacy fleet at work, for as long as a test wants it:
// an API submitting jobs (apiSubmitJob, and svcSubmitJob for a share), and
// legacy workers that register, keep their heartbeat, claim with the real
// claim function (workerRequestJob: FCALL findMatchingJob), start, report
// progress, then complete or fail (retryable) their jobs. Every Redis
// command comes from the replayed operations of legacy.js (through
// legacy_orphans.js, which adds the worker registration the worker client
// does); this file only drives them.
//
// Protocol: `node legacy_load.js serve`, legacy.js's line protocol, with
// legacy_orphans.js's ops plus:
//
//	startLoad(cfg)  starts the fleet in the background and returns
//	loadStats()     what it did so far
//	stopLoad()      stops submitting, lets each worker finish the job in
//	                hand, disconnects the workers, and returns the stats
//
// cfg: {submitRate: jobs/s, svcShare: 0..1, services: [..], priorities:
// [..], workers: [capabilities..], failShare: 0..1, workMs, heartbeatMs}.
// Writes are counted per Redis write command the replayed operations send.

const { ops, serve } = require('./legacy_orphans.js');

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

// Redis write commands each replayed operation sends (legacy.js).
const WRITES = {
  apiSubmitJob: 2, // HMSET, ZADD
  svcSubmitJob: 2, // HMSET, ZADD (without the phase 4.3.1 flag)
  claim: 5, // in findMatchingJob: ZREM, HMSET, HSET, HMSET, XADD
  start: 1, // HMSET
  progress: 1, // HMSET job:<id>:progress
  complete: 6, // SET attestation, HMSET, HDEL, HSET, EXPIRE, HMSET worker
  failRetry: 5, // SET attestation, HMSET, ZADD, HDEL, HMSET worker
  failFinal: 7, // SET attestation x2, HMSET, HSET, EXPIRE, HDEL, HMSET worker
  heartbeat: 2, // HMSET, SETEX
};

let load = null;

function newStats() {
  return {
    started: Date.now(), submitted: [], claims: 0, completes: 0, retries: 0, fails: 0,
    writes: 0, errors: [],
  };
}

async function submitter(cfg, st, stop) {
  const interval = 1000 / Math.max(cfg.submitRate || 1, 1);
  let next = Date.now();
  for (let i = 0; !stop.now; i++) {
    const svc = cfg.services[i % cfg.services.length];
    const priority = cfg.priorities[i % cfg.priorities.length];
    try {
      if (Math.random() < (cfg.svcShare || 0)) {
        const r = await ops.svcSubmitJob({ service_required: svc, priority, payload: { n: i } });
        st.submitted.push(r.id);
        st.writes += WRITES.svcSubmitJob;
      } else {
        const r = await ops.apiSubmitJob({ service_required: svc, priority, payload: { n: i } });
        st.submitted.push(r.id);
        st.writes += WRITES.apiSubmitJob;
      }
    } catch (e) {
      st.errors.push(`submit: ${e.message}`);
    }
    next += interval;
    const wait = next - Date.now();
    if (wait > 0) await sleep(wait);
  }
}

async function worker(caps, cfg, st, stop) {
  const w = caps.worker_id;
  await ops.workerRegister(w, caps);
  let beat = Date.now();
  while (!stop.now) {
    if (Date.now() - beat > (cfg.heartbeatMs || 1000)) {
      await ops.workerHeartbeat(w);
      st.writes += WRITES.heartbeat;
      beat = Date.now();
    }
    let got;
    try {
      got = await ops.workerRequestJob(caps);
    } catch (e) {
      st.errors.push(`${w} request: ${e.message}`);
      await sleep(10);
      continue;
    }
    if (!got) {
      await sleep(5);
      continue;
    }
    st.claims++;
    st.writes += WRITES.claim;
    const id = got.jobId;
    try {
      await ops.workerStartJob(w, id);
      await ops.workerSendProgress(w, id, 50, 'halfway');
      st.writes += WRITES.start + WRITES.progress;
      if (cfg.workMs > 0) await sleep(cfg.workMs);
      if (Math.random() < (cfg.failShare || 0)) {
        const outcome = await ops.workerFailJob(w, id, 'legacy failure', true);
        if (outcome === 'retried') {
          st.retries++;
          st.writes += WRITES.failRetry;
        } else {
          st.fails++;
          st.writes += WRITES.failFinal;
        }
      } else {
        await ops.workerCompleteJob(w, id, { by: w });
        st.completes++;
        st.writes += WRITES.complete;
      }
    } catch (e) {
      st.errors.push(`${w} ${id}: ${e.message}`);
    }
  }
  // Gone: the heartbeat and the registration go with it, as the worker
  // client's disconnect does.
  await ops.workerDisconnect(w);
}

async function startLoad(cfg) {
  if (load) throw new Error('a load is running');
  const st = newStats();
  const stop = { now: false };
  const runs = [submitter(cfg, st, stop), ...(cfg.workers || []).map(c => worker(c, cfg, st, stop))];
  load = { st, stop, done: Promise.all(runs) };
  return true;
}

function snapshot(st) {
  const secs = (Date.now() - st.started) / 1000;
  return {
    seconds: secs, submitted: st.submitted.length, claims: st.claims, completes: st.completes,
    retries: st.retries, fails: st.fails, writes: st.writes, writes_per_sec: st.writes / Math.max(secs, 0.001),
    errors: st.errors.slice(0, 20), error_count: st.errors.length,
  };
}

async function loadStats() {
  if (!load) throw new Error('no load is running');
  return snapshot(load.st);
}

async function stopLoad() {
  if (!load) throw new Error('no load is running');
  load.stop.now = true;
  await load.done;
  const out = { ...snapshot(load.st), ids: load.st.submitted };
  load = null;
  return out;
}

if (require.main === module) {
  if (process.argv[2] !== 'serve') {
    console.error('usage: node legacy_load.js serve');
    process.exit(2);
  }
  serve({ ...ops, startLoad, loadStats, stopLoad }).catch(e => { console.error(e); process.exit(1); });
}
