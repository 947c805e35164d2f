package jobstore

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// quickVerify are options for tests: rounds a few milliseconds apart.
var quickVerify = VerifyOptions{Rounds: 2, Delay: 5 * 1e6}

func runVerify(t testing.TB, m *Migrator, opts VerifyOptions) VerifyResult {
	t.Helper()
	res, err := m.Verify(context.Background(), opts)
	require.NoError(t, err)
	return res
}

// An earlier version paged a queue by rank: an entry removed between two
// windows shifted the entries after it down, one of them from the window
// not read yet into the one already read, and Verify exited with no
// difference while steps:pending lacked that entry. Entries are removed
// here between the pages, as concurrent claims remove them.
//
// It needs a real server: miniredis's ZSCAN cursor is a rank, the very
// bug, without the guarantee of Redis's cursors.
func TestVerifyPagingSurvivesConcurrentRemovals(t *testing.T) {
	func(t *testing.T, b *backend) {
		ctx := context.Background()
		const n = 1000
		var zs []redis.Z
		for i := range n {
			zs = append(zs, redis.Z{Score: float64(i), Member: fmt.Sprintf("p%04d", i)})
		}
		require.NoError(t, b.rdb.ZAdd(ctx, b.key("jobs:pending"), zs...).Err())
		require.NoError(t, b.rdb.ZAdd(ctx, b.key("steps:pending"), zs...).Err())
		missing := "p0700"
		require.NoError(t, b.rdb.ZRem(ctx, b.key("steps:pending"), missing).Err())

		removed := 0
		opts := quickVerify
		opts.BatchSize = 10
		opts.Progress = func(p VerifyProgress) {
			if p.Phase != "pending" || removed >= 600 {
				return
			}
			// Claims take the 20 lowest entries of both sides, atomically.
			low := b.rdb.ZRange(ctx, b.key("jobs:pending"), 0, 19).Val()
			low = removeString(low, missing)
			if len(low) == 0 {
				return
			}
			_, err := b.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.ZRem(ctx, b.key("jobs:pending"), toAnys(low)...)
				p.ZRem(ctx, b.key("steps:pending"), toAnys(low)...)
				return nil
			})
			require.NoError(t, err)
			removed += len(low)
		}
		res := runVerify(t, newMigrator(t, b, StageDualWrite), opts)
		require.EqualValues(t, 1, res.Differences, "%v", res.Diffs)
		require.Equal(t, Diff{Kind: DiffMissing, Item: "pending", ID: missing, Key: b.key("steps:pending"),
			Other: b.key("jobs:pending"), Detail: "score 700"}, res.Diffs[0])
		require.Equal(t, b.key("steps:pending")+" lacks p0700; "+b.key("jobs:pending")+" has it (score 700)", res.Diffs[0].String())
		require.GreaterOrEqual(t, removed, 600, "the entries were removed during the pass")
	}(t, serverBackend(t))
}

// serverBackend is the real server of JOBSTORE_TEST_REDIS_URL, or, when it
// is not set, a redis-server of the test's own (skipped without one, failed
// under JOBSTORE_CI).
func serverBackend(t *testing.T) *backend {
	if os.Getenv(envTestRedis) != "" {
		return realBackend(t)
	}
	return startTestServer(t).Backend(nil)
}

func removeString(list []string, s string) []string {
	out := list[:0]
	for _, x := range list {
		if x != s {
			out = append(out, x)
		}
	}
	return out
}

func toAnys(list []string) []any {
	out := make([]any, len(list))
	for i, s := range list {
		out[i] = s
	}
	return out
}

// mirroredJob writes one job, the same on both sides: its record, its
// progress sub-key, its pending member (score 7), its field in w1's active
// hash and in completed (whose whole key expires in 24 h).
func mirroredJob(t testing.TB, b *backend) string {
	ctx := context.Background()
	id := "v" + randomHex(4)
	_, err := b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, ns := range []string{"job", "step"} {
			p.HSet(ctx, b.key(ns+":"+id), "id", id, "status", "in_progress", "retry_count", "0",
				"created_at", "2026-11-28T12:00:00.000Z", "worker_id", "w1")
			p.HSet(ctx, b.key(ns+":"+id+":progress"), "progress", "50")
			p.ZAdd(ctx, b.key(ns+"s:pending"), redis.Z{Score: 7, Member: id})
			p.HSet(ctx, b.key(ns+"s:active:w1"), id, "{}")
			p.HSet(ctx, b.key(ns+"s:completed"), id, `{"x":1}`)
			p.Expire(ctx, b.key(ns+"s:completed"), 24*time.Hour)
		}
		return nil
	})
	require.NoError(t, err)
	return id
}

