package jobstore

// Regression tests for bugs the soak and the CLI bad-input table found in
// Backfill.

import (
	"context"
	"math"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestBackfillRestoresEntriesOfUnchangedRecords: a mirror queue entry is
// restored even when its record is identical on both sides. The case the
// design names: with a wrong-type key at steps:pending, submits copy the
// record but cannot add the entry; once an operator removes the key, as
// Backfill's own error says to, a Backfill must bring the entries back.
// (The same gap made TestRollbackOneStage/step-only→step-primary fail
// about 1 run in 5.)
func TestBackfillRestoresEntriesOfUnchangedRecords(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		require.NoError(t, b.rdb.Set(ctx, b.key("steps:pending"), "not a zset", 0).Err())
		for _, id := range []string{"a", "b", "c"} {
			_, err := s.SubmitJob(ctx, Job{ID: id, Service: "s"})
			require.NoError(t, err)
		}
		require.EqualValues(t, 3, s.DualWriteStats().Failed, "each mirror ZADD failed, each COPY succeeded")
		require.NoError(t, b.rdb.Del(ctx, b.key("steps:pending")).Err())

		res, err := s.Backfill(ctx, BackfillOptions{})
		require.NoError(t, err)
		require.EqualValues(t, 3, res.Unchanged)
		requireMirrored(t, b)
	})
}

// TestBackfillRefusesNonFiniteRate: a NaN rate would become an undefined
// Duration in pace, and +Inf says what 0 already says; both are refused.
func TestBackfillRefusesNonFiniteRate(t *testing.T) {
	b := miniBackend(t)
	s := newStore(t, b, WithDualWrite(true))
	for _, rate := range []float64{math.NaN(), math.Inf(1)} {
		_, err := s.Backfill(ctx, BackfillOptions{Rate: rate, DryRun: true})
		require.ErrorIs(t, err, ErrInvalidArgument, "rate %v", rate)
	}
}

// TestBackfillResumesAfterLastBatch: a Backfill cancelled between its last
// batch and deleting its checkpoint (Ctrl-C during the last pace) leaves a
// checkpoint that says every phase is done; running it again resumes from
// it, as the CLI tells the operator to, and clears it. (TestSoak hit this.)
func TestBackfillResumesAfterLastBatch(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		legacy := newStore(t, b)
		for _, id := range []string{"a", "b"} {
			_, err := legacy.SubmitJob(ctx, Job{ID: id, Service: "s", MaxRetries: 1})
			require.NoError(t, err)
		}
		for range 2 { // "a" or "b" ends failed, so jobs:failed has a page
			j, err := legacy.ClaimJob(ctx, "w")
			require.NoError(t, err)
			require.NoError(t, legacy.FailJob(ctx, j.ID, "w", "x"))
		}
		s := newStore(t, b, WithDualWrite(true))
		c, cancel := context.WithCancel(ctx)
		defer cancel()
		_, err := s.Backfill(c, BackfillOptions{QueueCopyLimit: -1, Progress: func(p BackfillProgress) {
			if p.Phase == string(QueueFailed) { // after the last batch of all
				cancel()
			}
		}})
		require.ErrorIs(t, err, context.Canceled)

		res, err := s.Backfill(ctx, BackfillOptions{})
		require.NoError(t, err, "resuming the interrupted run")
		require.True(t, res.Resumed)
		requireNoKeys(t, b, "jobstore:backfill:*")
	})
}
