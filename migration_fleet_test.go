package jobstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestMigrationMixedFleet takes a Redis from job:* to step:* and back and
// forward again, under load, with a mixed fleet: the legacy services'
// replay (an API submitting, legacy workers claiming with the real claim
// function, completing and failing) next to jobstore processes (an API and
// workers following the published stage), the follower mirroring what the
// legacy services write, a backfill interrupted and resumed, verifies, a
// reverse backfill, and the cleanup of job:* at the end. Then every job
// that either side submitted has ended exactly once (one completion, or
// one final failure, seen on the legacy channels), job:* is gone, and
// nothing was lost.
func TestMigrationMixedFleet(t *testing.T) {
	const script = "testdata/legacy_load.js"
	requireLegacy(t, script)
	srv := startTestServer(t)
	rdb := srv.Client(&redis.Options{DB: 2})
	legacy := startLegacy(t, script, "redis://"+srv.Addr()+"/2")
	require.Equal(t, "jobMatching", legacy.loadFunction("findMatchingJob.91d0fd0.lua"))
	f := newFleetRun(t, rdb, legacy)
	ends := f.watchEnds()

	f.startJobstore()
	f.startLegacy()
	f.run("legacy", 700*time.Millisecond)

	// Forward, with the legacy services running: dual-write, the follower,
	// and a backfill of what was written before, interrupted and resumed.
	f.publish(StageDualWrite)
	f.startFollower()
	f.run("dual-write", 300*time.Millisecond)
	f.backfillInterrupted(false)
	f.run("dual-write after the backfill", 500*time.Millisecond)
	f.stopLegacy()
	f.verifyConverges("dual-write, the legacy services gone")
	f.stopFollower()
	f.publish(StageDualRead)
	f.run("dual-read", 400*time.Millisecond)
	f.verifyZero("dual-read")
	f.publish(StageStepPrimary)
	f.run("step-primary", 400*time.Millisecond)
	f.publish(StageStepOnly)
	f.run("step-only", 400*time.Millisecond)

	// Back, one stage at a time, and the legacy services return in
	// dual-write.
	f.publish(StageStepPrimary)
	f.backfillInterrupted(true)
	f.verifyZero("step-primary after the reverse backfill")
	f.publish(StageDualRead)
	f.run("dual-read, back", 300*time.Millisecond)
	f.publish(StageDualWrite)
	f.verifyZero("dual-write, back")
	f.startFollower()
	f.startLegacy()
	f.run("dual-write with the legacy services again", 700*time.Millisecond)
	f.stopLegacy()
	f.verifyConverges("dual-write, the legacy services gone again")
	f.stopFollower()

	// Forward again, to the end: step-only, and job:* cleaned up.
	f.publish(StageDualRead)
	f.publish(StageStepPrimary)
	f.run("step-primary, again", 300*time.Millisecond)
	f.verifyZero("step-primary, again")
	f.publish(StageStepOnly)
	f.run("step-only, again", 300*time.Millisecond)
	res, err := f.m.Cleanup(ctx, JobNamespace, CleanupOptions{})
	require.NoError(t, err, "cleanup of job:* in step-only")
	t.Logf("cleanup deleted %d keys", res.Deleted)
	f.drain()

	// Every job ended exactly once, as the channels tell, and its record
	// (in step:*) says how.
	all := f.submitted()
	counts := ends.stop()
	require.NotEmpty(t, all)
	for id := range all {
		require.Equal(t, 1, counts[id], "job %s ended %d times", id, counts[id])
		st := rdb.HGet(ctx, "step:"+id, "status").Val()
		require.Contains(t, []string{"completed", "failed"}, st, "job %s", id)
	}
	for id, n := range counts {
		require.True(t, all[id], "an end of a job nobody submitted: %s (%d)", id, n)
	}
	stats, err := f.m.NamespaceStats(ctx, JobNamespace)
	require.NoError(t, err)
	require.Zero(t, stats.Records, "no job:* record is left")
	require.Zero(t, stats.SubKeys, "no job:* sub-key is left")
	t.Logf("%d jobs (%d submitted by the legacy API), %d jobstore claims; follower: %s",
		len(all), f.legacySubmitted(), f.jsClaims.Load(), f.followerSummary())
}

