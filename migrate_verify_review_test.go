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

// a follower that mirrors each write but leaves a permanent
// difference (here: step:<id>:progress lacks a field job:<id>:progress
// has). Both sides change every round, so the item is "in flight" and
// Verify passes, though the step copy is permanently wrong.
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

// the follower mirrors once during the rounds, then dies; the
// legacy side keeps writing. "followed" is sticky, so the item is counted
// in flight although nothing follows any more.
func TestInFlightNeverHidesAFollowerThatStopped(t *testing.T) {
	b := serverBackend(t)
	id := mirroredJob(t, b)
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; sctx.Err() == nil; i++ {
			_ = b.rdb.HSet(sctx, b.key("job:"+id+":progress"), "progress", fmt.Sprint(i)).Err()
			time.Sleep(5 * time.Millisecond)
		}
	})
	defer func() { cancel(); wg.Wait() }()
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
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; sctx.Err() == nil; i++ {
			_ = b.rdb.HSet(sctx, b.key("step:"+id), "hb", fmt.Sprint(i)).Err()
			_ = b.rdb.HSet(sctx, b.key("job:"+id), "hb", fmt.Sprint(i)).Err()
			time.Sleep(5 * time.Millisecond)
		}
	})
	defer func() { cancel(); wg.Wait() }()
	time.Sleep(20 * time.Millisecond)
	res := runVerify(t, newMigrator(t, b, StageStepPrimary), inFlightOpts)
	t.Logf("differences %d in flight %v", res.Differences, res.InFlightItems)
	require.EqualValues(t, 1, res.Blocking, "job:%s is fresher than step:%s", id, id)
}

// cleanup of job:* in step-only. job:<id> holds a fresher record
// (retry_count 1 vs 0) written by a straggler that still writes job:*;
// step:<id> is rewritten by step-only workers. Both move: in flight, not
// blocking, and Cleanup deletes the fresher job:<id>.
func TestCleanupRefusesAChangingFresherCopy(t *testing.T) {
	b := serverBackend(t)
	id := mirroredJob(t, b)
	require.NoError(t, b.rdb.HSet(ctx, b.key("job:"+id), "retry_count", "1", "status", "failed").Err())
	m := newMigrator(t, b, StageStepOnly)
	// Without writes, cleanup refuses:
	_, err := m.Cleanup(ctx, JobNamespace, CleanupOptions{Verify: inFlightOpts, DryRun: true})
	require.ErrorIs(t, err, ErrCleanupRefused)

	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; sctx.Err() == nil; i++ {
			_ = b.rdb.HSet(sctx, b.key("step:"+id), "hb", fmt.Sprint(i)).Err()
			_ = b.rdb.HSet(sctx, b.key("job:"+id), "hb", fmt.Sprint(i)).Err()
			time.Sleep(5 * time.Millisecond)
		}
	})
	defer func() { cancel(); wg.Wait() }()
	time.Sleep(20 * time.Millisecond)
	res, err := m.Cleanup(ctx, JobNamespace, CleanupOptions{Verify: inFlightOpts})
	t.Logf("verify %+v in flight %v; job:%s after cleanup: %v", res.Verify.BlockingDiffs, res.Verify.InFlightItems, id,
		b.rdb.HGetAll(ctx, b.key("job:"+id)).Val())
	require.ErrorIs(t, err, ErrCleanupRefused, "job:%s is fresher than step:%s and would be lost", id, id)
}
