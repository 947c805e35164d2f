package jobstore

// Outside review of the migration tools, second round. Each test here
// fails on the code under review and names one bug; see the comment above
// each. No test fixes or relies on a fix of the library.

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// runFollower starts m.Follow in a goroutine and returns a stop function,
// which cancels it and returns its error, and a channel that receives the
// error as soon as Follow returns on its own.
func runFollower(t *testing.T, m *Migrator, opts FollowOptions) (returned <-chan error, stop func() error) {
	t.Helper()
	fctx, cancel := context.WithCancel(context.Background())
	ch := make(chan error, 1)
	var once sync.Once
	var err error
	go func() { ch <- m.Follow(fctx, opts) }()
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-ch:
			case <-time.After(10 * time.Second):
				err = errors.New("the follower did not stop within 10s")
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return ch, stop
}

// TestFollowerStopsWhenASweepFindsStepPrimary
//
// Regression: a sweep adopted step-primary, only logged the refusal, and went on copying job:* over step:*.
//
// What is wrong: when a follower's sweep (not an event-driven sync) is the
// first to get the STAGE reply after the published stage moved to
// step-primary, follower.syncBatch calls checkStage, which adopts the new
// stage into the follower's Store (Store.Sync) and then returns an error.
// sweepLoop only logs that error ("follower sweep failed; it runs again
// later"): Follow keeps running. And since the follower's Store now says
// step-primary, every later sync is built for step-primary and passes the
// scripts' published-stage check, so the follower goes on copying job:*
// over step:* while step:* is the authoritative namespace.
//
// Why it matters: Follow's contract is to stop when the published stage
// moves to a stage where job:* is not authoritative, "where a follower
// would copy stale data". Here it does exactly that: any job:* write in
// step-primary (a stale mirror, a legacy process forced through the gate)
// overwrites the authoritative step record.
//
// Steps: publish dual-write; submit a job through a dual-writing Store;
// start a follower (its own Migrator, as the stepmigrate process is) with
// a 100 ms sweep; publish dual-read, then step-primary. Follow should
// return ErrNamespaceInUse; it keeps running. Then a stale write lands on
// job:<id>; the follower copies it over step:<id>.
func TestFollowerStopsWhenASweepFindsStepPrimary(t *testing.T) {
	b := followerBackend(t)
	op := newMigrator(t, b, StageLegacy) // the operator
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	s := newStore(t, b)
	id, err := s.SubmitJob(ctx, Job{Service: "s"})
	require.NoError(t, err)
	requireMirrored(t, b)

	fm := newMigrator(t, b, StageDualWrite) // the follower's process
	returned, stop := runFollower(t, fm, FollowOptions{Configure: true, Sweep: 100 * time.Millisecond})
	time.Sleep(300 * time.Millisecond) // a few sweeps in dual-write

	require.NoError(t, op.PublishStage(ctx, StageDualRead, PublishOptions{}))
	require.NoError(t, op.PublishStage(ctx, StageStepPrimary, PublishOptions{}))
	time.Sleep(500 * time.Millisecond) // a few sweeps in step-primary
	authoritative := b.rdb.HGetAll(ctx, b.key("step:"+id)).Val()

	// A stale write on the mirror side, which the follower must not copy.
	require.NoError(t, b.rdb.HSet(ctx, b.key("job:"+id), "payload", `{"stale":true}`).Err())
	time.Sleep(500 * time.Millisecond)

	stepNow := b.rdb.HGetAll(ctx, b.key("step:"+id)).Val()
	select {
	case err := <-returned:
		require.ErrorIs(t, err, ErrNamespaceInUse)
	default:
		t.Errorf("Follow still runs in step-primary; its Migrator's stage is now %s", fm.Stage())
	}
	_ = stop()
	require.Equal(t, authoritative, stepNow, "the follower copied job:%s over the authoritative step:%s in step-primary", id, id)
}

// reviewBackends runs fn on miniredis and on a redis-server of the test's
// own: tests that SCAN with small batches, or that need their scans to be
// quick, stay off the shared database, whose size is not theirs.
func reviewBackends(t *testing.T, fn func(t *testing.T, b *backend)) {
	t.Helper()
	t.Run("miniredis", func(t *testing.T) { fn(t, miniBackend(t)) })
	t.Run("redis-server", func(t *testing.T) { fn(t, startTestServer(t).Backend(nil)) })
}

// legacyRecord writes a job record as the legacy API does (HSET of
// string fields), without a mirror, and returns its key.
func legacyRecord(t testing.TB, b *backend, id string) string {
	t.Helper()
	rec := b.key("job:" + id)
	require.NoError(t, b.rdb.HSet(ctx, rec, "id", id, "service_required", "s", "priority", "50",
		"payload", "{}", "requirements", "", "created_at", "2026-11-29T23:00:00.000Z", "status", "pending",
		"retry_count", "0", "max_retries", "3").Err())
	return rec
}

// followerSynced waits until step:<id> equals job:<id>.
func followerSynced(t testing.TB, b *backend, id string) {
	t.Helper()
	require.Eventually(t, func() bool {
		j := b.rdb.HGetAll(ctx, b.key("job:"+id)).Val()
		s := b.rdb.HGetAll(ctx, b.key("step:"+id)).Val()
		return len(j) > 0 && len(j) == len(s) && j["status"] == s["status"] && j["payload"] == s["payload"]
	}, 5*time.Second, 20*time.Millisecond, "the follower mirrors job:%s", id)
}

