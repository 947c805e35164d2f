package jobstore

// Outside review of the core lifecycle (review1). Each TestReview* test
// below fails on the branch as reviewed: it shows one bug, with what is
// wrong, why it matters and the exact steps in its comment.

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestGetPendingJobsPassesOverWrongTypeRecord is a regression test: one
// pending id whose record was not a hash failed the whole list.
//
// Found by review1 as TestReviewGetPendingJobsWrongTypeRecord: GetPendingJobs documents that
// "entries whose record is gone, or is no job record, are passed over",
// but one pending id whose record key is not a hash (a string left by
// another writer) fails the whole call with ErrCorruptRecord: readIn
// returns the WRONGTYPE of any record as the error of the batch. One junk
// key in jobs:pending then hides every pending job from the API's list.
//
// Steps: submit "good"; put "junk" in jobs:pending with job:junk a string;
// GetPendingJobs(10) must return [good].
func TestGetPendingJobsPassesOverWrongTypeRecord(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		_, err := s.SubmitJob(ctx, Job{ID: "good", Service: "s"})
		require.NoError(t, err)
		require.NoError(t, b.rdb.ZAdd(ctx, b.key("jobs:pending"), redisZ(1e18, "junk")).Err())
		require.NoError(t, b.rdb.Set(ctx, b.key("job:junk"), "not a hash", 0).Err())

		jobs, err := s.GetPendingJobs(ctx, 10)
		require.NoError(t, err, "a pending entry whose record is no job record is passed over, not the whole list's error")
		require.Len(t, jobs, 1)
		require.Equal(t, "good", jobs[0].ID)
	})
}

// TestRecoverPassesOverWrongTypeActiveKey is a regression test: one
// jobs:active:* key that was not a hash stopped RecoverExpired, so dead
// workers after it kept their jobs.
//
// Found by review1 as TestReviewRecoverJunkActiveKeyBlocksOthers: RecoverExpired scans
// jobs:active:*, and for each worker without a heartbeat HSCANs its active
// hash. A key jobs:active:<x> that is not a hash (junk of another writer,
// or a look-alike) makes HSCAN fail with WRONGTYPE, and RecoverExpired
// returns at once: every dead worker visited after it never gets its jobs
// back, on every run (Maintain only logs the error). A job of a dead
// worker is then stranded for as long as the junk key exists.
//
// Steps: worker "zz" claims a job and dies (heartbeat deleted); 40 junk
// string keys jobs:active:junk-N exist (so that, whatever SCAN's order,
// one comes before zz's hash); RecoverExpired must requeue zz's job.
func TestRecoverPassesOverWrongTypeActiveKey(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		caps := registerWorker(t, s, "zz", "s")
		id, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		_, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.NoError(t, b.rdb.Del(ctx, b.key("worker:zz:heartbeat")).Err())
		for i := range 40 {
			require.NoError(t, b.rdb.Set(ctx, b.key(fmt.Sprintf("jobs:active:junk-%02d", i)), "x", 0).Err())
		}

		_, _ = s.RecoverExpired(ctx) // its error about the junk may be reported; the live data must still move
		j, err := s.GetJob(ctx, id)
		require.NoError(t, err)
		require.Equal(t, StatusPending, j.Status, "the dead worker's job is recovered despite an unrelated junk key")
		require.Zero(t, b.rdb.Exists(ctx, b.key("jobs:active:zz")).Val())
	})
}

// TestQueueSizesPassesOverWrongTypeActiveKey is a regression test: one
// jobs:active:* key that was not a hash failed QueueSizes.
//
// Found by review1 as TestReviewQueueSizesJunkActiveKey: QueueSizes sums HLEN over every
// jobs:active:* key; one of them that is not a hash fails the whole
// pipeline, so the monitoring call the report relies on returns an error
// instead of the sizes. (GetPendingJobs and recovery have the same
// weakness: see the two tests above.)
//
// Steps: submit a job; SET jobs:active:junk "x"; QueueSizes must answer
// Pending 1.
func TestQueueSizesPassesOverWrongTypeActiveKey(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		_, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		require.NoError(t, b.rdb.Set(ctx, b.key("jobs:active:junk"), "x", 0).Err())
		q, err := s.QueueSizes(ctx)
		require.NoError(t, err)
		require.Equal(t, int64(1), q.Pending)
	})
}

