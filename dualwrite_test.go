package jobstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestDualWriteFromEnv(t *testing.T) {
	cases := []struct {
		value string
		set   bool
		want  bool
		err   bool
	}{
		{set: false, want: false},
		{value: "", set: true, want: false},
		{value: "true", set: true, want: true},
		{value: "TRUE", set: true, want: true},
		{value: " yes ", set: true, want: true},
		{value: "On", set: true, want: true},
		{value: "1", set: true, want: true},
		{value: "false", set: true, want: false},
		{value: "0", set: true, want: false},
		{value: "No", set: true, want: false},
		{value: "off", set: true, want: false},
		{value: "ture", set: true, err: true},
		{value: "2", set: true, err: true},
		{value: "enabled", set: true, err: true},
	}
	b := miniBackend(t)
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%q/%v", tc.value, tc.set), func(t *testing.T) {
			env := withEnv(func(name string) (string, bool) {
				if name != EnvDualWrite {
					return "", false
				}
				return tc.value, tc.set
			})
			s, err := New(b.rdb, env)
			if tc.err {
				require.ErrorIs(t, err, ErrInvalidConfig)
				require.ErrorContains(t, err, EnvDualWrite)
				require.ErrorContains(t, err, fmt.Sprintf("%q", tc.value))
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, s.DualWrite())
			// WithDualWrite overrides the environment, even a bad value.
			s, err = New(b.rdb, env, WithDualWrite(!tc.want))
			require.NoError(t, err)
			require.Equal(t, !tc.want, s.DualWrite())
		})
	}
	t.Run("process environment", func(t *testing.T) {
		t.Setenv(EnvDualWrite, "on")
		s, err := New(b.rdb)
		require.NoError(t, err)
		require.True(t, s.DualWrite())
	})
}

// lifecycle runs every writing operation once: submit, claim, start,
// progress, complete, fail with a retry, fail for good, cancel (pending
// and held) and the recovery of a dead worker's job. check runs after
// each; it returns how many writes it made.
func lifecycle(t *testing.T, b *backend, s *Store, check func(step string)) int {
	t.Helper()
	writes := 0
	for i, j := range []Job{
		{ID: "c", Service: "s", Priority: 9},
		{ID: "f", Service: "s", Priority: 8, MaxRetries: 2},
		{ID: "x", Service: "s", Priority: 7},
		{ID: "y", Service: "s", Priority: 6},
		{ID: "r", Service: "s", Priority: 5},
	} {
		_, err := s.SubmitJob(ctx, j)
		require.NoError(t, err)
		writes++
		check(fmt.Sprint("submit ", i))
	}
	caps := registerWorker(t, s, "w", "s")
	claim := func(want string) {
		j, err := s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.Equal(t, want, j.ID)
		writes++
		check("claim " + want)
	}
	step := func(name string, err error) {
		require.NoError(t, err, name)
		writes++
		check(name)
	}
	claim("c")
	step("start", s.StartJob(ctx, "c", "w"))
	step("progress", s.ReportProgress(ctx, "c", "w", 50, "half"))
	step("complete", s.CompleteJob(ctx, "c", "w", json.RawMessage(`{"ok":true}`)))
	claim("f")
	out, err := s.FailJob(ctx, "f", "w", "once", true)
	require.Equal(t, Retried, out)
	step("fail and retry", err)
	claim("f")
	out, err = s.FailJob(ctx, "f", "w", "twice", true)
	require.Equal(t, Failed, out)
	step("fail for good", err)
	step("cancel pending", s.CancelJob(ctx, "y", ""))
	claim("x")
	step("cancel held", s.CancelJob(ctx, "x", ""))
	claim("r")
	require.NoError(t, b.rdb.Del(ctx, b.key("worker:w:heartbeat")).Err())
	rs, err := s.RecoverExpired(ctx)
	require.Equal(t, RecoveryStats{Workers: 1, Requeued: 1}, rs)
	step("recover", err)
	return writes
}

func TestDualWriteMirrorsEveryOperation(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		writes := lifecycle(t, b, s, func(step string) {
			t.Helper()
			requireMirrored(t, b)
		})
		st := s.DualWriteStats()
		require.Zero(t, st.Failed)
		require.EqualValues(t, writes, st.Attempted, "one mirrored script per write")
		require.Equal(t, 1.0, st.SuccessRate())
		// Something was left to compare: r is pending again, c has a
		// progress hash, results are in both result hashes.
		snap := nsSnapshot(t, b, StepNamespace)
		for _, k := range []string{"R:r", "R:c:progress", "Q:pending", "Q:completed", "Q:failed"} {
			require.Contains(t, snap, k)
		}
	})
}

func TestFlagOffTouchesNoStepKeys(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(false))
		lifecycle(t, b, s, func(string) { requireNoKeys(t, b, "step*") })
		require.Equal(t, DualWriteStats{}, s.DualWriteStats())
	})
}

