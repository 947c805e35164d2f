package jobstore

import (
	"context"
	"fmt"
	"os"
	"strconv"
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

// TestFollowerLag runs the legacy services' replay (an API and workers
// claiming with the real claim function) with the follower on, in
// dual-write, and measures the follower's lag; then, after the load
// stops, how long until verify finds no difference. It is short in CI;
// JOBSTORE_FOLLOW_SECONDS, JOBSTORE_FOLLOW_RATE (submits/s) and
// JOBSTORE_FOLLOW_WORKERS size it for the figures in BENCHMARKS.md:
//
//	JOBSTORE_FOLLOW_SECONDS=20 JOBSTORE_FOLLOW_RATE=150 JOBSTORE_FOLLOW_WORKERS=8 \
//	  go test -run TestFollowerLag -v .
func TestFollowerLag(t *testing.T) {
	const script = "testdata/legacy_load.js"
	requireLegacy(t, script)
	env := func(name string, def int) int {
		if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
			return v
		}
		return def
	}
	seconds, rate, workers := env("JOBSTORE_FOLLOW_SECONDS", 3), env("JOBSTORE_FOLLOW_RATE", 120), env("JOBSTORE_FOLLOW_WORKERS", 6)
	srv := startTestServer(t)
	rdb := srv.Client(&redis.Options{DB: 2})
	legacy := startLegacy(t, script, "redis://"+srv.Addr()+"/2")
	require.Equal(t, "jobMatching", legacy.loadFunction("findMatchingJob.91d0fd0.lua"))
	m, err := NewMigrator(rdb, WithStage(StageDualWrite))
	require.NoError(t, err)
	require.NoError(t, m.PublishStage(ctx, StageDualWrite, PublishOptions{}))

	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var last FollowStats
	var runErr error
	wg.Go(func() {
		runErr = m.Follow(runCtx, FollowOptions{Configure: true, Sweep: -1,
			Report: func(st FollowStats) { mu.Lock(); last = st; mu.Unlock() }})
	})
	var caps []Capabilities
	for w := range workers {
		caps = append(caps, Capabilities{WorkerID: fmt.Sprint("ts-", w), Services: []string{"comfyui", "ollama"}})
	}
	legacy.do(nil, "startLoad", map[string]any{"submitRate": rate, "svcShare": 0.2, "services": []string{"comfyui", "ollama"},
		"priorities": []int{40, 50, 60}, "workers": caps, "failShare": 0.1, "workMs": 1, "heartbeatMs": 500})
	time.Sleep(time.Duration(seconds) * time.Second)
	var st struct {
		IDs        []string `json:"ids"`
		Writes     int      `json:"writes"`
		Seconds    float64  `json:"seconds"`
		ErrorCount int      `json:"error_count"`
		Errors     []string `json:"errors"`
	}
	legacy.do(&st, "stopLoad")
	require.Zero(t, st.ErrorCount, "%v", st.Errors)
	stopped := time.Now()
	var converged time.Duration
	for {
		res, err := m.Verify(ctx, VerifyOptions{Rounds: 1})
		require.NoError(t, err)
		if res.Differences == 0 {
			converged = time.Since(stopped)
			break
		}
		require.Less(t, time.Since(stopped), 20*time.Second, "no convergence: %v", res.Diffs)
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(1100 * time.Millisecond) // a last report
	stop()
	wg.Wait()
	require.ErrorIs(t, runErr, context.Canceled)
	mu.Lock()
	defer mu.Unlock()
	t.Logf("legacy load: %d jobs, %d writes in %.1fs = %.0f writes/s; follower: %d events, %d syncs, %d found the step side behind; "+
		"lag p50 %v, p99 %v; verify found 0 differences %v after the load stopped",
		len(st.IDs), st.Writes, st.Seconds, float64(st.Writes)/st.Seconds, last.Events, last.Synced, last.Changed,
		last.LagP50.Round(time.Millisecond), last.LagP99.Round(time.Millisecond), converged.Round(time.Millisecond))
	require.Positive(t, last.Changed)
}
