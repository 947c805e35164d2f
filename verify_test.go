package jobstore

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// mirroredJobs submits n jobs through a dual-writing Store, claims and
// completes some, and returns the Store.
func mirroredJobs(t *testing.T, b *backend, st Stage, n int) *Store {
	t.Helper()
	s := newStore(t, b, WithStage(st))
	for i := range n {
		_, err := s.SubmitJob(ctx, Job{ID: fmt.Sprint("m", i), Service: "s", Priority: i})
		require.NoError(t, err)
	}
	for range n / 2 {
		j, err := s.ClaimJob(ctx, "w")
		require.NoError(t, err)
		require.NoError(t, s.CompleteJob(ctx, j.ID, "w", nil))
	}
	requireMirrored(t, b)
	return s
}

var quick = VerifyOptions{Delay: time.Millisecond}

func kinds(diffs []Diff) map[DiffKind][]string {
	out := map[DiffKind][]string{}
	for _, d := range diffs {
		out[d.Kind] = append(out[d.Kind], d.ID)
	}
	for _, ids := range out {
		slices.Sort(ids)
	}
	return out
}

// TestVerifyFindsEachKind breaks the mirror in every way Verify knows,
// checks that each is reported, then repairs them from the primary.
func TestVerifyFindsEachKind(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := mirroredJobs(t, b, StageDualWrite, 10)
		k := func(name string) string { return b.key(name) }
		r := b.rdb
		// m0..m4 are pending, m5..m9 completed with a TTL.
		require.NoError(t, r.Del(ctx, k("step:m0")).Err())                                         // missing
		require.NoError(t, r.HSet(ctx, k("step:ghost"), "id", "ghost", "status", "pending").Err()) // extra
		require.NoError(t, r.HSet(ctx, k("step:m1"), "priority", "7").Err())                       // a field differs
		require.NoError(t, r.HSet(ctx, k("step:m2"), "trace_id", "x").Err())                       // a field too many
		require.NoError(t, r.Persist(ctx, k("step:m9")).Err())                                     // TTL gone
		require.NoError(t, r.PExpire(ctx, k("step:m8"), time.Hour).Err())                          // TTL far off
		require.NoError(t, r.ZRem(ctx, k("steps:pending"), "m3").Err())                            // missing entry
		require.NoError(t, r.ZAdd(ctx, k("steps:failed"), redis.Z{Score: 5, Member: "m4"}).Err())  // extra entry
		require.NoError(t, r.ZAdd(ctx, k("steps:pending"), redis.Z{Score: 5, Member: "m4"}).Err()) // different score
		require.NoError(t, r.ZAdd(ctx, k("steps:active"), redis.Z{Score: 5, Member: "a:b"}).Err()) // extra entry, not an id

		vr, err := s.Verify(ctx, quick)
		require.NoError(t, err)
		require.Equal(t, "job", vr.Primary)
		require.EqualValues(t, 10, vr.JobRecords)
		require.EqualValues(t, 10, vr.StepRecords)
		require.EqualValues(t, 1, vr.Missing)
		require.EqualValues(t, 1, vr.Extra)
		require.EqualValues(t, 4, vr.Different)
		require.EqualValues(t, 1, vr.MissingEntries)
		require.EqualValues(t, 2, vr.ExtraEntries)
		require.EqualValues(t, 1, vr.DifferentEntries)
		require.EqualValues(t, 10, vr.Differences())
		require.Equal(t, DefaultVerifyRounds, vr.Rounds, "a difference is confirmed once it stayed through every round")
		require.Equal(t, map[DiffKind][]string{
			DiffMissing: {"m0"}, DiffExtra: {"ghost"}, DiffDifferent: {"m1", "m2", "m8", "m9"},
			DiffMissingEntry: {"m3"}, DiffExtraEntry: {"a:b", "m4"}, DiffDifferentScore: {"m4"},
		}, kinds(vr.Diffs))
		for _, d := range vr.Diffs {
			switch d.ID {
			case "m1":
				require.Equal(t, "fields differ: priority", d.Detail)
				require.Equal(t, k("job:m1"), d.Key)
				require.Equal(t, k("step:m1"), d.Other)
			case "m9":
				require.Contains(t, d.Detail, "vs none")
			}
		}

		few, err := s.Verify(ctx, VerifyOptions{Delay: time.Millisecond, MaxReported: 3})
		require.NoError(t, err)
		require.Len(t, few.Diffs, 3)
		require.EqualValues(t, 10, few.Differences())

		fixed, err := s.Verify(ctx, VerifyOptions{Delay: time.Millisecond, Repair: true})
		require.NoError(t, err)
		require.EqualValues(t, 10, fixed.Differences())
		require.EqualValues(t, 9, fixed.Repaired, "one per id: m4 had two")
		requireMirrored(t, b)
		again, err := s.Verify(ctx, quick)
		require.NoError(t, err)
		require.Zero(t, again.Differences(), "%v", again.Diffs)
	})
}

// TestVerifyRepairFromAuthoritative repairs in step-primary: the step side
// wins, whichever side was changed.
func TestVerifyRepairFromAuthoritative(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := mirroredJobs(t, b, StageStepPrimary, 4)
		require.NoError(t, b.rdb.HSet(ctx, b.key("job:m1"), "priority", "99").Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key("step:m2"), "priority", "77").Err())
		vr, err := s.Verify(ctx, VerifyOptions{Delay: time.Millisecond, Repair: true})
		require.NoError(t, err)
		require.Equal(t, "step", vr.Primary)
		require.EqualValues(t, 2, vr.Different)
		requireMirrored(t, b)
		p, err := b.rdb.HGet(ctx, b.key("job:m2"), "priority").Result()
		require.NoError(t, err)
		require.Equal(t, "77", p)
		p, err = b.rdb.HGet(ctx, b.key("job:m1"), "priority").Result()
		require.NoError(t, err)
		require.Equal(t, "1", p)
	})
}

