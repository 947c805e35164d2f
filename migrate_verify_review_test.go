package jobstore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var inFlightOpts = VerifyOptions{Rounds: 3, Delay: 20 * time.Millisecond, InFlightWait: 300 * time.Millisecond}

// A writer that follows each write but leaves a permanent difference
// (step:<id>:progress lacks a field job:<id>:progress has): both sides
// change every round, yet the step copy never equals a state of the job
// side, so it is reported, not counted in flight.
func TestInFlightNeverHidesAPartialCopy(t *testing.T) {
	b := serverBackend(t)
	id := mirroredJob(t, b)
	require.NoError(t, b.rdb.HSet(ctx, b.key("job:"+id+":progress"), "eta", "5m").Err())
	stop := streamWrites(t, b, id, true)
	defer stop()
	time.Sleep(20 * time.Millisecond)
	res := runVerify(t, newMigrator(t, b, StageDualWrite), inFlightOpts)
	t.Logf("differences %d in flight %d %v", res.Differences, res.InFlight, res.InFlightItems)
	require.EqualValues(t, 1, res.Differences, "step:%s:progress never has eta: a real difference", id)
}

// The follower mirrors once during the rounds, then dies while the legacy
// side keeps writing: nothing catches up any more, so it is reported.
func TestInFlightNeverHidesAFollowerThatStopped(t *testing.T) {
	b := serverBackend(t)
	id := mirroredJob(t, b)
	stop := streamWrites(t, b, id, false)
	defer stop()
	time.Sleep(10 * time.Millisecond)
	// the follower's last mirror, during round 1
	time.AfterFunc(25*time.Millisecond, func() {
		_ = b.rdb.HSet(ctx, b.key("step:"+id+":progress"), "progress", "1").Err()
	})
	res := runVerify(t, newMigrator(t, b, StageDualWrite), inFlightOpts)
	t.Logf("differences %d in flight %d %v", res.Differences, res.InFlight, res.InFlightItems)
	require.EqualValues(t, 1, res.Differences, "nothing follows the writes for 300 ms+: drift")
}

// step-primary verify (authoritative step). A step-primary Store
// writes step:<id> and mirrors to job:<id> (both move); a legacy service
// that was not stopped wrote job:<id> fresher fields only there. The
// item is in flight, Differences 0, though the job-only write is lost at
// step-only/cleanup.
func TestInFlightNeverAppliesWithStepAuthoritative(t *testing.T) {
	b := serverBackend(t)
	id := mirroredJob(t, b)
	require.NoError(t, b.rdb.HSet(ctx, b.key("job:"+id), "retry_count", "1", "status", "failed").Err())
	stop := rewriteBothRecords(b, id)
	defer stop()
	time.Sleep(20 * time.Millisecond)
	res := runVerify(t, newMigrator(t, b, StageStepPrimary), inFlightOpts)
	t.Logf("differences %d in flight %v", res.Differences, res.InFlightItems)
	require.EqualValues(t, 1, res.Blocking, "job:%s is fresher than step:%s", id, id)
}

// Cleanup of job:* in step-only: job:<id> holds a fresher record
// (retry_count 1 against 0) from a straggler that still writes job:*,
// while step-only workers rewrite step:<id>. Both move, and the cleanup
// must still refuse: its verification counts nothing in flight.
func TestCleanupRefusesAChangingFresherCopy(t *testing.T) {
	b := serverBackend(t)
	id := mirroredJob(t, b)
	require.NoError(t, b.rdb.HSet(ctx, b.key("job:"+id), "retry_count", "1", "status", "failed").Err())
	m := newMigrator(t, b, StageStepOnly)
	// Without writes, cleanup refuses:
	_, err := m.Cleanup(ctx, JobNamespace, CleanupOptions{Verify: inFlightOpts, DryRun: true})
	require.ErrorIs(t, err, ErrCleanupRefused)

	stop := rewriteBothRecords(b, id)
	defer stop()
	time.Sleep(20 * time.Millisecond)
	res, err := m.Cleanup(ctx, JobNamespace, CleanupOptions{Verify: inFlightOpts})
	t.Logf("verify %+v in flight %v; job:%s after cleanup: %v", res.Verify.BlockingDiffs, res.Verify.InFlightItems, id,
		b.rdb.HGetAll(ctx, b.key("job:"+id)).Val())
	require.ErrorIs(t, err, ErrCleanupRefused, "job:%s is fresher than step:%s and would be lost", id, id)
}

// rewriteBothRecords writes a field of step:<id> and then of job:<id>
// every 5 ms, as a step-primary Store and its mirror, or a straggler
// beside step-only workers, would, until the returned stop is called.
func rewriteBothRecords(b *backend, id string) (stop func()) {
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; sctx.Err() == nil; i++ {
			_ = b.rdb.HSet(sctx, b.key("step:"+id), "hb", fmt.Sprint(i)).Err()
			_ = b.rdb.HSet(sctx, b.key("job:"+id), "hb", fmt.Sprint(i)).Err()
			time.Sleep(5 * time.Millisecond)
		}
	})
	return func() { cancel(); wg.Wait() }
}