// TestFollowerMirrorsListSetStreamSubKeys
//
// Regression: the follower turned on only Kg$hzx, so RPUSH/SADD/XADD on a job's sub-keys raised no event and were never mirrored.
//
// What is wrong: the follower learns which sub-keys of a job changed only
// from keyspace notifications, and it turns on the classes "Kg$hzx"
// (notifyFlags): generic, string, hash, zset and expiry events. Writes to a
// sub-key that is a list (l), a set (s) or a stream (t) raise no event, so
// the follower never learns the suffix; syncing the job (when its record
// changes) copies only "progress" and the suffixes it heard of. The
// sub-key stays missing on the step side until a sweep, which by default
// comes 10 minutes later, and never with Sweep < 0 (the setting
// TestFollowerLag uses).
//
// Why it matters: sub-keys of any type belong to the job and move with it
// (DESIGN.md; keys.go "job:<id>:<suffix> any"). Backfill and Verify handle
// every type (readContent reads lists, sets, streams); the follower, which
// must keep step:* converged while legacy services write, silently does
// not.
//
// Steps: follower on in dual-write (Sweep -1, so only the start sweep);
// then a legacy process writes job:X and RPUSH job:X:log, SADD job:X:tags,
// XADD job:X:events. The record reaches step:X; the three sub-keys never
// reach step:X:*, not even after the 2 s recheck.
func TestFollowerMirrorsListSetStreamSubKeys(t *testing.T) {
	b := followerBackend(t)
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	_, stop := runFollower(t, newMigrator(t, b, StageDualWrite), FollowOptions{Configure: true, Sweep: -1,
		Recheck: 300 * time.Millisecond})
	time.Sleep(300 * time.Millisecond) // the start sweep is done

	id := "sub-types"
	rec := legacyRecord(t, b, id)
	require.NoError(t, b.rdb.RPush(ctx, rec+":log", "line 1", "line 2").Err())
	require.NoError(t, b.rdb.SAdd(ctx, rec+":tags", "a", "b").Err())
	require.NoError(t, b.rdb.XAdd(ctx, &redis.XAddArgs{Stream: rec + ":events", ID: "1-1", Values: []string{"k", "v"}}).Err())
	followerSynced(t, b, id)
	time.Sleep(1 * time.Second) // the recheck, twice over

	require.ErrorIs(t, stop(), context.Canceled)
	for _, sfx := range []string{"log", "tags", "events"} {
		require.Equal(t, readKey(t, b.rdb, rec+":"+sfx).Type, readKey(t, b.rdb, b.key("step:"+id+":"+sfx)).Type,
			"step:%s:%s was never mirrored", id, sfx)
	}
}

// TestFollowerMirrorsASubKeyTTLRenewal
//
// Regression: the sync compared DUMP and only whether both sides had a TTL, so a renewed TTL never reached step:* and the copy expired first.
//
// What is wrong: syncJobScript copies a sub-key only when its DUMP differs
// or its "TTL class" differs (pttl_class: none, missing, or "has one").
// A sub-key whose TTL is renewed (EXPIRE job:X:progress 3600 on a key that
// had 3 s left) has the same content and the same class on both sides, so
// the sync leaves step:X:progress with its old, short TTL. It then expires
// on the step side only; that expiry is a step:* event the follower does
// not listen to, and the job side did not change, so nothing repairs it
// until a sweep.
//
// Why it matters: the step side loses a job's sub-key that the job side
// still has; Verify then reports it missing (its TTL tolerance is 2 s, the
// follower's rule is "any TTL will do"). Syncing is supposed to make the
// step side equal to the job side, TTL included (Rule 2, COPY carries the
// TTL).
//
// Steps: follower on in dual-write (Sweep -1); legacy HSET job:X,
// HSET job:X:progress, EXPIRE job:X:progress 2; the follower mirrors it.
// Then EXPIRE job:X:progress 3600. After 2.5 s step:X:progress is gone
// while job:X:progress lives for an hour.
func TestFollowerMirrorsASubKeyTTLRenewal(t *testing.T) {
	b := followerBackend(t)
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	_, stop := runFollower(t, newMigrator(t, b, StageDualWrite), FollowOptions{Configure: true, Sweep: -1,
		Recheck: 200 * time.Millisecond})
	time.Sleep(300 * time.Millisecond)

	id := "ttl-renewed"
	rec := legacyRecord(t, b, id)
	require.NoError(t, b.rdb.HSet(ctx, rec+":progress", "progress", "10").Err())
	require.NoError(t, b.rdb.Expire(ctx, rec+":progress", 2*time.Second).Err())
	followerSynced(t, b, id)
	require.Eventually(t, func() bool { return b.rdb.PTTL(ctx, b.key("step:"+id+":progress")).Val() > 0 },
		3*time.Second, 20*time.Millisecond, "the sub-key and its TTL are mirrored")

	require.NoError(t, b.rdb.Expire(ctx, rec+":progress", time.Hour).Err()) // the renewal
	time.Sleep(2500 * time.Millisecond)
	require.ErrorIs(t, stop(), context.Canceled)
	require.Greater(t, b.rdb.PTTL(ctx, rec+":progress").Val(), 50*time.Minute)
	step := readKey(t, b.rdb, b.key("step:"+id+":progress"))
	require.Equal(t, "hash", step.Type, "step:%s:progress expired on the step side only: the TTL renewal was not mirrored", id)
	require.InDelta(t, time.Hour.Seconds(), step.TTL.Seconds(), 5)
}

