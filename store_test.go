package jobstore

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// worker registers a worker with the given services and returns its
// capabilities.
func registerWorker(t testing.TB, s *Store, id string, services ...string) Capabilities {
	t.Helper()
	caps := Capabilities{WorkerID: id, Services: services}
	require.NoError(t, s.RegisterWorker(context.Background(), caps))
	return caps
}

func TestLifecycle(t *testing.T) {
	for _, dual := range []bool{false, true} {
		t.Run(map[bool]string{false: "legacy", true: "dual-write"}[dual], func(t *testing.T) {
			eachBackend(t, func(t *testing.T, b *backend) {
				ctx := context.Background()
				s := newStore(t, b, WithDualWrite(dual))
				id, err := s.SubmitJob(ctx, Job{Service: "comfyui", Priority: 60, Payload: json.RawMessage(`{"prompt":"a cat"}`)})
				require.NoError(t, err)

				rec := b.rdb.HGetAll(ctx, b.key("job:"+id)).Val()
				for _, f := range submitFields {
					require.Contains(t, rec, f, "submit writes every field of the legacy API")
				}
				require.Equal(t, "60", rec[fPriority])
				require.Equal(t, "", rec[fRequirements])
				require.Equal(t, "pending", rec[fStatus])
				require.Equal(t, "3", rec[fMaxRetries])
				sc, err := b.rdb.ZScore(ctx, b.key("jobs:pending"), id).Result()
				require.NoError(t, err)
				require.Equal(t, apiScore(60, b.clock.Now()), sc)

				caps := registerWorker(t, s, "w1", "comfyui")
				j, err := s.ClaimJob(ctx, caps)
				require.NoError(t, err)
				require.Equal(t, id, j.ID)
				require.Equal(t, StatusAssigned, j.Status)
				require.Equal(t, "w1", j.WorkerID)
				require.False(t, j.AssignedAt.IsZero(), "assigned_at <secs>.<micros> decodes")
				active := b.rdb.HGetAll(ctx, b.key("jobs:active:w1")).Val()
				require.Contains(t, active, id)
				var snap map[string]string
				require.NoError(t, json.Unmarshal([]byte(active[id]), &snap))
				require.Equal(t, "pending", snap["status"], "the active JSON is the record before the claim")
				require.Equal(t, "busy", b.rdb.HGet(ctx, b.key("worker:w1"), "status").Val())
				require.Equal(t, id, b.rdb.HGet(ctx, b.key("worker:w1"), "current_job_id").Val())
				require.Len(t, b.rdb.XRange(ctx, b.key("progress:"+id), "-", "+").Val(), 1)

				require.NoError(t, s.StartJob(ctx, id, "w1"))
				require.NoError(t, s.ReportProgress(ctx, id, "w1", 40, "halfway"))
				require.Equal(t, "40", b.rdb.HGet(ctx, b.key("job:"+id+":progress"), "progress").Val())
				if dual {
					requireMirrored(t, b)
				}
				require.NoError(t, s.CompleteJob(ctx, id, "w1", json.RawMessage(`{"url":"x"}`)))
				got, err := s.GetJob(ctx, id)
				require.NoError(t, err)
				require.Equal(t, StatusCompleted, got.Status)
				require.JSONEq(t, `{"url":"x"}`, string(got.Result))
				require.Equal(t, "idle", b.rdb.HGet(ctx, b.key("worker:w1"), "status").Val())
				ttl := b.rdb.TTL(ctx, b.key("jobs:completed")).Val()
				require.InDelta(t, (24 * time.Hour).Seconds(), ttl.Seconds(), 2)
				require.Equal(t, time.Duration(-1), b.rdb.TTL(ctx, b.key("job:"+id)).Val(), "records never expire by default")
				err = s.CompleteJob(ctx, id, "w1", nil)
				require.ErrorIs(t, err, ErrNotHeld)
				require.ErrorIs(t, err, ErrJobFinished)
				if dual {
					requireMirrored(t, b)
				} else {
					requireNoKeys(t, b, "step*")
				}
			})
		})
	}
}