// change is one write a test makes to a mirrored job; %s in a key is the
// job's id.
type change func(t testing.TB, b *backend, id string)

func key(b *backend, pattern, id string) string {
	if strings.Contains(pattern, "%s") {
		pattern = fmt.Sprintf(pattern, id)
	}
	return b.key(pattern)
}

func hset(pattern string, field string, value any) change {
	return func(t testing.TB, b *backend, id string) {
		f := field
		if f == "%s" {
			f = id
		}
		require.NoError(t, b.rdb.HSet(context.Background(), key(b, pattern, id), f, value).Err())
	}
}

func del(pattern string) change {
	return func(t testing.TB, b *backend, id string) {
		require.NoError(t, b.rdb.Del(context.Background(), key(b, pattern, id)).Err())
	}
}

func hdel(pattern string) change {
	return func(t testing.TB, b *backend, id string) {
		require.NoError(t, b.rdb.HDel(context.Background(), key(b, pattern, id), id).Err())
	}
}

func zadd(pattern string, score float64) change {
	return func(t testing.TB, b *backend, id string) {
		require.NoError(t, b.rdb.ZAdd(context.Background(), key(b, pattern, id), redis.Z{Score: score, Member: id}).Err())
	}
}

func zrem(pattern string) change {
	return func(t testing.TB, b *backend, id string) {
		require.NoError(t, b.rdb.ZRem(context.Background(), key(b, pattern, id), id).Err())
	}
}

func expire(pattern string, d time.Duration) change {
	return func(t testing.TB, b *backend, id string) {
		require.NoError(t, b.rdb.Expire(context.Background(), key(b, pattern, id), d).Err())
	}
}

func persist(pattern string) change {
	return func(t testing.TB, b *backend, id string) {
		require.NoError(t, b.rdb.Persist(context.Background(), key(b, pattern, id)).Err())
	}
}

// kindCases are one change per kind of difference, with the one
// difference Verify must report, as Diff.String reads it (the id as %[1]s,
// keys without the test's prefix).
var kindCases = []struct {
	name   string
	change change
	want   string
	kind   DiffKind
	item   string
}{
	{"record missing on the step side", del("step:%s"), "step:%[1]s missing; job:%[1]s has it", DiffMissing, ItemRecord},
	// The job is in jobs:completed: its record may have gone by the
	// retention TTL, and the step copy is a leftover that blocks nothing.
	{"record only on the step side, job finished", func(t testing.TB, b *backend, id string) {
		entry := `{"success":true,"completed_at":"2099-01-01T00:00:00.000Z"}`
		hset("jobs:completed", "%s", entry)(t, b, id)
		hset("steps:completed", "%s", entry)(t, b, id)
		del("job:%s")(t, b, id)
	}, "job:%[1]s missing; step:%[1]s has it", DiffMissing, ItemRecord},
	{"record only on the step side", func(t testing.TB, b *backend, id string) {
		del("job:%s")(t, b, id)
		require.NoError(t, b.rdb.HDel(ctx, b.key("jobs:completed"), id).Err())
		require.NoError(t, b.rdb.HDel(ctx, b.key("steps:completed"), id).Err())
	}, "job:%[1]s missing; step:%[1]s has it [blocks cleanup]", DiffMissing, ItemRecord},
	{"record fields, step older", func(t testing.TB, b *backend, id string) {
		hset("job:%s", "status", "completed")(t, b, id)
		hset("job:%s", "completed_at", "2027-01-01T00:00:00.000Z")(t, b, id)
	}, "step:%[1]s differs from job:%[1]s: fields completed_at, status; job:%[1]s is fresher", DiffDifferent, ItemRecord},
	{"record fields, step newer", hset("step:%s", "status", "completed"),
		"step:%[1]s differs from job:%[1]s: fields status; step:%[1]s is fresher [blocks cleanup]", DiffDifferent, ItemRecord},
	{"record fields, equally fresh", hset("step:%s", "payload", "{}"),
		"step:%[1]s differs from job:%[1]s: fields payload; neither is fresher [blocks cleanup]", DiffDifferent, ItemRecord},
	{"record TTL", expire("step:%s", time.Hour), "step:%[1]s differs from job:%[1]s in TTL: 1h0m0s vs none", DiffTTL, ItemRecord},
	{"sub-key missing", del("step:%s:progress"), "step:%[1]s:progress missing; job:%[1]s:progress has it", DiffMissing, ItemSubKey},
	{"sub-key only on the step side", del("job:%s:progress"),
		"job:%[1]s:progress missing; step:%[1]s:progress has it [blocks cleanup]", DiffMissing, ItemSubKey},
	{"sub-key content", hset("step:%s:progress", "progress", "99"),
		"step:%[1]s:progress differs from job:%[1]s:progress: content [blocks cleanup]", DiffDifferent, ItemSubKey},
	{"sub-key type", func(t testing.TB, b *backend, id string) {
		del("step:%s:progress")(t, b, id)
		require.NoError(t, b.rdb.Set(context.Background(), key(b, "step:%s:progress", id), "x", 0).Err())
	}, "step:%[1]s:progress differs from job:%[1]s:progress: type string vs hash [blocks cleanup]", DiffDifferent, ItemSubKey},
	{"sub-key TTL", expire("job:%s:progress", time.Hour),
		"step:%[1]s:progress differs from job:%[1]s:progress in TTL: none vs 1h0m0s", DiffTTL, ItemSubKey},
	{"pending member missing", zrem("steps:pending"), "steps:pending lacks %[1]s; jobs:pending has it (score 7)", DiffMissing, ItemPending},
	{"pending member only on the step side", zrem("jobs:pending"),
		"jobs:pending lacks %[1]s; steps:pending has it (score 7) [blocks cleanup]", DiffMissing, ItemPending},
	{"pending score", zadd("steps:pending", 8),
		"steps:pending differs from jobs:pending for %[1]s: score 8 vs score 7 [blocks cleanup]", DiffDifferent, ItemPending},
	{"active field missing", hdel("steps:active:w1"), "steps:active:w1 lacks %[1]s; jobs:active:w1 has it (value {})", DiffMissing, ItemActive},
	{"active field in another worker's hash", hset("steps:active:w2", "%s", "{}"),
		"jobs:active:w2 lacks %[1]s; steps:active:w2 has it (value {}) [blocks cleanup]", DiffMissing, ItemActive},
	{"active value", hset("jobs:active:w1", "%s", `{"a":1}`),
		`steps:active:w1 differs from jobs:active:w1 for %[1]s: value {} vs value {"a":1} [blocks cleanup]`, DiffDifferent, ItemActive},
	{"completed value", hset("steps:completed", "%s", `{"x":2}`),
		`steps:completed differs from jobs:completed for %[1]s: value {"x":2} vs value {"x":1} [blocks cleanup]`, DiffDifferent, ItemCompleted},
	{"failed field only on the job side", hset("jobs:failed", "%s", "{}"),
		"steps:failed lacks %[1]s; jobs:failed has it (value {})", DiffMissing, ItemFailed},
	{"completed whole-key TTL on one side only", persist("steps:completed"),
		"steps:completed differs from jobs:completed in TTL: none vs 24h0m0s", DiffTTL, ItemCompleted},
}