// TestReviewBackfillSkipsOrphanRecoveredJob
//
// What is wrong: Backfill copies a record only over an older one, by the
// freshness rule of freshness.go, which assumes that "a job's record only
// moves forward". The legacy RedisService's orphan recovery breaks it:
// detectAndFixOrphanedJobs (testdata/legacy_orphans.js, SVC lines
// 946-1057) puts each job of an orphaned jobs:active:<w> back with
// HMSET job:<id> status pending, worker_id, assigned_at and started_at empty,
// and ZADD jobs:pending, without touching retry_count. The recovered
// record ranks lower (pending < in_progress, and its latest timestamp is
// created_at again) than the copy the step side took while the job ran.
// So the next Backfill counts the step side "newer", leaves the stale
// in_progress copy, and skips the job's entries: step:X stays in
// steps:active:<w> and out of steps:pending.
//
// Why it matters: the backfill is what catches the legacy writes made
// while dual-write is on (Rule 9) and must converge the step side; here it
// never does, whatever how often it runs. In step-primary the job, pending
// on the job side, is absent from steps:pending and held by a dead worker:
// nobody claims it again.
//
// Steps: legacy submit, claim by worker lw, start; Backfill (dual-write);
// the legacy orphan recovery of lw's hash; Backfill again. step:X should
// equal job:X (status pending) and X be in steps:pending; it is not.
func TestOrphanRecoveredJobIsNamedByBackfillAndSettledByRepair(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		l := newLegacy(t, b)
		id := l.submit(60)
		l.claim(id, "lw")
		l.start(id, 30)
		m := newMigrator(t, b, StageDualWrite)
		runBackfill(t, m, BackfillOptions{})
		require.Equal(t, "in_progress", b.rdb.HGet(ctx, b.key("step:"+id), "status").Val())

		// detectAndFixOrphanedJobs, first pass, for worker lw.
		rec := b.rdb.HGetAll(ctx, b.key("job:"+id)).Val()
		when, err := time.Parse(time.RFC3339, rec["created_at"])
		require.NoError(t, err)
		score := 60*1e6 + (float64(1<<53-1) - float64(when.UnixMilli()))
		l.do(func(p redis.Pipeliner) {
			p.HSet(ctx, b.key("job:"+id), "status", "pending", "worker_id", "", "assigned_at", "", "started_at", "")
		}, func(p redis.Pipeliner) { p.ZAdd(ctx, b.key("jobs:pending"), redis.Z{Score: score, Member: id}) },
			func(p redis.Pipeliner) { p.HDel(ctx, b.key("jobs:active:lw"), id) })

		// The data cannot tell this from a step side made newer by a
		// mirror that failed in step-primary before a rollback, where
		// overwriting would lose work: Backfill keeps both and names the
		// job; Verify lists it as blocking; Repair settles it.
		res := runBackfill(t, m, BackfillOptions{})
		requireVisits(t, b, 1, res.Newer)
		require.Equal(t, []string{id}, res.NewerIDs)
		v := runVerify(t, m, quickVerify)
		require.Positive(t, v.Differences)
		require.NotEmpty(t, v.BlockingDiffs, "the stale copy blocks a cleanup")
		repair := quickVerify
		repair.Repair = true
		runVerify(t, m, repair)
		require.Equal(t, b.rdb.HGetAll(ctx, b.key("job:"+id)).Val(), b.rdb.HGetAll(ctx, b.key("step:"+id)).Val())
		require.Equal(t, score, b.rdb.ZScore(ctx, b.key("steps:pending"), id).Val(), "%s back in steps:pending", id)
		require.False(t, b.rdb.HExists(ctx, b.key("steps:active:lw"), id).Val(), "%s out of steps:active:lw", id)
		require.Zero(t, runVerify(t, m, quickVerify).Differences)
	})
}

// TestReviewLegacyGateMissesLegacyWorkerReusingAnID
//
// What is wrong: LegacyEvidence tells a jobstore worker from a legacy one
// by the "jobstore" field of worker:<id>. A jobstore worker that dies
// without unregistering (SIGKILL, OOM: KeepAlive's UnregisterWorker never
// runs) leaves worker:<id> with that field. When a legacy worker comes up
// under the same id (the report's rollout moves 10% of the workers to
// jobstore first, so rolling a machine back to the legacy binary keeps its
// WORKER_ID), its registration is an HMSET (legacy_orphans.js
// workerRegister), which keeps the old field. The live legacy worker then
// counts as a jobstore worker, and PublishStage lets the fleet into
// dual-read (and on into step-primary) while it heartbeats and claims.
//
// Why it matters: this is exactly what the gate exists to refuse: from
// step-primary on, that legacy worker and a jobstore worker can run the
// same job.
//
// Steps: a jobstore Store registers worker "gpu-1" and crashes (nothing
// unregisters; its heartbeat expires). A legacy worker registers as
// "gpu-1": HMSET worker:gpu-1 ..., SADD workers:active, SETEX
// worker:gpu-1:heartbeat 60. PublishStage(dual-read) must fail with
// ErrLegacyAlive; it succeeds.
func TestLegacyGateSeesALegacyWorkerReusingAJobstoreID(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		registerWorker(t, s, "gpu-1", "comfyui")
		require.NoError(t, b.rdb.Del(ctx, b.key("worker:gpu-1:heartbeat")).Err()) // crashed: its heartbeat expired

		// The legacy worker client's registerWorker, as legacy_orphans.js replays it.
		now := time.Now().UTC().Format("2006-01-02T15:04:05.000Z")
		require.NoError(t, b.rdb.HSet(ctx, b.key("worker:gpu-1"), "worker_id", "gpu-1", "machine_id", "unknown",
			"capabilities", `{"worker_id":"gpu-1","services":["comfyui"]}`, "status", "idle", "connected_at", now,
			"last_heartbeat", now, "total_jobs_completed", "0", "total_jobs_failed", "0").Err())
		require.NoError(t, b.rdb.SAdd(ctx, b.key("workers:active"), "gpu-1").Err())
		require.NoError(t, b.rdb.Set(ctx, b.key("worker:gpu-1:heartbeat"), now, time.Minute).Err())

		m := newMigrator(t, b, StageDualWrite)
		require.NoError(t, m.PublishStage(ctx, StageDualWrite, PublishOptions{}))
		ev, err := m.LegacyEvidence(ctx)
		require.NoError(t, err)
		err = m.PublishStage(ctx, StageDualRead, PublishOptions{})
		require.ErrorIs(t, err, ErrLegacyAlive, "a legacy worker heartbeats as gpu-1; evidence: %s", ev)
	})
}