// TestStepPrimaryMirrorsToJob runs the lifecycle with step:* authoritative:
// every write lands there and is mirrored to job:*.
func TestStepPrimaryMirrorsToJob(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithStage(StageStepPrimary))
		lifecycle(t, b, s, func(string) { requireMirrored(t, b) })
		sizes, err := s.queueSizes(ctx, s.space(StepNamespace))
		require.NoError(t, err)
		require.Equal(t, int64(1), sizes.Pending)
	})
}

func TestSubmittedBeforeFlagClaimedAfter(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(false))
		_, err := s.SubmitJob(ctx, Job{ID: "old", Service: "s", Payload: json.RawMessage(`{"a":1}`),
			Extra: map[string]string{"processing_time": "3"}})
		require.NoError(t, err)
		requireNoKeys(t, b, "step*")

		require.NoError(t, s.SetDualWrite(true))
		caps := registerWorker(t, s, "w", "s")
		_, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		// The step record is a full copy, not just the claim's fields.
		h, err := b.rdb.HGetAll(ctx, b.key("step:old")).Result()
		require.NoError(t, err)
		require.Equal(t, `{"a":1}`, h["payload"])
		require.Equal(t, "3", h["processing_time"])
		require.Equal(t, "assigned", h["status"])
		require.NoError(t, s.CompleteJob(ctx, "old", "w", nil))
		requireMirrored(t, b)
	})
}

func TestMirrorFailureNeverFailsPrimary(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		sink := &logSink{level: -10}
		s := newStore(t, b, WithDualWrite(true), WithLogger(slogLogger(sink)))
		// Keys of the wrong type where the mirror writes.
		require.NoError(t, b.rdb.Set(ctx, b.key("steps:pending"), "oops", 0).Err())
		require.NoError(t, b.rdb.Set(ctx, b.key("steps:active:w"), "oops", 0).Err())
		require.NoError(t, b.rdb.Set(ctx, b.key("steps:completed"), "oops", 0).Err())

		id, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		caps := registerWorker(t, s, "w", "s")
		j, err := s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.Equal(t, id, j.ID)
		require.NoError(t, s.CompleteJob(ctx, id, "w", nil))

		got, err := s.GetJob(ctx, id)
		require.NoError(t, err)
		require.Equal(t, StatusCompleted, got.Status)
		st := s.DualWriteStats()
		byOp := map[string]uint64{opSubmit: 1, opClaim: 1, opComplete: 1}
		require.Equal(t, DualWriteStats{Attempted: 3, Failed: 3, AttemptedByOp: byOp, FailedByOp: byOp}, st)
		require.InDelta(t, 0, st.SuccessRate(), 1e-9)

		logs := strings.Join(sink.lines(), "\n")
		require.Contains(t, logs, "ERROR Dual-write failed")
		require.Contains(t, logs, b.key("steps:pending")+": WRONGTYPE")
		require.Contains(t, logs, b.key("steps:active:w")+": WRONGTYPE")
		require.Contains(t, logs, b.key("steps:completed")+": WRONGTYPE")
		require.Contains(t, logs, "op=claim")
		// What could be mirrored was: the record.
		sh, err := b.rdb.HGetAll(ctx, b.key("step:"+id)).Result()
		require.NoError(t, err)
		require.Equal(t, "completed", sh["status"])
	})
}

func TestMirrorPanicRecovered(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		sink := &logSink{level: -10}
		s := newStore(t, b, WithDualWrite(true), WithLogger(slogLogger(sink)))
		s.mirrorHook = func(op string) {
			if op == "submit" || op == "claim.reply" {
				panic("injected " + op)
			}
		}
		id, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err, "a panic while preparing the mirror")
		_, err = s.GetJob(ctx, id)
		require.NoError(t, err)
		requireNoKeys(t, b, "step*")

		caps := registerWorker(t, s, "w", "s")
		j, err := s.ClaimJob(ctx, caps)
		require.NoError(t, err, "a panic after the script ran")
		require.Equal(t, id, j.ID)
		byOp := map[string]uint64{opSubmit: 1, opClaim: 1}
		require.Equal(t, DualWriteStats{Attempted: 2, Failed: 2, Panics: 2, AttemptedByOp: byOp, FailedByOp: byOp}, s.DualWriteStats())
		logs := strings.Join(sink.lines(), "\n")
		require.Contains(t, logs, "panic=injected submit")
		require.Contains(t, logs, "panic=injected claim.reply")
	})
}

func TestDualWriteDebugLog(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		sink := &logSink{level: -10}
		s := newStore(t, b, WithDualWrite(true), WithLogger(slogLogger(sink)))
		_, err := s.SubmitJob(ctx, Job{ID: "abc123", Service: "s"})
		require.NoError(t, err)
		require.Equal(t, []string{
			"DEBUG Dual-write: copied " + b.key("job:abc123") + " → " + b.key("step:abc123") + " op=submit",
			"DEBUG Dual-write: added abc123 to " + b.key("steps:pending") + " op=submit",
		}, sink.lines())

		// Without debug logging the scripts send no log back.
		quiet := &logSink{level: 0}
		s = newStore(t, b, WithDualWrite(true), WithLogger(slogLogger(quiet)))
		_, err = s.SubmitJob(ctx, Job{ID: "def", Service: "s"})
		require.NoError(t, err)
		require.Empty(t, quiet.lines())
	})
}

