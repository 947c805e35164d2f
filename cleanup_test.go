package jobstore

import (
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// lookalikes writes keys that resemble the namespaces' keys but are not
// theirs; cleanup and rollback must leave every one of them.
func lookalikes(t *testing.T, b *backend) {
	t.Helper()
	r, k := b.rdb, b.key
	for _, key := range []string{"job:", "jobx:1", "jobs:count"} {
		require.NoError(t, r.Set(ctx, k(key), "x", 0).Err())
	}
	require.NoError(t, r.Set(ctx, k("job:m1:progress"), "50%", 0).Err())
	require.NoError(t, r.Set(ctx, k("step:m1:progress"), "50%", 0).Err())
	require.NoError(t, r.ZAdd(ctx, k("jobs:pending:old"), redis.Z{Score: 1, Member: "x"}).Err())
	require.NoError(t, r.ZAdd(ctx, k("steps:pending:old"), redis.Z{Score: 1, Member: "x"}).Err())
	require.NoError(t, r.HSet(ctx, k("jobstore:stats"), "reads", "1").Err())
}

// allKeys lists every key under the backend's prefix.
func allKeys(t *testing.T, b *backend) []string {
	t.Helper()
	return scanKeys(t, b.rdb, b.key("*"))
}

func TestCleanup(t *testing.T) {
	for _, c := range []struct {
		name  string
		stage Stage
		ns    Namespace
	}{
		{"cleanup job in step-only", StageStepOnly, JobNamespace},
		{"rollback step in legacy", StageLegacy, StepNamespace},
	} {
		t.Run(c.name, func(t *testing.T) {
			eachBackend(t, func(t *testing.T, b *backend) {
				s := mirroredJobs(t, b, StageDualRead, 10)
				require.NoError(t, b.rdb.Set(ctx, b.key("jobstore:backfill:job-to-step"), "{}", 0).Err())
				require.NoError(t, s.ForceStage(c.stage))
				require.NoError(t, s.PublishStage(ctx, c.stage, true))
				lookalikes(t, b)
				// The namespace kept moves on; the one to delete is stale.
				_, err := s.SubmitJob(ctx, Job{ID: "after", Service: "s"})
				require.NoError(t, err)
				gone := map[string]bool{
					b.key("jobstore:backfill:job-to-step"): true,
					b.key(c.ns.Queue + "pending"):          true, b.key(c.ns.Queue + "completed"): true,
				}
				for i := range 10 {
					gone[b.key(fmt.Sprint(c.ns.Record, "m", i))] = true
				}
				before := allKeys(t, b)
				var keep []string
				for _, k := range before {
					if !gone[k] {
						keep = append(keep, k)
					}
				}
				require.Len(t, keep, len(before)-len(gone))
				dry, err := s.Cleanup(ctx, c.ns, CleanupOptions{DryRun: true, BatchSize: 3, Verify: quick})
				require.NoError(t, err)
				require.Equal(t, before, allKeys(t, b), "a dry run deletes nothing")
				require.EqualValues(t, 10, dry.Records)
				require.EqualValues(t, 2, dry.Queues, "pending and completed; active and failed are empty")
				require.NotNil(t, dry.Verify)
				require.Zero(t, dry.Verify.Unsafe)
				require.Positive(t, dry.Verify.Differences(), "the stale side differs, safely")

				var progress []int64
				res, err := s.Cleanup(ctx, c.ns, CleanupOptions{BatchSize: 3, Verify: quick, Progress: func(n int64) { progress = append(progress, n) }})
				require.NoError(t, err)
				require.Equal(t, dry.Records, res.Records)
				require.Equal(t, dry.Queues, res.Queues)
				require.EqualValues(t, 1, res.Checkpoints)
				require.EqualValues(t, 10, progress[len(progress)-1])
				require.Positive(t, res.Kept)
				require.Contains(t, res.KeptKeys, b.key(c.ns.Record+"m1:progress"))
				require.Equal(t, keep, allKeys(t, b), "exactly the namespace's records and queues go")
			})
		})
	}
}

func TestCleanupRefusedOnDrift(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := mirroredJobs(t, b, StageStepPrimary, 6)
		require.NoError(t, s.SetStage(StageStepOnly))
		// A straggler still writes job:*: its record is newer than step's.
		require.NoError(t, b.rdb.HSet(ctx, b.key("job:m2"), "retry_count", "5").Err())
		before := allKeys(t, b)
		res, err := s.Cleanup(ctx, JobNamespace, CleanupOptions{Verify: quick})
		require.ErrorIs(t, err, ErrCleanupRefused)
		require.ErrorContains(t, err, "1 differences that deleting job:* would lose")
		require.ErrorContains(t, err, b.key("job:m2"))
		require.EqualValues(t, 1, res.Verify.Unsafe)
		require.Equal(t, before, allKeys(t, b), "nothing deleted")

		res, err = s.Cleanup(ctx, JobNamespace, CleanupOptions{Force: true})
		require.NoError(t, err)
		require.True(t, res.Forced)
		require.Nil(t, res.Verify)
		require.EqualValues(t, 6, res.Records)
		requireNoKeys(t, b, "job*")
	})
}