// TestReviewCleanupDeletesAfterTheStageMovedBack
//
// What is wrong: Cleanup checks the stage once, before its verification,
// and never again. The verification takes Rounds x Delay (600 ms by
// default) and the deletion streams the whole keyspace; an operator who
// rolls back meanwhile (step-only -> step-primary, the runbook's first
// step back) brings processes that write job:* again, and Cleanup goes on
// unlinking job records, sub-keys, active hashes and finally jobs:pending,
// jobs:completed and jobs:failed by name, in a stage where they are the
// mirror that the next rollback step (dual-read, job authoritative) relies
// on. Cleanup's own doc says "the stage check is what keeps writers away";
// here it does not.
//
// Why it matters: "cleanup/rollback ... runs in a stage where a process
// still uses it". A rollback is when things are already going wrong; the
// mirror the rollback depends on is deleted under it.
//
// Steps: a migrated state in step-only, published. Cleanup of job:* with
// BatchSize 1; at its first progress callback the operator publishes
// step-primary, and a step-primary Store submits a job (mirrored to job:*
// and jobs:pending). Cleanup should stop with ErrNamespaceInUse; it
// deletes on, jobs:pending included.
func TestCleanupStopsWhenTheStageMovesBack(t *testing.T) {
	reviewBackends(t, func(t *testing.T, b *backend) {
		m := migrated(t, b, 2)
		require.NoError(t, m.PublishStage(ctx, StageStepOnly, PublishOptions{Force: true}))
		op := newMigrator(t, b, StageStepOnly)
		s := newStore(t, b, WithStage(StageStepOnly))

		var movedAt int64 = -1
		var submitted string
		res, err := m.Cleanup(ctx, JobNamespace, CleanupOptions{BatchSize: 1, Verify: quickVerify, Progress: func(deleted int64) {
			if movedAt >= 0 {
				return
			}
			movedAt = deleted
			require.NoError(t, op.PublishStage(ctx, StageStepPrimary, PublishOptions{}))
			id, err := s.SubmitJob(ctx, Job{Service: "comfyui"})
			require.NoError(t, err)
			submitted = id
			require.True(t, b.rdb.ZScore(ctx, b.key("jobs:pending"), id).Err() == nil, "step-primary mirrors to jobs:pending")
		}})
		require.NotEmpty(t, submitted)
		require.ErrorIs(t, err, ErrNamespaceInUse,
			"cleanup went on in step-primary: %d keys deleted after the stage moved back (of %d)", res.Deleted-movedAt, res.Deleted)
		require.NoError(t, b.rdb.ZScore(ctx, b.key("jobs:pending"), submitted).Err(),
			"the step-primary mirror of %s in jobs:pending was deleted", submitted)
	})
}

// TestFollowerSyncsABusyJobWithinMaxDelay
//
// Regression: each notification pushed the sync Debounce further, without bound, so a job written faster than every 20 ms was never synced while the writes went on.
//
// What is wrong: follower.mark pushes a dirty job's due time to
// now+Debounce on every notification, with no bound on the total wait.
// A job whose keys change more often than every Debounce (20 ms) is
// never synced while the writes go on: a legacy worker streaming progress
// (workerSendProgress, HMSET job:<id>:progress, e.g. per generated token)
// keeps its job's claim, start and progress off the step side for the
// whole run of the job. Its lag, which the follower should report, is not
// even measured until the stream stops.
//
// Why it matters: the follower is meant to keep step:* within
// milliseconds of job:* (Debounce + Recheck); here it is unbounded, and a
// verify or a dual-read during the stream sees the job still pending on
// the step side, in steps:pending, though a legacy worker holds it.
//
// Steps: follower on in dual-write; a legacy API submit (HSET job:X,
// ZADD jobs:pending), then the claim (ZREM, HSET status assigned, HSET
// jobs:active:lw), then progress written back to back for 2 s. Within 1 s
// step:X should say assigned; it does not appear at all until the
// progress stops.
func TestFollowerSyncsABusyJobWithinMaxDelay(t *testing.T) {
	b := followerBackend(t)
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	_, stop := runFollower(t, newMigrator(t, b, StageDualWrite), FollowOptions{Configure: true, Sweep: -1})
	time.Sleep(300 * time.Millisecond)

	// The worker's connections, open before it claims.
	opt := *b.rdb.Options()
	opt.PoolSize, opt.MinIdleConns = 8, 4
	wrdb := redis.NewClient(&opt)
	defer wrdb.Close()
	var warm sync.WaitGroup
	for range 4 {
		warm.Add(1)
		go func() { defer warm.Done(); _ = wrdb.Ping(ctx).Err() }()
	}
	warm.Wait()

	id := "busy"
	rec := legacyRecord(t, b, id)
	require.NoError(t, b.rdb.ZAdd(ctx, b.key("jobs:pending"), redis.Z{Score: 5e16, Member: id}).Err())
	require.NoError(t, b.rdb.ZRem(ctx, b.key("jobs:pending"), id).Err())
	require.NoError(t, b.rdb.HSet(ctx, rec, "status", "assigned", "worker_id", "lw", "assigned_at", "1764457200.000001").Err())
	require.NoError(t, b.rdb.HSet(ctx, b.key("jobs:active:lw"), id, `{"id":"busy"}`).Err())

	// The stream: progress as fast as one connection writes it.
	streamDone := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 { // several connections, so that one's pause leaves no gap
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-streamDone:
					return
				default:
				}
				_ = wrdb.HSet(ctx, rec+":progress", "progress", n, "status", "in_progress").Err()
			}
		}()
	}
	start := time.Now()
	var seen time.Duration = -1
	for time.Since(start) < 2*time.Second {
		if seen < 0 && b.rdb.HGet(ctx, b.key("step:"+id), "status").Val() == "assigned" {
			seen = time.Since(start)
		}
		time.Sleep(20 * time.Millisecond)
	}
	close(streamDone)
	wg.Wait()
	require.ErrorIs(t, stop(), context.Canceled)
	require.True(t, seen >= 0 && seen < time.Second,
		"step:%s did not get the claim within 1s while its progress kept changing (seen after %v; -1: never during the 2s stream)", id, seen)
}