// fleetRun is the state of TestMigrationMixedFleet.
type fleetRun struct {
	t      *testing.T
	rdb    *redis.Client
	legacy *legacyNode
	m      *Migrator
	js     *Store

	stopJS   context.CancelFunc
	jsWG     sync.WaitGroup
	jsClaims atomic.Int64
	mu       sync.Mutex
	jsIDs    []string
	maybeIDs []string // submits whose call ended with the run: written or not
	legIDs   []string
	errs     []error

	stopFollow context.CancelFunc
	followWG   sync.WaitGroup
	followErr  error
	follows    []FollowStats
}

func newFleetRun(t *testing.T, rdb *redis.Client, legacy *legacyNode) *fleetRun {
	m, err := NewMigrator(rdb, WithStage(StageLegacy))
	require.NoError(t, err)
	js, err := New(rdb, WithStage(StageLegacy))
	require.NoError(t, err)
	return &fleetRun{t: t, rdb: rdb, legacy: legacy, m: m, js: js}
}

// fleetServices are the services both sides run.
var fleetServices = []string{"comfyui", "ollama"}

// startJobstore starts jobstore's side: an API submitting and three
// workers, on a Store that follows the published stage.
func (f *fleetRun) startJobstore() {
	ctx, cancel := context.WithCancel(ctx)
	f.stopJS = cancel
	f.jsWG.Go(func() { _ = f.js.FollowStage(ctx, 50*time.Millisecond) })
	f.jsWG.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			// Ids of the test's own, so that a submit cut short by the end
			// of the run (which may have been written all the same) is
			// still known.
			id := fmt.Sprintf("go-%d-%x", i, rand.Uint32())
			_, err := f.js.SubmitJob(ctx, Job{ID: id, Service: fleetServices[i%2], Priority: 40 + i%3*10,
				MaxRetries: 2, Payload: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))})
			if err != nil && ctx.Err() == nil {
				f.fail(fmt.Errorf("jobstore submit: %w", err))
				return
			}
			f.mu.Lock()
			if err == nil {
				f.jsIDs = append(f.jsIDs, id)
			} else {
				f.maybeIDs = append(f.maybeIDs, id)
			}
			f.mu.Unlock()
			time.Sleep(15 * time.Millisecond)
		}
	})
	for w := range 3 {
		caps := Capabilities{WorkerID: fmt.Sprint("go-", w), Services: fleetServices}
		require.NoError(f.t, f.js.RegisterWorker(ctx, caps))
		f.jsWG.Go(func() { f.jsWorker(ctx, caps, rand.New(rand.NewPCG(uint64(w), 3))) })
	}
}

// jsWorker claims and completes, or fails with a retry, until ctx ends;
// a job in hand is finished first.
func (f *fleetRun) jsWorker(ctx context.Context, caps Capabilities, r *rand.Rand) {
	for ctx.Err() == nil {
		if f.jsCycle(context.WithoutCancel(ctx), caps, r) == ErrNoJob {
			time.Sleep(3 * time.Millisecond)
		}
	}
}

// jsCycle claims one job and finishes it; it returns ErrNoJob when none
// was there.
func (f *fleetRun) jsCycle(ctx context.Context, caps Capabilities, r *rand.Rand) error {
	j, err := f.js.ClaimJob(ctx, caps)
	if errors.Is(err, ErrNoJob) {
		return ErrNoJob
	}
	if err != nil {
		f.fail(fmt.Errorf("jobstore claim: %w", err))
		return err
	}
	f.jsClaims.Add(1)
	if err := f.js.StartJob(ctx, j.ID, caps.WorkerID); err != nil {
		f.fail(fmt.Errorf("jobstore start %s: %w", j.ID, err))
	}
	if r.IntN(7) == 0 {
		_, err = f.js.FailJob(ctx, j.ID, caps.WorkerID, "jobstore failure", true)
	} else {
		err = f.js.CompleteJob(ctx, j.ID, caps.WorkerID, json.RawMessage(`{"ok":true}`))
	}
	if err != nil {
		f.fail(fmt.Errorf("jobstore finish %s: %w", j.ID, err))
	}
	return nil
}

func (f *fleetRun) fail(err error) {
	f.mu.Lock()
	f.errs = append(f.errs, err)
	f.mu.Unlock()
}