// TestReviewFailRequeuesCancelledJob: start, complete and fail check only
// that the id is in the worker's active hash, never the record's status.
// The legacy cancels are not atomic: RedisService.cancelJob reads the
// record, then HMSETs status cancelled, ZREMs pending, and HDELs
// jobs:active:<worker_id> only if the worker_id it READ was set. A jobstore
// claim landing between the read and the writes leaves a record that says
// cancelled while the id sits in the claiming worker's active hash. The
// jobstore worker's FailJob(retry) then puts the cancelled job back in
// pending (status pending): it runs again though the user cancelled it.
// CompleteJob likewise overwrites cancelled with completed, StartJob with
// in_progress. FailJob/CompleteJob must refuse a job whose record is
// finished (ErrNotHeld / ErrJobFinished), as their doc promises for "a job
// ... cancelled ... meanwhile".
//
// Steps: submit X; legacy svcCancelJob reads X (pending, no worker_id);
// jobstore worker w claims X; svcCancelJob writes status cancelled and
// ZREMs pending (its HDEL is skipped: the worker_id it read was empty);
// w calls FailJob(X, retry=true).
func TestFailDoesNotRequeueAJobCancelledMeanwhile(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		caps := registerWorker(t, s, "w", "s")
		id, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		// svcCancelJob's read happens here: worker_id is "".
		_, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		// svcCancelJob's writes, from what it read.
		require.NoError(t, b.rdb.HSet(ctx, b.key("job:"+id), "status", "cancelled", "cancelled_at", "2026-11-28T12:00:01.000Z").Err())
		require.NoError(t, b.rdb.ZRem(ctx, b.key("jobs:pending"), id).Err())

		_, err = s.FailJob(ctx, id, "w", "boom", true)
		require.ErrorIs(t, err, ErrJobFinished, "a cancelled job is not failed (and requeued) by the worker that lost it")
		j, err := s.GetJob(ctx, id)
		require.NoError(t, err)
		require.Equal(t, StatusCancelled, j.Status)
		require.Zero(t, b.rdb.ZCard(ctx, b.key("jobs:pending")).Val(), "the cancelled job is not queued again")
		for _, k := range []string{"jobs:active:w", "steps:active:w"} {
			require.False(t, b.rdb.HExists(ctx, b.key(k), id).Val(), "the stale entry leaves %s", k)
		}
		require.Equal(t, "idle", b.rdb.HGet(ctx, b.key("worker:w"), "status").Val(), "the worker holds nothing")
	})
}

// TestReviewCompleteOverwritesLegacyCancel: the same race with the legacy
// API's cancel (status failed, error 'Job cancelled by user', entry in
// jobs:failed): the worker's CompleteJob turns the cancelled job into a
// completed one; the user's cancel is lost.
func TestCompleteDoesNotOverwriteALegacyCancel(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		caps := registerWorker(t, s, "w", "s")
		id, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		_, err = s.ClaimJob(ctx, caps) // between apiCancelJob's HGETALL and its writes
		require.NoError(t, err)
		require.NoError(t, b.rdb.HSet(ctx, b.key("job:"+id), "status", "failed", "failed_at", "2026-11-28T12:00:01.000Z",
			"error", "Job cancelled by user").Err())
		require.NoError(t, b.rdb.ZRem(ctx, b.key("jobs:pending"), id).Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key("jobs:failed"), id,
			`{"error":"Job cancelled by user","failed_at":"2026-11-28T12:00:01.000Z","cancelled":true}`).Err())

		err = s.CompleteJob(ctx, id, "w", json.RawMessage(`{"ok":1}`))
		require.ErrorIs(t, err, ErrJobFinished)
		j, err := s.GetJob(ctx, id)
		require.NoError(t, err)
		require.Equal(t, StatusFailed, j.Status, "the cancel stands")
	})
}

