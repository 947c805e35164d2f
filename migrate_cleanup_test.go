package jobstore

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestMigrationKeyNames(t *testing.T) {
	k := keyspace{prefix: "p:", ns: JobNamespace}
	require.Equal(t, "p:job:*:*", k.subKeyPattern())
	require.Equal(t, "p:step:*:*", keyspace{ns: StepNamespace, prefix: "p:"}.subKeyPattern())
	require.Equal(t, []string{"p:jobstore:backfill:job-to-step", "p:jobstore:backfill:step-to-job"}, checkpointKeys("p:"))
}

// lookAlikes writes keys that look like the namespace's but belong to no
// job, and returns their names: Cleanup must leave them.
func lookAlikes(t testing.TB, b *backend, ns string) []string {
	keys := []string{ns + "summary", ns + "s:pending:old", ns + "s:active", ns + "s:active:", ns + ":", ns + ":a b",
		ns + ":x*y", ns + ":ok:", ns + "s:completed:archive"}
	for _, k := range keys {
		require.NoError(t, b.rdb.Set(context.Background(), b.key(k), "not a job's", 0).Err())
	}
	slices.Sort(keys)
	return keys
}

// outsideKeys are keys outside both namespaces, which no migration tool
// touches.
var outsideKeys = []string{"worker:wx", "worker:wx:heartbeat", "workers:others", "progress:abc", "jobstore:stats"}

func writeOutside(t testing.TB, b *backend) {
	for _, k := range outsideKeys {
		require.NoError(t, b.rdb.Set(context.Background(), b.key(k), "not migrated", 0).Err())
	}
}

func requireOutsideKept(t testing.TB, b *backend) {
	for _, k := range outsideKeys {
		require.Equal(t, "not migrated", b.rdb.Get(context.Background(), b.key(k)).Val(), k)
	}
}

// remaining lists the keys under the backend's prefix that start with
// word, without the prefix and jobstore's own keys.
func remaining(t testing.TB, b *backend, word string) []string {
	var out []string
	for _, k := range scanKeys(t, b.rdb, b.key(word+"*")) {
		if k = strings.TrimPrefix(k, b.prefix); !strings.HasPrefix(k, "jobstore:") {
			out = append(out, k)
		}
	}
	return out
}

func runCleanup(t testing.TB, m *Migrator, ns Namespace, opts CleanupOptions) CleanupResult {
	t.Helper()
	res, err := m.Cleanup(context.Background(), ns, opts)
	require.NoError(t, err)
	return res
}

// migrated builds a legacy state, backfills it in dual-write, and returns
// a Migrator in step-only: the end of the migration.
func migrated(t testing.TB, b *backend, rounds int) *Migrator {
	newLegacy(t, b).state(rounds)
	runBackfill(t, newMigrator(t, b, StageDualWrite), BackfillOptions{})
	return newMigrator(t, b, StageStepOnly)
}

func TestCleanupDeletesEveryKeyOfTheJobsAndNothingElse(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		m := migrated(t, b, 3)
		keep := lookAlikes(t, b, "job")
		writeOutside(t, b)
		require.NoError(t, b.rdb.Set(context.Background(), b.key("jobstore:backfill:job-to-step"), "{}", 0).Err())
		steps := nsSnapshot(t, b, StepNamespace)

		res := runCleanup(t, m, JobNamespace, CleanupOptions{BatchSize: 4, Verify: quickVerify})
		require.Zero(t, res.Verify.Differences, "%v", res.Verify.Diffs)
		require.EqualValues(t, 3*8, res.Records)
		require.EqualValues(t, 3, res.SubKeys)
		require.EqualValues(t, 3, res.ActiveHashes, "lw0, lw1 and lw2")
		require.EqualValues(t, 3, res.Queues)
		require.EqualValues(t, 1, res.Checkpoints)
		require.EqualValues(t, 3*8+3+3+3+1, res.Deleted)
		require.Equal(t, keep, remaining(t, b, "job"), "only look-alikes are left")
		requireOutsideKept(t, b)
		require.Equal(t, steps, nsSnapshot(t, b, StepNamespace), "the step namespace is untouched")
	})
}

