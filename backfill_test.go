package jobstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func TestCheckpointKey(t *testing.T) {
	require.Equal(t, "jobstore:backfill:job-to-step", checkpointKey("", JobNamespace, StepNamespace))
	require.Equal(t, "p:jobstore:backfill:step-to-job", checkpointKey("p:", StepNamespace, JobNamespace))
}

func TestScanFraction(t *testing.T) {
	// A table of 4 buckets is walked 0, 2, 1, 3, then 0 again.
	for _, c := range []struct {
		cursor uint64
		want   float64
	}{{2, 0.25}, {1, 0.5}, {3, 0.75}, {0, 1}} {
		require.Equal(t, c.want, scanFraction(c.cursor), "cursor %d", c.cursor)
	}
}

// seedLegacy writes jobs the way a legacy fleet leaves them: n records in
// every state (pending, assigned, in progress, completed with a TTL,
// retried, failed), with a field jobstore does not know, plus a progress
// sub-key and a completed entry whose record has expired. It returns the
// store it used.
func seedLegacy(t *testing.T, b *backend, n int) *Store {
	t.Helper()
	s := newStore(t, b, WithStage(StageLegacy))
	for i := range n {
		_, err := s.SubmitJob(ctx, Job{ID: fmt.Sprintf("j%03d", i), Service: "s", Priority: i % 7,
			MaxRetries: 1 + i%2, Extra: map[string]string{"trace_id": fmt.Sprint("t", i)}})
		require.NoError(t, err)
	}
	for i := range n / 2 {
		j, err := s.ClaimJob(ctx, "legacy-worker")
		require.NoError(t, err)
		switch i % 5 {
		case 0:
			require.NoError(t, s.CompleteJob(ctx, j.ID, "legacy-worker", nil))
		case 1:
			require.NoError(t, s.FailJob(ctx, j.ID, "legacy-worker", "boom"))
		case 2:
			require.NoError(t, s.StartJob(ctx, j.ID, "legacy-worker"))
		case 3:
			require.NoError(t, s.CancelJob(ctx, j.ID))
		}
	}
	require.NoError(t, b.rdb.Set(ctx, b.key("job:j000:progress"), "50%", 0).Err())
	require.NoError(t, b.rdb.ZAdd(ctx, b.key("jobs:completed"), redis.Z{Score: 1e12, Member: "expired1"}).Err())
	return s
}

// TestBackfill runs a full backfill both ways it can handle the queues:
// copied whole once the records are done (the source is authoritative
// here), and entry by entry.
func TestBackfill(t *testing.T) {
	for _, whole := range []bool{true, false} {
		t.Run(map[bool]string{true: "whole queues", false: "entry by entry"}[whole], func(t *testing.T) {
			testBackfill(t, whole)
		})
	}
}

func testBackfill(t *testing.T, whole bool) {
	limit := -1
	if whole {
		limit = 0
	}
	eachBackend(t, func(t *testing.T, b *backend) {
		const n = 40
		seedLegacy(t, b, n)
		s := newStore(t, b, WithStage(StageDualWrite))

		dry, err := s.Backfill(ctx, BackfillOptions{DryRun: true, BatchSize: 7})
		require.NoError(t, err)
		requireNoKeys(t, b, "step*")
		requireNoKeys(t, b, "jobstore:*")
		require.True(t, dry.DryRun)
		require.EqualValues(t, n, dry.Copied, "a dry run counts what it would copy")

		res, err := s.Backfill(ctx, BackfillOptions{BatchSize: 7, QueueCopyLimit: limit})
		require.NoError(t, err)
		require.Equal(t, "job", res.From)
		require.Equal(t, "step", res.To)
		require.EqualValues(t, n, res.Records)
		require.EqualValues(t, n, res.Copied)
		require.EqualValues(t, 1, res.Skipped)
		require.Equal(t, []string{b.key("job:j000:progress")}, res.SkippedKeys)
		if whole {
			require.Len(t, res.QueuesCopied, 4)
			require.Zero(t, res.EntriesCopied, "the queues were copied whole")
		} else {
			require.Empty(t, res.QueuesCopied)
			require.EqualValues(t, 1, res.EntriesCopied, "the completed entry whose record expired")
		}
		require.False(t, res.Resumed)
		requireMirrored(t, b)
		requireNoKeys(t, b, "step:j000:progress")
		requireNoKeys(t, b, "jobstore:backfill:*")
		h, err := b.rdb.HGetAll(ctx, b.key("step:j007")).Result()
		require.NoError(t, err)
		require.Equal(t, "t7", h["trace_id"], "unknown fields are copied")
		withTTL := 0
		for i := range n {
			ttl, err := b.rdb.PTTL(ctx, b.key(fmt.Sprintf("step:j%03d", i))).Result()
			require.NoError(t, err)
			if ttl > 0 {
				withTTL++
			}
		}
		require.Positive(t, withTTL, "the TTL of finished records is copied")

		vr, err := s.Verify(ctx, VerifyOptions{Delay: time.Millisecond})
		require.NoError(t, err)
		require.Zero(t, vr.Differences(), "%v", vr.Diffs)
		require.EqualValues(t, n, vr.JobRecords)
		require.EqualValues(t, n, vr.StepRecords)

		again, err := s.Backfill(ctx, BackfillOptions{QueueCopyLimit: limit})
		require.NoError(t, err)
		require.Zero(t, again.Copied, "a second run copies nothing")
		require.Zero(t, again.EntriesCopied)
		require.EqualValues(t, n, again.Unchanged)
	})
}

