package jobstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var ctx = context.Background()

func TestNew(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	_, err := New(nil)
	require.ErrorIs(t, err, ErrInvalidConfig)

	cluster := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{mr.Addr()}})
	defer cluster.Close()
	_, err = New(cluster)
	require.ErrorIs(t, err, ErrClusterUnsupported)

	for name, opt := range map[string]Option{
		"lease":     WithLeaseDuration(0),
		"retention": WithRetention(-time.Second, time.Hour),
		"payload":   WithMaxPayloadBytes(0),
		"prefix":    WithKeyPrefix("a*"),
		"clock":     WithClock(nil),
	} {
		_, err := New(rdb, WithDualWrite(false), opt)
		require.ErrorIs(t, err, ErrInvalidConfig, name)
	}

	s, err := New(rdb, withEnv(func(string) (string, bool) { return "", false }))
	require.NoError(t, err)
	require.False(t, s.DualWrite())
}

func TestSubmitAndGet(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		wf := b.clock.Now().Add(-time.Hour)
		id, err := s.SubmitJob(ctx, Job{
			ID:               "abc123",
			Service:          "comfyui",
			Priority:         50,
			Payload:          json.RawMessage(`{"prompt":"a cat"}`),
			Requirements:     json.RawMessage(`{"gpu":true}`),
			CustomerID:       "cust-1",
			WorkflowID:       "wf-1",
			WorkflowPriority: 70,
			WorkflowDatetime: wf,
			CurrentStep:      1,
			TotalSteps:       3,
			Extra:            map[string]string{"trace_id": "t-9"},
		})
		require.NoError(t, err)
		require.Equal(t, "abc123", id)

		// The record is a hash of strings in the existing layout.
		h, err := b.rdb.HGetAll(ctx, b.key("job:abc123")).Result()
		require.NoError(t, err)
		require.Equal(t, map[string]string{
			"id": "abc123", "service_required": "comfyui", "priority": "50",
			"payload": `{"prompt":"a cat"}`, "requirements": `{"gpu":true}`,
			"customer_id": "cust-1", "workflow_id": "wf-1", "workflow_priority": "70",
			"workflow_datetime": fmt.Sprint(wf.UnixMilli()), "current_step": "1", "total_steps": "3",
			"status": "pending", "retry_count": "0", "max_retries": "3",
			"created_at": "2026-11-28T12:00:00.000Z", "trace_id": "t-9",
		}, h)
		// Workflow priority and time order the job.
		sc, err := b.rdb.ZScore(ctx, b.key("jobs:pending"), "abc123").Result()
		require.NoError(t, err)
		require.Equal(t, score(70, wf), sc)

		j, err := s.GetJob(ctx, "abc123")
		require.NoError(t, err)
		require.Equal(t, &Job{
			ID: "abc123", Service: "comfyui", Priority: 50,
			Payload: json.RawMessage(`{"prompt":"a cat"}`), Requirements: json.RawMessage(`{"gpu":true}`),
			CustomerID: "cust-1", WorkflowID: "wf-1", WorkflowPriority: 70,
			WorkflowDatetime: time.UnixMilli(wf.UnixMilli()).UTC(), CurrentStep: 1, TotalSteps: 3,
			Status: StatusPending, MaxRetries: 3, CreatedAt: b.clock.Now(),
			Extra: map[string]string{"trace_id": "t-9"},
		}, j)
	})
}

func TestSubmitDefaults(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		id, err := s.SubmitJob(ctx, Job{Service: "comfyui"})
		require.NoError(t, err)
		require.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, id)
		j, err := s.GetJob(ctx, id)
		require.NoError(t, err)
		require.Equal(t, json.RawMessage("{}"), j.Payload)
		require.Equal(t, DefaultMaxRetries, j.MaxRetries)
		require.Equal(t, StatusPending, j.Status)

		_, err = s.SubmitJob(ctx, Job{ID: id, Service: "other"})
		require.ErrorIs(t, err, ErrJobExists)
		j2, err := s.GetJob(ctx, id)
		require.NoError(t, err)
		require.Equal(t, j, j2, "a refused submit must not change the record")
	})
}

