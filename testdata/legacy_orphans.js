'use strict';
// legacy_orphans.js: the legacy services' recovery of orphaned and stuck jobs,
// and the worker client's registration, heartbeat and disconnect, replayed
// command for command on the client of ../../shared/legacy/legacy.js (ioredis
// 5, connected to LEGACY_REDIS_URL), which legacy.js itself does not replay.
//
// Sources (repo stakeordie/emp-job-queue, mirrored as a bare git repository):
//   SVC = packages/core/src/redis-service.ts (RedisService). The file is the
//         same at 91d0fd0 (the seed report's commit) and at ceb26d4 (newest),
//         so its line numbers hold for both.
//   OPS = packages/core/src/utils/redis-operations.ts (RedisOperations)
//   WRK = apps/worker/src/redis-direct-worker-client.ts, lines at ceb26d4
//         (91d0fd0: five lines further down; the Redis writes are the same).
//
// Left out, as in legacy.js: logging. Where the source catches an error and
// only logs it, the replay does the same but also returns the message, so
// that a test sees it; where the source swallows an error of the whole sweep
// and returns 0, the replay throws, for the same reason.
//
// The require path is relative to this file, not to the directory node runs
// in: testdata/ -> the repository root -> ../shared/legacy/legacy.js.
//
// Protocol: `node legacy_orphans.js serve` speaks legacy.js's protocol (one
// JSON request a line, {"op", "args"}, one JSON reply a line) and serves
// legacy.js's ops plus those below. Other scripts may require this file for
// { ops, redis, serve }.

const readline = require('readline');
// The legacy services' replay: where the Go tests found it
// (JOBSTORE_LEGACY_DIR), else beside the repository.
const legacy = require(process.env.JOBSTORE_LEGACY_DIR
  ? require('path').join(process.env.JOBSTORE_LEGACY_DIR, 'legacy.js')
  : '../../shared/legacy/legacy.js');

const { redis } = legacy;

// SVC JobStatus values used here (packages/core/src/types/job.ts).
const PENDING = 'pending';
const FAILED = 'failed';

// OPS scanKeys, lines 11-22: SCAN with MATCH and COUNT 100 until the cursor
// comes back to '0'. Keys may repeat, as SCAN may return one twice.
async function scanKeys(pattern) {
  const found = [];
  let cursor = '0';
  for (;;) {
    const [next, batch] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 100);
    found.push(...batch);
    cursor = next;
    if (cursor === '0') return found;
  }
}

// SVC getAllWorkers, lines 1334-1336: a stub that knows no worker. The orphan
// sweep below therefore treats every jobs:active:<worker> hash as orphaned,
// whether or not its worker is alive.
async function getAllWorkers() {
  return [];
}

// SVC publishMessage, lines 845-847.
async function publishMessage(channel, message) {
  await redis.publish(channel, JSON.stringify(message));
}

// SVC detectAndFixOrphanedJobs, lines 946-1057. Returns the number of jobs
// and workers it fixed, and the messages of errors the source only logs.
async function detectAndFixOrphanedJobs() {
  let fixed = 0;
  const errors = [];
  const workers = await getAllWorkers();
  const known = new Set(workers.map(w => w.worker_id));

  // First pass: every active hash whose worker is unknown is emptied, each
  // job back to pending. The job's data is the JSON held in the hash (the
  // record as the claim saw it), not the record itself.
  for (const key of await scanKeys('jobs:active:*')) {
    const workerId = key.replace('jobs:active:', '');
    if (known.has(workerId)) continue;
    const held = await redis.hgetall(key);
    for (const [jobId, text] of Object.entries(held)) {
      try {
        const data = JSON.parse(text);
        const reset = { ...data, id: jobId, status: PENDING, worker_id: undefined, assigned_at: undefined, started_at: undefined };
        await redis.hmset(`job:${jobId}`, { status: PENDING, worker_id: '', assigned_at: '', started_at: '' });
        // The RedisService's formula, on the values of the JSON: strings, which
        // JavaScript's arithmetic turns into numbers ('' falls back).
        const priority = reset.workflow_priority || reset.priority;
        const when = reset.workflow_datetime || Date.parse(reset.created_at);
        const score = priority * 1000000 + (Number.MAX_SAFE_INTEGER - when);
        await redis.zadd('jobs:pending', score, jobId);
        await redis.hdel(key, jobId);
        fixed++;
      } catch (e) {
        errors.push(`${jobId}: ${e.message}`);
      }
    }
    if ((await redis.hlen(key)) === 0) await redis.del(key);
  }

  // Second pass: known workers whose current job has finished are set idle.
  // With getAllWorkers() empty it never runs; kept for fidelity.
  for (const w of workers) {
    const worker = await redis.hgetall(`worker:${w.worker_id}`);
    const current = worker.current_job_id;
    if (!current || current === 'none') continue;
    const status = await redis.hget(`job:${current}`, 'status');
    if (status === 'cancelled' || status === 'completed' || status === 'failed') {
      await redis.hmset(`worker:${w.worker_id}`, { status: 'idle', current_job_id: '', active_jobs: '[]' });
      fixed++;
    }
  }

  // Third pass: stuck jobs, by heartbeat.
  fixed += (await detectStuckJobs()).fixed;
  return { fixed, errors };
}