func TestBackfillReverse(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithStage(StageStepOnly))
		lifecycle(t, b, s, func(string) {})
		for i := range 5 {
			_, err := s.SubmitJob(ctx, Job{ID: fmt.Sprint("late", i), Service: "s"})
			require.NoError(t, err)
		}
		requireNoKeys(t, b, "job*")
		require.NoError(t, s.SetStage(StageStepPrimary))
		res, err := s.Backfill(ctx, BackfillOptions{Reverse: true, BatchSize: 3})
		require.NoError(t, err)
		require.Equal(t, "step", res.From)
		require.Positive(t, res.Copied)
		requireMirrored(t, b)
		vr, err := s.Verify(ctx, VerifyOptions{Delay: time.Millisecond})
		require.NoError(t, err)
		require.Zero(t, vr.Differences(), "%v", vr.Diffs)
		require.Equal(t, "step", vr.Primary)
	})
}

// TestBackfillResume interrupts a run after three batches, then resumes
// it: every record is copied exactly once over the two runs.
func TestBackfillResume(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		const n = 30
		seedLegacy(t, b, n)
		s := newStore(t, b, WithStage(StageDualWrite))
		c, cancel := context.WithCancel(ctx)
		defer cancel()
		batches := 0
		first, err := s.Backfill(c, BackfillOptions{BatchSize: 4, Progress: func(p BackfillProgress) {
			if batches++; batches == 3 {
				cancel()
			}
		}})
		require.ErrorIs(t, err, context.Canceled)
		require.Positive(t, first.Copied)
		require.Less(t, first.Copied, int64(n))
		cp, err := b.rdb.Get(ctx, b.key("jobstore:backfill:job-to-step")).Result()
		require.NoError(t, err, "the checkpoint is kept")
		require.Contains(t, cp, `"copied":`)

		second, err := s.Backfill(ctx, BackfillOptions{BatchSize: 4})
		require.NoError(t, err)
		require.True(t, second.Resumed)
		require.EqualValues(t, n, second.Copied, "counts carry over; nothing is copied twice")
		require.EqualValues(t, n, second.Records)
		require.EqualValues(t, 1, second.Skipped)
		requireNoKeys(t, b, "jobstore:backfill:*")
		requireMirrored(t, b)

		// Restart ignores a checkpoint; nothing is left to copy.
		require.NoError(t, b.rdb.Set(ctx, b.key("jobstore:backfill:job-to-step"), cp, 0).Err())
		third, err := s.Backfill(ctx, BackfillOptions{Restart: true})
		require.NoError(t, err)
		require.False(t, third.Resumed)
		require.Zero(t, third.Copied)

		require.NoError(t, b.rdb.Set(ctx, b.key("jobstore:backfill:job-to-step"), "{", 0).Err())
		_, err = s.Backfill(ctx, BackfillOptions{})
		require.ErrorIs(t, err, ErrCorruptRecord)
		require.ErrorContains(t, err, "Restart")
	})
}