func TestCleanupRefusesANamespaceInUse(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		for st := StageLegacy; st <= StageStepOnly; st++ {
			for _, ns := range []Namespace{JobNamespace, StepNamespace} {
				_, err := newMigrator(t, b, st).Cleanup(ctx, ns, CleanupOptions{DryRun: true, Force: true})
				if st == freeStage(ns) {
					require.NoError(t, err, "%s in %s", ns, st)
				} else {
					require.ErrorIs(t, err, ErrNamespaceInUse, "%s in %s", ns, st)
				}
			}
		}
		// The published stage counts too: one process's setting is not
		// the fleet's.
		m := newMigrator(t, b, StageStepPrimary)
		require.NoError(t, m.PublishStage(ctx, StageStepPrimary, PublishOptions{Force: true}))
		_, err := newMigrator(t, b, StageStepOnly).Cleanup(ctx, JobNamespace, CleanupOptions{Force: true})
		require.ErrorIs(t, err, ErrNamespaceInUse)
		require.ErrorContains(t, err, "shared stage is step-primary")
	})
}

func TestCleanupRefusesToLoseData(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		m := migrated(t, b, 1)
		l := newLegacy(t, b)
		late := l.submit(50) // a legacy write after the backfill: only job:* has it
		before := nsSnapshot(t, b, JobNamespace)

		res, err := m.Cleanup(ctx, JobNamespace, CleanupOptions{Verify: quickVerify})
		require.ErrorIs(t, err, ErrCleanupRefused)
		require.EqualValues(t, 2, res.Verify.Blocking, "%v", res.Verify.Diffs)
		require.Equal(t, b.key("step:"+late)+" missing; "+b.key("job:"+late)+" has it [blocks cleanup]",
			res.Verify.BlockingDiffs[0].String())
		require.Equal(t, "pending", res.Verify.BlockingDiffs[1].Item)
		require.ErrorContains(t, err, "would lose 2 things")
		require.Equal(t, before, nsSnapshot(t, b, JobNamespace), "nothing deleted")

		// Force skips the verification, not the stage check.
		_, err = newMigrator(t, b, StageStepPrimary).Cleanup(ctx, JobNamespace, CleanupOptions{Force: true})
		require.ErrorIs(t, err, ErrNamespaceInUse)
		forced := runCleanup(t, m, JobNamespace, CleanupOptions{Force: true})
		require.Nil(t, forced.Verify)
		require.True(t, forced.Forced)
		require.Empty(t, remaining(t, b, "job"))
	})
}

// Once only the step side is written, job:* falls behind: its stale copies
// lose nothing, and do not block; Strict refuses on them all the same.
func TestCleanupStaleCopiesBlockOnlyWhenStrict(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		m := migrated(t, b, 1)
		s := newStore(t, b, WithStage(StageStepOnly))
		caps := registerWorker(t, s, "w9", "comfyui")
		j, err := s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.NoError(t, s.CompleteJob(ctx, j.ID, "w9", json.RawMessage(`{}`)))
		_, err = s.SubmitJob(ctx, Job{Service: "comfyui"})
		require.NoError(t, err)

		_, err = m.Cleanup(ctx, JobNamespace, CleanupOptions{Strict: true, Verify: quickVerify})
		require.ErrorIs(t, err, ErrCleanupRefused)
		require.ErrorContains(t, err, "strict")

		dry := runCleanup(t, m, JobNamespace, CleanupOptions{DryRun: true, Verify: quickVerify})
		require.Positive(t, dry.Verify.Differences, "job:%s is stale", j.ID)
		require.Zero(t, dry.Verify.Blocking, "%v", dry.Verify.BlockingDiffs)
		requireVisits(t, b, 8, dry.Records)
		require.Len(t, remaining(t, b, "job:"), 9, "a dry run deletes nothing")

		res := runCleanup(t, m, JobNamespace, CleanupOptions{Verify: quickVerify})
		requireVisits(t, b, int(res.Deleted), dry.Deleted)
		require.Empty(t, remaining(t, b, "job"))
	})
}

