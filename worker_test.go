package jobstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestRegisterAndKeepAlive(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		caps := Capabilities{WorkerID: "w1", Services: []string{"a"}, MachineID: "m1", Hardware: &Hardware{GPUMemoryGB: 24}}
		c, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- s.KeepAlive(c, caps, 10*time.Millisecond) }()
		require.Eventually(t, func() bool { return b.rdb.Exists(ctx, b.key("worker:w1:heartbeat")).Val() == 1 },
			5*time.Second, 5*time.Millisecond)
		h := b.rdb.HGetAll(ctx, b.key("worker:w1")).Val()
		require.Equal(t, "w1", h["worker_id"])
		require.Equal(t, "m1", h["machine_id"])
		require.Equal(t, "idle", h["status"])
		require.Equal(t, Version, h[fWorkerJobstore])
		require.JSONEq(t, `{"worker_id":"w1","job_service_required_map":["a"],"machine_id":"m1","hardware":{"gpu_memory_gb":24}}`, h["capabilities"])
		ttl := b.rdb.TTL(ctx, b.key("worker:w1:heartbeat")).Val()
		require.InDelta(t, HeartbeatTTL.Seconds(), ttl.Seconds(), 2)
		ws, err := s.Workers(ctx)
		require.NoError(t, err)
		require.Equal(t, []WorkerInfo{{ID: "w1", Status: "idle", Jobstore: Version, Alive: true}}, ws)

		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
		require.Zero(t, b.rdb.Exists(ctx, b.key("worker:w1"), b.key("worker:w1:heartbeat")).Val(), "unregistered on exit")
		require.False(t, b.rdb.SIsMember(ctx, b.key("workers:active"), "w1").Val())
	})
}

// TestRecoveryNeedsTheHeartbeatGone: a worker whose heartbeat exists
// keeps its jobs, whoever runs recovery; a legacy worker's jobs (claimed
// with the legacy layout, no jobstore registration) are recovered once
// its heartbeat is gone; retries run out into failed.
func TestRecoveryNeedsTheHeartbeatGone(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		// A legacy worker's claim, as findMatchingJob writes it.
		_, err := s.SubmitJob(ctx, Job{ID: "leg", Service: "s", MaxRetries: 2})
		require.NoError(t, err)
		require.NoError(t, b.rdb.ZRem(ctx, b.key("jobs:pending"), "leg").Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key("job:leg"), "status", "assigned", "worker_id", "legacy-1", "assigned_at", "1764457200.000001").Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key("jobs:active:legacy-1"), "leg", `{"id":"leg"}`).Err())
		require.NoError(t, b.rdb.Set(ctx, b.key("worker:legacy-1:heartbeat"), "now", time.Minute).Err())
		// A stale entry: the record says another worker holds it.
		require.NoError(t, b.rdb.HSet(ctx, b.key("jobs:active:legacy-1"), "stale", `{}`).Err())
		_, err = s.SubmitJob(ctx, Job{ID: "stale", Service: "s"})
		require.NoError(t, err)

		rs, err := s.RecoverExpired(ctx)
		require.NoError(t, err)
		require.Zero(t, rs)
		require.NoError(t, b.rdb.Del(ctx, b.key("worker:legacy-1:heartbeat")).Err())
		rs, err = s.RecoverExpired(ctx)
		require.NoError(t, err)
		require.Equal(t, RecoveryStats{Workers: 1, Requeued: 1, Dropped: 1}, rs)
		j, err := s.GetJob(ctx, "leg")
		require.NoError(t, err)
		require.Equal(t, StatusPending, j.Status)
		require.Equal(t, 1, j.RetryCount, "a recovery counts as a failed attempt")
		require.Equal(t, recoverReason, j.Error)
		require.Equal(t, "legacy-1", j.LastFailedWorker)
		st, err := s.GetJob(ctx, "stale")
		require.NoError(t, err)
		require.Equal(t, StatusPending, st.Status, "a dropped stale entry leaves its job alone")

		// The second death uses up max_retries 2: failed.
		require.NoError(t, s.CancelJob(ctx, "stale", ""))
		caps := registerWorker(t, s, "w", "s")
		j, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.Equal(t, "leg", j.ID)
		require.NoError(t, b.rdb.Del(ctx, b.key("worker:w:heartbeat")).Err())
		rs, err = s.RecoverExpired(ctx)
		require.NoError(t, err)
		require.Equal(t, RecoveryStats{Workers: 1, Failed: 1}, rs)
		got, err := s.GetJob(ctx, "leg")
		require.NoError(t, err)
		require.Equal(t, StatusFailed, got.Status)
		require.Equal(t, recoverReason, got.Error)
		require.Equal(t, 2, got.RetryCount)
	})
}