// TestRecoverRetentionExpiresProgress is a regression test: a job that
// recovery failed for good got the retention TTL on its record only, and
// its progress hash (and mirror) lived forever.
//
// Found by review1 as TestReviewRecoverRetentionLeavesProgress: WithRecordRetention promises
// that "failing for good ... sets this TTL on its record and its progress
// hash", and FailJob does. RecoverExpired, when a dead worker's job has
// used its retries, expires the record only: job:<id>:progress (and its
// mirror step:<id>:progress) keep no TTL and outlive the record forever,
// an orphan sub-key for every such job.
//
// Steps: WithRecordRetention(1h), dual-write; submit with MaxRetries 1;
// claim; ReportProgress; delete the heartbeat; RecoverExpired (Failed 1);
// job:<id>:progress must have a TTL like job:<id>.
func TestRecoverRetentionExpiresProgress(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true), WithRecordRetention(time.Hour))
		caps := registerWorker(t, s, "w", "s")
		id, err := s.SubmitJob(ctx, Job{Service: "s", MaxRetries: 1})
		require.NoError(t, err)
		_, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.NoError(t, s.ReportProgress(ctx, id, "w", 40, "half"))
		require.NoError(t, b.rdb.Del(ctx, b.key("worker:w:heartbeat")).Err())
		rs, err := s.RecoverExpired(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, rs.Failed)
		require.InDelta(t, time.Hour.Seconds(), b.rdb.TTL(ctx, b.key("job:"+id)).Val().Seconds(), 2)
		for _, k := range []string{"job:" + id + ":progress", "step:" + id + ":progress"} {
			require.InDelta(t, time.Hour.Seconds(), b.rdb.TTL(ctx, b.key(k)).Val().Seconds(), 2, "TTL of %s", k)
		}
		requireMirrored(t, b)
	})
}

// TestReviewRequirementsBreakLegacyClaim: validateSubmit refuses
// requirements that are not a JSON object because "requirements other
// than an object make the legacy claim function fail ... blocking the
// legacy workers' queue". It checks only the top level. Requirements such
// as {"hardware":5}, {"positive_requirements":5},
// or {"hardware":{"gpu_memory_gb":"16"}} are accepted, and findMatchingJob
// raises a Lua error on each (indexing a number, pairs over a number,
// comparing a number with a string): every FCALL of every legacy worker of
// the service fails while the job is in the top-100 window, so in the
// mixed fleet of dual-write the legacy workers stop taking any job.
//
// Steps (real findMatchingJob, a redis-server of the test's own): submit
// a plain job, then one with such requirements at a higher priority, both
// with jobstore; a legacy worker of the service with a 24 GB GPU calls
// findMatchingJob. Either SubmitJob refuses the requirements, or the legacy
// claim must still work.
func TestRequirementsTheLegacyClaimFailsOnAreRefused(t *testing.T) {
	e := newInterop(t, true, legacyJS)
	_, err := e.store.SubmitJob(e.ctx, Job{ID: "plain", Service: "s", Priority: 1})
	require.NoError(t, err)
	caps := workerCaps("legacy-w", "s")
	for i, c := range []struct {
		req    string
		refuse bool
	}{
		{`{"hardware":5}`, true},
		{`{"positive_requirements":5}`, true},
		{`{"hardware":{"gpu_memory_gb":"16"}}`, true},
		{`{"hardware":null}`, true},
		{`{"hardware":{"cpu_cores":null}}`, true},
		{`{"hardware":{"ram_gb":""}}`, true},
		{`{"hardware":{"ram_gb":[1]}}`, true},
		{`{"positive_requirements":null}`, true},
		{`{"positive_requirements":""}`, true},
		{`{"positive_requirements":0}`, true},
		{`{"negative_requirements":"x"}`, true},
		{`{"negative_requirements":null}`, true},
		{`{"negative_requirements":{"hardware":false}}`, true},
		{`{"negative_requirements":{"hardware":3}}`, true},
		// Shapes the function reads without failing stay accepted.
		{`{"hardware":{"gpu_memory_gb":16,"cpu_cores":"all","ram_gb":false}}`, false},
		{`{"hardware":false}`, false},
		{`{"positive_requirements":false,"region":"eu"}`, false},
		{`{"positive_requirements":{"hardware":{"gpu_memory_gb":8}},"negative_requirements":{"hardware":{"gpu_memory_gb":80}}}`, false},
		{`{"customer_isolation":null,"models":null,"region":null}`, false},
		{`{"models":["sdxl"],"gpu":{"vendor":"nvidia"}}`, false},
	} {
		t.Run(c.req, func(t *testing.T) {
			id := fmt.Sprint("req-", i)
			_, err := e.store.SubmitJob(e.ctx, Job{ID: id, Service: "s", Priority: 90, Requirements: json.RawMessage(c.req)})
			if c.refuse {
				require.ErrorIs(t, err, ErrInvalidPayload)
				require.Zero(t, e.rdb.Exists(e.ctx, "job:"+id).Val(), "nothing written")
				return
			}
			require.NoError(t, err)
			defer e.rdb.ZRem(e.ctx, "jobs:pending", id)
			_, lerr := e.legacy.call(legacyCallTimeout, "workerRequestJob", caps)
			require.NoError(t, lerr, "the legacy claim function fails with requirements %s", c.req)
		})
	}
}