func TestFailRetriesByTheLegacyRule(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		s := newStore(t, b, WithDualWrite(true))
		id, err := s.SubmitJob(ctx, Job{Service: "svc", MaxRetries: 2})
		require.NoError(t, err)
		caps := registerWorker(t, s, "w1", "svc")
		_, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		out, err := s.FailJob(ctx, id, "w1", "boom", true)
		require.NoError(t, err)
		require.Equal(t, Retried, out, "retry_count+1 = 1 < max_retries 2")
		j, err := s.GetJob(ctx, id)
		require.NoError(t, err)
		require.Equal(t, StatusPending, j.Status)
		require.Equal(t, 1, j.RetryCount)
		sc, err := b.rdb.ZScore(ctx, b.key("jobs:pending"), id).Result()
		require.NoError(t, err)
		require.Equal(t, apiScore(50, b.clock.Now()), sc, "back in the place the formula gives")
		_, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		out, err = s.FailJob(ctx, id, "w1", "boom again", true)
		require.NoError(t, err)
		require.Equal(t, Failed, out, "retry_count+1 = 2 is not < 2")
		j, err = s.GetJob(ctx, id)
		require.NoError(t, err)
		require.Equal(t, StatusFailed, j.Status)
		require.Equal(t, 2, j.RetryCount)
		require.Equal(t, "boom again", j.Error)
		entry := b.rdb.HGet(ctx, b.key("jobs:failed"), id).Val()
		require.JSONEq(t, `{"error":"boom again","failed_at":"`+formatTime(b.clock.Now())+`","retry_count":2}`, entry)
		requireMirrored(t, b)
	})
}

func TestCancel(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		s := newStore(t, b, WithDualWrite(true))
		id, err := s.SubmitJob(ctx, Job{Service: "svc"})
		require.NoError(t, err)
		caps := registerWorker(t, s, "w1", "svc")
		_, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.NoError(t, s.CancelJob(ctx, id, ""))
		j, err := s.GetJob(ctx, id)
		require.NoError(t, err)
		require.Equal(t, StatusCancelled, j.Status)
		require.Equal(t, "Job cancelled by user", j.Error)
		require.Zero(t, b.rdb.HLen(ctx, b.key("jobs:active:w1")).Val())
		require.ErrorIs(t, s.CompleteJob(ctx, id, "w1", nil), ErrNotHeld)
		require.ErrorIs(t, s.CancelJob(ctx, id, ""), ErrJobFinished)
		requireMirrored(t, b)
	})
}

func TestRecoverExpired(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		s := newStore(t, b, WithDualWrite(true))
		id, err := s.SubmitJob(ctx, Job{Service: "svc"})
		require.NoError(t, err)
		caps := registerWorker(t, s, "w1", "svc")
		_, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		rs, err := s.RecoverExpired(ctx)
		require.NoError(t, err)
		require.Zero(t, rs, "alive worker keeps its job")
		require.NoError(t, b.rdb.Del(ctx, b.key("worker:w1:heartbeat")).Err())
		rs, err = s.RecoverExpired(ctx)
		require.NoError(t, err)
		require.Equal(t, RecoveryStats{Workers: 1, Requeued: 1}, rs)
		j, err := s.GetJob(ctx, id)
		require.NoError(t, err)
		require.Equal(t, StatusPending, j.Status)
		require.Equal(t, 1, j.RetryCount)
		requireMirrored(t, b)
		_, err = s.ClaimJob(ctx, caps)
		require.ErrorIs(t, err, ErrNotRegistered)
	})
}

func TestClaimMatches(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		s := newStore(t, b)
		big, err := s.SubmitJob(ctx, Job{Service: "svc", Priority: 90, Requirements: json.RawMessage(`{"hardware":{"gpu_memory_gb":80}}`)})
		require.NoError(t, err)
		small, err := s.SubmitJob(ctx, Job{Service: "svc", Priority: 10, Requirements: json.RawMessage(`{"hardware":{"gpu_memory_gb":16}}`)})
		require.NoError(t, err)
		caps := Capabilities{WorkerID: "w24", Services: []string{"svc"}, Hardware: &Hardware{GPUMemoryGB: 24}}
		require.NoError(t, s.RegisterWorker(ctx, caps))
		j, err := s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.Equal(t, small, j.ID, "the 80 GB job is refused, the 16 GB one taken")
		_, err = s.ClaimJob(ctx, caps)
		require.ErrorIs(t, err, ErrNoJob)
		caps80 := Capabilities{WorkerID: "w80", Services: []string{"svc"}, Hardware: &Hardware{GPUMemoryGB: 80}}
		require.NoError(t, s.RegisterWorker(ctx, caps80))
		j, err = s.ClaimJob(ctx, caps80)
		require.NoError(t, err)
		require.Equal(t, big, j.ID)
	})
}

var _ = errors.Is
var _ = redis.Nil