// startLegacy starts the legacy services' load: an API and three workers.
func (f *fleetRun) startLegacy() {
	var workers []Capabilities
	for w := range 3 {
		workers = append(workers, Capabilities{WorkerID: fmt.Sprint("ts-", w), Services: fleetServices})
	}
	f.legacy.do(nil, "startLoad", map[string]any{"submitRate": 60, "svcShare": 0.2, "services": fleetServices,
		"priorities": []int{40, 50, 60}, "workers": workers, "failShare": 0.15, "workMs": 2, "heartbeatMs": 300})
}

// stopLegacy stops the legacy load: its workers finish their jobs in hand
// and disconnect (their heartbeats go).
func (f *fleetRun) stopLegacy() {
	var st struct {
		IDs        []string `json:"ids"`
		Writes     int      `json:"writes"`
		Seconds    float64  `json:"seconds"`
		ErrorCount int      `json:"error_count"`
		Errors     []string `json:"errors"`
	}
	f.legacy.do(&st, "stopLoad")
	require.Zero(f.t, st.ErrorCount, "legacy errors: %v", st.Errors)
	f.mu.Lock()
	f.legIDs = append(f.legIDs, st.IDs...)
	f.mu.Unlock()
	f.t.Logf("legacy load: %d jobs submitted, %d writes in %.1fs (%.0f/s)", len(st.IDs), st.Writes, st.Seconds,
		float64(st.Writes)/st.Seconds)
}

// run lets the fleet work for d, then checks no jobstore call failed.
func (f *fleetRun) run(stage string, d time.Duration) {
	f.t.Helper()
	time.Sleep(d)
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Empty(f.t, f.errs, "in %s", stage)
}

// publish publishes a stage, as the operator does, and waits for the
// jobstore process to report it.
func (f *fleetRun) publish(st Stage) {
	f.t.Helper()
	opts := PublishOptions{}
	if st >= StageDualRead {
		// The follower mirrored the last legacy write moments ago: the
		// gate waits for a quiet window, here a short one.
		opts.LegacyWindow = 200 * time.Millisecond
		require.Eventually(f.t, func() bool {
			ev, err := f.m.LegacyEvidence(ctx)
			return err == nil && !ev.Alive(time.Now(), opts.LegacyWindow)
		}, 10*time.Second, 20*time.Millisecond, "legacy processes gone before %s", st)
	}
	require.NoError(f.t, f.m.PublishStage(ctx, st, opts), "publish %s", st)
	require.Eventually(f.t, func() bool { return f.js.Stage() == st }, 5*time.Second, 5*time.Millisecond)
	// As stage set --wait: every live process has checked in with it, so
	// that the next move is one stage from each of them.
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	left, err := f.m.WaitForStage(wctx, st, 20*time.Millisecond)
	require.NoError(f.t, err, "fleet at %s; stragglers %v", st, left)
}

// startFollower starts the follower; stopFollower stops it and keeps its
// last counters.
func (f *fleetRun) startFollower() {
	ctx, cancel := context.WithCancel(ctx)
	f.stopFollow = cancel
	f.followWG.Go(func() {
		f.followErr = f.m.Follow(ctx, FollowOptions{Configure: true, Recheck: 300 * time.Millisecond, Sweep: -1,
			Report: func(st FollowStats) {
				f.mu.Lock()
				f.follows = append(f.follows, st)
				f.mu.Unlock()
			}})
	})
}

func (f *fleetRun) stopFollower() {
	f.stopFollow()
	f.followWG.Wait()
	require.ErrorIs(f.t, f.followErr, context.Canceled)
}

func (f *fleetRun) followerSummary() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.follows) == 0 {
		return "no report"
	}
	st := f.follows[len(f.follows)-1]
	return fmt.Sprintf("%d events, %d syncs, %d legacy writes mirrored, lag p50 %v p99 %v", st.Events, st.Synced,
		st.Changed, st.LagP50, st.LagP99)
}