// TestBackfillFreshness checks the "newer" rule, in Go and in the script,
// on the same table.
func TestBackfillFreshness(t *testing.T) {
	base := map[string]string{"id": "x", "service_required": "s", "status": "pending", "retry_count": "0",
		"created_at": "2026-01-01T08:00:00.000Z"}
	with := func(kv ...string) map[string]string {
		h := map[string]string{}
		for k, v := range base {
			h[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(h, kv[i])
			} else {
				h[kv[i]] = kv[i+1]
			}
		}
		return h
	}
	cases := []struct {
		name     string
		src, dst map[string]string
		want     string
	}{
		{"missing destination", base, nil, "copied"},
		{"identical", base, base, "unchanged"},
		{"more retries", with("retry_count", "1"), base, "copied"},
		{"retries beat status", base, with("retry_count", "1", "status", "pending"), "newer"},
		{"claimed beats pending", with("status", "assigned", "assigned_at", "2026-01-01T08:01:00.000Z"), base, "copied"},
		{"queued is pending", with("status", "queued"), base, "conflict"},
		{"finished beats in progress", with("status", "in_progress"), with("status", "cancelled"), "newer"},
		{"later timestamp", with("status", "in_progress", "started_at", "2026-01-01T08:05:00Z"),
			with("status", "in_progress", "started_at", "2026-01-01T08:04:00Z"), "copied"},
		{"unknown status is oldest", base, with("status", "weird"), "copied"},
		{"same instant, other forms", with("created_at", "2026-01-01T10:00:00+02:00", "trace", "a"),
			with("created_at", "1767254400000"), "conflict"},
		{"equal but different", with("trace", "a"), with("trace", "b"), "conflict"},
		{"no retry_count is 0", base, with("retry_count", "", "created_at", ""), "copied"},
	}
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithStage(StageDualWrite))
		for i, c := range cases {
			id := fmt.Sprint("x", i)
			require.NoError(t, b.rdb.HSet(ctx, b.key("job:"+id), c.src).Err())
			if c.dst != nil {
				require.NoError(t, b.rdb.HSet(ctx, b.key("step:"+id), c.dst).Err())
			}
			bf := &backfill{s: s, opts: BackfillOptions{DryRun: true}, src: s.space(JobNamespace), dst: s.space(StepNamespace)}
			require.NoError(t, bf.copyRecords(ctx, []string{b.key("job:" + id)}))
			var got string
			switch r := bf.res; {
			case r.Records != 1:
			case r.Copied == 1:
				got = "copied"
			case r.Unchanged == 1:
				got = "unchanged"
			case r.Newer == 1:
				got = "newer"
			case r.Conflicts == 1:
				got = "conflict"
			}
			require.Equal(t, c.want, got, "script: %s", c.name)
			if c.dst != nil {
				goRule := map[int]string{1: "copied", -1: "newer", 0: "unchanged"}[recordFreshness(c.src).compare(recordFreshness(c.dst))]
				if goRule == "unchanged" && got == "conflict" {
					goRule = "conflict"
				}
				require.Equal(t, c.want, goRule, "Go: %s", c.name)
			}
		}

		// For real now: only the older and missing copies are written.
		res, err := s.Backfill(ctx, BackfillOptions{})
		require.NoError(t, err)
		require.EqualValues(t, 6, res.Copied)
		require.EqualValues(t, 2, res.Newer)
		require.EqualValues(t, 3, res.Conflicts)
		require.EqualValues(t, 1, res.Unchanged)
		require.Contains(t, res.ConflictKeys, b.key("step:x10"))
		h, err := b.rdb.HGetAll(ctx, b.key("step:x3")).Result()
		require.NoError(t, err)
		require.Equal(t, "1", h["retry_count"], "a newer destination is not overwritten")
		h, err = b.rdb.HGetAll(ctx, b.key("step:x10")).Result()
		require.NoError(t, err)
		require.Equal(t, "b", h["trace"], "a conflict is left alone")
		h, err = b.rdb.HGetAll(ctx, b.key("step:x2")).Result()
		require.NoError(t, err)
		require.Equal(t, "1", h["retry_count"], "an older destination is overwritten")
	})
}