func TestScriptCacheFlushed(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		_, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		require.NoError(t, b.rdb.ScriptFlush(ctx).Err())
		caps := registerWorker(t, s, "w", "s")
		_, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		// A batch after a flush: the pipelined path loads the scripts.
		require.NoError(t, b.rdb.ScriptFlush(ctx).Err())
		ids, err := s.SubmitJobs(ctx, []Job{{Service: "s"}, {Service: "s"}, {Service: "s"}})
		require.NoError(t, err)
		require.Len(t, ids, 3)
		requireMirrored(t, b)
	})
}

// TestConcurrentDualWrite runs API and worker goroutines against one Store
// with dual-write on, then compares the namespaces key by key, field by
// field and member by member.
func TestConcurrentDualWrite(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		const submitters, perSubmitter, workers = 6, 40, 6
		services := []string{"alpha", "beta", "gamma"}
		var submitted, wg sync.WaitGroup
		var done atomic.Bool
		var completed, failed, cancelled atomic.Int64
		errs := make(chan error, submitters+workers)

		for g := range submitters {
			submitted.Add(1)
			go func() {
				defer submitted.Done()
				r := rand.New(rand.NewPCG(uint64(g), 7))
				for i := range perSubmitter {
					id, err := s.SubmitJob(ctx, Job{
						Service: services[r.IntN(len(services))], Priority: r.IntN(1001),
						MaxRetries: 1 + r.IntN(3), Payload: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)),
					})
					if err != nil {
						errs <- err
						return
					}
					if i%13 == 0 {
						if err := s.CancelJob(ctx, id, ""); err != nil && !errors.Is(err, ErrJobFinished) {
							errs <- err
							return
						}
						cancelled.Add(1)
					}
				}
			}()
		}
		for w := range workers {
			caps := Capabilities{WorkerID: fmt.Sprint("worker-", w), Services: services}
			if w%2 == 1 {
				caps.Services = []string{services[w%3]}
			}
			require.NoError(t, s.RegisterWorker(ctx, caps))
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(w), 11))
				worker := caps.WorkerID
				for idle := 0; idle < 3; {
					j, err := s.ClaimJob(ctx, caps)
					if errors.Is(err, ErrNoJob) {
						if done.Load() {
							idle++
						}
						time.Sleep(time.Millisecond)
						continue
					}
					if err != nil {
						errs <- err
						return
					}
					switch r.IntN(4) {
					case 0:
						_, err = s.FailJob(ctx, j.ID, worker, "flaky", true)
						failed.Add(1)
					case 1:
						if err = s.StartJob(ctx, j.ID, worker); err == nil {
							err = s.ReportProgress(ctx, j.ID, worker, 10, "")
						}
						if err == nil {
							err = s.CompleteJob(ctx, j.ID, worker, json.RawMessage(`"ok"`))
						}
						completed.Add(1)
					default:
						err = s.CompleteJob(ctx, j.ID, worker, nil)
						completed.Add(1)
					}
					// A concurrent cancel may take the job away.
					if err != nil && !errors.Is(err, ErrNotHeld) {
						errs <- err
						return
					}
				}
			}()
		}
		submitted.Wait()
		done.Store(true)
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.Positive(t, completed.Load())
		require.Positive(t, failed.Load())
		require.Positive(t, cancelled.Load())

		requireMirrored(t, b)
		st := s.DualWriteStats()
		require.Zero(t, st.Failed)
		require.Positive(t, st.Attempted)
		n, err := b.rdb.ZCard(ctx, b.key("jobs:pending")).Result()
		require.NoError(t, err)
		require.Zero(t, n, "workers drained the queue")
		var records int
		for _, k := range scanKeys(t, b.rdb, b.key("job:*")) {
			if _, suffix, ok := s.space(JobNamespace).parseRecordKey(k); ok && suffix == "" {
				records++
			}
		}
		require.Equal(t, submitters*perSubmitter, records, "no job lost")
	})
}

// TestSetDualWriteConcurrent flips the flag while operations run; run with
// -race. Nothing is compared: writes made while the flag was off are
// rightly not mirrored.
func TestSetDualWriteConcurrent(t *testing.T) {
	b := miniBackend(t)
	s := newStore(t, b)
	caps := registerWorker(t, s, "w", "s")
	var wg sync.WaitGroup
	stop := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
				_ = s.SetDualWrite(i%2 == 0)
				_ = s.DualWrite()
				_ = s.DualWriteStats()
			}
		}
	}()
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 25 {
				_, err := s.SubmitJob(ctx, Job{Service: "s"})
				if !assert.NoError(t, err) {
					return
				}
				j, err := s.ClaimJob(ctx, caps)
				if !assert.NoError(t, err) {
					return
				}
				assert.NoError(t, s.CompleteJob(ctx, j.ID, "w", nil))
			}
		}()
	}
	time.Sleep(10 * time.Millisecond)
	close(stop)
	wg.Wait()
	require.Zero(t, s.DualWriteStats().Failed)
}