// backfillInterrupted runs a backfill (reverse: step:* to job:*), stops it
// after its first progress report, then runs it again: the second run
// resumes from the checkpoint.
func (f *fleetRun) backfillInterrupted(reverse bool) {
	f.t.Helper()
	bctx, cancel := context.WithCancel(ctx)
	_, err := f.m.Backfill(bctx, BackfillOptions{Reverse: reverse, BatchSize: 20,
		Progress: func(BackfillProgress) { cancel() }})
	cancel()
	if err != nil {
		require.ErrorIs(f.t, err, context.Canceled)
	}
	res, err := f.m.Backfill(ctx, BackfillOptions{Reverse: reverse, BatchSize: 200})
	require.NoError(f.t, err)
	f.t.Logf("backfill (reverse %v) resumed: %+v", reverse, res)
}

// verifyZero requires a verify with no difference, with the jobstore
// fleet at work (its rounds re-check writes in flight).
func (f *fleetRun) verifyZero(stage string) {
	f.t.Helper()
	res, err := f.m.Verify(ctx, VerifyOptions{Rounds: 5})
	require.NoError(f.t, err)
	require.Zero(f.t, res.Differences, "%s: %v", stage, res.Diffs)
}

// verifyConverges waits, after the legacy load stopped, for the follower to
// have mirrored everything: a verify with no difference.
func (f *fleetRun) verifyConverges(stage string) {
	f.t.Helper()
	start := time.Now()
	var last VerifyResult
	for time.Since(start) < 15*time.Second {
		res, err := f.m.Verify(ctx, VerifyOptions{Rounds: 3})
		require.NoError(f.t, err)
		if res.Differences == 0 {
			f.t.Logf("%s: verify found 0 differences %v after the legacy load stopped", stage, time.Since(start).Round(time.Millisecond))
			return
		}
		last = res
		time.Sleep(100 * time.Millisecond)
	}
	f.t.Fatalf("%s: the namespaces did not converge: %v", stage, last.Diffs)
}

// drain stops the jobstore API and lets its workers finish every job
// left, then stops them.
func (f *fleetRun) drain() {
	f.t.Helper()
	f.stopJS()
	f.jsWG.Wait()
	caps := Capabilities{WorkerID: "drain", Services: fleetServices}
	require.NoError(f.t, f.js.RegisterWorker(ctx, caps))
	r := rand.New(rand.NewPCG(9, 9))
	for {
		err := f.jsCycle(ctx, caps, r)
		if err == ErrNoJob {
			q, err := f.js.QueueSizesIn(ctx, StepNamespace)
			require.NoError(f.t, err)
			if q.Pending == 0 && q.Active == 0 {
				break
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Empty(f.t, f.errs)
}

func (f *fleetRun) submitted() map[string]bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	all := map[string]bool{}
	for _, id := range f.jsIDs {
		all[id] = true
	}
	for _, id := range f.legIDs {
		all[id] = true
	}
	for _, id := range f.maybeIDs {
		if f.rdb.Exists(ctx, "step:"+id).Val() == 1 {
			all[id] = true
		}
	}
	return all
}

func (f *fleetRun) legacySubmitted() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.legIDs)
}

// endWatcher counts the ends of jobs the legacy channels announce: each
// complete_job, and each job_failed of a failure that is final (the legacy
// worker's carries status failed; jobstore's says will_retry false).
type endWatcher struct {
	sub    *redis.PubSub
	done   chan struct{}
	counts map[string]int
}

func (f *fleetRun) watchEnds() *endWatcher {
	sub := f.rdb.Subscribe(ctx, chCompleteJob, chJobFailed)
	_, err := sub.Receive(ctx)
	require.NoError(f.t, err)
	w := &endWatcher{sub: sub, done: make(chan struct{}), counts: map[string]int{}}
	go func() {
		defer close(w.done)
		for m := range sub.Channel(redis.WithChannelSize(100000)) {
			var e struct {
				JobID     string `json:"job_id"`
				Status    string `json:"status"`
				WillRetry *bool  `json:"will_retry"`
			}
			if json.Unmarshal([]byte(m.Payload), &e) != nil {
				continue
			}
			final := m.Channel == chCompleteJob || e.Status == "failed" || (e.WillRetry != nil && !*e.WillRetry)
			if final {
				w.counts[e.JobID]++
			}
		}
	}()
	t := f.t
	t.Cleanup(func() { _ = sub.Close() })
	return w
}

// stop ends the watch, after the messages published so far have arrived,
// and returns the counts.
func (w *endWatcher) stop() map[string]int {
	time.Sleep(300 * time.Millisecond)
	_ = w.sub.Close()
	<-w.done
	return w.counts
}