func TestSubmitInvalid(t *testing.T) {
	big := json.RawMessage(`"` + strings.Repeat("x", 2000) + `"`)
	cases := []struct {
		name string
		job  Job
		want error
	}{
		{"glob id", Job{ID: "a*b", Service: "s"}, ErrInvalidID},
		{"colon id", Job{ID: "a:b", Service: "s"}, ErrInvalidID},
		{"brace id", Job{ID: "{a}", Service: "s"}, ErrInvalidID},
		{"bracket id", Job{ID: "a[1]", Service: "s"}, ErrInvalidID},
		{"question id", Job{ID: "a?", Service: "s"}, ErrInvalidID},
		{"space id", Job{ID: "a b", Service: "s"}, ErrInvalidID},
		{"newline id", Job{ID: "a\nb", Service: "s"}, ErrInvalidID},
		{"control id", Job{ID: "a\x01", Service: "s"}, ErrInvalidID},
		{"non-utf8 id", Job{ID: "a\xff", Service: "s"}, ErrInvalidID},
		{"long id", Job{ID: strings.Repeat("a", 129), Service: "s"}, ErrInvalidID},
		{"empty service", Job{}, ErrInvalidService},
		{"blank service", Job{Service: "  "}, ErrInvalidService},
		{"long service", Job{Service: strings.Repeat("s", 129)}, ErrInvalidService},
		{"service with space", Job{Service: "comfy ui"}, ErrInvalidService},
		{"negative priority", Job{Service: "s", Priority: -1}, ErrInvalidPriority},
		{"priority 1001", Job{Service: "s", Priority: 1001}, ErrInvalidPriority},
		{"workflow priority 1001", Job{Service: "s", WorkflowPriority: 1001}, ErrInvalidPriority},
		{"invalid payload", Job{Service: "s", Payload: json.RawMessage(`{"a":`)}, ErrInvalidPayload},
		{"oversized payload", Job{Service: "s", Payload: big}, ErrPayloadTooLarge},
		{"invalid requirements", Job{Service: "s", Requirements: json.RawMessage(`nope`)}, ErrInvalidPayload},
		{"negative max retries", Job{Service: "s", MaxRetries: -1}, ErrInvalidMaxRetries},
		{"extra known field", Job{Service: "s", Extra: map[string]string{"status": "x"}}, ErrInvalidArgument},
		{"extra blank name", Job{Service: "s", Extra: map[string]string{" ": "x"}}, ErrInvalidArgument},
	}
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithMaxPayloadBytes(1000), WithDualWrite(true))
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				_, err := s.SubmitJob(ctx, tc.job)
				require.ErrorIs(t, err, tc.want)
				requireNoKeys(t, b, "*")
			})
		}
	})
}

func TestGetJobErrors(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		_, err := s.GetJob(ctx, "missing")
		require.ErrorIs(t, err, ErrJobNotFound)
		require.ErrorContains(t, err, `"missing"`)
		_, err = s.GetJob(ctx, "bad:id")
		require.ErrorIs(t, err, ErrInvalidID)

		good := map[string]any{"id": "x", "status": "pending", "service_required": "s"}
		corrupt := map[string]map[string]any{
			"priority":    {"priority": "high"},
			"max_retries": {"max_retries": "3.5"},
			"created_at":  {"created_at": "yesterday"},
			"payload":     {"payload": "{oops"},
			"status":      {"status": "sleeping"},
			"id":          {"id": "other"},
		}
		for field, bad := range corrupt {
			t.Run(field, func(t *testing.T) {
				key := b.key("job:x")
				require.NoError(t, b.rdb.Del(ctx, key).Err())
				require.NoError(t, b.rdb.HSet(ctx, key, good).Err())
				require.NoError(t, b.rdb.HSet(ctx, key, bad).Err())
				_, err := s.GetJob(ctx, "x")
				require.ErrorIs(t, err, ErrCorruptRecord)
				require.ErrorContains(t, err, field)
			})
		}
		t.Run("missing status", func(t *testing.T) {
			require.NoError(t, b.rdb.HSet(ctx, b.key("job:y"), "service_required", "s").Err())
			_, err := s.GetJob(ctx, "y")
			require.ErrorIs(t, err, ErrCorruptRecord)
			require.ErrorContains(t, err, "status")
		})
		t.Run("wrong type", func(t *testing.T) {
			require.NoError(t, b.rdb.Set(ctx, b.key("job:z"), "text", 0).Err())
			_, err := s.GetJob(ctx, "z")
			require.ErrorIs(t, err, ErrCorruptRecord)
		})
	})
}