// TestVerifyInFlight: a difference that goes away before the re-check is
// not reported, here made to land between the pass and the first round.
func TestVerifyInFlight(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := mirroredJobs(t, b, StageDualWrite, 6)
		require.NoError(t, b.rdb.HSet(ctx, b.key("job:m3"), "priority", "42").Err())
		require.NoError(t, b.rdb.ZAdd(ctx, b.key("jobs:pending"), redis.Z{Score: 9, Member: "m0"}).Err())
		landed := false
		vr, err := s.Verify(ctx, VerifyOptions{Delay: time.Millisecond, Progress: func(p VerifyProgress) {
			if p.Phase == "pending" && !landed && p.Suspects > 0 {
				// The write's mirror lands now.
				require.NoError(t, b.rdb.HSet(ctx, b.key("step:m3"), "priority", "42").Err())
				landed = true
			}
		}})
		require.NoError(t, err)
		require.True(t, landed)
		require.Zero(t, vr.Different)
		require.EqualValues(t, 1, vr.DifferentEntries, "the score that was never mirrored is reported")
		require.Equal(t, DefaultVerifyRounds, vr.Rounds)
	})
}

// TestVerifyUnderLoad verifies while a dual-writing load runs: writes in
// flight are never reported.
func TestVerifyUnderLoad(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := mirroredJobs(t, b, StageDualRead, 20)
		var stop atomic.Bool
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		wg.Add(2)
		var submitted atomic.Bool
		go func() {
			defer wg.Done()
			defer submitted.Store(true)
			for i := 0; i < 300 && !stop.Load(); i++ {
				if _, err := s.SubmitJob(ctx, Job{ID: fmt.Sprint("load", i), Service: "s"}); err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			for !stop.Load() {
				j, err := s.ClaimJob(ctx, "lw")
				if errors.Is(err, ErrNoJob) {
					time.Sleep(time.Millisecond)
					continue
				}
				if err == nil {
					err = s.CompleteJob(ctx, j.ID, "lw", nil)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
		var results []VerifyResult
		// Verify until the submitter is done, at least three times.
		for len(results) < 3 || !submitted.Load() {
			vr, err := s.Verify(ctx, VerifyOptions{Delay: time.Millisecond, BatchSize: 16})
			require.NoError(t, err)
			results = append(results, vr)
		}
		stop.Store(true)
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		for _, vr := range results {
			require.Zero(t, vr.Differences(), "%v", vr.Diffs)
		}
	})
}

// TestVerifyRecheckCap: differences beyond the cap are still counted
// (after one immediate re-check) and repaired.
func TestVerifyRecheckCap(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := mirroredJobs(t, b, StageDualWrite, 12)
		for i := range 8 {
			require.NoError(t, b.rdb.HSet(ctx, b.key(fmt.Sprint("step:m", i)), "x", "y").Err())
		}
		vr, err := s.Verify(ctx, VerifyOptions{Delay: time.Millisecond, RecheckCap: 3, BatchSize: 2, Repair: true})
		require.NoError(t, err)
		require.EqualValues(t, 8, vr.Different)
		require.EqualValues(t, 5, vr.Overflowed)
		require.EqualValues(t, 8, vr.Repaired)
		requireMirrored(t, b)
	})
}

// TestVerifyUnsafe: what deleting the mirror would lose, and what not.
func TestVerifyUnsafe(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := mirroredJobs(t, b, StageStepPrimary, 8)
		require.NoError(t, s.SetStage(StageStepOnly)) // job:* is no longer written
		r, k := b.rdb, b.key
		// m0..m3 are pending, m4..m7 completed.
		// Safe: the mirror lacks things, or holds stale copies.
		require.NoError(t, r.Del(ctx, k("job:m7")).Err())
		require.NoError(t, r.HSet(ctx, k("job:m6"), "status", "pending").Err()) // step says completed
		require.NoError(t, r.Persist(ctx, k("job:m5")).Err())
		require.NoError(t, r.ZAdd(ctx, k("jobs:pending"), redis.Z{Score: 1, Member: "m6"}).Err())
		require.NoError(t, r.ZAdd(ctx, k("jobs:completed"), redis.Z{Score: 1, Member: "nowhere"}).Err())
		vr, err := s.Verify(ctx, quick)
		require.NoError(t, err)
		require.EqualValues(t, 5, vr.Differences(), "%v", vr.Diffs)
		require.Zero(t, vr.Unsafe, "%v", vr.Diffs)

		// Unsafe: the mirror has what the primary lacks, or newer data.
		require.NoError(t, r.HSet(ctx, k("job:only"), "id", "only", "status", "pending").Err())
		require.NoError(t, r.HSet(ctx, k("job:m4"), "retry_count", "9").Err())
		require.NoError(t, r.HSet(ctx, k("job:m3"), "trace_id", "t").Err())
		require.NoError(t, r.ZAdd(ctx, k("jobs:failed"), redis.Z{Score: 1, Member: "m2"}).Err())
		vr, err = s.Verify(ctx, quick)
		require.NoError(t, err)
		require.EqualValues(t, 4, vr.Unsafe, "%v", vr.Diffs)
		var unsafe []string
		for _, d := range vr.Diffs {
			if d.Unsafe {
				unsafe = append(unsafe, string(d.Kind)+" "+d.ID)
			}
		}
		slices.Sort(unsafe)
		require.Equal(t, []string{"different m3", "different m4", "extra only", "extra_entry m2"}, unsafe)
	})
}
