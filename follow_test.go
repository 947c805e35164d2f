package jobstore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// legacyWrites writes as the legacy services do, command by command and
// without mirroring: a submit (HSET record, ZADD pending), then a claim,
// then a completion, for n jobs. It runs against the raw client.
func legacyWrites(t testing.TB, b *backend, prefix string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		ids = append(ids, id)
		rec := b.key("job:" + id)
		require.NoError(t, b.rdb.HSet(ctx, rec, "id", id, "service_required", "s", "priority", "50",
			"payload", "{}", "requirements", "", "created_at", "2026-11-29T23:00:00.000Z", "status", "pending",
			"retry_count", "0", "max_retries", "3").Err())
		require.NoError(t, b.rdb.ZAdd(ctx, b.key("jobs:pending"), redisZ(5e16-float64(i), id)).Err())
		if i%3 == 0 {
			continue // stays pending
		}
		require.NoError(t, b.rdb.ZRem(ctx, b.key("jobs:pending"), id).Err())
		require.NoError(t, b.rdb.HSet(ctx, rec, "status", "assigned", "worker_id", "lw", "assigned_at", "1764457200.000001").Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key("jobs:active:lw"), id, `{"id":"`+id+`"}`).Err())
		if i%3 == 1 {
			continue // stays held
		}
		require.NoError(t, b.rdb.HSet(ctx, rec, "status", "completed", "completed_at", "2026-11-29T23:00:01.000Z").Err())
		require.NoError(t, b.rdb.HDel(ctx, b.key("jobs:active:lw"), id).Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key("jobs:completed"), id, `{"success":true}`).Err())
		require.NoError(t, b.rdb.Expire(ctx, b.key("jobs:completed"), 24*time.Hour).Err())
		require.NoError(t, b.rdb.HSet(ctx, rec+":progress", "progress", "100").Err())
	}
	return ids
}

// TestFollowerMirrorsUnmirroredWrites: with the follower running, writes
// made without a mirror (as the legacy services make them) reach step:*
// as they happen; what was written before it started is caught by its
// first sweep; a dual-writing Store next to it keeps both sides equal;
// and it reports its lag and the legacy writes it mirrored.
func TestFollowerMirrorsUnmirroredWrites(t *testing.T) {
	b := followerBackend(t)
	m := newMigrator(t, b, StageLegacy)
	require.NoError(t, m.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	legacyWrites(t, b, "before", 6)

	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var last FollowStats
	var mu sync.Mutex
	wg.Add(1)
	var runErr error
	go func() {
		defer wg.Done()
		runErr = m.Follow(runCtx, FollowOptions{Configure: true, Recheck: 200 * time.Millisecond,
			Report: func(st FollowStats) { mu.Lock(); last = st; mu.Unlock() }})
	}()
	s := newStore(t, b)
	caps := registerWorker(t, s, "go", "s")
	for range 5 {
		id, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		legacyWrites(t, b, "during-"+id[:8], 4)
		j, err := s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.NoError(t, s.CompleteJob(ctx, j.ID, "go", nil))
	}
	require.Eventually(t, func() bool {
		return equalNamespaces(t, b)
	}, 10*time.Second, 50*time.Millisecond, "the step side converges")
	requireMirrored(t, b)
	time.Sleep(1100 * time.Millisecond) // one report
	stop()
	wg.Wait()
	require.ErrorIs(t, runErr, context.Canceled)
	mu.Lock()
	defer mu.Unlock()
	require.Positive(t, last.Changed)
	require.Positive(t, last.Sweeps)
	require.Positive(t, last.LagP99)
	reports, lastLegacy, err := m.FollowerReports(ctx)
	require.NoError(t, err)
	require.Empty(t, reports, "a stopped follower's report goes")
	require.False(t, lastLegacy.IsZero(), "the last legacy write stays")
	ev, err := m.LegacyEvidence(ctx)
	require.NoError(t, err)
	require.True(t, ev.Alive(time.Now(), time.Minute), "the gate sees the legacy writes")
}

// followerBackend is a backend on a redis-server of the test's own: the
// follower turns on keyspace notifications, a setting of the whole server
// that the shared one must not get from a test (miniredis has none).
func followerBackend(t testing.TB) *backend {
	srv := startTestServer(t)
	b := srv.Backend(&redis.Options{DB: 3})
	b.prefix = "f:"
	return b
}

// equalNamespaces is requireMirrored as a predicate.
func equalNamespaces(t testing.TB, b *backend) bool {
	jobs, steps := nsSnapshot(t, b, JobNamespace), nsSnapshot(t, b, StepNamespace)
	if len(jobs) != len(steps) {
		return false
	}
	for k, j := range jobs {
		s, ok := steps[k]
		if !ok || j.Type != s.Type || fmt.Sprint(j.Value) != fmt.Sprint(s.Value) {
			return false
		}
		if jt, st := pairTTL(t, b, k); jt-st > time.Second || st-jt > time.Second {
			return false
		}
	}
	return true
}

// TestFollowerRefusesStages: the follower runs only while job:* is
// authoritative.
func TestFollowerRefusesStages(t *testing.T) {
	b := followerBackend(t)
	m := newMigrator(t, b, StageLegacy)
	err := m.Follow(ctx, FollowOptions{Configure: true})
	require.ErrorIs(t, err, ErrNamespaceInUse, "legacy: nothing to follow for")
	for _, st := range []Stage{StageDualWrite, StageDualRead, StageStepPrimary} {
		require.NoError(t, m.PublishStage(ctx, st, PublishOptions{}))
	}
	err = m.Follow(ctx, FollowOptions{Configure: true})
	require.ErrorIs(t, err, ErrNamespaceInUse)
	require.ErrorContains(t, err, "not step-primary")
}