func TestClaimOrder(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		type sub struct {
			id  string
			pri int
			at  time.Time
		}
		base := b.clock.Now()
		subs := []sub{
			// Extremes of priority and a millisecond apart: float64 must
			// keep every one of these distinct and in order.
			{"p1000-old", 1000, base.Add(-time.Millisecond)},
			{"p1000-new", 1000, base},
			{"p999-oldest", 999, base.Add(-365 * 24 * time.Hour)},
			{"p0-old", 0, base.Add(-2 * time.Millisecond)},
			{"p0-new", 0, base.Add(-time.Millisecond)},
			{"p500", 500, base.Add(time.Hour)},
		}
		r := rand.New(rand.NewPCG(1, 2))
		for i := range 40 {
			subs = append(subs, sub{fmt.Sprintf("r%02d", i), r.IntN(1001), base.Add(time.Duration(r.IntN(5000)) * time.Millisecond)})
		}
		for _, j := range slices.Clone(subs) {
			_, err := s.SubmitJob(ctx, Job{ID: j.id, Service: "svc", Priority: j.pri, CreatedAt: j.at})
			require.NoError(t, err)
		}
		slices.SortStableFunc(subs, func(a, b sub) int {
			if a.pri != b.pri {
				return b.pri - a.pri
			}
			if c := a.at.Compare(b.at); c != 0 {
				return c
			}
			return strings.Compare(b.id, a.id) // equal scores: Redis orders members in reverse
		})
		var want []string
		for _, j := range subs {
			want = append(want, j.id)
		}

		pending, err := s.GetPendingJobs(ctx, 1000)
		require.NoError(t, err)
		var got []string
		for _, j := range pending {
			got = append(got, j.ID)
		}
		require.Equal(t, want, got, "GetPendingJobs order")

		got = got[:0]
		for {
			j, err := s.ClaimJob(ctx, "w1")
			if errors.Is(err, ErrNoJob) {
				break
			}
			require.NoError(t, err)
			require.Equal(t, StatusAssigned, j.Status)
			require.Equal(t, "w1", j.WorkerID)
			got = append(got, j.ID)
		}
		require.Equal(t, want, got, "claim order")
	})
}

func TestClaimServices(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		// More non-matching jobs ahead than one page of candidates holds.
		for i := range 250 {
			_, err := s.SubmitJob(ctx, Job{ID: fmt.Sprintf("a%03d", i), Service: "alpha", Priority: 10})
			require.NoError(t, err)
		}
		_, err := s.SubmitJob(ctx, Job{ID: "b1", Service: "beta", Priority: 1})
		require.NoError(t, err)
		_, err = s.SubmitJob(ctx, Job{ID: "g1", Service: "gamma", Priority: 5})
		require.NoError(t, err)

		j, err := s.ClaimJob(ctx, "w", "beta", "gamma")
		require.NoError(t, err)
		require.Equal(t, "g1", j.ID)
		j, err = s.ClaimJob(ctx, "w", "beta")
		require.NoError(t, err)
		require.Equal(t, "b1", j.ID)
		_, err = s.ClaimJob(ctx, "w", "beta")
		require.ErrorIs(t, err, ErrNoJob)
		require.ErrorContains(t, err, "beta")
		n, err := b.rdb.ZCard(ctx, b.key("jobs:pending")).Result()
		require.NoError(t, err)
		require.EqualValues(t, 250, n, "non-matching jobs stay pending")

		_, err = s.ClaimJob(ctx, "", "beta")
		require.ErrorIs(t, err, ErrInvalidWorker)
		_, err = s.ClaimJob(ctx, "w", "")
		require.ErrorIs(t, err, ErrInvalidService)
	})
}

