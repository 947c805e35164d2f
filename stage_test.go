package jobstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestParseStage(t *testing.T) {
	for i, name := range []string{"legacy", "dual-write", "dual-read", "step-primary", "step-only"} {
		st, err := ParseStage(name)
		require.NoError(t, err)
		require.Equal(t, Stages[i], st)
		require.Equal(t, name, st.String())
		st, err = ParseStage(" " + strings.ToUpper(name) + "\n")
		require.NoError(t, err)
		require.Equal(t, Stages[i], st)

		b, err := json.Marshal(st)
		require.NoError(t, err)
		require.Equal(t, `"`+name+`"`, string(b))
		var back Stage
		require.NoError(t, json.Unmarshal(b, &back))
		require.Equal(t, st, back)
	}
	for _, bad := range []string{"", "dual", "dual_write", "step", "4"} {
		_, err := ParseStage(bad)
		require.ErrorContains(t, err, "unknown stage")
	}
	require.Equal(t, "Stage(9)", Stage(9).String())
	_, err := Stage(9).MarshalText()
	require.Error(t, err)
}

func TestStageTable(t *testing.T) {
	type row struct {
		primary, reads Namespace
		mirror         Namespace
		mirrored       bool
	}
	want := map[Stage]row{
		StageLegacy:      {JobNamespace, JobNamespace, Namespace{}, false},
		StageDualWrite:   {JobNamespace, JobNamespace, StepNamespace, true},
		StageDualRead:    {JobNamespace, StepNamespace, StepNamespace, true},
		StageStepPrimary: {StepNamespace, StepNamespace, JobNamespace, true},
		StageStepOnly:    {StepNamespace, StepNamespace, Namespace{}, false},
	}
	for st, w := range want {
		m, ok := st.Mirror()
		require.Equal(t, w, row{st.Primary(), st.Reads(), m, ok}, st.String())
		require.Equal(t, w.mirrored, st.DualWrites())
	}
}