// TestFollowerHearsAgainAfterServerRestart
//
// Regression: after a restart the follower resubscribed and swept but never set notify-keyspace-events again, and stayed deaf.
//
// What is wrong: the follower turns keyspace notifications on once, in
// newFollower (CONFIG SET notify-keyspace-events, which only changes the
// running server and the node it is sent to). When its connection comes
// back after the server restarted, or after a Sentinel failover to a
// replica that never got the setting, it resubscribes and sweeps, but
// never checks or sets notify-keyspace-events again. From then on it
// receives no event at all; it still runs, still reports, and mirrors
// legacy writes only at the next sweep (10 minutes by default, never with
// Sweep < 0).
//
// Why it matters: the follower is what keeps step:* converged while the
// legacy services write; after an ordinary restart or failover it stops
// doing so, silently (no error, Events just stop growing).
//
// Steps: a redis-server of the test's own; publish dual-write; follower
// with Configure (Sweep -1). Restart the server (its configuration is the
// default again, notifications off), republish the stage, wait for the
// follower to resubscribe. A legacy HSET job:X should reach step:X within
// 3 s; it never does.
func TestFollowerHearsAgainAfterServerRestart(t *testing.T) {
	srv := startTestServer(t)
	b := srv.Backend(&redis.Options{DB: 3})
	b.prefix = "f:"
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	var mu sync.Mutex
	var last FollowStats
	_, stop := runFollower(t, newMigrator(t, b, StageDualWrite), FollowOptions{Configure: true, Sweep: -1,
		Report: func(st FollowStats) { mu.Lock(); last = st; mu.Unlock() }})
	time.Sleep(300 * time.Millisecond)
	followerSynced(t, b, func() string { legacyRecord(t, b, "before"); return "before" }())

	srv.Restart() // no persistence: the data and the CONFIG SET are gone
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{Force: true}))
	mu.Lock()
	restarts := last.Restarts
	mu.Unlock()
	require.Eventually(t, func() bool { mu.Lock(); defer mu.Unlock(); return last.Restarts > restarts },
		10*time.Second, 50*time.Millisecond, "the follower resubscribes")
	time.Sleep(200 * time.Millisecond) // its reconnection sweep

	legacyRecord(t, b, "after")
	ok := assertEventually(func() bool { return b.rdb.Exists(ctx, b.key("step:after")).Val() == 1 }, 3*time.Second)
	flags := b.rdb.ConfigGet(ctx, "notify-keyspace-events").Val()["notify-keyspace-events"]
	require.ErrorIs(t, stop(), context.Canceled)
	require.True(t, ok, "a legacy write after the restart was never mirrored; notify-keyspace-events is %q", flags)
}

// assertEventually polls cond until it holds or d passes.
func assertEventually(cond func() bool, d time.Duration) bool {
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return true
		}
	}
	return cond()
}

// TestFollowerMirrorsALateActiveHDEL
//
// Regression: a late HDEL on jobs:active:<w>, after neither record named <w>, was never mirrored: active-hash events were ignored and sweeps skipped the step side.
//
// What is wrong: the follower finds a job's entries in the active hashes
// only through the workers its two records name (worker_id,
// last_failed_worker), read when the sync runs. The legacy orphan
// recovery (detectAndFixOrphanedJobs, testdata/legacy_orphans.js) writes
// HMSET job:<id> status pending, worker_id empty (no last_failed_worker), then
// ZADD jobs:pending, then HDEL jobs:active:<w> <id>, each an awaited round
// trip. When the HDEL lands after the debounced sync (a slow network, a
// busy Node event loop: 20 ms is little), that sync has already copied the
// record, so neither record names <w> any more: the recheck does not look
// at steps:active:<w>, and neither does any sweep, which walks only the
// job side's active hashes (where the entry is gone). steps:active:<w>
// keeps the job forever.
//
// Why it matters: the step side says a dead worker holds a job that is
// pending; after the switch to step-primary, recovery of <w>'s hash moves
// it again (a spurious retry) or a reader sees it both pending and held.
// Only a Backfill or Verify --repair fixes it; the follower, whose job
// this is, never does.
//
// Steps: follower on in dual-write (Recheck 300 ms, Sweep 300 ms). A job
// claimed by lw through the legacy path is mirrored. The orphan recovery
// runs with 100 ms between its commands. After recheck and several sweeps,
// jobs:active:lw is gone but steps:active:lw still holds the job.
func TestFollowerMirrorsALateActiveHDEL(t *testing.T) {
	b := followerBackend(t)
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	_, stop := runFollower(t, newMigrator(t, b, StageDualWrite), FollowOptions{Configure: true,
		Recheck: 300 * time.Millisecond, Sweep: 300 * time.Millisecond})
	time.Sleep(300 * time.Millisecond)

	id := "orphaned"
	rec := legacyRecord(t, b, id)
	require.NoError(t, b.rdb.HSet(ctx, rec, "status", "assigned", "worker_id", "lw", "assigned_at", "1764457200.000001").Err())
	require.NoError(t, b.rdb.HSet(ctx, b.key("jobs:active:lw"), id, `{"id":"orphaned"}`).Err())
	require.Eventually(t, func() bool { return b.rdb.HExists(ctx, b.key("steps:active:lw"), id).Val() },
		3*time.Second, 20*time.Millisecond, "the claim is mirrored")
	time.Sleep(500 * time.Millisecond) // and rechecked

	// detectAndFixOrphanedJobs, first pass, for lw: its three writes.
	require.NoError(t, b.rdb.HSet(ctx, rec, "status", "pending", "worker_id", "", "assigned_at", "", "started_at", "").Err())
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, b.rdb.ZAdd(ctx, b.key("jobs:pending"), redis.Z{Score: 5e16, Member: id}).Err())
	time.Sleep(100 * time.Millisecond)
	require.NoError(t, b.rdb.HDel(ctx, b.key("jobs:active:lw"), id).Err())

	time.Sleep(1500 * time.Millisecond) // the recheck, and four sweeps
	require.ErrorIs(t, stop(), context.Canceled)
	require.Equal(t, b.rdb.HGetAll(ctx, rec).Val(), b.rdb.HGetAll(ctx, b.key("step:"+id)).Val())
	require.False(t, b.rdb.HExists(ctx, b.key("steps:active:lw"), id).Val(),
		"steps:active:lw still holds %s; jobs:active:lw does not (exists: %d)", id, b.rdb.Exists(ctx, b.key("jobs:active:lw")).Val())
}