func TestClaimSkipsBrokenEntries(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		sink := &logSink{level: -10}
		s := newStore(t, b, WithLogger(slogLogger(sink)), WithDualWrite(true))
		_, err := s.SubmitJob(ctx, Job{ID: "good", Service: "s", Priority: 1})
		require.NoError(t, err)
		pending := b.key("jobs:pending")
		// Ahead of it: an entry whose record is gone, one whose record is
		// a string, one with a finished record, and an invalid id.
		require.NoError(t, b.rdb.ZAdd(ctx, pending,
			redis.Z{Score: 9e15, Member: "gone"},
			redis.Z{Score: 9e15, Member: "str"},
			redis.Z{Score: 9e15, Member: "done"},
			redis.Z{Score: 9e15, Member: "bad id"}).Err())
		require.NoError(t, b.rdb.Set(ctx, b.key("job:str"), "x", 0).Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key("job:done"), "id", "done", "status", "completed", "service_required", "s").Err())

		j, err := s.ClaimJob(ctx, "w")
		require.NoError(t, err)
		require.Equal(t, "good", j.ID)
		members, err := b.rdb.ZRange(ctx, pending, 0, -1).Result()
		require.NoError(t, err)
		require.ElementsMatch(t, []string{"str", "done", "bad id"}, members, "only the orphan is removed")
		require.Contains(t, strings.Join(sink.lines(), "\n"), "removed gone from "+pending)
		_, err = s.ClaimJob(ctx, "w")
		require.ErrorIs(t, err, ErrNoJob)
	})
}

func TestLifecycle(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		id, err := s.SubmitJob(ctx, Job{Service: "s", Extra: map[string]string{"trace_id": "t1"}})
		require.NoError(t, err)
		j, err := s.ClaimJob(ctx, "w1", "s")
		require.NoError(t, err)
		require.Equal(t, id, j.ID)
		require.Equal(t, b.clock.Now(), j.AssignedAt)
		deadline, err := b.rdb.ZScore(ctx, b.key("jobs:active"), id).Result()
		require.NoError(t, err)
		require.EqualValues(t, b.clock.Now().Add(DefaultLeaseDuration).UnixMilli(), deadline)

		// Another worker can do nothing with it.
		for name, call := range map[string]func() error{
			"start":    func() error { return s.StartJob(ctx, id, "w2") },
			"extend":   func() error { _, err := s.ExtendLease(ctx, id, "w2", 0); return err },
			"complete": func() error { return s.CompleteJob(ctx, id, "w2", nil) },
			"fail":     func() error { return s.FailJob(ctx, id, "w2", "no") },
		} {
			err := call()
			require.ErrorIs(t, err, ErrNotHeld, name)
			require.ErrorContains(t, err, "held by worker w1", name)
		}
		j2, err := s.GetJob(ctx, id)
		require.NoError(t, err)
		require.Equal(t, j, j2)

		b.clock.Advance(time.Minute)
		require.NoError(t, s.StartJob(ctx, id, "w1"))
		until, err := s.ExtendLease(ctx, id, "w1", time.Hour)
		require.NoError(t, err)
		require.Equal(t, b.clock.Now().Add(time.Hour).UnixMilli(), until.UnixMilli())

		require.NoError(t, s.CompleteJob(ctx, id, "w1", json.RawMessage(`{"url":"x"}`)))
		j, err = s.GetJob(ctx, id)
		require.NoError(t, err)
		require.Equal(t, StatusCompleted, j.Status)
		require.Equal(t, json.RawMessage(`{"url":"x"}`), j.Result)
		require.Equal(t, b.clock.Now(), j.CompletedAt)
		require.Equal(t, b.clock.Now(), j.StartedAt)
		require.Equal(t, map[string]string{"trace_id": "t1"}, j.Extra, "unknown fields survive every write")
		ttl, err := b.rdb.PTTL(ctx, b.key("job:"+id)).Result()
		require.NoError(t, err)
		require.InDelta(t, DefaultCompletedRetention.Seconds(), ttl.Seconds(), 5)
		n, err := b.rdb.ZCard(ctx, b.key("jobs:active")).Result()
		require.NoError(t, err)
		require.Zero(t, n)
		sc, err := b.rdb.ZScore(ctx, b.key("jobs:completed"), id).Result()
		require.NoError(t, err)
		require.EqualValues(t, b.clock.Now().UnixMilli(), sc)

		err = s.CompleteJob(ctx, id, "w1", nil)
		require.ErrorIs(t, err, ErrNotHeld, "completing twice")
		require.ErrorIs(t, err, ErrJobFinished)
		err = s.CompleteJob(ctx, "nope", "w1", nil)
		require.ErrorIs(t, err, ErrJobNotFound)
		err = s.CompleteJob(ctx, id, "w1", json.RawMessage(`{`))
		require.ErrorIs(t, err, ErrInvalidPayload)
	})
}