func TestStageFromEnv(t *testing.T) {
	cases := []struct {
		flag, stage string
		want        Stage
		err         string
	}{
		{"", "", StageLegacy, ""},
		{"true", "", StageDualWrite, ""},
		{"false", "", StageLegacy, ""},
		{"", "dual-read", StageDualRead, ""},
		{"", "STEP-ONLY", StageStepOnly, ""},
		{"true", "dual-write", StageDualWrite, ""},
		{"true", "dual-read", StageDualRead, ""},
		{"yes", "step-primary", StageStepPrimary, ""},
		{"false", "legacy", StageLegacy, ""},
		{"false", "step-only", StageStepOnly, ""},
		{"false", "dual-read", 0, "contradicts"},
		{"true", "legacy", 0, "contradicts"},
		{"true", "step-only", 0, "contradicts"},
		{"0", "dual-write", 0, "contradicts"},
		{"", "dual", 0, EnvStage + `="dual"`},
		{"maybe", "dual-write", 0, EnvDualWrite + `="maybe"`},
	}
	for _, tc := range cases {
		t.Run(tc.flag+"/"+tc.stage, func(t *testing.T) {
			env := map[string]string{EnvDualWrite: tc.flag, EnvStage: tc.stage}
			st, err := stageFromEnv(func(name string) (string, bool) {
				v, ok := env[name]
				return v, ok && v != ""
			})
			if tc.err != "" {
				require.ErrorIs(t, err, ErrInvalidConfig)
				require.ErrorContains(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, tc.want, st)
		})
	}
	t.Run("New", func(t *testing.T) {
		b := miniBackend(t)
		t.Setenv(EnvStage, "step-primary")
		s, err := New(b.rdb)
		require.NoError(t, err)
		require.Equal(t, StageStepPrimary, s.Stage())
		t.Setenv(EnvDualWrite, "false")
		_, err = New(b.rdb)
		require.ErrorIs(t, err, ErrInvalidConfig)
		s, err = New(b.rdb, WithStage(StageDualRead))
		require.NoError(t, err, "options override the environment")
		require.Equal(t, StageDualRead, s.Stage())
		_, err = New(b.rdb, WithStage(Stage(7)))
		require.ErrorIs(t, err, ErrInvalidConfig)
	})
}

// TestStageWrites runs every writing operation in each stage and checks
// which namespaces were written: the authoritative one always, the other
// one as an exact copy when the stage mirrors, and never otherwise.
func TestStageWrites(t *testing.T) {
	for _, st := range Stages {
		t.Run(st.String(), func(t *testing.T) {
			eachBackend(t, func(t *testing.T, b *backend) {
				s := newStore(t, b, WithStage(st))
				other := "step*"
				if st.Primary() == StepNamespace {
					other = "job*"
				}
				lifecycle(t, b, s, func(step string) {
					t.Helper()
					if st.DualWrites() {
						requireMirrored(t, b)
					} else {
						requireNoKeys(t, b, other)
					}
				})
				p := s.space(st.Primary())
				require.NotEmpty(t, scanKeys(t, b.rdb, p.recordPattern()))
				j, err := s.GetJob(ctx, "r")
				require.NoError(t, err)
				require.Equal(t, StatusPending, j.Status)
			})
		})
	}
}

func TestDualReadFallback(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		legacy := newStore(t, b, WithStage(StageLegacy))
		for i := range 3 {
			_, err := legacy.SubmitJob(ctx, Job{ID: fmt.Sprint("old", i), Service: "s", Priority: i})
			require.NoError(t, err)
		}
		s := newStore(t, b, WithStage(StageDualRead))
		// No step keys at all: every read falls back to job:*.
		j, err := s.GetJob(ctx, "old1")
		require.NoError(t, err)
		require.Equal(t, "old1", j.ID)
		pending, err := s.GetPendingJobs(ctx, 10)
		require.NoError(t, err)
		require.Len(t, pending, 3)
		require.Equal(t, "old2", pending[0].ID)
		require.Equal(t, ReadStats{Reads: 4, Fallbacks: 5}, s.ReadStats())

		// A write in dual-read mirrors; reads then come from step:*.
		_, err = s.SubmitJob(ctx, Job{ID: "new", Service: "s", Priority: 9})
		require.NoError(t, err)
		require.NoError(t, b.rdb.HSet(ctx, b.key("step:new"), "customer_id", "from-step").Err())
		j, err = s.GetJob(ctx, "new")
		require.NoError(t, err)
		require.Equal(t, "from-step", j.CustomerID)
		// steps:pending exists now and holds only "new": the queue read
		// follows it, and its records come from step:*.
		pending, err = s.GetPendingJobs(ctx, 10)
		require.NoError(t, err)
		require.Len(t, pending, 1)
		_, err = s.GetJob(ctx, "missing")
		require.ErrorIs(t, err, ErrJobNotFound)

		// Claims act on the authoritative job:* side, which has all four.
		for range 4 {
			_, err := s.ClaimJob(ctx, "w")
			require.NoError(t, err)
		}
	})
}

func TestShadowReads(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		sink := &logSink{level: -10}
		s := newStore(t, b, WithStage(StageDualRead), WithShadowReads(1), WithLogger(slogLogger(sink)))
		_, err := s.SubmitJob(ctx, Job{ID: "a", Service: "s"})
		require.NoError(t, err)
		_, err = s.GetJob(ctx, "a")
		require.NoError(t, err)
		require.Equal(t, ReadStats{Reads: 1, ShadowChecks: 1}, s.ReadStats())

		require.NoError(t, b.rdb.HSet(ctx, b.key("job:a"), "priority", "7").Err())
		j, err := s.GetJob(ctx, "a")
		require.NoError(t, err)
		require.Equal(t, 0, j.Priority, "a shadow check never changes what is returned")
		require.Equal(t, ReadStats{Reads: 2, ShadowChecks: 2, ShadowMismatches: 1}, s.ReadStats())
		require.Contains(t, strings.Join(sink.lines(), "\n"), "shadow read mismatch read="+b.key("step:a"))

		_, err = New(b.rdb, WithShadowReads(1.5))
		require.ErrorIs(t, err, ErrInvalidConfig)
	})
}