// TestBackfillDeletedMidRun deletes a record and queue entries while the
// backfill runs: neither comes back in the destination.
func TestBackfillDeletedMidRun(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		legacy := newStore(t, b, WithStage(StageLegacy))
		for i := range 12 {
			_, err := legacy.SubmitJob(ctx, Job{ID: fmt.Sprint("r", i), Service: "s"})
			require.NoError(t, err)
		}
		for i := range 4 {
			require.NoError(t, b.rdb.ZAdd(ctx, b.key("jobs:failed"), redis.Z{Score: float64(i + 1), Member: fmt.Sprint("orphan", i)}).Err())
		}
		s := newStore(t, b, WithStage(StageDualWrite))
		var victim string
		var removed []string
		// Entry by entry, so that the orphans go through the entry phase.
		res, err := s.Backfill(ctx, BackfillOptions{BatchSize: 1, QueueCopyLimit: -1, Progress: func(p BackfillProgress) {
			if p.Phase == "records" && victim == "" {
				// Delete, as retention trimming would, a record not copied yet.
				for i := range 12 {
					id := fmt.Sprint("r", i)
					if n, _ := b.rdb.Exists(ctx, b.key("step:"+id)).Result(); n == 0 {
						victim = id
						require.NoError(t, b.rdb.Del(ctx, b.key("job:"+id)).Err())
						require.NoError(t, b.rdb.ZRem(ctx, b.key("jobs:pending"), id).Err())
						return
					}
				}
			}
			if p.Phase == "failed" && removed == nil {
				for i := range 4 {
					m := fmt.Sprint("orphan", i)
					if n, _ := b.rdb.ZScore(ctx, b.key("steps:failed"), m).Result(); n == 0 {
						require.NoError(t, b.rdb.ZRem(ctx, b.key("jobs:failed"), m).Err())
						removed = append(removed, m)
					}
				}
			}
		}})
		require.NoError(t, err)
		require.NotEmpty(t, victim)
		require.NotEmpty(t, removed)
		requireNoKeys(t, b, "step:"+victim)
		for _, m := range removed {
			_, err := b.rdb.ZScore(ctx, b.key("steps:failed"), m).Result()
			require.ErrorIs(t, err, redis.Nil, "entry %s removed mid-run is not re-added", m)
		}
		require.EqualValues(t, 11, res.Copied)
		if b.mr != nil {
			// miniredis returns all keys in one SCAN page, so the victim
			// was seen, then found gone by the script.
			require.EqualValues(t, 1, res.Gone)
		}
		requireMirrored(t, b)
	})
}

