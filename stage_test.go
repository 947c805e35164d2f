package jobstore

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestWritesFollowThePublishedStage is the start-up case a new user hit:
// a service created with New(rdb) (legacy from its environment), never
// polling, against a Redis whose published stage is step-only. Its first
// submit must land in step:* only, not job:*; a published step-primary
// makes it write step:* first and mirror to job:*.
func TestWritesFollowThePublishedStage(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		m := newMigrator(t, b, StageLegacy)
		for _, st := range []Stage{StageDualWrite, StageDualRead, StageStepPrimary, StageStepOnly} {
			require.NoError(t, m.PublishStage(ctx, st, PublishOptions{}))
		}
		s := newStore(t, b) // WithDualWrite(false): legacy
		id, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		require.Equal(t, StageStepOnly, s.Stage(), "the store adopted the published stage")
		require.Zero(t, b.rdb.Exists(ctx, b.key("job:"+id)).Val(), "nothing under job:*")
		require.Equal(t, int64(1), b.rdb.Exists(ctx, b.key("step:"+id)).Val())
		require.Zero(t, b.rdb.Exists(ctx, b.key("jobs:pending")).Val())

		require.NoError(t, m.PublishStage(ctx, StageStepPrimary, PublishOptions{}))
		caps := registerWorker(t, s, "w", "s")
		j, err := s.ClaimJob(ctx, caps)
		require.NoError(t, err, "the claim reads steps:pending")
		require.Equal(t, id, j.ID)
		require.Equal(t, StageStepPrimary, s.Stage())
		require.NoError(t, s.CompleteJob(ctx, id, "w", nil))
		require.Equal(t, "completed", b.rdb.HGet(ctx, b.key("job:"+id), "status").Val(), "mirrored to job:*")
	})
}

// TestPublishStageCase: a shared stage stored with another case or
// spaces (by hand, or another tool) reads as the same stage, so a
// one-stage move from it is allowed, and writes accept it.
func TestPublishStageCase(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		require.NoError(t, b.rdb.HSet(ctx, b.key("jobstore:stage"), "stage", " Dual-Write ").Err())
		m := newMigrator(t, b, StageLegacy)
		st, ok, err := m.SharedStage(ctx)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, StageDualWrite, st)
		s := newStore(t, b)
		_, err = s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		require.Equal(t, StageDualWrite, s.Stage())
		require.NoError(t, m.PublishStage(ctx, StageDualRead, PublishOptions{}), "one stage on from Dual-Write")
	})
}

// TestFleet: processes running FollowStage check in with their stage;
// WaitForStage returns once all report the published one, and names the
// stragglers when it gives up; a process that stops checks out.
func TestFleet(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		m := newMigrator(t, b, StageLegacy)
		procs, _, err := m.Fleet(ctx)
		require.NoError(t, err)
		require.Empty(t, procs)
		a, c := newStore(t, b), newStore(t, b)
		runCtx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for _, s := range []*Store{a, c} {
			wg.Add(1)
			go func() { defer wg.Done(); _ = s.FollowStage(runCtx, 20*time.Millisecond) }()
		}
		require.Eventually(t, func() bool {
			procs, _, err := m.Fleet(ctx)
			return err == nil && len(procs) == 2
		}, 5*time.Second, 10*time.Millisecond)
		procs, _, err = m.Fleet(ctx)
		require.NoError(t, err)
		require.Equal(t, StageLegacy, procs[0].Stage)
		require.Equal(t, Version, procs[0].Version)

		require.NoError(t, m.PublishStage(ctx, StageDualWrite, PublishOptions{}))
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		behind, err := m.WaitForStage(wctx, StageDualWrite, 10*time.Millisecond)
		cancel()
		require.NoError(t, err)
		require.Empty(t, behind)

		// A process that no longer follows is a straggler until it expires.
		stop()
		wg.Wait()
		procs, _, err = m.Fleet(ctx)
		require.NoError(t, err)
		require.Empty(t, procs, "stopped processes check out")
		require.NoError(t, a.checkIn(ctx, time.Minute)) // as if it had died after checking in
		require.NoError(t, m.PublishStage(ctx, StageDualRead, PublishOptions{}))
		wctx, cancel = context.WithTimeout(ctx, 100*time.Millisecond)
		behind, err = m.WaitForStage(wctx, StageDualRead, 10*time.Millisecond)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
		require.Len(t, behind, 1)
		require.Equal(t, a.process, behind[0].ID)
	})
}