// TestReviewVerifyMissesEmptyMember
//
// What is wrong: Verify's items use id "" to mean "the whole-key TTL of
// completed or failed" (vitem; readItem's case it.id == ""). A pending
// member or a completed/failed field whose name is the empty string is a
// real entry (ZADD jobs:pending 1 "", HSET jobs:completed "" ...): the
// first pass notes it as a suspect, but the rounds read it as a TTL item
// (PTTL of the two queue keys, equal), and the difference is dropped.
// Backfill copies such entries (validateID fails, so they are synced as
// entries without a record), so the two tools disagree on what exists.
//
// Why it matters: Verify must not report 0 differences while the
// namespaces differ ("every pending member and score, every field ...
// of completed and failed").
//
// Steps: a mirrored job; ZADD jobs:pending 1 "" and HSET jobs:completed
// "" x on the job side only. Verify reports 0 differences; it should
// report 2.
func TestVerifyFindsEntriesNamedEmpty(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		mirroredJob(t, b)
		require.NoError(t, b.rdb.ZAdd(ctx, b.key("jobs:pending"), redis.Z{Score: 1, Member: ""}).Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key("jobs:completed"), "", "x").Err())
		res := runVerify(t, newMigrator(t, b, StageDualWrite), quickVerify)
		require.EqualValues(t, 2, res.Differences, "steps:pending lacks \"\" and steps:completed lacks field \"\": %v", res.Diffs)
	})
}

// TestFollowerCountsNoRestartAtStart
//
// Regression: the second pattern's confirmation of the one PSUBSCRIBE was counted as a reconnection (Restarts 1, a second sweep at start).
//
// What is wrong: Follow subscribes to two patterns in one PSUBSCRIBE and
// reads only the first confirmation with ps.Receive; the second reaches
// the message loop as a *redis.Subscription, which the loop takes for a
// resubscription after a reconnection: Restarts is 1 on a follower that
// never lost its connection (and 2 per real reconnection), and a second
// full sweep starts at once after the start sweep.
//
// Why it matters: Restarts is how an operator sees that notifications
// were lost (writes went unseen until a sweep); it is wrong from the
// start. The extra sweep doubles the start-up load on a large keyspace.
//
// Steps: start a follower on an idle server, wait for a report: Restarts
// is 1 and Sweeps 2 (Sweep -1: only the start sweep should run).
func TestFollowerCountsNoRestartAtStart(t *testing.T) {
	b := followerBackend(t)
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	var mu sync.Mutex
	var last FollowStats
	_, stop := runFollower(t, newMigrator(t, b, StageDualWrite), FollowOptions{Configure: true, Sweep: -1,
		Report: func(st FollowStats) { mu.Lock(); last = st; mu.Unlock() }})
	time.Sleep(1300 * time.Millisecond)
	require.ErrorIs(t, stop(), context.Canceled)
	mu.Lock()
	defer mu.Unlock()
	require.Zero(t, last.Restarts, "no reconnection happened: %+v", last)
	require.EqualValues(t, 1, last.Sweeps, "only the start sweep: %+v", last)
}

// TestReviewWaitForStageIgnoresUnreadableCheckIns
//
// What is wrong: WaitForStage drops the unreadable count that Fleet
// returns and looks only at the check-ins it could decode. A process whose
// check-in it cannot read (another version's encoding, a stage name it
// does not know) has not reported the stage, yet WaitForStage returns nil
// at once; with only such processes, the fleet even counts as "silent".
//
// Why it matters: WaitForStage is what an operator (or stepmigrate) waits
// on before the next stage or a cleanup; "every process checked in
// reports st" is its contract, and a process it cannot read may be behind.
//
// Steps: one check-in with "stage": 2 (a number, not a name), live.
// WaitForStage(dual-read) returns nil immediately; it should wait until
// ctx ends and name the straggler (or fail).
func TestWaitForStageWaitsForUnreadableCheckIns(t *testing.T) {
	reviewBackends(t, func(t *testing.T, b *backend) {
		require.NoError(t, b.rdb.Set(ctx, b.key("jobstore:fleet:other-1"),
			`{"id":"other-1","host":"h","pid":1,"stage":1,"checked_at":"2026-11-28T12:00:00Z","interval_ns":5000000000}`,
			time.Minute).Err())
		m := newMigrator(t, b, StageDualWrite)
		_, unreadable, err := m.Fleet(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, unreadable)
		wctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		_, err = m.WaitForStage(wctx, StageDualRead, 10*time.Millisecond)
		require.Error(t, err, "WaitForStage returned while a checked-in process has not reported dual-read")
	})
}

