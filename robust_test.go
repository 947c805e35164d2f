package jobstore

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// Junk of another writer under the names jobstore reads (keys of the
// wrong type) is passed over, counted and logged once per Store; it never
// stops the work on the other keys.

// TestRecoverSkipsWrongTypeActiveKeys: RecoverExpired counts each
// jobs:active:* key that is not a hash in Skipped, returns no error for
// it, and logs it once however many runs meet it.
func TestRecoverSkipsWrongTypeActiveKeys(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		h := &logSink{}
		s := newStore(t, b, WithLogger(slogLogger(h)))
		require.NoError(t, b.rdb.Set(ctx, b.key("jobs:active:junk-a"), "x", 0).Err())
		require.NoError(t, b.rdb.RPush(ctx, b.key("jobs:active:junk-b"), "x").Err())
		for range 3 {
			rs, err := s.RecoverExpired(ctx)
			require.NoError(t, err)
			require.Equal(t, RecoveryStats{Skipped: 2}, rs)
		}
		var warned []string
		for _, l := range h.lines() {
			if strings.Contains(l, "not an active hash") {
				warned = append(warned, l)
			}
		}
		require.Len(t, warned, 2, "each junk key is logged once: %v", h.lines())
	})
}

// TestQueueSizesWrongTypeQueues: a wrong-type active key is passed over,
// but a pending queue of the wrong type is still an error that names it.
func TestQueueSizesWrongTypeQueues(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		caps := registerWorker(t, s, "w", "s")
		_, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		_, err = s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		_, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.NoError(t, b.rdb.SAdd(ctx, b.key("jobs:active:junk"), "x").Err())
		q, err := s.QueueSizes(ctx)
		require.NoError(t, err)
		require.Equal(t, QueueSizes{Pending: 1, Active: 1, Workers: 1}, q)

		require.NoError(t, b.rdb.Del(ctx, b.key("jobs:pending")).Err())
		require.NoError(t, b.rdb.Set(ctx, b.key("jobs:pending"), "x", 0).Err())
		_, err = s.QueueSizes(ctx)
		require.ErrorIs(t, err, ErrCorruptRecord)
		require.ErrorContains(t, err, "jobs:pending")
	})
}

// TestRecoverFinishesHalfDoneRetries: a dead legacy worker's retry that
// stopped after its HMSET (record pending, not queued) is queued again at
// the record's score, its retry_count as the retry set it, mirrored; one
// that stopped after its ZADD (queued, entry left) only loses the stale
// entry, and keeps its place.
func TestRecoverFinishesHalfDoneRetries(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		legacyClaim := func(id, worker string) {
			require.NoError(t, b.rdb.ZRem(ctx, b.key("jobs:pending"), id).Err())
			require.NoError(t, b.rdb.HSet(ctx, b.key("job:"+id), "status", "assigned", "worker_id", worker, "assigned_at", "1795867200.000001").Err())
			require.NoError(t, b.rdb.HSet(ctx, b.key("jobs:active:"+worker), id, `{"id":"`+id+`"}`).Err())
		}
		legacyRetryHMSET := func(id, worker string) {
			require.NoError(t, b.rdb.HSet(ctx, b.key("job:"+id), "status", "pending", "worker_id", "", "assigned_at", "",
				"retry_count", "1", "last_failed_worker", worker, "failed_at", "2026-11-28T12:00:00.000Z").Err())
		}
		half, err := s.SubmitJob(ctx, Job{Service: "s", Priority: 70})
		require.NoError(t, err)
		queued, err := s.SubmitJob(ctx, Job{Service: "s", Priority: 20})
		require.NoError(t, err)
		legacyClaim(half, "lw")
		legacyClaim(queued, "lw")
		legacyRetryHMSET(half, "lw")
		legacyRetryHMSET(queued, "lw")
		require.NoError(t, b.rdb.ZAdd(ctx, b.key("jobs:pending"), redisZ(12345, queued)).Err()) // its ZADD, by the service formula
		// The follower (or a backfill) mirrored what the legacy worker wrote.
		_, err = newMigrator(t, b, StageDualWrite).Backfill(ctx, BackfillOptions{})
		require.NoError(t, err)

		rs, err := s.RecoverExpired(ctx)
		require.NoError(t, err)
		require.Equal(t, RecoveryStats{Workers: 1, Requeued: 1, Dropped: 1}, rs)
		z := b.rdb.ZRangeWithScores(ctx, b.key("jobs:pending"), 0, -1).Val()
		require.ElementsMatch(t, []redis.Z{redisZ(apiScore(70, b.clock.Now()), half), redisZ(12345, queued)}, z)
		j, err := s.GetJob(ctx, half)
		require.NoError(t, err)
		require.Equal(t, StatusPending, j.Status)
		require.Equal(t, 1, j.RetryCount, "the retry counted the attempt already")
		require.Zero(t, b.rdb.Exists(ctx, b.key("jobs:active:lw")).Val())
		requireMirrored(t, b)
	})
}