// TestLegacyGate: dual-read and later are refused while a legacy worker's
// heartbeat lives or a follower mirrored a legacy write recently; the
// refusal names the evidence; Force overrides; jobstore workers do not
// count.
func TestLegacyGate(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		m := newMigrator(t, b, StageLegacy)
		s := newStore(t, b)
		registerWorker(t, s, "go-1", "s") // a jobstore worker: no evidence
		require.NoError(t, b.rdb.Set(ctx, b.key("worker:ts-1:heartbeat"), "now", time.Minute).Err())
		require.NoError(t, m.PublishStage(ctx, StageDualWrite, PublishOptions{}), "dual-write is safe with legacy processes")
		err := m.PublishStage(ctx, StageDualRead, PublishOptions{})
		require.ErrorIs(t, err, ErrLegacyAlive)
		require.ErrorContains(t, err, "legacy worker heartbeat of ts-1")
		require.NotContains(t, err.Error(), "go-1")
		st, _, err := m.SharedStage(ctx)
		require.NoError(t, err)
		require.Equal(t, StageDualWrite, st, "nothing published")

		require.NoError(t, b.rdb.Del(ctx, b.key("worker:ts-1:heartbeat")).Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key("jobstore:follower"), "last_legacy_write_ms", b.clock.Now().Add(-10*time.Second).UnixMilli()).Err())
		err = m.PublishStage(ctx, StageDualRead, PublishOptions{})
		require.ErrorIs(t, err, ErrLegacyAlive)
		require.ErrorContains(t, err, "a legacy write mirrored by the follower at")
		require.NoError(t, m.PublishStage(ctx, StageDualRead, PublishOptions{LegacyWindow: 5 * time.Second}), "older than the window")
		require.NoError(t, m.PublishStage(ctx, StageDualWrite, PublishOptions{}), "moving back is never gated")
		require.NoError(t, b.rdb.Set(ctx, b.key("worker:ts-2:heartbeat"), "now", time.Minute).Err())
		require.NoError(t, m.PublishStage(ctx, StageDualRead, PublishOptions{Force: true}))
	})
}

// TestAwaitStageCountsQueuedWrites: a write waiting for the pipeline
// counts under its stage until its reply is in, even when its caller's
// context ended first (an earlier version counted it under no stage, and
// AwaitStage returned while it was still to be written under the old
// stage).
func TestAwaitStageCountsQueuedWrites(t *testing.T) {
	via, p, direct := proxiedBackend(t, nil)
	s := newStore(t, via)
	_, err := s.SubmitJob(ctx, Job{Service: "s"}) // a connection
	require.NoError(t, err)
	p.SetDelay(300 * time.Millisecond)
	var wg sync.WaitGroup
	for range 3 { // two batches in flight, then one that queues
		wg.Add(1)
		go func() { defer wg.Done(); _, _ = s.SubmitJob(ctx, Job{Service: "s"}) }()
	}
	time.Sleep(20 * time.Millisecond)
	// A caller whose context ends while its write waits in the queue (one
	// whose context had ended before the call sends nothing at all).
	gone, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	_, err = s.SubmitJob(gone, Job{Service: "s"})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	ended, cancelEnded := context.WithCancel(ctx)
	cancelEnded()
	_, err = s.SubmitJob(ended, Job{Service: "s"})
	require.ErrorIs(t, err, context.Canceled)
	require.NoError(t, s.SetDualWrite(true))
	short, cancel2 := context.WithTimeout(ctx, 100*time.Millisecond)
	require.ErrorIs(t, s.AwaitStage(short), context.DeadlineExceeded, "legacy writes are still in flight")
	cancel2()
	require.NoError(t, s.AwaitStage(ctx))
	wg.Wait()
	p.Heal()
	n, err := direct.rdb.ZCard(ctx, direct.key("jobs:pending")).Result()
	require.NoError(t, err)
	require.EqualValues(t, 5, n, "the cancelled caller's job was written all the same")
	requireNoKeys(t, direct, "step*")
}