// TestReviewAcceptedButUnreadable: SubmitJob accepts values that it then
// cannot read back. A WorkflowDatetime at or after 1e15 Unix ms (it
// checks only that it is after 1970) is stored as 16 digits, which
// parseTimeMs refuses (more than 15 digits): GetJob reports
// workflow_datetime as Unreadable and WorkflowDatetime as zero. Past
// 2^53 ms the retry's record_score ignores it too and re-scores the job by
// created_at, so a retried job changes place in the queue. CurrentStep
// and TotalSteps of any int size are accepted, and beyond 2^53
// parseIntField refuses them (the legacy API's parseInt reads them
// rounded). Each is "accepted input that should be refused": it writes a
// record that jobstore itself reports as unreadable.
//
// Steps: SubmitJob with WorkflowDatetime = UnixMilli(1e15) and
// CurrentStep = TotalSteps = 1<<60; GetJob; Unreadable must be empty.
func TestSubmitRefusesWhatCannotBeReadBack(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		wdt := time.UnixMilli(1e15).UTC()
		id, err := s.SubmitJob(ctx, Job{Service: "s", WorkflowID: "wf", WorkflowDatetime: wdt,
			CurrentStep: 1 << 60, TotalSteps: 1 << 60})
		if err != nil {
			require.ErrorIs(t, err, ErrInvalidArgument)
			return
		}
		j, err := s.GetJob(ctx, id)
		require.NoError(t, err)
		require.Empty(t, j.Unreadable, "SubmitJob wrote fields that GetJob cannot read")
		require.True(t, wdt.Equal(j.WorkflowDatetime))
		require.Equal(t, 1<<60, j.CurrentStep)
	})
}

// TestReviewClaimUnreadableRecordStrandsJob: a pending id whose record has
// no id field (a partial record, as a legacy HMSET of status on a record
// that was gone leaves; legacy readers treat it as missing) is claimed:
// ZREM from pending, status assigned, the id in the worker's active hash.
// Then decodeJob refuses the record and ClaimJob returns an error and no
// Job. The worker does not know it holds anything; it keeps its
// heartbeat, so recovery never takes the job back: the job is held by
// nobody that will finish it, forever, and is gone from pending. A job
// the claim cannot hand over must be passed over (as a record of the
// wrong type is), not claimed.
//
// Steps: ZADD jobs:pending noid; HSET job:noid service_required s status
// pending (no id); register w (services s); ClaimJob.
func TestClaimPassesOverARecordWithoutItsID(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		caps := registerWorker(t, s, "w", "s")
		require.NoError(t, b.rdb.ZAdd(ctx, b.key("jobs:pending"), redisZ(5e16, "noid")).Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key("job:noid"), "service_required", "s", "status", "pending").Err())
		j, err := s.ClaimJob(ctx, caps)
		if err == nil {
			require.Equal(t, "noid", j.ID)
			return
		}
		held := b.rdb.HKeys(ctx, b.key("jobs:active:w")).Val()
		require.Empty(t, held, "ClaimJob failed (%v) yet left the worker holding %v", err, held)
	})
}