// A rollback to legacy deletes step:*; a second one finds nothing to
// delete and no difference (an earlier tool reported every job:* record
// missing from the empty step:*: 199,800 differences).
func TestRollbackCleanupTwice(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		s := newStore(t, b, WithStage(StageDualWrite))
		caps := registerWorker(t, s, "w1", "comfyui")
		for range 5 {
			_, err := s.SubmitJob(ctx, Job{Service: "comfyui"})
			require.NoError(t, err)
		}
		j, err := s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		requireMirrored(t, b)
		// Rolled back: legacy writers go on, and step:* falls behind.
		require.NoError(t, s.SetStage(StageLegacy))
		require.NoError(t, s.CompleteJob(ctx, j.ID, "w1", nil))
		newLegacy(t, b).submit(50)
		jobs := nsSnapshot(t, b, JobNamespace)

		m := newMigrator(t, b, StageLegacy)
		keep := lookAlikes(t, b, "step")
		writeOutside(t, b)
		first := runCleanup(t, m, StepNamespace, CleanupOptions{Verify: quickVerify})
		require.Zero(t, first.Verify.Blocking, "%v", first.Verify.BlockingDiffs)
		require.EqualValues(t, 5, first.Records)
		require.Equal(t, keep, remaining(t, b, "step"))
		requireOutsideKept(t, b)
		require.Equal(t, jobs, nsSnapshot(t, b, JobNamespace), "the job namespace is untouched")

		second := runCleanup(t, m, StepNamespace, CleanupOptions{Verify: quickVerify})
		require.Zero(t, second.Verify.Differences, "%v", second.Verify.Diffs)
		require.Zero(t, second.Verify.Checked)
		require.Zero(t, second.Deleted)
	})
}

func TestVerifyAndCleanupRefuseBadOptions(t *testing.T) {
	b := miniBackend(t)
	ctx := context.Background()
	m := newMigrator(t, b, StageStepOnly)
	for _, o := range []VerifyOptions{{BatchSize: -1}, {BatchSize: MaxBatchSize + 1}, {Rounds: -1}, {Delay: -1}, {MaxSuspects: -5}} {
		_, err := m.Verify(ctx, o)
		require.ErrorIs(t, err, ErrInvalidArgument, "%+v", o)
	}
	_, err := m.Cleanup(ctx, Namespace(3), CleanupOptions{})
	require.ErrorIs(t, err, ErrInvalidArgument)
	_, err = m.Cleanup(ctx, JobNamespace, CleanupOptions{BatchSize: -2})
	require.ErrorIs(t, err, ErrInvalidArgument)
	_, err = m.Cleanup(ctx, JobNamespace, CleanupOptions{Verify: VerifyOptions{Rounds: -1}})
	require.ErrorIs(t, err, ErrInvalidArgument)
}

// TestCleanupTimesVerificationAndDeletionApart: the result says how long
// the verification took and how long the deletion, each on its own, so
// that a deletion rate does not count the verification.
func TestCleanupTimesVerificationAndDeletionApart(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		l := newLegacy(t, b)
		for range 5 {
			l.submit(50)
		}
		m := newMigrator(t, b, StageDualWrite)
		runBackfill(t, m, BackfillOptions{})
		m = newMigrator(t, b, StageLegacy)
		res, err := m.Cleanup(ctx, StepNamespace, CleanupOptions{Verify: quickVerify})
		require.NoError(t, err)
		require.Positive(t, res.Deleted)
		require.Positive(t, res.Deleting)
		require.NotNil(t, res.Verify)
		require.Positive(t, res.Verify.Elapsed)
	})
}