func TestVerifyFindsEachKindOfDifference(t *testing.T) {
	for _, c := range kindCases {
		t.Run(c.name, func(t *testing.T) {
			eachBackend(t, func(t *testing.T, b *backend) {
				id := mirroredJob(t, b)
				m := newMigrator(t, b, StageDualWrite)
				require.Zero(t, runVerify(t, m, quickVerify).Differences)
				c.change(t, b, id)
				res := runVerify(t, m, quickVerify)
				require.EqualValues(t, 1, res.Differences, "%v", res.Diffs)
				d := res.Diffs[0]
				want := c.want
				if strings.Contains(want, "%[1]s") {
					want = fmt.Sprintf(want, id)
				}
				want = strings.ReplaceAll(want, "job", b.prefix+"job")
				want = strings.ReplaceAll(want, "step", b.prefix+"step")
				require.Equal(t, want, d.String())
				require.Equal(t, c.kind, d.Kind)
				require.Equal(t, c.item, d.Item)
				require.Equal(t, d.Blocking, res.Blocking == 1)
				require.EqualValues(t, 1, res.ByItem[c.item])
			})
		})
	}
}

func TestVerifyCompletedTTLsMayDifferWhileBothSidesHaveOne(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		mirroredJob(t, b)
		expire("steps:completed", time.Hour)(t, b, "")
		res := runVerify(t, newMigrator(t, b, StageDualWrite), quickVerify)
		require.Zero(t, res.Differences, "%v", res.Diffs)
	})
}