// TestReviewFailReplayNegativeRetryCount: FailJob's replay answer is kept
// in jobstore_op as "<token>:<outcome>/<n>" with n formatted by %d, but
// read back with the pattern '^(%a+)/(%d+)$'. For a record whose
// retry_count is negative (legacy data: parseInt reads "-3" as -3, and
// jobstore's parse_int does too) n is negative, the pattern does not
// match, and the replay answers {'OK', nil, nil}: FailJob returns ("",
// nil), an outcome that is neither Retried nor Failed, for a failure that
// was applied.
//
// Steps (real server through the fault proxy): submit, set retry_count
// "-3" as another writer did, claim, cut FailJob's reply after 14 bytes
// (go-redis sends the script again); the outcome must be Retried.
func TestFailReplayReadsANegativeRetryCount(t *testing.T) {
	via, p, direct := proxiedBackend(t, nil)
	s := newStore(t, via, WithDualWrite(true))
	caps := registerWorker(t, s, "w", "s")
	id, err := s.SubmitJob(ctx, Job{Service: "s"})
	require.NoError(t, err)
	require.NoError(t, direct.rdb.HSet(ctx, direct.key("job:"+id), "retry_count", "-3").Err())
	_, err = s.ClaimJob(ctx, caps)
	require.NoError(t, err)
	_, before := p.Stats()
	p.CutReplyAfter(14)
	out, err := s.FailJob(ctx, id, "w", "oops", true)
	_, after := p.Stats()
	require.Greater(t, after, before, "the proxy cut the reply")
	require.NoError(t, err)
	require.Equal(t, Retried, out, "the replay reports what the first run did")
}

// TestReviewClaimAbortsHalfWay: lua.go promises that "the primary part
// checks key types before it writes anything, so it either fails with a
// WRONGTYPE status and no write, or applies fully". The claim script does
// not check progress:<id>, the stream it XADDs to after it has already
// ZREMed the job from pending, set it assigned and put it in the worker's
// active hash. When progress:<id> is not a stream (a hash or string left by
// another tool: the key is outside the namespaces), XADD raises, the script
// stops half-way (scripts do not roll back), and ClaimJob returns
// ErrCorruptRecord with no Job. The job is gone from pending and held by a
// worker that was told it got nothing (stranded while that worker lives),
// and the mirror part never ran: steps:pending still lists it, step:<id>
// still says pending, steps:active:w lacks it.
//
// Steps: dual-write; submit X; HSET progress:X f v; register w; ClaimJob.
// The claim must either succeed, or leave everything as it was, mirrored.
func TestClaimPassesOverAJobWhoseProgressIsNotAStream(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		caps := registerWorker(t, s, "w", "s")
		id, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		require.NoError(t, b.rdb.HSet(ctx, b.key("progress:"+id), "f", "v").Err())
		j, err := s.ClaimJob(ctx, caps)
		if err == nil {
			require.Equal(t, id, j.ID)
		} else {
			require.Equal(t, []string{id}, b.rdb.ZRange(ctx, b.key("jobs:pending"), 0, -1).Val(),
				"ClaimJob failed (%v) but took the job out of pending", err)
			require.Empty(t, b.rdb.HKeys(ctx, b.key("jobs:active:w")).Val(), "ClaimJob failed but the worker holds the job")
		}
		requireMirrored(t, b)
	})
}

// TestReviewClaimDeadlineStrandsJob: when a claim's reply does not come
// back before the caller's deadline, ClaimJob returns the context's error
// ("the write may have been applied"), and it often was: the job is out of
// pending and in jobs:active:<worker>. Every other write can be repeated
// to learn what happened (a submit with its id gives ErrJobExists, a
// complete, fail or cancel gives ErrNotHeld / ErrJobFinished), but a claim
// cannot: its token is private to the call, the next ClaimJob carries a new
// one and takes another job, and the library has no call that lists the
// jobs a worker holds. The first job is held by a live worker that does
// not know it, until that worker dies: held by nobody, for hours.
//
// Steps (real server through the fault proxy): submit X; the proxy delays
// every chunk 300 ms; ClaimJob with a 100 ms deadline fails; once Redis has
// run it (X in jobs:active:w), the proxy heals and the worker calls
// ClaimJob again: it must get X back (or X must not have stayed held).
func TestClaimAfterALostReplyHandsOverTheJob(t *testing.T) {
	via, p, direct := proxiedBackend(t, nil)
	s := newStore(t, via, WithDualWrite(true))
	caps := registerWorker(t, s, "w", "s")
	id, err := s.SubmitJob(ctx, Job{Service: "s"})
	require.NoError(t, err)
	p.SetDelay(300 * time.Millisecond)
	c, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = s.ClaimJob(c, caps)
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Eventually(t, func() bool { return direct.rdb.HExists(ctx, direct.key("jobs:active:w"), id).Val() },
		5*time.Second, 10*time.Millisecond, "precondition: Redis ran the claim after the caller gave up")
	p.SetDelay(0)
	j, err := s.ClaimJob(ctx, caps)
	require.NoError(t, err, "the worker holds %s; asking again must hand it over", id)
	require.Equal(t, id, j.ID)
}