// SVC detectStuckJobs, lines 1063-1148. It reads the jobs from the active
// hashes (SVC getActiveJobs, lines 790-801, which legacy.js replays as
// svcGetActiveJobs), so it sees the JSON the claim stored, and passes over a
// job whose JSON has no worker_id or no assigned_at.
async function detectStuckJobs() {
  let fixed = 0;
  const now = Date.now();
  const heartbeatTimeout = parseInt(process.env.WORKER_HEARTBEAT_TIMEOUT_SEC || '120');
  const progressTimeout = parseInt(process.env.JOB_PROGRESS_TIMEOUT_SEC || '300');
  // An error of releaseStuckJob ends the sweep (the source's one try).
  const release = async (job, reason) => {
    await releaseStuckJob(job, reason);
    fixed++;
  };

  for (const job of await legacy.ops.svcGetActiveJobs()) {
    if (!job.worker_id || !job.assigned_at) continue;
    const beat = await redis.get(`worker:${job.worker_id}:heartbeat`);
    if (!beat) {
      await release(job, 'Worker heartbeat missing');
      continue;
    }
    const sinceBeat = (now - new Date(beat).getTime()) / 1000;
    if (sinceBeat > heartbeatTimeout) {
      await release(job, `Worker heartbeat timeout (${Math.round(sinceBeat)}s)`);
      continue;
    }
    // new Date('<secs>.<micros>') is an invalid date: NaN compares false.
    const sinceStart = (now - new Date(job.assigned_at).getTime()) / 1000;
    if (sinceStart > progressTimeout) {
      const progress = await redis.hgetall(`job:${job.id}:progress`);
      if (progress.updated_at) {
        const sinceProgress = (now - new Date(progress.updated_at).getTime()) / 1000;
        if (sinceProgress > progressTimeout) {
          await release(job, `No progress timeout (${Math.round(sinceProgress)}s)`);
        }
      } else {
        await release(job, `No progress data timeout (${Math.round(sinceStart)}s)`);
      }
    }
  }
  return { fixed };
}

// SVC releaseStuckJob, lines 1153-1257 (private there; an op here, so that a
// test can hand it a job as RedisService.getJob reads it). Arithmetic is on
// the job's values as given: the JSON of an active hash holds strings, with
// which JavaScript's + concatenates, as the source's does.
async function releaseStuckJob(job, reason) {
  const retries = job.retry_count + 1;
  const max = job.max_retries || 3;
  const workerId = job.worker_id || '';
  const error = `Worker timeout: ${reason}`;

  if (retries >= max) {
    await redis.hmset(`job:${job.id}`, {
      status: FAILED, failed_at: new Date().toISOString(), retry_count: retries.toString(),
      last_failed_worker: workerId, worker_id: '',
    });
    if (workerId) await redis.hdel(`jobs:active:${workerId}`, job.id);
    await redis.hset('jobs:failed', job.id, JSON.stringify({
      error, failed_at: new Date().toISOString(), retry_count: retries,
    }));
    await redis.expire('jobs:failed', 7 * 24 * 60 * 60);
    await publishMessage('job_failed', {
      job_id: job.id, error, retry_count: retries, will_retry: false, failed_at: new Date().toISOString(),
    });
  } else {
    await redis.hmset(`job:${job.id}`, {
      status: PENDING, worker_id: '', assigned_at: '', retry_count: retries.toString(), last_failed_worker: workerId,
    });
    const priority = job.workflow_priority || job.priority;
    const when = job.workflow_datetime || Date.parse(job.created_at);
    await redis.zadd('jobs:pending', priority * 1000000 + (Number.MAX_SAFE_INTEGER - when), job.id);
    if (workerId) await redis.hdel(`jobs:active:${workerId}`, job.id);
    await publishMessage('job_failed', {
      job_id: job.id, error, retry_count: retries, will_retry: true, failed_at: new Date().toISOString(),
    });
  }

  await redis.hmset(`job:${job.id}`, {
    retry_count: retries.toString(), last_failed_worker: workerId, failed_at: new Date().toISOString(),
  });
  if (workerId) {
    await redis.hmset(`worker:${workerId}`, {
      status: 'idle', current_job_id: '', active_jobs: '[]', last_status_update: new Date().toISOString(),
    });
  }
  return retries >= max ? 'failed' : 'retried';
}