// TestReviewCleanupRefusedForTrimmedJobs
//
// What is wrong: with WithRecordRetention, a job finished in step-only
// has its step:<id> record expire; the job side still holds the copy it
// had when step-only began (pending, in jobs:pending). Cleanup's
// verification then finds a record and an entry that "only job:* has"
// (recordDiff: the authoritative record is missing, so Blocking is always
// true; entryDiff: staleInOther needs an authoritative record) and refuses
// the cleanup of job:*. Every job in flight at the switch to step-only
// leaves such a stale copy, so with retention on, Cleanup can never pass
// its verification; the only way out is Force, which turns off the very
// check that protects real data (a straggler's job:* write).
//
// Why it matters: "a cleanup ... that is refused when it should not be":
// deleting job:<id> loses nothing here (the job completed in step-only,
// and retention removed it on purpose).
//
// Steps: a step-primary Store with WithRecordRetention(1s) submits a job
// (both namespaces); the Store moves to step-only, claims and completes
// it; 1 s later step:<id> has expired. Cleanup(job) in step-only is
// refused with ErrCleanupRefused.
func TestCleanupOfJobsTrimmedByRetention(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithStage(StageStepPrimary), WithRecordRetention(time.Second))
		caps := registerWorker(t, s, "w1", "comfyui")
		id, err := s.SubmitJob(ctx, Job{Service: "comfyui"})
		require.NoError(t, err)
		require.NoError(t, s.SetStage(StageStepOnly))
		j, err := s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.Equal(t, id, j.ID)
		require.NoError(t, s.CompleteJob(ctx, id, "w1", nil))
		if b.mr != nil {
			b.mr.FastForward(2 * time.Second)
		} else {
			time.Sleep(1200 * time.Millisecond)
		}
		require.Zero(t, b.rdb.Exists(ctx, b.key("step:"+id)).Val(), "retention removed step:%s", id)
		require.Equal(t, "pending", b.rdb.HGet(ctx, b.key("job:"+id), "status").Val(), "job:* holds the stale copy")

		res, err := newMigrator(t, b, StageStepOnly).Cleanup(ctx, JobNamespace, CleanupOptions{Verify: quickVerify})
		var diffs []Diff
		if res.Verify != nil {
			diffs = res.Verify.BlockingDiffs
		}
		require.NoError(t, err, "blocking: %v", diffs)
	})
}

// TestFollowerRetryKeepsSubKeys
//
// Regression: a failed or STAGE-bounced sync was rescheduled with only "progress", so other sub-keys it was to copy were never mirrored.
//
// What is wrong: when a sync fails (a network error, a timeout, an OOM
// refusal, a failover), syncBatch reschedules the job with
// f.mark(id, "", now, true): a fresh dirtyJob whose suffixes are only
// "progress". The sub-keys the failed sync was to copy (those named by
// the notifications, say job:<id>:result) are forgotten; the retry copies
// the record and progress, and the other sub-key is never mirrored (until
// a sweep, if any). The STAGE path (mark(id, "", now, false)) drops them
// the same way.
//
// Why it matters: a transient error turns into a silent, lasting
// difference that the follower reports as synced.
//
// Steps: a server of the test's own; follower on in dual-write with a
// 400 ms debounce, Sweep -1. A legacy write of job:X and job:X:result;
// before the debounce ends the server refuses writes (maxmemory 1,
// noeviction), then accepts them again. The retry syncs step:X, but
// step:X:result never appears.
func TestFollowerRetryKeepsSubKeys(t *testing.T) {
	b := followerBackend(t)
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	_, stop := runFollower(t, newMigrator(t, b, StageDualWrite), FollowOptions{Configure: true, Sweep: -1,
		Debounce: 400 * time.Millisecond, Recheck: 300 * time.Millisecond})
	time.Sleep(300 * time.Millisecond)

	id := "retried"
	rec := legacyRecord(t, b, id)
	require.NoError(t, b.rdb.HSet(ctx, rec+":result", "url", "s3://x").Err())
	require.NoError(t, b.rdb.ConfigSet(ctx, "maxmemory-policy", "noeviction").Err())
	require.NoError(t, b.rdb.ConfigSet(ctx, "maxmemory", "1").Err())
	time.Sleep(600 * time.Millisecond) // the debounced sync runs, and fails
	require.NoError(t, b.rdb.ConfigSet(ctx, "maxmemory", "0").Err())
	followerSynced(t, b, id) // the retry
	time.Sleep(800 * time.Millisecond)
	require.ErrorIs(t, stop(), context.Canceled)
	require.Equal(t, "hash", readKey(t, b.rdb, b.key("step:"+id+":result")).Type,
		"step:%s:result was never mirrored after the failed sync", id)
}