// TestKeepAliveReplacesLegacyRegistration is a regression test: KeepAlive
// took a live legacy registration under its worker id for its own, so the
// jobstore worker was reported as a legacy one.
//
// Found by review1 as TestReviewKeepAliveAdoptsLegacyRegistration: KeepAlive registers a
// worker "unless it is registered already", and takes "registered" to
// mean that worker:<id> and its heartbeat exist, whoever wrote them. A
// machine moved from the legacy worker to a jobstore worker under the same
// worker id (ids are per machine) and restarted within the 60 s the legacy
// heartbeat lives (a kill during the rollout, no disconnect) only gets
// Heartbeat: its worker:<id> hash keeps the legacy registration, without
// the jobstore field and with the legacy capabilities, for good. Workers()
// reports it as a legacy worker, and LegacyEvidence lists it as a live
// legacy process for as long as the jobstore worker runs, so PublishStage
// refuses dual-read (ErrLegacyAlive) because of a jobstore worker.
//
// Steps: write worker:w as the legacy worker's registerWorker does
// (no jobstore field) and its 60 s heartbeat; KeepAlive(w) for a few
// intervals; Workers() must report w as a jobstore worker and
// LegacyEvidence must not list it.
func TestKeepAliveReplacesLegacyRegistration(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		m := newMigrator(t, b, StageDualWrite)
		require.NoError(t, b.rdb.HSet(ctx, b.key("worker:w"), "worker_id", "w", "machine_id", "m1",
			"capabilities", `{"worker_id":"w","services":["old"]}`, "status", "idle").Err())
		require.NoError(t, b.rdb.SAdd(ctx, b.key("workers:active"), "w").Err())
		require.NoError(t, b.rdb.Set(ctx, b.key("worker:w:heartbeat"), "2026-11-28T11:59:30.000Z", time.Minute).Err())

		c, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- s.KeepAlive(c, Capabilities{WorkerID: "w", Services: []string{"s"}}, 10*time.Millisecond)
		}()
		time.Sleep(50 * time.Millisecond)
		ws, err := s.Workers(ctx)
		require.NoError(t, err)
		ev, err := m.LegacyEvidence(ctx)
		require.NoError(t, err)
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
		require.Len(t, ws, 1)
		require.Equal(t, Version, ws[0].Jobstore, "the jobstore worker is registered as one")
		require.Empty(t, ev.Workers, "a jobstore worker is no evidence of a legacy process")
	})
}

// TestReviewClaimTakesIDItCannotFinish: the claim script takes any id it
// finds in pending, but StartJob, ReportProgress, CompleteJob and FailJob
// refuse ids that validateID rejects (whitespace, control characters,
// *?[]{}:\). The legacy API stores a caller-provided id as it is
// (providedJobId || uuidv4()), so such ids exist in a shared queue; and
// GetPendingJobs already passes over them as invalid. A jobstore worker
// that claims one can then neither complete nor fail it: ErrInvalidID on
// every call, while the id sits in its active hash until the worker dies,
// and the job never finishes. The claim must pass over ids the worker
// calls refuse (as GetPendingJobs does), or those calls must accept them.
//
// Steps: a legacy-style record "job:a b" (id "a b", service s) in
// jobs:pending; ClaimJob for a worker of s; CompleteJob on the id it got.
func TestClaimPassesOverIDsTheFinishingCallsRefuse(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		caps := registerWorker(t, s, "w", "s")
		const id = "a b"
		require.NoError(t, b.rdb.HSet(ctx, b.key("job:"+id), "id", id, "service_required", "s", "priority", "50",
			"payload", "{}", "status", "pending", "retry_count", "0", "max_retries", "3",
			"created_at", "2026-11-28T11:00:00.000Z").Err())
		require.NoError(t, b.rdb.ZAdd(ctx, b.key("jobs:pending"), redisZ(5e16, id)).Err())
		j, err := s.ClaimJob(ctx, caps)
		if err != nil {
			require.ErrorIs(t, err, ErrNoJob)
			return
		}
		require.Equal(t, id, j.ID)
		require.NoError(t, s.CompleteJob(ctx, j.ID, "w", nil), "the worker can finish the job it was given")
	})
}