// TestRegisterWorkerReplacesRegistration: RegisterWorker replaces a
// legacy registration whole (no legacy field is left), and refuses a
// worker key of the wrong type with no write; KeepAlive only renews a live
// jobstore registration.
func TestRegisterWorkerReplacesRegistration(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		require.NoError(t, b.rdb.HSet(ctx, b.key("worker:w"), "worker_id", "w", "status", "busy", "current_job_id", "j1",
			"active_jobs", `["j1"]`).Err())
		caps := registerWorker(t, s, "w", "s")
		h := b.rdb.HGetAll(ctx, b.key("worker:w")).Val()
		require.Equal(t, Version, h[fWorkerJobstore])
		require.Equal(t, "idle", h["status"])
		require.NotContains(t, h, "current_job_id")
		require.NotContains(t, h, "active_jobs")
		require.InDelta(t, HeartbeatTTL.Seconds(), b.rdb.TTL(ctx, b.key("worker:w:heartbeat")).Val().Seconds(), 2)

		// A live jobstore registration is only renewed.
		require.NoError(t, b.rdb.HSet(ctx, b.key("worker:w"), "connected_at", "then").Err())
		c, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- s.KeepAlive(c, caps, 10*time.Millisecond) }()
		time.Sleep(30 * time.Millisecond)
		require.Equal(t, "then", b.rdb.HGet(ctx, b.key("worker:w"), "connected_at").Val())
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)

		require.NoError(t, b.rdb.Set(ctx, b.key("worker:x"), "junk", 0).Err())
		err := s.RegisterWorker(ctx, Capabilities{WorkerID: "x", Services: []string{"s"}})
		require.ErrorIs(t, err, ErrCorruptRecord)
		require.ErrorContains(t, err, "worker:x is a string")
		require.Equal(t, "junk", b.rdb.Get(ctx, b.key("worker:x")).Val())
		require.False(t, b.rdb.SIsMember(ctx, b.key("workers:active"), "x").Val(), "nothing written")
		require.Zero(t, b.rdb.Exists(ctx, b.key("worker:x:heartbeat")).Val())
		require.ErrorIs(t, s.KeepAlive(ctx, Capabilities{WorkerID: "x", Services: []string{"s"}}, 0), ErrCorruptRecord)
	})
}

// TestUnregisteredWorkerStaysGone: once a worker is unregistered (its
// hash deleted, as KeepAlive does when it ends), finishing the jobs it
// still held, or their recovery, must not write its worker:<id> hash
// again: a hash recreated that way has no jobstore field, no worker_id,
// is in no workers:active, and stays forever. A worker whose hash exists
// is still set idle.
func TestUnregisteredWorkerStaysGone(t *testing.T) {
	for _, finish := range []string{"complete", "fail", "recover"} {
		t.Run(finish, func(t *testing.T) {
			eachBackend(t, func(t *testing.T, b *backend) {
				s := newStore(t, b, WithDualWrite(true))
				caps := registerWorker(t, s, "w", "s")
				id, err := s.SubmitJob(ctx, Job{Service: "s"})
				require.NoError(t, err)
				_, err = s.ClaimJob(ctx, caps)
				require.NoError(t, err)
				require.NoError(t, s.UnregisterWorker(ctx, "w"))
				switch finish {
				case "complete":
					require.NoError(t, s.CompleteJob(ctx, id, "w", nil))
				case "fail":
					_, err = s.FailJob(ctx, id, "w", "x", true)
					require.NoError(t, err)
				case "recover":
					rs, err := s.RecoverExpired(ctx)
					require.NoError(t, err)
					require.Equal(t, 1, rs.Requeued)
				}
				require.Zero(t, b.rdb.Exists(ctx, b.key("worker:w")).Val(), "worker:w written again: %v",
					b.rdb.HGetAll(ctx, b.key("worker:w")).Val())
				requireMirrored(t, b)

				// A registered worker is still set idle.
				caps = registerWorker(t, s, "v", "s")
				id, err = s.SubmitJob(ctx, Job{Service: "s", Priority: 99})
				require.NoError(t, err)
				_, err = s.ClaimJob(ctx, caps)
				require.NoError(t, err)
				require.Equal(t, "busy", b.rdb.HGet(ctx, b.key("worker:v"), "status").Val())
				switch finish {
				case "complete":
					require.NoError(t, s.CompleteJob(ctx, id, "v", nil))
				case "fail":
					_, err = s.FailJob(ctx, id, "v", "x", true)
					require.NoError(t, err)
				case "recover":
					require.NoError(t, b.rdb.Del(ctx, b.key("worker:v:heartbeat")).Err())
					_, err := s.RecoverExpired(ctx)
					require.NoError(t, err)
				}
				require.Equal(t, "idle", b.rdb.HGet(ctx, b.key("worker:v"), "status").Val())
				require.Equal(t, Version, b.rdb.HGet(ctx, b.key("worker:v"), fWorkerJobstore).Val())
			})
		})
	}
}

// TestHeartbeatNeedsRegistration: a heartbeat of a worker whose
// registration is gone must not make it look alive with a hash that is no
// jobstore registration (LegacyEvidence would report a legacy worker):
// Heartbeat refuses with ErrNotRegistered and writes nothing, and
// KeepAlive registers the worker again.
func TestHeartbeatNeedsRegistration(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		m := newMigrator(t, b, StageDualWrite)
		registerWorker(t, s, "w", "s")
		require.NoError(t, s.UnregisterWorker(ctx, "w"))
		require.ErrorIs(t, s.Heartbeat(ctx, "w"), ErrNotRegistered)
		require.Zero(t, b.rdb.Exists(ctx, b.key("worker:w"), b.key("worker:w:heartbeat")).Val())

		c, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() {
			done <- s.KeepAlive(c, Capabilities{WorkerID: "v", Services: []string{"s"}}, 10*time.Millisecond)
		}()
		require.Eventually(t, func() bool { return b.rdb.Exists(ctx, b.key("worker:v:heartbeat")).Val() == 1 }, 5*time.Second, 5*time.Millisecond)
		require.NoError(t, b.rdb.Del(ctx, b.key("worker:v")).Err()) // its registration is deleted under it
		require.Eventually(t, func() bool { return b.rdb.HGet(ctx, b.key("worker:v"), fWorkerJobstore).Val() == Version },
			5*time.Second, 5*time.Millisecond, "KeepAlive registers it again")
		ev, err := m.LegacyEvidence(ctx)
		require.NoError(t, err)
		require.Empty(t, ev.Workers)
		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
	})
}