func TestFailRetries(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		id, err := s.SubmitJob(ctx, Job{Service: "s", Priority: 7, MaxRetries: 2})
		require.NoError(t, err)
		want := score(7, b.clock.Now())
		for i := 1; i <= 2; i++ {
			b.clock.Advance(time.Second)
			_, err := s.ClaimJob(ctx, "w1")
			require.NoError(t, err)
			require.NoError(t, s.FailJob(ctx, id, "w1", fmt.Sprintf("boom %d", i)))
			j, err := s.GetJob(ctx, id)
			require.NoError(t, err)
			require.Equal(t, StatusPending, j.Status)
			require.Equal(t, i, j.RetryCount)
			require.Equal(t, fmt.Sprintf("boom %d", i), j.Error)
			require.Equal(t, "w1", j.LastFailedWorker)
			require.Empty(t, j.WorkerID)
			sc, err := b.rdb.ZScore(ctx, b.key("jobs:pending"), id).Result()
			require.NoError(t, err)
			require.Equal(t, want, sc, "a retried job keeps its place")
		}
		_, err = s.ClaimJob(ctx, "w1")
		require.NoError(t, err)
		require.NoError(t, s.FailJob(ctx, id, "w1", "final"))
		j, err := s.GetJob(ctx, id)
		require.NoError(t, err)
		require.Equal(t, StatusFailed, j.Status)
		require.Equal(t, 2, j.RetryCount)
		require.Equal(t, b.clock.Now(), j.FailedAt)
		_, err = b.rdb.ZScore(ctx, b.key("jobs:failed"), id).Result()
		require.NoError(t, err)
		ttl, err := b.rdb.PTTL(ctx, b.key("job:"+id)).Result()
		require.NoError(t, err)
		require.InDelta(t, DefaultFailedRetention.Seconds(), ttl.Seconds(), 5)
		_, err = s.ClaimJob(ctx, "w1")
		require.ErrorIs(t, err, ErrNoJob)
	})
}