// TestCleanupStrict: a job side that is only behind (a write made in
// step-only) loses nothing and passes by default; Strict refuses it.
func TestCleanupStrict(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := mirroredJobs(t, b, StageStepPrimary, 4)
		require.NoError(t, s.SetStage(StageStepOnly))
		j, err := s.ClaimJob(ctx, "w")
		require.NoError(t, err)
		require.NoError(t, s.CompleteJob(ctx, j.ID, "w", nil))
		before := allKeys(t, b)
		res, err := s.Cleanup(ctx, JobNamespace, CleanupOptions{Verify: quick, Strict: true, DryRun: true})
		require.ErrorIs(t, err, ErrCleanupRefused)
		require.ErrorContains(t, err, "strict")
		require.Positive(t, res.Verify.Differences())
		require.Equal(t, before, allKeys(t, b))

		res, err = s.Cleanup(ctx, JobNamespace, CleanupOptions{Verify: quick})
		require.NoError(t, err, "the job side is only behind")
		require.EqualValues(t, 4, res.Records)
		requireNoKeys(t, b, "job*")
	})
}

func TestCleanupStageGuard(t *testing.T) {
	b := miniBackend(t)
	for _, st := range Stages {
		for _, ns := range []Namespace{JobNamespace, StepNamespace} {
			allowed := (ns == JobNamespace && st == StageStepOnly) || (ns == StepNamespace && st == StageLegacy)
			want := map[Namespace]string{JobNamespace: "move it (and every process) to step-only first", StepNamespace: "move it (and every process) to legacy first"}[ns]
			t.Run(fmt.Sprint(st, "/", ns), func(t *testing.T) {
				s := newStore(t, b, WithStage(st))
				_, err := s.Cleanup(ctx, ns, CleanupOptions{Force: true, DryRun: true})
				if allowed {
					require.NoError(t, err)
					return
				}
				require.ErrorIs(t, err, ErrNamespaceInUse)
				require.ErrorContains(t, err, "stage is "+st.String())
				require.ErrorContains(t, err, want)
			})
		}
	}
	t.Run("shared stage", func(t *testing.T) {
		s := newStore(t, b, WithStage(StageStepOnly))
		op := newStore(t, b, WithStage(StageStepPrimary))
		require.NoError(t, op.PublishStage(ctx, StageStepPrimary, false))
		_, err := s.Cleanup(ctx, JobNamespace, CleanupOptions{Force: true, DryRun: true})
		require.ErrorIs(t, err, ErrNamespaceInUse)
		require.ErrorContains(t, err, "the shared stage is step-primary")
		require.NoError(t, op.PublishStage(ctx, StageStepOnly, false))
		_, err = s.Cleanup(ctx, JobNamespace, CleanupOptions{Force: true, DryRun: true})
		require.NoError(t, err)
		require.NoError(t, b.rdb.Del(ctx, "jobstore:stage").Err())
	})
	_, err := newStore(t, b).Cleanup(ctx, Namespace{}, CleanupOptions{})
	require.ErrorIs(t, err, ErrInvalidArgument)
}

func TestNamespaceStats(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := mirroredJobs(t, b, StageDualWrite, 6)
		lookalikes(t, b)
		for _, ns := range []Namespace{JobNamespace, StepNamespace} {
			st, err := s.NamespaceStats(ctx, ns)
			require.NoError(t, err)
			require.Equal(t, ns.String(), st.Namespace)
			require.EqualValues(t, 6, st.Records)
			require.EqualValues(t, 6, st.Sampled)
			require.EqualValues(t, map[Queue]int64{QueuePending: 3, QueueActive: 0, QueueCompleted: 3, QueueFailed: 0}, st.Queues)
			require.Positive(t, st.MemoryBytes)
		}
		st, err := s.NamespaceStats(ctx, JobNamespace)
		require.NoError(t, err)
		require.EqualValues(t, 2, st.OtherKeys, "job:m1:progress and job:")
	})
}