func TestScoreServiceOption(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithScoreFormula(ScoreService))
		id, err := s.SubmitJob(ctx, Job{Service: "s", Priority: 60})
		require.NoError(t, err)
		sc, err := b.rdb.ZScore(ctx, b.key("jobs:pending"), id).Result()
		require.NoError(t, err)
		require.Equal(t, ScoreService.Score(60, b.clock.Now().UnixMilli()), sc)
		caps := registerWorker(t, s, "w", "s")
		_, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		_, err = s.FailJob(ctx, id, "w", "x", true)
		require.NoError(t, err)
		sc2, err := b.rdb.ZScore(ctx, b.key("jobs:pending"), id).Result()
		require.NoError(t, err)
		require.Equal(t, sc, sc2, "a retry goes back to the place the formula gives")
	})
}

// TestClaimWindow: a worker whose only job sits below the window finds
// none, as with findMatchingJob; a wider window reaches it.
func TestClaimWindow(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		narrow := newStore(t, b, WithClaimWindow(5))
		for i := range 5 {
			_, err := narrow.SubmitJob(ctx, Job{ID: fmt.Sprint("top", i), Service: "busy", Priority: 100})
			require.NoError(t, err)
		}
		_, err := narrow.SubmitJob(ctx, Job{ID: "low", Service: "rare", Priority: 1})
		require.NoError(t, err)
		caps := registerWorker(t, narrow, "w", "rare")
		_, err = narrow.ClaimJob(ctx, caps)
		require.ErrorIs(t, err, ErrNoJob)
		require.ErrorContains(t, err, "looked at 5 pending")
		wide := newStore(t, b, WithClaimWindow(6))
		j, err := wide.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.Equal(t, "low", j.ID)
	})
}

func TestRecordRetention(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true), WithRecordRetention(time.Hour))
		caps := registerWorker(t, s, "w", "s")
		id, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		_, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.NoError(t, s.ReportProgress(ctx, id, "w", 10, ""))
		require.Equal(t, time.Duration(-1), b.rdb.TTL(ctx, b.key("job:"+id)).Val())
		require.NoError(t, s.CompleteJob(ctx, id, "w", nil))
		for _, k := range []string{"job:" + id, "job:" + id + ":progress", "step:" + id, "step:" + id + ":progress"} {
			require.InDelta(t, time.Hour.Seconds(), b.rdb.TTL(ctx, b.key(k)).Val().Seconds(), 2, k)
		}
		requireMirrored(t, b)
	})
}

func TestPassedOverLoggedOnce(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		sink := &logSink{}
		s := newStore(t, b, WithLogger(slogLogger(sink)))
		_, err := s.SubmitJob(ctx, Job{ID: "junk", Service: "s", Priority: 9})
		require.NoError(t, err)
		// SubmitJob refuses such requirements; other writers do not.
		require.NoError(t, b.rdb.HSet(ctx, b.key("job:junk"), "requirements", "5").Err())
		_, err = s.SubmitJob(ctx, Job{ID: "fine", Service: "s", Priority: 1})
		require.NoError(t, err)
		caps := registerWorker(t, s, "w", "s")
		j, err := s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.Equal(t, "fine", j.ID, "requirements findMatchingJob fails on do not block the queue")
		_, err = s.ClaimJob(ctx, caps)
		require.ErrorIs(t, err, ErrNoJob)
		lines := sink.lines()
		require.Len(t, lines, 1, "logged once: %v", lines)
		require.Contains(t, lines[0], "WARN jobstore: claim passed over a job why=junk: matching failed")
	})
}
