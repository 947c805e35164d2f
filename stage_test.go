package jobstore

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func newMigrator(t testing.TB, b *backend, opts ...Option) *Migrator {
	t.Helper()
	all := append([]Option{WithKeyPrefix(b.prefix), WithClock(b.clock.Now), WithDualWrite(false)}, opts...)
	m, err := NewMigrator(b.rdb, all...)
	require.NoError(t, err)
	return m
}

// TestWritesFollowThePublishedStage is the start-up case a new user hit:
// a service created with New(rdb) (legacy from its environment), never
// polling, against a Redis whose published stage is step-only. Its first
// submit must land in step:* only, not job:*; a published step-primary
// makes it write step:* first and mirror to job:*.
func TestWritesFollowThePublishedStage(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		m := newMigrator(t, b)
		for _, st := range []Stage{StageDualWrite, StageDualRead, StageStepPrimary, StageStepOnly} {
			require.NoError(t, m.PublishStage(ctx, st, false))
		}
		s := newStore(t, b) // WithDualWrite(false): legacy
		id, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		require.Equal(t, StageStepOnly, s.Stage(), "the store adopted the published stage")
		require.Zero(t, b.rdb.Exists(ctx, b.key("job:"+id)).Val(), "nothing under job:*")
		require.Equal(t, int64(1), b.rdb.Exists(ctx, b.key("step:"+id)).Val())
		require.Zero(t, b.rdb.Exists(ctx, b.key("jobs:pending")).Val())

		require.NoError(t, m.PublishStage(ctx, StageStepPrimary, false))
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
		m := newMigrator(t, b)
		st, ok, err := m.SharedStage(ctx)
		require.NoError(t, err)
		require.True(t, ok)
		require.Equal(t, StageDualWrite, st)
		s := newStore(t, b)
		_, err = s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		require.Equal(t, StageDualWrite, s.Stage())
		require.NoError(t, m.PublishStage(ctx, StageDualRead, false), "one stage on from Dual-Write")
	})
}
