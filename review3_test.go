package jobstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/stretchr/testify/require"
)

// TestReview3RequirementsModelsBreakLegacyClaim: checkRequirements is said
// to refuse every requirements shape that makes the legacy claim function
// raise, but it never looks at "models". findMatchingJob's
// check_model_requirements iterates the required models with ipairs and,
// for one the worker lacks, builds its debug log line with
// 'Model mismatch: need ' .. required_model: a model that is not a string
// or a number (an object, a boolean, null, a list) raises "attempt to
// concatenate", whatever the log level. So {"models":[{}]} (top level or
// under positive_requirements) is accepted by SubmitJob and then fails
// every FCALL findMatchingJob of every legacy worker of the service while
// it sits in the top-100 window: the legacy half of the fleet stops
// taking any job.
//
// Steps (real findMatchingJob, a redis-server of the test's own): submit a
// plain job, then one with such requirements at a higher priority, with
// jobstore; a legacy worker of the service (24 GB GPU, no models) calls
// findMatchingJob. Either SubmitJob refuses the requirements, or the
// legacy claim must still work.
func TestRequirementsModelsTheLegacyClaimFailsOnAreRefused(t *testing.T) {
	e := newInterop(t, true, legacyJS)
	_, err := e.store.SubmitJob(e.ctx, Job{ID: "plain", Service: "s", Priority: 1})
	require.NoError(t, err)
	caps := workerCaps("legacy-w", "s")
	for i, req := range []string{
		`{"models":[{}]}`,
		`{"models":[true]}`,
		`{"positive_requirements":{"models":[null]}}`,
	} {
		t.Run(req, func(t *testing.T) {
			id := fmt.Sprint("req3-", i)
			_, err := e.store.SubmitJob(e.ctx, Job{ID: id, Service: "s", Priority: 90, Requirements: json.RawMessage(req)})
			if err != nil {
				require.ErrorIs(t, err, ErrInvalidPayload)
				return
			}
			defer e.rdb.ZRem(e.ctx, "jobs:pending", id)
			_, lerr := e.legacy.call(legacyCallTimeout, "workerRequestJob", caps)
			require.NoError(t, lerr, "SubmitJob accepted requirements %s and the legacy claim function fails on them", req)
		})
	}
}

// slowEvals is a go-redis hook that holds every script call (EVALSHA,
// EVAL, alone or in a pipeline) for delay before sending it, while on:
// the caller's context can end before the script runs, and Redis still
// runs it, as after a reply lost on a slow network.
type slowEvals struct {
	on    atomic.Bool
	delay time.Duration
}

func (h *slowEvals) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *slowEvals) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(c context.Context, cmd redis.Cmder) error {
		if h.on.Load() && strings.HasPrefix(strings.ToLower(cmd.Name()), "eval") {
			// Applied by Redis, the reply late: the caller gives up first.
			err := next(context.WithoutCancel(c), cmd)
			time.Sleep(h.delay)
			return err
		}
		return next(c, cmd)
	}
}

func (h *slowEvals) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(c context.Context, cmds []redis.Cmder) error {
		if h.on.Load() {
			err := next(context.WithoutCancel(c), cmds)
			time.Sleep(h.delay)
			return err
		}
		return next(c, cmds)
	}
}

// lostClaim runs a ClaimJob whose context ends before Redis runs the
// claim script (held back by the hook), which Redis then runs all the
// same: the call fails, its claim is applied.
func lostClaim(t *testing.T, s *Store, caps Capabilities, after time.Duration, hook *slowEvals) <-chan error {
	t.Helper()
	out := make(chan error, 1)
	go func() {
		c, cancel := context.WithTimeout(ctx, after)
		defer cancel()
		_, err := s.ClaimJob(c, caps)
		out <- err
	}()
	return out
}

// TestReview3UnsettledTokenOverwritten: the Store keeps ONE unsettled
// claim token per worker (s.unsettled.Store(w, tok)). A worker that claims
// from several goroutines (examples/worker's concurrency; every goroutine
// uses the same WorkerID) can have two claims end in an error while both
// were applied by Redis: the second failure overwrites the first one's
// token, so no later ClaimJob ever gets that first job back. The job sits
// in jobs:active:<worker>, status assigned, while the worker's heartbeat
// keeps it from recovery: it never runs, which is exactly what the token
// was added to prevent ("the worker's next ClaimJob ... gets that job back
// instead of another").
//
// Steps: two pending jobs; a hook holds each claim script 150 ms before
// sending it; two ClaimJobs for worker w start 10 ms apart with 40 ms and
// 80 ms deadlines: both fail, both are applied (each took a job). Then
// ClaimJob until ErrNoJob: every job w holds must have come back from one
// of these claims.
func TestEveryLostClaimOfAWorkerComesBack(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		hook := &slowEvals{delay: 150 * time.Millisecond}
		b.rdb.AddHook(hook)
		s := newStore(t, b)
		caps := registerWorker(t, s, "w", "s")
		_, err := s.ClaimJob(ctx, caps) // loads the script
		require.ErrorIs(t, err, ErrNoJob)
		for _, id := range []string{"j1", "j2"} {
			_, err := s.SubmitJob(ctx, Job{ID: id, Service: "s"})
			require.NoError(t, err)
		}
		hook.on.Store(true)
		e1 := lostClaim(t, s, caps, 40*time.Millisecond, hook)
		time.Sleep(10 * time.Millisecond)
		e2 := lostClaim(t, s, caps, 80*time.Millisecond, hook)
		require.Error(t, <-e1)
		require.Error(t, <-e2)
		time.Sleep(300 * time.Millisecond) // both scripts ran meanwhile
		hook.on.Store(false)

		held, err := s.HeldJobs(ctx, "w")
		require.NoError(t, err)
		require.Equal(t, []string{"j1", "j2"}, held, "both lost claims were applied")
		var got []string
		for range 4 {
			j, err := s.ClaimJob(ctx, caps)
			if errors.Is(err, ErrNoJob) {
				break
			}
			require.NoError(t, err)
			got = append(got, j.ID)
		}
		slices.Sort(got)
		require.Equal(t, held, got, "a job claimed by a failed ClaimJob never came back to the worker")
	})
}