// TestReviewSubmitDeadlineLosesID: SubmitJob with an empty Job.ID (the
// documented default: "an empty j.ID gets a new UUID") returns ("", err)
// when its deadline passes before the reply, though the job may have been
// stored ("the write may have been applied"). The caller cannot look the
// job up or submit it again under the same id (which would answer
// ErrJobExists): retrying creates a second job, and the work runs twice.
// SubmitJobs likewise blanks ids[i] for such jobs. The id generated for
// the write must come back with the error.
//
// Steps (real server through the fault proxy): delay every chunk 300 ms;
// SubmitJob(Job{Service: "s"}) with a 100 ms deadline; once the job is in
// jobs:pending, the id returned must be that job's.
func TestSubmitAfterALostReplyReturnsTheID(t *testing.T) {
	via, p, direct := proxiedBackend(t, nil)
	s := newStore(t, via)
	_, err := s.SubmitJob(ctx, Job{ID: "warm", Service: "other"}) // opens a connection
	require.NoError(t, err)
	p.SetDelay(300 * time.Millisecond)
	c, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	id, err := s.SubmitJob(c, Job{Service: "s"})
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Eventually(t, func() bool { return direct.rdb.ZCard(ctx, direct.key("jobs:pending")).Val() == 2 },
		5*time.Second, 10*time.Millisecond, "precondition: Redis stored the job after the caller gave up")
	p.SetDelay(0)
	require.NotEmpty(t, id, "the caller must learn the id of a job that may have been stored, or a retry duplicates it")
	require.Equal(t, int64(1), direct.rdb.Exists(ctx, direct.key("job:"+id)).Val())
}

// TestWritesIgnoreStageKeyOfWrongType is a regression test: a
// jobstore:stage key that was not a hash made every write script raise:
// every write of every process failed.
//
// Found by review1 as TestReviewStageKeyOfWrongTypeStopsAllWrites: every write script reads
// the published stage first with redis.call('HGET', jobstore:stage, ...),
// which raises when the key is not a hash. An unreadable stage VALUE is
// ignored (the write runs under the process's own stage), but a key of the
// wrong TYPE, e.g. an operator's `SET jobstore:stage dual-read` instead of
// HSET, makes every SubmitJob, ClaimJob, CompleteJob, FailJob, CancelJob
// and recovery of every process fail with ErrCorruptRecord: a full outage
// of the queue from one key, during a migration that must have none. The
// check should treat it as it treats a junk value (or as no stage).
//
// Steps: SET jobstore:stage "dual-write" (a string); SubmitJob; it fails.
func TestWritesIgnoreStageKeyOfWrongType(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		require.NoError(t, b.rdb.HSet(ctx, b.key("jobstore:stage"), "stage", "bogus").Err())
		_, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err, "a junk stage value is ignored by the writes")
		require.NoError(t, b.rdb.Del(ctx, b.key("jobstore:stage")).Err())
		require.NoError(t, b.rdb.Set(ctx, b.key("jobstore:stage"), "dual-write", 0).Err())
		_, err = s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err, "a stage key of the wrong type stops every write of every process")
	})
}