func TestSetStage(t *testing.T) {
	b := miniBackend(t)
	sink := &logSink{level: -10}
	s := newStore(t, b, WithLogger(slogLogger(sink)))
	require.Equal(t, StageLegacy, s.Stage())
	require.ErrorIs(t, s.SetStage(StageDualRead), ErrStageJump)
	for _, st := range Stages[1:] {
		require.NoError(t, s.SetStage(st))
		require.Equal(t, st, s.Stage())
	}
	require.ErrorIs(t, s.SetStage(StageDualWrite), ErrStageJump)
	require.NoError(t, s.SetStage(StageStepPrimary), "one back")
	require.NoError(t, s.SetStage(StageStepPrimary), "staying put")

	s.SetDualWrite(false)
	require.Equal(t, StageStepPrimary, s.Stage(), "SetDualWrite does not act past dual-write")
	require.Contains(t, strings.Join(sink.lines(), "\n"), "SetDualWrite ignored")

	require.NoError(t, s.ForceStage(StageLegacy))
	s.SetDualWrite(true)
	require.Equal(t, StageDualWrite, s.Stage())
	require.True(t, s.DualWrite())
	require.ErrorIs(t, s.SetStage(Stage(-1)), ErrInvalidArgument)
}

func TestSharedStage(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		op := newStore(t, b, WithStage(StageDualWrite))
		follower := newStore(t, b, WithStage(StageDualWrite))
		_, ok, err := op.SharedStage(ctx)
		require.NoError(t, err)
		require.False(t, ok)

		c, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- follower.FollowStage(c, 5*time.Millisecond) }()

		require.ErrorIs(t, op.PublishStage(ctx, StageStepPrimary, false), ErrStageJump,
			"nothing published yet: the jump is measured from the publisher's own stage")
		require.NoError(t, op.PublishStage(ctx, StageDualRead, false))
		require.Equal(t, StageDualRead, op.Stage())
		require.Eventually(t, func() bool { return follower.Stage() == StageDualRead }, 5*time.Second, 5*time.Millisecond)

		require.ErrorIs(t, op.PublishStage(ctx, StageStepOnly, false), ErrStageJump)
		require.NoError(t, op.PublishStage(ctx, StageLegacy, true), "forced")
		require.Eventually(t, func() bool { return follower.Stage() == StageLegacy }, 5*time.Second, 5*time.Millisecond)
		h, err := b.rdb.HGetAll(ctx, b.key("jobstore:stage")).Result()
		require.NoError(t, err)
		require.Equal(t, "legacy", h["stage"])
		require.Equal(t, "dual-read", h["previous"])

		// An unreadable shared stage is an error; followers keep theirs.
		require.NoError(t, b.rdb.HSet(ctx, b.key("jobstore:stage"), "stage", "sideways").Err())
		_, _, err = op.SharedStage(ctx)
		require.ErrorIs(t, err, ErrCorruptRecord)
		time.Sleep(20 * time.Millisecond)
		require.Equal(t, StageLegacy, follower.Stage())

		cancel()
		require.ErrorIs(t, <-done, context.Canceled)
	})
}

func TestFleetStats(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s1 := newStore(t, b, WithStage(StageDualRead))
		s2 := newStore(t, b, WithStage(StageDualRead))
		for _, s := range []*Store{s1, s2} {
			_, err := s.SubmitJob(ctx, Job{Service: "s"})
			require.NoError(t, err)
		}
		_, err := s1.GetJob(ctx, "nope")
		require.ErrorIs(t, err, ErrJobNotFound)
		for _, s := range []*Store{s1, s2} {
			c, cancel := context.WithCancel(ctx)
			cancel() // one round, then return
			require.ErrorIs(t, s.FollowStage(c, time.Hour), context.Canceled)
		}
		dw, rd, err := s1.FleetStats(ctx)
		require.NoError(t, err)
		require.Equal(t, DualWriteStats{Attempted: 2}, dw)
		require.Equal(t, ReadStats{Reads: 1}, rd)

		// Only new counts are added on the next round.
		_, err = s1.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		c, cancel := context.WithCancel(ctx)
		cancel()
		_ = s1.FollowStage(c, time.Hour)
		dw, _, err = s2.FleetStats(ctx)
		require.NoError(t, err)
		require.Equal(t, DualWriteStats{Attempted: 3}, dw)
	})
}