// Rounds re-read what differed: a write whose mirror lands before the
// first round is not reported, one that never lands is.
func TestVerifyRoundsDoNotReportWritesInFlight(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		inFlight, lost := mirroredJob(t, b), mirroredJob(t, b)
		hset("job:%s", "status", "completed")(t, b, inFlight)
		hset("job:%s", "status", "completed")(t, b, lost)
		suspects := 0
		opts := VerifyOptions{Delay: 20 * time.Millisecond, Progress: func(p VerifyProgress) {
			if p.Phase == "rounds" {
				suspects = p.Suspects
				requireCopy(t, b, "job:"+inFlight, "step:"+inFlight) // the mirror lands
			}
		}}
		res := runVerify(t, newMigrator(t, b, StageDualWrite), opts)
		require.Equal(t, 2, suspects, "the first pass saw both")
		require.Equal(t, DefaultVerifyRounds, res.Rounds)
		require.EqualValues(t, 1, res.Differences, "%v", res.Diffs)
		require.Equal(t, lost, res.Diffs[0].ID)
		require.GreaterOrEqual(t, res.Elapsed, DefaultVerifyRounds*20*time.Millisecond)
	})
}

func TestVerifyRepair(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		for _, c := range kindCases {
			c.change(t, b, mirroredJob(t, b))
		}
		m := newMigrator(t, b, StageDualWrite)
		var all []Diff
		opts := quickVerify
		opts.Repair, opts.MaxReported, opts.BatchSize = true, 3, 4
		opts.OnDiff = func(d Diff) { all = append(all, d) }
		res := runVerify(t, m, opts)
		require.EqualValues(t, len(kindCases), res.Differences)
		require.Len(t, all, len(kindCases), "OnDiff gets every difference")
		require.Len(t, res.Diffs, 3, "the result lists MaxReported")
		require.EqualValues(t, len(kindCases), res.Repaired)
		again := runVerify(t, m, quickVerify)
		require.Zero(t, again.Differences, "%v", again.Diffs)
		requireMirrored(t, b)
	})
}

// With more differences than MaxSuspects, the first pass settles those it
// holds and goes on: every difference is still reported.
func TestVerifyBoundsItsSuspects(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		for range 7 {
			del("step:%s")(t, b, mirroredJob(t, b))
		}
		opts := quickVerify
		opts.MaxSuspects, opts.BatchSize = 2, 2
		res := runVerify(t, newMigrator(t, b, StageDualWrite), opts)
		require.EqualValues(t, 7, res.Differences)
		require.EqualValues(t, 7, res.Missing)
	})
}

// BenchmarkVerify compares JOBSTORE_BENCH_RECORDS jobs, with their
// sub-keys and entries, on both sides, and reports records/s.
func BenchmarkVerify(b *testing.B) {
	be := benchBackend(b)
	n := benchRecords(b)
	writeBenchJobs(b, be, n)
	m := newMigrator(b, be, StageDualWrite)
	ctx := context.Background()
	if _, err := m.Backfill(ctx, BackfillOptions{}); err != nil {
		b.Fatal(err)
	}
	var spent time.Duration
	for b.Loop() {
		res, err := m.Verify(ctx, VerifyOptions{})
		if err != nil || res.Differences != 0 {
			b.Fatalf("%d differences: %v", res.Differences, err)
		}
		spent += res.Elapsed
	}
	b.ReportMetric(float64(n*b.N)/spent.Seconds(), "records/s")
}

// The tombstone of a job finished on the authoritative side (its
// completed or failed entry) makes the other side's older copy stale, but
// not a copy written after the job finished: a straggler's write, or a
// new job under a reused id, blocks a cleanup. (From review: the rule
// first let both through.)
func TestTombstoneDoesNotHideLaterWrites(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		id := mirroredJob(t, b)
		// The job finished on the step side; retention removed its record.
		require.NoError(t, b.rdb.Del(ctx, b.key("step:"+id), b.key("step:"+id+":progress")).Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key("steps:completed"), id,
			`{"success":true,"data":null,"completed_at":"2026-11-28T12:00:00.000Z"}`).Err())
		m := newMigrator(t, b, StageStepOnly)
		// job:<id> is older than the finish: stale, nothing blocks.
		require.NoError(t, b.rdb.HSet(ctx, b.key("job:"+id), "status", "pending", "created_at", "2026-11-28T11:00:00.000Z",
			"completed_at", "").Err())
		v, err := m.Verify(ctx, VerifyOptions{Rounds: 1, Delay: time.Millisecond})
		require.NoError(t, err)
		for _, d := range v.BlockingDiffs {
			require.NotEqual(t, ItemRecord, d.Item, "an older copy blocks: %v", d)
		}
		// Written after the finish: it blocks.
		require.NoError(t, b.rdb.HSet(ctx, b.key("job:"+id), "created_at", "2026-11-29T09:00:00.000Z").Err())
		v, err = m.Verify(ctx, VerifyOptions{Rounds: 1, Delay: time.Millisecond})
		require.NoError(t, err)
		blocking := false
		for _, d := range v.BlockingDiffs {
			blocking = blocking || d.Item == ItemRecord
		}
		require.True(t, blocking, "a record written after the job finished blocks: %v", v.Diffs)
	})
}
