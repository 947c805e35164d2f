package jobstore

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestEvents subscribes to the legacy channels and checks that every
// change publishes what the legacy services publish for it, once.
func TestEvents(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		names := []string{chJobSubmitted, chWorkflowSubmitted, chJobClaimed, chProgress, chCompleteJob,
			chJobFailed, chCancelJob, chJobCancelled, chWorkerStatus}
		var chans []string
		for _, n := range names {
			chans = append(chans, b.key(n))
		}
		sub := b.rdb.Subscribe(ctx, chans...)
		defer sub.Close()
		_, err := sub.Receive(ctx) // the subscription is in place
		require.NoError(t, err)
		msgs := sub.Channel()
		next := func(want string) map[string]any {
			t.Helper()
			select {
			case m := <-msgs:
				require.Equal(t, b.key(want), m.Channel, "message %s", m.Payload)
				var v map[string]any
				require.NoError(t, json.Unmarshal([]byte(m.Payload), &v))
				return v
			case <-time.After(5 * time.Second):
				t.Fatalf("no %s message", want)
				return nil
			}
		}

		id, err := s.SubmitJob(ctx, Job{Service: "svc", Priority: 7, Payload: json.RawMessage(`{"p":1}`),
			WorkflowID: "wf", CurrentStep: 1, TotalSteps: 3})
		require.NoError(t, err)
		wf := next(chWorkflowSubmitted)
		require.Equal(t, "wf", wf["workflow_id"])
		require.Equal(t, id, wf["first_job_id"])
		m := next(chJobSubmitted)
		require.Equal(t, id, m["job_id"])
		require.Equal(t, "pending", m["status"])
		require.Equal(t, map[string]any{"p": 1.0}, m["payload"])

		caps := registerWorker(t, s, "w", "svc")
		_, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		// In the newest claim function's order: job_claimed first.
		m = next(chJobClaimed)
		require.Equal(t, "claimed", m["status"])
		require.Equal(t, "w", m["worker_id"])
		m = next(chProgress)
		require.Equal(t, id, m["job_id"])
		require.Equal(t, 0.0, m["progress"])
		m = next(chWorkerStatus)
		require.Equal(t, "busy", m["new_status"])
		require.Equal(t, id, m["current_job_id"])

		require.NoError(t, s.StartJob(ctx, id, "w"))
		require.Equal(t, "in_progress", next(chProgress)["status"])
		require.NoError(t, s.ReportProgress(ctx, id, "w", 55, "going"))
		m = next(chProgress)
		require.Equal(t, 55.0, m["progress"])
		require.Equal(t, "going", m["message"])

		out, err := s.FailJob(ctx, id, "w", "boom", true)
		require.NoError(t, err)
		require.Equal(t, Retried, out)
		m = next(chJobFailed)
		require.Equal(t, true, m["will_retry"])
		require.Equal(t, true, m["can_retry"])
		require.Equal(t, 1.0, m["retry_count"])
		require.Equal(t, "idle", next(chWorkerStatus)["new_status"])

		_, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		next(chJobClaimed)
		next(chProgress)
		next(chWorkerStatus)
		require.NoError(t, s.CompleteJob(ctx, id, "w", json.RawMessage(`{"r":2}`)))
		m = next(chCompleteJob)
		require.Equal(t, map[string]any{"r": 2.0}, m["result"])
		require.Equal(t, "completed", m["status"])
		next(chWorkerStatus)

		id2, err := s.SubmitJob(ctx, Job{Service: "svc"})
		require.NoError(t, err)
		next(chJobSubmitted)
		_, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		next(chJobClaimed)
		next(chProgress)
		next(chWorkerStatus)
		require.NoError(t, s.CancelJob(ctx, id2, "changed my mind"))
		m = next(chCancelJob)
		require.Equal(t, "w", m["worker_id"], "the worker holding it is told")
		require.Equal(t, "changed my mind", m["reason"])
		require.Equal(t, "changed my mind", next(chJobCancelled)["reason"])

		// A refused change publishes nothing.
		require.ErrorIs(t, s.CompleteJob(ctx, id2, "w", nil), ErrNotHeld)
		select {
		case m := <-msgs:
			t.Fatalf("unexpected message %s %s", m.Channel, m.Payload)
		case <-time.After(100 * time.Millisecond):
		}
	})
}