func TestRecoverExpired(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithLeaseDuration(time.Minute))
		a, err := s.SubmitJob(ctx, Job{ID: "a", Service: "s", MaxRetries: 1, Priority: 2})
		require.NoError(t, err)
		_, err = s.SubmitJob(ctx, Job{ID: "b", Service: "s", Priority: 1})
		require.NoError(t, err)
		_, err = s.ClaimJob(ctx, "crashed")
		require.NoError(t, err)
		b.clock.Advance(30 * time.Second)
		_, err = s.ClaimJob(ctx, "alive")
		require.NoError(t, err)
		// A stale entry whose record is gone.
		require.NoError(t, b.rdb.ZAdd(ctx, b.key("jobs:active"), redis.Z{Score: 1, Member: "ghost"}).Err())

		st, err := s.RecoverExpired(ctx)
		require.NoError(t, err)
		require.Equal(t, RecoveryStats{Dropped: 1}, st, "no lease has run out yet")

		b.clock.Advance(31 * time.Second)
		st, err = s.RecoverExpired(ctx)
		require.NoError(t, err)
		require.Equal(t, RecoveryStats{Requeued: 1}, st)
		j, err := s.GetJob(ctx, a)
		require.NoError(t, err)
		require.Equal(t, StatusPending, j.Status)
		require.Equal(t, 1, j.RetryCount)
		require.Equal(t, "crashed", j.LastFailedWorker)
		require.Equal(t, "lease expired", j.Error)
		require.ErrorIs(t, s.CompleteJob(ctx, a, "crashed", nil), ErrNotHeld)

		_, err = s.ClaimJob(ctx, "crashed-again")
		require.NoError(t, err)
		b.clock.Advance(2 * time.Minute)
		st, err = s.RecoverExpired(ctx)
		require.NoError(t, err)
		require.Equal(t, RecoveryStats{Requeued: 1, Failed: 1}, st)
		j, err = s.GetJob(ctx, a)
		require.NoError(t, err)
		require.Equal(t, StatusFailed, j.Status)
	})
}

func TestCancel(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		p, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		require.NoError(t, s.CancelJob(ctx, p))
		j, err := s.GetJob(ctx, p)
		require.NoError(t, err)
		require.Equal(t, StatusCancelled, j.Status)
		require.Equal(t, b.clock.Now(), j.CancelledAt)
		_, err = s.ClaimJob(ctx, "w")
		require.ErrorIs(t, err, ErrNoJob)
		require.ErrorIs(t, s.CancelJob(ctx, p), ErrJobFinished)

		a, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		_, err = s.ClaimJob(ctx, "w")
		require.NoError(t, err)
		require.NoError(t, s.CancelJob(ctx, a))
		err = s.CompleteJob(ctx, a, "w", nil)
		require.ErrorIs(t, err, ErrNotHeld)
		require.ErrorIs(t, err, ErrJobFinished)
		require.ErrorIs(t, s.CancelJob(ctx, "nope"), ErrJobNotFound)
		requireNoKeys(t, b, "jobs:active")
	})
}

func TestTrimRetention(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithRetention(time.Hour, 2*time.Hour), WithDualWrite(true))
		for _, id := range []string{"c1", "c2", "f1"} {
			_, err := s.SubmitJob(ctx, Job{ID: id, Service: "s", MaxRetries: 0})
			require.NoError(t, err)
		}
		require.NoError(t, b.rdb.HSet(ctx, b.key("job:f1"), "max_retries", "0").Err())
		for range 3 {
			j, err := s.ClaimJob(ctx, "w")
			require.NoError(t, err)
			if j.ID == "f1" {
				require.NoError(t, s.FailJob(ctx, j.ID, "w", "x"))
			} else {
				require.NoError(t, s.CompleteJob(ctx, j.ID, "w", nil))
			}
			b.clock.Advance(time.Minute)
		}
		n, err := s.TrimRetention(ctx)
		require.NoError(t, err)
		require.Zero(t, n)

		// Past the completed retention only. Records are removed even
		// where Redis has not expired them yet (the real server's clock
		// does not move with the fake one).
		b.clock.Advance(time.Hour)
		n, err = s.TrimRetention(ctx)
		require.NoError(t, err)
		require.Equal(t, 2, n)
		requireNoKeys(t, b, "job:c*")
		requireNoKeys(t, b, "jobs:completed")
		requireNoKeys(t, b, "step:c*")
		j, err := s.GetJob(ctx, "f1")
		require.NoError(t, err)
		require.Equal(t, StatusFailed, j.Status)

		b.clock.Advance(2 * time.Hour)
		n, err = s.TrimRetention(ctx)
		require.NoError(t, err)
		require.Equal(t, 1, n)
		requireNoKeys(t, b, "job*")
		requireMirrored(t, b)
	})
}