// TestBackfillUnderLoad runs a backfill while API and worker goroutines
// submit, claim, complete and fail jobs through two dual-writing Stores,
// on data that started as legacy-only records.
func TestBackfillUnderLoad(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		seedLegacy(t, b, 120)
		stores := []*Store{newStore(t, b, WithStage(StageDualWrite)), newStore(t, b, WithStage(StageDualWrite))}
		var wg, submitters sync.WaitGroup
		var stop atomic.Bool
		errs := make(chan error, 8)
		for si, s := range stores {
			submitters.Add(1)
			wg.Add(2)
			go func() {
				defer wg.Done()
				defer submitters.Done()
				for i := range 40 {
					if _, err := s.SubmitJob(ctx, Job{ID: fmt.Sprintf("new%d-%d", si, i), Service: "s", Priority: i % 3}); err != nil {
						errs <- err
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				w := fmt.Sprint("w", si)
				for n := 0; ; n++ {
					j, err := s.ClaimJob(ctx, w)
					if errors.Is(err, ErrNoJob) {
						if stop.Load() {
							return
						}
						time.Sleep(time.Millisecond)
						continue
					}
					if err == nil {
						if n%3 == 0 {
							err = s.FailJob(ctx, j.ID, w, "flaky")
						} else {
							err = s.CompleteJob(ctx, j.ID, w, nil)
						}
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		res, err := stores[0].Backfill(ctx, BackfillOptions{BatchSize: 8})
		require.NoError(t, err)
		require.Positive(t, res.Copied)
		submitters.Wait()
		stop.Store(true)
		wg.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		vr, err := stores[1].Verify(ctx, VerifyOptions{Delay: time.Millisecond})
		require.NoError(t, err)
		require.Zero(t, vr.Differences(), "%v", vr.Diffs)
		requireMirrored(t, b)
	})
}

func TestBackfillOptions(t *testing.T) {
	b := miniBackend(t)
	s := newStore(t, b)
	_, err := s.Backfill(ctx, BackfillOptions{Rate: -1})
	require.ErrorIs(t, err, ErrInvalidArgument)
	seedLegacy(t, b, 6)
	var seen []BackfillProgress
	res, err := s.Backfill(ctx, BackfillOptions{Rate: 1e6, BatchSize: 2, QueueCopyLimit: -1, Progress: func(p BackfillProgress) { seen = append(seen, p) }})
	require.NoError(t, err)
	require.EqualValues(t, 6, res.Copied)
	require.Equal(t, "records", seen[0].Phase)
	require.Equal(t, "completed", seen[len(seen)-1].Phase)
	require.Equal(t, 1.0, seen[len(seen)-1].Fraction)
	require.Greater(t, seen[len(seen)-1].Scanned, int64(6+1), "records, the sub-key and queue members")

	// A destination queue of the wrong type stops the run before it writes.
	require.NoError(t, b.rdb.Set(ctx, "steps:active", "x", 0).Err())
	require.NoError(t, b.rdb.Del(ctx, "step:j001").Err())
	_, err = s.Backfill(ctx, BackfillOptions{})
	require.ErrorIs(t, err, ErrCorruptRecord)
	require.ErrorContains(t, err, "steps:active is a string")
	requireNoKeys(t, b, "step:j001")
}

// TestBackfillSyncsEntriesOfUnchangedRecords: a job claimed by a step-only
// process (job:* not written) and completed by a step-primary one ends
// with identical records, but with a stale entry left in jobs:pending,
// since the mirror syncs only the queues a write touches. A reverse
// backfill must sync the entries of such an unchanged record too.
func TestBackfillSyncsEntriesOfUnchangedRecords(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		primary := newStore(t, b, WithStage(StageStepPrimary))
		only := newStore(t, b, WithStage(StageStepOnly))
		_, err := primary.SubmitJob(ctx, Job{ID: "x", Service: "s"})
		require.NoError(t, err)
		_, err = only.ClaimJob(ctx, "w")
		require.NoError(t, err)
		require.NoError(t, primary.CompleteJob(ctx, "x", "w", nil))
		members, err := b.rdb.ZRange(ctx, b.key("jobs:pending"), 0, -1).Result()
		require.NoError(t, err)
		require.Equal(t, []string{"x"}, members, "the stale entry the test is about")

		res, err := primary.Backfill(ctx, BackfillOptions{Reverse: true})
		require.NoError(t, err)
		require.EqualValues(t, 1, res.Unchanged)
		requireMirrored(t, b)
		vr, err := primary.Verify(ctx, VerifyOptions{Rounds: 1, Delay: time.Millisecond})
		require.NoError(t, err)
		require.Zero(t, vr.Differences(), "%v", vr.Diffs)
	})
}

// TestBackfillWholeQueues: the queues are copied whole only when the
// source is authoritative and the queue is within the limit, and the copy
// made after the records takes in a write that was not mirrored (a
// process still on the old stage), so the destination queue ends equal.
func TestBackfillWholeQueues(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		seedLegacy(t, b, 12)
		s := newStore(t, b, WithStage(StageDualWrite))
		legacy := newStore(t, b, WithStage(StageLegacy))
		var raced string
		res, err := s.Backfill(ctx, BackfillOptions{BatchSize: 3, QueueCopyLimit: 5, Progress: func(p BackfillProgress) {
			if raced == "" {
				// A legacy process claims a job: nothing is mirrored.
				j, err := legacy.ClaimJob(ctx, "straggler")
				require.NoError(t, err)
				raced = j.ID
			}
		}})
		require.NoError(t, err)
		n, err := b.rdb.ZCard(ctx, b.key("jobs:pending")).Result()
		require.NoError(t, err)
		require.Greater(t, n, int64(5), "jobs:pending is over the limit: synced entry by entry")
		require.NotContains(t, res.QueuesCopied, b.key("steps:pending"))
		require.Contains(t, res.QueuesCopied, b.key("steps:active"))
		got, err := b.rdb.ZScore(ctx, b.key("steps:active"), raced).Result()
		require.NoError(t, err, "the unmirrored claim reached steps:active through the whole copy")
		want, err := b.rdb.ZScore(ctx, b.key("jobs:active"), raced).Result()
		require.NoError(t, err)
		require.Equal(t, want, got)

		// Where the source is not authoritative, nothing is copied whole.
		require.NoError(t, s.ForceStage(StageStepPrimary))
		res, err = s.Backfill(ctx, BackfillOptions{})
		require.NoError(t, err)
		require.Empty(t, res.QueuesCopied)
	})
}

// TestBackfillWholeQueuesResumed: a run stopped during the records, and
// one stopped after them but before its checkpoint moved on, both end
// with the queues copied when resumed.
func TestBackfillWholeQueuesResumed(t *testing.T) {
	for _, stopIn := range []string{"records", "last batch"} {
		t.Run(stopIn, func(t *testing.T) {
			eachBackend(t, func(t *testing.T, b *backend) {
				seedLegacy(t, b, 10)
				s := newStore(t, b, WithStage(StageDualWrite))
				c, cancel := context.WithCancel(ctx)
				defer cancel()
				calls := 0
				_, err := s.Backfill(c, BackfillOptions{BatchSize: 2, Progress: func(p BackfillProgress) {
					calls++
					if stopIn == "records" && calls == 2 || stopIn == "last batch" && p.Records == 10 {
						cancel()
					}
				}})
				require.ErrorIs(t, err, context.Canceled)
				res, err := s.Backfill(ctx, BackfillOptions{})
				require.NoError(t, err)
				require.True(t, res.Resumed)
				require.Len(t, res.QueuesCopied, 4)
				requireMirrored(t, b)
			})
		})
	}
}
