package jobstore

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// in dual-read, GetPendingJobs on an empty queue counts a read
// fallback on every call, although nothing was answered from job:*.
// An empty sorted set does not exist in Redis, so "steps:pending does
// not exist" is not evidence that the step side lacks anything.
func TestDualReadEmptyQueueIsNoFallback(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithStage(StageDualWrite))
		require.NoError(t, s.SetStage(StageDualRead))
		for range 5 {
			jobs, err := s.GetPendingJobs(ctx, 10)
			require.NoError(t, err)
			require.Empty(t, jobs)
		}
		require.Zero(t, s.ReadStats().Fallbacks,
			"nothing was read from job:*, both queues are empty; fallbacks must not grow")
	})
}

// shadow reads compare a record read in one round trip with its
// copy read in a later one; a write that lands in between (dual-written
// atomically, so both sides always agree) is counted as a mismatch.
func TestShadowReadsIgnoreWritesInFlight(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true), WithShadowReads(1))
		id, err := s.SubmitJob(ctx, Job{Service: "s", MaxRetries: 1000})
		require.NoError(t, err)
		caps := registerWorker(t, s, "w", "s")
		for range 20 { // quiescent: the copy is exact, no mismatch
			_, err := s.GetJob(ctx, id)
			require.NoError(t, err)
		}
		require.Zero(t, s.ReadStats().ShadowMismatches)
		var stop atomic.Bool
		var wg sync.WaitGroup
		wg.Go(func() {
			for !stop.Load() {
				if _, err := s.ClaimJob(ctx, caps); err != nil {
					continue
				}
				_, _ = s.FailJob(ctx, id, "w", "again", true)
			}
		})
		deadline := time.Now().Add(2 * time.Second)
		for time.Now().Before(deadline) && s.ReadStats().ShadowMismatches == 0 {
			_, err := s.GetJob(ctx, id)
			require.NoError(t, err)
		}
		stop.Store(true)
		wg.Wait()
		requireMirrored(t, b) // the namespaces never differed
		rs := s.ReadStats()
		t.Logf("reads=%d shadow checks=%d mismatches=%d", rs.Reads, rs.ShadowChecks, rs.ShadowMismatches)
		require.Zero(t, rs.ShadowMismatches, "every mismatch counted is a write in flight, not drift")
	})
}

// in dual-read, a record answered by the fallback (read from job:*)
// is "shadow checked" against job:* again: it always matches, so a
// missing step record counts as a successful shadow check.
func TestShadowReadsSkipFallbackAnswers(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithStage(StageLegacy), WithShadowReads(1))
		id, err := s.SubmitJob(ctx, Job{Service: "s"}) // job:* only
		require.NoError(t, err)
		require.NoError(t, s.SetStage(StageDualWrite))
		require.NoError(t, s.SetStage(StageDualRead))
		_, err = s.GetJob(ctx, id)
		require.NoError(t, err)
		rs := s.ReadStats()
		require.EqualValues(t, 1, rs.Fallbacks)
		require.False(t, rs.ShadowChecks == 1 && rs.ShadowMismatches == 0,
			"a job the step side lacks must not pass as a matching shadow check")
	})
}

// Once a stage is published, PublishStage must still check the stages
// the live fleet checks in with: two "adjacent" publishes in a row would
// otherwise move a process that has not polled yet from dual-write to
// step-primary, and on to step-only, whose jobs it cannot read (its plain
// reads go to job:*).
func TestPublishStageChecksTheLiveFleet(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		m := newMigrator(t, b, StageLegacy)
		require.NoError(t, m.PublishStage(ctx, StageDualWrite, PublishOptions{}))
		a := newStore(t, b, WithStage(StageDualWrite))
		require.NoError(t, a.checkIn(ctx, time.Minute)) // live, follows every minute
		require.NoError(t, m.PublishStage(ctx, StageDualRead, PublishOptions{}))
		err := m.PublishStage(ctx, StageStepPrimary, PublishOptions{})
		require.ErrorIs(t, err, ErrStageJump, "a live process runs dual-write, two stages from step-primary")
		require.ErrorContains(t, err, "a live process of the fleet still runs dual-write")
		st, _, err := m.s.sharedStage(ctx)
		require.NoError(t, err)
		require.Equal(t, StageDualRead, st, "nothing published")

		// Once it has taken the published stage, the next one is fine;
		// and force passes over a straggler.
		require.NoError(t, a.SetStage(StageDualRead))
		require.NoError(t, a.checkIn(ctx, time.Minute))
		require.NoError(t, m.PublishStage(ctx, StageStepPrimary, PublishOptions{}))
		require.NoError(t, m.PublishStage(ctx, StageStepOnly, PublishOptions{Force: true}))
	})
}

// in dual-read, job:* is authoritative and step:* only its mirror,
// yet a step record of the wrong type fails the read instead of falling
// back to the authoritative record.
func TestDualReadFallsBackOverACorruptMirror(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithStage(StageLegacy))
		id, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		require.NoError(t, b.rdb.Set(ctx, b.key("step:"+id), "junk", 0).Err()) // e.g. a look-alike
		require.NoError(t, s.SetStage(StageDualWrite))
		require.NoError(t, s.SetStage(StageDualRead))
		j, err := s.GetJob(ctx, id)
		require.NoError(t, err, "job:%s is intact and authoritative in dual-read", id)
		require.Equal(t, id, j.ID)
	})
}

// SubmitJob with a context that has already ended sends nothing
// ("not sent: certainly not applied"); SubmitJobs with the same context
// sends every job and writes them, while answering each with the
// context's error.
func TestSubmitJobsWithEndedContextWritesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		ended, cancel := context.WithCancel(ctx)
		cancel()
		_, err := s.SubmitJob(ended, Job{Service: "s"})
		require.ErrorIs(t, err, context.Canceled)
		ids, err := s.SubmitJobs(ended, []Job{{Service: "s"}, {Service: "s"}, {Service: "s"}})
		require.ErrorIs(t, err, context.Canceled)
		t.Logf("ids=%q", ids)
		require.NoError(t, s.AwaitStage(ctx))
		time.Sleep(50 * time.Millisecond)
		require.Zero(t, b.rdb.ZCard(ctx, b.key("jobs:pending")).Val(),
			"a batch whose context had ended before the call must not be written")
	})
}