// TestAdjacentStagesSideBySide runs two Stores in adjacent stages on the
// same Redis, as during a rolling restart, with API and worker goroutines
// on both. No job may be lost or processed twice, and wherever both stores
// write both namespaces, the namespaces must end up identical.
func TestAdjacentStagesSideBySide(t *testing.T) {
	for i := 0; i+1 < len(Stages); i++ {
		a, b2 := Stages[i], Stages[i+1]
		t.Run(a.String()+"+"+b2.String(), func(t *testing.T) {
			eachBackend(t, func(t *testing.T, b *backend) {
				stores := []*Store{newStore(t, b, WithStage(a)), newStore(t, b, WithStage(b2))}
				const perStore = 60
				var mu sync.Mutex
				done := map[string]int{}
				var wg sync.WaitGroup
				errs := make(chan error, 8)
				for si, s := range stores {
					wg.Add(2)
					go func() {
						defer wg.Done()
						for n := range perStore {
							if _, err := s.SubmitJob(ctx, Job{ID: fmt.Sprintf("s%d-%d", si, n), Service: "s", Priority: n % 5}); err != nil {
								errs <- err
								return
							}
						}
					}()
					go func() {
						defer wg.Done()
						worker := fmt.Sprint("w", si)
						for idle := 0; idle < 50; {
							j, err := s.ClaimJob(ctx, worker)
							if errors.Is(err, ErrNoJob) {
								idle++
								time.Sleep(2 * time.Millisecond)
								continue
							}
							if err != nil {
								errs <- err
								return
							}
							idle = 0
							if err := s.CompleteJob(ctx, j.ID, worker, nil); err != nil {
								errs <- err
								return
							}
							mu.Lock()
							done[j.ID]++
							mu.Unlock()
						}
					}()
				}
				wg.Wait()
				close(errs)
				for err := range errs {
					require.NoError(t, err)
				}
				// Jobs that one stage's claims cannot see (a legacy store
				// does not look at steps:pending) are drained by the
				// newer store alone.
				for {
					j, err := stores[1].ClaimJob(ctx, "drain")
					if errors.Is(err, ErrNoJob) {
						break
					}
					require.NoError(t, err)
					require.NoError(t, stores[1].CompleteJob(ctx, j.ID, "drain", nil))
					done[j.ID]++
				}
				require.Len(t, done, 2*perStore, "every job processed")
				for id, n := range done {
					require.Equal(t, 1, n, "job %s processed %d times", id, n)
				}
				if a.DualWrites() && b2.DualWrites() {
					requireMirrored(t, b)
				}
			})
		})
	}
}

// TestAwaitStage: an operation that started under the old stage keeps
// AwaitStage waiting until it has finished; operations under the new one
// do not.
func TestAwaitStage(t *testing.T) {
	b := miniBackend(t)
	s := newStore(t, b, WithStage(StageDualWrite))
	_, err := s.SubmitJob(ctx, Job{ID: "a", Service: "s"})
	require.NoError(t, err)
	inside, release := make(chan struct{}), make(chan struct{})
	s.mirrorHook = func(op string) {
		if op == "claim" {
			close(inside)
			<-release
		}
	}
	done := make(chan error)
	go func() {
		_, err := s.ClaimJob(ctx, "w")
		done <- err
	}()
	<-inside // the claim is under way, under dual-write
	require.NoError(t, s.SetStage(StageDualRead))
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, s.AwaitStage(short), context.DeadlineExceeded, "the dual-write claim is still running")
	close(release)
	require.NoError(t, <-done)
	require.NoError(t, s.AwaitStage(ctx))
	s.mirrorHook = nil
	// Operations under the current stage do not count.
	_, err = s.SubmitJob(ctx, Job{Service: "s"})
	require.NoError(t, err)
	require.NoError(t, s.AwaitStage(ctx))
}