// TestReview3UnsettledTokenReturnsCancelledJob: the claim script answers
// a token it finds among the worker's held jobs before anything else, and
// does not look at the record's status. A claim that ended in an error
// (applied) followed by the legacy API's cancel (status failed, a
// jobs:failed entry, but the id left in jobs:active:<worker>: the legacy
// cancelJob never clears it) makes the worker's next ClaimJob return the
// cancelled job as its claim, instead of the pending job the worker could
// run. The finishing calls refuse the same job as finished (not_held's
// new FINISHED rule); the claim's token path has no such rule.
//
// Steps: submit j1; a ClaimJob whose deadline ends before its script runs
// (applied: j1 assigned to w); the legacy API cancels j1; submit j2;
// ClaimJob must give j2 (or at least a job that is not finished).
func TestALostClaimOfAFinishedJobIsNotHandedOver(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		hook := &slowEvals{delay: 150 * time.Millisecond}
		b.rdb.AddHook(hook)
		s := newStore(t, b)
		caps := registerWorker(t, s, "w", "s")
		_, err := s.ClaimJob(ctx, caps)
		require.ErrorIs(t, err, ErrNoJob)
		_, err = s.SubmitJob(ctx, Job{ID: "j1", Service: "s"})
		require.NoError(t, err)
		hook.on.Store(true)
		require.Error(t, <-lostClaim(t, s, caps, 30*time.Millisecond, hook))
		time.Sleep(300 * time.Millisecond)
		hook.on.Store(false)
		require.Equal(t, "assigned", b.rdb.HGet(ctx, b.key("job:j1"), "status").Val(), "the lost claim was applied")

		// The legacy API's cancelJob (lightweight-api-server.ts).
		require.NoError(t, b.rdb.HSet(ctx, b.key("job:j1"), "status", "failed", "error", "Job cancelled by user").Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key("jobs:failed"), "j1", `{"error":"Job cancelled by user"}`).Err())

		_, err = s.SubmitJob(ctx, Job{ID: "j2", Service: "s"})
		require.NoError(t, err)
		j, err := s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.Equal(t, "j2", j.ID, "ClaimJob handed over j1, cancelled (status %s), instead of the pending j2", j.Status)
	})
}

// TestReview3WriteSlotsHeldAfterOutage: a single write whose caller's
// context can end now runs in a goroutine under
// context.WithoutCancel(ctx). With ContextTimeoutEnabled (the README's way
// to make deadlines hold), go-redis used to give up reading a single
// write's reply at the caller's deadline, closing the connection; now
// nothing gives up until ReadTimeout. After a network outage (a
// blackhole: requests swallowed, connections left open), the first two
// writes keep both pipeline slots (maxInflight) for the whole ReadTimeout,
// and every later write of the Store queues behind them: the network is
// back but no write goes out, so the Store does not "recover by itself".
//
// Steps (real server through the fault proxy; ContextTimeoutEnabled,
// ReadTimeout 1 min as in TestDeadlinesUnderBlackhole): blackhole; two
// SubmitJobs with a 100 ms deadline fail; heal; a SubmitJob with a 3 s
// deadline must succeed.
func TestWriteSlotsFreedByTheCallersDeadlines(t *testing.T) {
	via, p, _ := proxiedBackend(t, func(o *redis.Options) {
		o.ContextTimeoutEnabled = true
		o.ReadTimeout, o.WriteTimeout, o.DialTimeout = time.Minute, time.Minute, time.Minute
	})
	s := newStore(t, via, WithDualWrite(true))
	_, err := s.SubmitJob(ctx, Job{Service: "s"})
	require.NoError(t, err)
	p.SetBlackhole(true)
	for range 2 {
		err := callWithin(t, 100*time.Millisecond, func(c context.Context) error {
			_, err := s.SubmitJob(c, Job{Service: "s"})
			return err
		})
		require.Error(t, err)
	}
	p.Heal()
	err = callWithin(t, 3*time.Second, func(c context.Context) error {
		_, err := s.SubmitJob(c, Job{Service: "s"})
		return err
	})
	require.NoError(t, err, "the network is back, but no write of the Store goes out")
	// Let the stuck writes, and the one queued behind them, end before
	// the test's keys are deleted.
	p.CutAll()
	require.Eventually(t, func() bool {
		s.pipe.mu.Lock()
		defer s.pipe.mu.Unlock()
		return s.pipe.inflight == 0 && len(s.pipe.queue) == 0
	}, 10*time.Second, 10*time.Millisecond)
}