// TestWaitForStageNamesStragglersAtDeadline is a regression test: when the
// deadline fell inside the fleet's SCAN, WaitForStage returned no
// stragglers.
//
// Found by review1 as TestReviewWaitForStageLosesStragglers: WaitForStage promises, when ctx
// ends first, "the processes that do not yet [report st] (the stragglers)
// with ctx's error". It re-lists the fleet each round with a full SCAN of
// the keyspace; when ctx ends during that SCAN (on a large Redis nearly
// every round is mostly SCAN) it returns (nil, err): the operator is told
// the wait timed out but not who is behind. The stragglers of the last
// completed round must be returned. (This is also why the suite's own
// TestFleet/redis fails on the shared DB 15, which holds ~300k keys: its
// 100 ms WaitForStage always ends inside the SCAN.)
//
// Steps (a redis-server of the test's own, through the fault proxy, 50 ms
// per chunk, so that a round takes ~200 ms): a process checks in with
// stage legacy; publish dual-write; WaitForStage(dual-write) with a 700 ms
// deadline and a 1 ms poll (so rounds complete, and the deadline falls in
// one) must return that process.
func TestWaitForStageNamesStragglersAtDeadline(t *testing.T) {
	srv := startTestServer(t)
	p := startFaultProxy(t, srv.Addr())
	direct := &backend{name: "own", rdb: srv.Client(nil), clock: newFakeClock()}
	via := &backend{name: "proxied", rdb: redis.NewClient(&redis.Options{Addr: p.Addr()}), clock: direct.clock}
	t.Cleanup(func() { _ = via.rdb.Close() })
	a := newStore(t, direct)
	require.NoError(t, a.checkIn(ctx, time.Minute)) // a process in legacy, e.g. one that died after checking in
	m := newMigrator(t, via, StageLegacy)
	require.NoError(t, m.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	p.SetDelay(50 * time.Millisecond)
	c, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
	behind, err := m.WaitForStage(c, StageDualWrite, time.Millisecond)
	cancel()
	p.SetDelay(0)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.Len(t, behind, 1, "the straggler must be named")
	require.Equal(t, a.ProcessID(), behind[0].ID)
}

// TestRecoverRequeuesHalfRetriedLegacyJob is a regression test: recovery
// dropped the active entry of a legacy retry killed between its HMSET and
// its ZADD, and the job was lost.
//
// Found by review1 as TestReviewRecoverDropsHalfRetriedLegacyJob: the legacy worker's failJob
// (retry) is several commands: HMSET job:<id> status pending worker_id ""
// ..., then ZADD jobs:pending, then HDEL jobs:active:<worker>. A legacy
// worker killed between the HMSET and the ZADD leaves a record that says
// pending, in no queue, with its id still in jobs:active:<worker>, the only
// trace that the job still has to run. RecoverExpired, once that worker's
// heartbeat is gone, reads status pending (not assigned/in_progress), takes
// the entry for a stale one and HDELs it ("dropped"): the job is then in
// no queue and no active hash, never claimed again, lost. (The legacy
// orphan sweep requeues every entry of a dead worker's active hash.) An
// entry whose record is pending but not queued must be requeued, not
// dropped.
//
// Steps: submit X; legacy worker lw claims it (as findMatchingJob writes);
// lw's failJob runs its HMSET only (status pending, worker_id "",
// assigned_at "", retry_count 1, last_failed_worker lw); lw's heartbeat is
// gone; RecoverExpired; X must be in jobs:pending (or otherwise claimable).
func TestRecoverRequeuesHalfRetriedLegacyJob(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		id, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		// findMatchingJob's claim by the legacy worker lw.
		require.NoError(t, b.rdb.ZRem(ctx, b.key("jobs:pending"), id).Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key("job:"+id), "status", "assigned", "worker_id", "lw", "assigned_at", "1795867200.000001").Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key("jobs:active:lw"), id, `{"id":"`+id+`"}`).Err())
		// lw's failJob(retry): its first write, then the process dies.
		require.NoError(t, b.rdb.HSet(ctx, b.key("job:"+id), "status", "pending", "worker_id", "", "assigned_at", "",
			"retry_count", "1", "last_failed_worker", "lw", "failed_at", "2026-11-28T12:00:00.000Z").Err())

		rs, err := s.RecoverExpired(ctx)
		require.NoError(t, err)
		t.Logf("recovery: %+v", rs)
		require.Equal(t, []string{id}, b.rdb.ZRange(ctx, b.key("jobs:pending"), 0, -1).Val(),
			"the job whose only trace was the dead worker's active entry is queued again, not dropped")
	})
}