// WRK publishWorkerStatus, lines 295-352: one message on worker_status:<id>.
async function publishWorkerStatus(workerId, status, caps) {
  const c = caps || { worker_id: workerId, services: [] };
  await redis.publish(`worker_status:${workerId}`, JSON.stringify({
    worker_id: workerId, machine_id: c.machine_id || 'unknown', status,
    capabilities: {
      services: c.services || [], hardware: c.hardware || {}, performance: c.performance || {},
      customer_access: c.customer_access || {}, models: c.models || {},
    },
    timestamp: new Date().toISOString(), last_heartbeat: Date.now(),
    connected_at: c.connected_at || new Date().toISOString(),
  }));
}

// WRK registerWorker, lines 175-272, with UNIFIED_MACHINE_STATUS unset: the
// worker:<id> hash, workers:active, a 60 s heartbeat, two messages.
async function workerRegister(workerId, caps) {
  const now = new Date().toISOString();
  await redis.hmset(`worker:${workerId}`, {
    worker_id: workerId, machine_id: caps.machine_id || 'unknown', capabilities: JSON.stringify(caps),
    status: 'idle', connected_at: now, last_heartbeat: now, total_jobs_completed: '0', total_jobs_failed: '0',
  });
  await redis.sadd('workers:active', workerId);
  await redis.setex(`worker:${workerId}:heartbeat`, 60, now);
  await redis.publish('worker:events', JSON.stringify({
    type: 'worker_connected', worker_id: workerId, machine_id: caps.machine_id || 'unknown',
    worker_data: {
      id: workerId, status: 'idle',
      capabilities: {
        gpu_count: 1, gpu_memory_gb: caps.hardware?.gpu_memory_gb || 0, gpu_model: caps.hardware?.gpu_model || 'Unknown',
        cpu_cores: 1, ram_gb: caps.hardware?.ram_gb || 1, services: caps.services || [],
        models: Object.keys(caps.models || {}), customer_access: caps.customer_access?.isolation || 'none',
        max_concurrent_jobs: caps.performance?.concurrent_jobs || 1,
      },
      connected_at: now, jobs_completed: 0, jobs_failed: 0,
    },
    timestamp: Date.now(),
  }));
  await publishWorkerStatus(workerId, 'idle', caps);
}

// WRK startHeartbeat's sendHeartbeat, lines 357-381 (one beat; the worker
// sends one every WORKER_HEARTBEAT_INTERVAL_MS, 30 s by default).
async function workerHeartbeat(workerId) {
  const now = new Date().toISOString();
  await redis.hmset(`worker:${workerId}`, { last_heartbeat: now });
  await redis.setex(`worker:${workerId}:heartbeat`, 60, now);
}

// WRK disconnect, lines 124-161, without closing the shared client.
async function workerDisconnect(workerId) {
  const worker = await redis.hgetall(`worker:${workerId}`);
  const caps = worker.capabilities ? JSON.parse(worker.capabilities) : {};
  await redis.publish('worker:events', JSON.stringify({
    type: 'worker_disconnected', worker_id: workerId,
    machine_id: caps.machine_id || worker.machine_id || 'unknown', timestamp: Date.now(),
  }));
  await publishWorkerStatus(workerId, 'offline', caps);
  await redis.srem('workers:active', workerId);
  await redis.del(`worker:${workerId}`);
  await redis.del(`worker:${workerId}:heartbeat`);
}

const ops = {
  ...legacy.ops,
  detectAndFixOrphanedJobs, detectStuckJobs, releaseStuckJob,
  workerRegister, workerHeartbeat, workerDisconnect,
};

// serve answers legacy.js's line protocol with the given ops until stdin
// closes, then closes the client.
async function serve(table) {
  const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of lines) {
    if (line.trim() === '') continue;
    let reply;
    try {
      const { op, args } = JSON.parse(line);
      if (typeof table[op] !== 'function') throw new Error(`unknown op ${op}`);
      const result = await table[op](...(args || []));
      reply = { ok: true, result: result === undefined ? null : result };
    } catch (e) {
      reply = { ok: false, error: String(e && e.message ? e.message : e) };
    }
    process.stdout.write(JSON.stringify(reply) + '\n');
  }
  await redis.quit();
}

module.exports = { ops, redis, serve };

if (require.main === module) {
  if (process.argv[2] !== 'serve') {
    console.error('usage: node legacy_orphans.js serve');
    process.exit(2);
  }
  serve(ops).catch(e => { console.error(e); process.exit(1); });
}