func TestMaintain(t *testing.T) {
	b := miniBackend(t)
	s := newStore(t, b, WithLeaseDuration(time.Second))
	id, err := s.SubmitJob(ctx, Job{Service: "s"})
	require.NoError(t, err)
	_, err = s.ClaimJob(ctx, "w")
	require.NoError(t, err)
	b.advance(time.Hour)

	c, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() { done <- s.Maintain(c, 10*time.Millisecond) }()
	require.Eventually(t, func() bool {
		j, err := s.GetJob(ctx, id)
		return err == nil && j.Status == StatusPending
	}, 5*time.Second, 10*time.Millisecond)
	cancel()
	require.ErrorIs(t, <-done, context.Canceled)
	require.ErrorIs(t, s.Maintain(ctx, 0), ErrInvalidArgument)
}

func TestGetPendingJobs(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		_, err := s.GetPendingJobs(ctx, 0)
		require.ErrorIs(t, err, ErrInvalidArgument)
		jobs, err := s.GetPendingJobs(ctx, 10)
		require.NoError(t, err)
		require.Empty(t, jobs)
		for i := range 5 {
			_, err := s.SubmitJob(ctx, Job{ID: fmt.Sprint("j", i), Service: "s", Priority: i})
			require.NoError(t, err)
		}
		// An orphan at the head is passed over, and the limit still filled.
		require.NoError(t, b.rdb.ZAdd(ctx, b.key("jobs:pending"), redis.Z{Score: 9e15, Member: "gone"}).Err())
		jobs, err = s.GetPendingJobs(ctx, 3)
		require.NoError(t, err)
		require.Len(t, jobs, 3)
		assert.Equal(t, []string{"j4", "j3", "j2"}, []string{jobs[0].ID, jobs[1].ID, jobs[2].ID})

		require.NoError(t, b.rdb.HSet(ctx, b.key("job:j3"), "priority", "x").Err())
		_, err = s.GetPendingJobs(ctx, 3)
		require.ErrorIs(t, err, ErrCorruptRecord)
	})
}

func TestWrongTypeQueues(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		require.NoError(t, b.rdb.Set(ctx, b.key("jobs:pending"), "x", 0).Err())
		_, err := s.SubmitJob(ctx, Job{ID: "a", Service: "s"})
		require.ErrorIs(t, err, ErrCorruptRecord)
		require.ErrorContains(t, err, "jobs:pending is a string")
		requireNoKeys(t, b, "job:*")
		// The same for a generated id, which takes the MULTI path, and
		// with the mirror on.
		s.SetDualWrite(true)
		_, err = s.SubmitJob(ctx, Job{Service: "s"})
		require.ErrorIs(t, err, ErrCorruptRecord)
		require.ErrorContains(t, err, "jobs:pending is not a sorted set")
		ids, err := s.SubmitJobs(ctx, []Job{{Service: "s"}, {Service: "s"}})
		require.ErrorIs(t, err, ErrCorruptRecord)
		require.Equal(t, []string{"", ""}, ids)
		requireNoKeys(t, b, "job:*")
		requireNoKeys(t, b, "step:*")
		s.SetDualWrite(false)
		_, err = s.ClaimJob(ctx, "w")
		require.ErrorIs(t, err, ErrCorruptRecord)
		_, err = s.GetPendingJobs(ctx, 1)
		require.ErrorIs(t, err, ErrCorruptRecord)
	})
}

func TestQueueSizes(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		for range 3 {
			_, err := s.SubmitJob(ctx, Job{Service: "s"})
			require.NoError(t, err)
		}
		j, err := s.ClaimJob(ctx, "w")
		require.NoError(t, err)
		require.NoError(t, s.CompleteJob(ctx, j.ID, "w", nil))
		_, err = s.ClaimJob(ctx, "w")
		require.NoError(t, err)
		n, err := s.QueueSizes(ctx)
		require.NoError(t, err)
		require.Equal(t, QueueSizes{Pending: 1, Active: 1, Completed: 1}, n)
	})
}
