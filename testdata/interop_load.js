'use strict';
// interop_load.js: a fleet of legacy workers in one node process, for the
// mixed-fleet test (interop_test.go). It is a driver, not a replay: every
// Redis command comes from the replayed operations of legacy.js (through
// legacy_orphans.js, whose ops include legacy.js's), called as the worker
// client calls them: request a job (FCALL findMatchingJob), start it,
// complete it, and ask again until the queue has nothing for it.
//
// Protocol: `node interop_load.js serve`, legacy.js's line protocol, with the
// ops of legacy_orphans.js plus those below. All workers share the one ioredis
// connection of legacy.js; their commands interleave as separate processes'
// would, each FCALL being atomic on the server.

const { ops, serve } = require('./legacy_orphans.js');

const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

// submitMany submits jobs in order, each {kind: 'api' | 'svc', data}, and
// returns [{id, score}].
async function submitMany(list) {
  const out = [];
  for (const { kind, data } of list) {
    out.push(await (kind === 'svc' ? ops.svcSubmitJob(data) : ops.apiSubmitJob(data)));
  }
  return out;
}

// getJobs reads jobs as the RedisService does (svcGetJob), in order.
async function getJobs(ids) {
  const out = [];
  for (const id of ids) out.push(await ops.svcGetJob(id));
  return out;
}

// runWorkers runs one loop per capabilities object until each finds no job,
// each job started, held workMs, then completed with {by: worker}. It
// returns the claims, in the order this process saw them, and the errors.
async function runWorkers(capsList, workMs) {
  const claims = [];
  const errors = [];
  const loop = async caps => {
    const w = caps.worker_id;
    for (;;) {
      let got;
      try {
        got = await ops.workerRequestJob(caps);
      } catch (e) {
        errors.push(`${w} request: ${e.message}`);
        return;
      }
      if (!got) return;
      claims.push({ worker: w, id: got.jobId });
      try {
        await ops.workerStartJob(w, got.jobId);
        if (workMs > 0) await sleep(workMs);
        await ops.workerCompleteJob(w, got.jobId, { by: w });
      } catch (e) {
        errors.push(`${w} ${got.jobId}: ${e.message}`);
      }
    }
  };
  await Promise.all(capsList.map(loop));
  return { claims, errors };
}

if (require.main === module) {
  if (process.argv[2] !== 'serve') {
    console.error('usage: node interop_load.js serve');
    process.exit(2);
  }
  serve({ ...ops, submitMany, getJobs, runWorkers }).catch(e => { console.error(e); process.exit(1); });
}