// TestReviewResumedBackfillSkipsWritesMadeWhileInterrupted
//
// What is wrong: a resumed Backfill continues the SCAN of the interrupted
// run from its saved cursor. SCAN only promises the keys present for the
// whole walk, and the walk now spans the interruption, however long (a
// crash on Friday, resumed on Monday): every record created or changed in
// the part of the keyspace already passed, while the run was stopped, is
// never looked at. The entries of such a job are then skipped (its records
// are not in sync), and the run ends, deletes its checkpoint and reports
// success (Resumed: true is the only trace). A fresh run would have copied
// them. The runbook says "Interrupted? Run it again: it resumes".
//
// Why it matters: the backfill is how legacy writes reach step:* when no
// follower runs; a resumed run leaves the step side with stale records
// and entries that say a claimed job is still pending (steps:pending),
// which a step-primary worker would claim and run again.
//
// Steps: two legacy jobs, A and B; a Backfill (batch 1) interrupted after
// its first record batch; a legacy worker claims the job handled in that
// batch, and the API submits C; the Backfill is run again (it resumes).
// The step side should equal the job side; the claimed job's step record
// is still pending and in steps:pending, and C may be missing.
func TestResumedBackfillSaysItWasPausedAndVerifyCatchesWhatItMissed(t *testing.T) {
	reviewBackends(t, func(t *testing.T, b *backend) {
		l := newLegacy(t, b)
		l.submit(50)
		l.submit(50)
		m := newMigrator(t, b, StageDualWrite)
		cctx, cancel := context.WithCancel(ctx)
		var first []string
		m.hooks = &migrateHooks{beforeBatch: func(phase string, items []string) {
			if phase == "records" && first == nil {
				first = items
			}
		}}
		_, err := m.Backfill(cctx, BackfillOptions{BatchSize: 1, Progress: func(p BackfillProgress) {
			if p.Phase == "records" {
				cancel()
			}
		}})
		require.ErrorIs(t, err, context.Canceled)
		require.Len(t, first, 1)
		done, _, ok := keyspace{prefix: b.prefix, ns: JobNamespace}.parseRecordKey(first[0])
		require.True(t, ok)
		require.Equal(t, "pending", b.rdb.HGet(ctx, b.key("step:"+done), "status").Val(), "copied before the interruption")

		// While the run is stopped: a legacy worker claims that job, the API submits another.
		l.claim(done, "lw")
		late := l.submit(60)

		// Like any pass, the resumed run covers what existed unchanged
		// throughout, its pause included: the claim behind its position
		// is not seen (dual-write and the follower carry such writes).
		// It says it resumed, and after what pause; Verify finds the
		// difference, and a run started over converges.
		m.hooks = nil
		res := runBackfill(t, m, BackfillOptions{})
		require.True(t, res.Resumed)
		require.Positive(t, res.Paused)
		v := runVerify(t, m, quickVerify)
		require.Positive(t, v.Differences, "Verify finds what the resumed run could not see")
		runBackfill(t, m, BackfillOptions{Restart: true})
		require.Equal(t, "assigned", b.rdb.HGet(ctx, b.key("step:"+done), "status").Val())
		require.Error(t, b.rdb.ZScore(ctx, b.key("steps:pending"), done).Err(), "%s is claimed: out of steps:pending", done)
		require.Equal(t, int64(1), b.rdb.Exists(ctx, b.key("step:"+late)).Val(), "step:%s copied", late)
		require.Zero(t, runVerify(t, m, quickVerify).Differences)
	})
}

// TestReviewCleanupIgnoresTheFleet
//
// What is wrong: Cleanup's stage check reads the published stage and the
// Migrator's own; when no stage is published (the report's rollout sets
// REDIS_DUAL_WRITE_STEPS=true in each service's environment and publishes
// nothing), only the Migrator's own setting counts. The fleet's check-ins
// (jobstore:fleet:*, written by every Store running FollowStage, which
// Migrator.Fleet lists) say which stage each process runs, and Cleanup
// does not look at them. An operator whose tool runs with a step-only
// setting deletes job:*, the namespace the whole fleet still treats as
// authoritative; the verification does not stop it, since in dual-write
// step:* is a faithful copy.
//
// Why it matters: the fleet loses its authoritative namespace (records,
// jobs:pending) while it is running in dual-write.
//
// Steps: a Store in dual-write (from its environment, nothing published)
// runs FollowStage, so it is checked in as dual-write, and submits a job.
// A Migrator in step-only runs Cleanup(job) with its verification. It
// should refuse with ErrNamespaceInUse; it deletes job:*.
func TestCleanupRefusedWhileTheFleetUsesTheNamespace(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithStage(StageDualWrite))
		fctx, stopFollow := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = s.FollowStage(fctx, 50*time.Millisecond) }()
		defer func() { stopFollow(); <-done }()
		id, err := s.SubmitJob(ctx, Job{Service: "comfyui"})
		require.NoError(t, err)

		m := newMigrator(t, b, StageStepOnly)
		require.Eventually(t, func() bool {
			procs, _, err := m.Fleet(ctx)
			return err == nil && len(procs) == 1 && procs[0].Stage == StageDualWrite
		}, 5*time.Second, 20*time.Millisecond, "the dual-write process is checked in")
		_, published, err := m.SharedStage(ctx)
		require.NoError(t, err)
		require.False(t, published)

		_, err = m.Cleanup(ctx, JobNamespace, CleanupOptions{Verify: quickVerify})
		require.ErrorIs(t, err, ErrNamespaceInUse, "a process checked in as dual-write still uses job:*")
		require.Equal(t, int64(1), b.rdb.Exists(ctx, b.key("job:"+id)).Val(), "job:%s, authoritative for the fleet, was deleted", id)
	})
}

// TestReviewPublishStageJumpsOverTheFleet
//
// What is wrong: with no stage published yet, PublishStage checks the
// one-stage rule against the Migrator's own stage, not against the stage
// the fleet runs, which the fleet's check-ins state. A fleet configured
// by environment (REDIS_DUAL_WRITE_STEPS=true, nothing published) runs
// dual-write; an operator tool whose own setting is step-primary may
// publish step-only without Force, and every process adopts it at its
// next write: dual-write to step-only in one move, job:* no longer
// written, with no backfill or verify of step:* in between.
//
// Why it matters: ErrStageJump exists to keep adjacent stages only; here
// three stages are jumped without Force.
//
// Steps: a dual-write Store runs FollowStage (checked in as dual-write);
// nothing is published; a Migrator in step-primary publishes step-only.
// It should fail with ErrStageJump; it succeeds, and the Store's next
// write runs in step-only.
func TestPublishStageKeepsTheOneStageRuleAgainstTheFleet(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithStage(StageDualWrite))
		fctx, stopFollow := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); _ = s.FollowStage(fctx, 50*time.Millisecond) }()
		defer func() { stopFollow(); <-done }()

		m := newMigrator(t, b, StageStepPrimary)
		require.Eventually(t, func() bool {
			procs, _, err := m.Fleet(ctx)
			return err == nil && len(procs) == 1 && procs[0].Stage == StageDualWrite
		}, 5*time.Second, 20*time.Millisecond, "the dual-write process is checked in")
		err := m.PublishStage(ctx, StageStepOnly, PublishOptions{})
		require.ErrorIs(t, err, ErrStageJump, "the fleet runs dual-write; step-only is three stages away")
	})
}
