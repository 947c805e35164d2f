package jobstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// legacyWriter replays what the legacy services write, command for
// command as legacy.js does, with raw commands and literal key names under
// the backend's prefix, independently of the library. ns is "job" for the
// legacy layout, "step" to build the same state in the step namespace.
type legacyWriter struct {
	t  testing.TB
	b  *backend
	ns string
	n  int
}

func newLegacy(t testing.TB, b *backend) *legacyWriter { return &legacyWriter{t: t, b: b, ns: "job"} }

func (l *legacyWriter) rec(id string) string   { return l.b.key(l.ns + ":" + id) }
func (l *legacyWriter) queue(q string) string  { return l.b.key(l.ns + "s:" + q) }
func (l *legacyWriter) ctx() context.Context   { return context.Background() }
func (l *legacyWriter) now() time.Time         { l.b.clock.Advance(time.Second); return l.b.clock.Now() }
func (l *legacyWriter) iso(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }
func (l *legacyWriter) do(cmds ...func(p redis.Pipeliner)) {
	l.t.Helper()
	_, err := l.b.rdb.Pipelined(l.ctx(), func(p redis.Pipeliner) error {
		for _, c := range cmds {
			c(p)
		}
		return nil
	})
	require.NoError(l.t, err)
}

// submit is the API's submitJob: HMSET of 21 fields, empty when absent,
// ZADD jobs:pending priority*1e15 - floor(ms/1000).
func (l *legacyWriter) submit(priority int) string {
	l.n++
	id := fmt.Sprintf("L%04d-%s", l.n, randomHex(4))
	now := l.now()
	f := []any{"id", id, "service_required", "comfyui", "priority", strconv.Itoa(priority),
		"payload", `{"prompt":"a cat"}`, "requirements", "", "customer_id", "", "created_at", l.iso(now),
		"status", "pending", "retry_count", "0", "max_retries", "3", "workflow_id", "", "workflow_priority", "",
		"workflow_datetime", "", "current_step", "", "total_steps", "", "ctx", "",
		"job_trace_id", randomHex(16), "job_span_id", randomHex(8), "workflow_trace_id", "", "workflow_span_id", ""}
	l.do(func(p redis.Pipeliner) { p.HSet(l.ctx(), l.rec(id), f...) },
		func(p redis.Pipeliner) {
			p.ZAdd(l.ctx(), l.queue("pending"), redis.Z{Score: apiScore(priority, now), Member: id})
		})
	return id
}

// svcSubmit is RedisService's submitJob with REDIS_DUAL_WRITE_STEPS=true:
// HMSET of 10 fields on job:<id> and the same on step:<id> (a snapshot
// nothing updates), and ZADD jobs:pending with the service's score.
func (l *legacyWriter) svcSubmit() string {
	l.n++
	id := fmt.Sprintf("S%04d-%s", l.n, randomHex(4))
	now := l.now()
	f := []any{"id", id, "service_required", "comfyui", "priority", "50", "payload", `{}`, "requirements", "",
		"customer_id", "", "created_at", l.iso(now), "status", "pending", "retry_count", "0", "max_retries", "3"}
	score := 50*1e6 + (float64(1<<53-1) - float64(now.UnixMilli()))
	l.do(func(p redis.Pipeliner) { p.HSet(l.ctx(), l.rec(id), f...) },
		func(p redis.Pipeliner) { p.HSet(l.ctx(), l.b.key("step:"+id), f...) },
		func(p redis.Pipeliner) { p.ZAdd(l.ctx(), l.queue("pending"), redis.Z{Score: score, Member: id}) })
	return id
}

// claim is findMatchingJob's write: ZREM pending, the record's status,
// worker_id and assigned_at (<secs>.<micros>), the record before the claim
// as JSON in jobs:active:<worker>.
func (l *legacyWriter) claim(id, worker string) {
	before := l.b.rdb.HGetAll(l.ctx(), l.rec(id)).Val()
	snap, err := json.Marshal(before)
	require.NoError(l.t, err)
	now := l.now()
	stamp := fmt.Sprintf("%d.%06d", now.Unix(), now.Nanosecond()/1000)
	l.do(func(p redis.Pipeliner) { p.ZRem(l.ctx(), l.queue("pending"), id) },
		func(p redis.Pipeliner) {
			p.HSet(l.ctx(), l.rec(id), "status", "assigned", "worker_id", worker, "assigned_at", stamp)
		},
		func(p redis.Pipeliner) { p.HSet(l.ctx(), l.queue("active:"+worker), id, string(snap)) })
}

// start and progress are the worker client's: status in_progress and
// started_at, then the job:<id>:progress hash.
func (l *legacyWriter) start(id string, progress int) {
	now := l.iso(l.now())
	l.do(func(p redis.Pipeliner) { p.HSet(l.ctx(), l.rec(id), "status", "in_progress", "started_at", now) },
		func(p redis.Pipeliner) {
			p.HSet(l.ctx(), l.rec(id)+":progress", "progress", strconv.Itoa(progress), "status", "in_progress",
				"message", "working", "updated_at", now)
		})
}

// complete is the worker client's completeJob: status and completed_at,
// HDEL active, the result in the jobs:completed hash and EXPIRE 24 h.
func (l *legacyWriter) complete(id, worker string) {
	now := l.iso(l.now())
	l.do(func(p redis.Pipeliner) { p.HSet(l.ctx(), l.rec(id), "status", "completed", "completed_at", now) },
		func(p redis.Pipeliner) { p.HDel(l.ctx(), l.queue("active:"+worker), id) },
		func(p redis.Pipeliner) {
			p.HSet(l.ctx(), l.queue("completed"), id, `{"success":true,"data":{"url":"x"},"completed_at":"`+now+`"}`)
		},
		func(p redis.Pipeliner) { p.Expire(l.ctx(), l.queue("completed"), 24*time.Hour) })
}

// fail is the worker client's failJob: retried while retry_count+1 <
// max_retries (back to pending), else failed into the jobs:failed hash
// with EXPIRE 7 days.
func (l *legacyWriter) fail(id, worker string) {
	rec := l.b.rdb.HGetAll(l.ctx(), l.rec(id)).Val()
	n, _ := strconv.Atoi(rec["retry_count"])
	maxR, _ := strconv.Atoi(rec["max_retries"])
	n++
	now := l.now()
	cmds := []func(p redis.Pipeliner){func(p redis.Pipeliner) { p.HDel(l.ctx(), l.queue("active:"+worker), id) }}
	if n < maxR {
		prio, _ := strconv.Atoi(rec["priority"])
		cmds = append(cmds, func(p redis.Pipeliner) {
			p.HSet(l.ctx(), l.rec(id), "status", "pending", "worker_id", "", "assigned_at", "",
				"retry_count", strconv.Itoa(n), "last_failed_worker", worker, "failed_at", l.iso(now))
		}, func(p redis.Pipeliner) {
			p.ZAdd(l.ctx(), l.queue("pending"), redis.Z{Score: apiScore(prio, now), Member: id})
		})
	} else {
		cmds = append(cmds, func(p redis.Pipeliner) {
			p.HSet(l.ctx(), l.rec(id), "status", "failed", "failed_at", l.iso(now), "retry_count", strconv.Itoa(n))
		}, func(p redis.Pipeliner) {
			p.HSet(l.ctx(), l.queue("failed"), id, `{"error":"boom","failed_at":"`+l.iso(now)+`","retry_count":`+strconv.Itoa(n)+`}`)
		}, func(p redis.Pipeliner) { p.Expire(l.ctx(), l.queue("failed"), 7*24*time.Hour) })
	}
	l.do(cmds...)
}

// state builds a legacy state of n jobs of each kind: pending, claimed,
// in progress (with progress), completed, retried, failed for good, and
// RedisService snapshots, some of which moved on.
func (l *legacyWriter) state(n int) {
	for i := 0; i < n; i++ {
		w := fmt.Sprintf("lw%d", i%3)
		l.submit(50 + i%5)
		l.claim(l.submit(60), w)
		id := l.submit(70)
		l.claim(id, w)
		l.start(id, 40)
		id = l.submit(55)
		l.claim(id, w)
		l.complete(id, w)
		id = l.submit(55)
		l.claim(id, w)
		l.fail(id, w)
		id = l.submit(40)
		for range 3 {
			l.claim(id, w)
			l.fail(id, w)
		}
		l.svcSubmit()
		id = l.svcSubmit()
		l.claim(id, w)
		l.complete(id, w)
	}
}

// newMigrator returns a Migrator on b in stage st, with its key prefix
// and clock.
func newMigrator(t testing.TB, b *backend, st Stage) *Migrator {
	t.Helper()
	m, err := NewMigrator(b.rdb, WithKeyPrefix(b.prefix), WithClock(b.clock.Now), WithStage(st))
	require.NoError(t, err)
	return m
}

func runBackfill(t testing.TB, m *Migrator, opts BackfillOptions) BackfillResult {
	t.Helper()
	res, err := m.Backfill(context.Background(), opts)
	require.NoError(t, err)
	return res
}

func TestBackfillLegacyState(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		newLegacy(t, b).state(4)
		m := newMigrator(t, b, StageDualWrite)
		var phases []string
		res := runBackfill(t, m, BackfillOptions{BatchSize: 7, Progress: func(p BackfillProgress) {
			if len(phases) == 0 || phases[len(phases)-1] != p.Phase {
				phases = append(phases, p.Phase)
			}
		}})
		require.Equal(t, backfillPhases, phases, "every phase has work, in order")
		require.True(t, res.Authoritative)
		requireVisits(t, b, 4*8, res.Records)
		require.EqualValues(t, 4*7, res.Copied, "every record but the snapshots that did not move on")
		requireVisits(t, b, 4, res.Unchanged)
		require.EqualValues(t, 4, res.SubKeysCopied, "the progress hashes")
		require.Zero(t, res.Conflicts+res.Newer+res.Gone+res.WrongType+res.Foreign)
		v := runVerify(t, m, quickVerify)
		require.Zero(t, v.Differences, "%v", v.Diffs)
		// Per round of state: 8 records, 1 sub-key, 3 pending, 2 active, 2
		// completed and 1 failed entries, on each side.
		requireVisits(t, b, 2*4*17, v.Checked)
		requireMirrored(t, b)
		requireNoKeys(t, b, "jobstore:backfill:*")

		again := runBackfill(t, m, BackfillOptions{})
		require.Zero(t, again.Copied+again.SubKeysCopied+again.EntriesSynced, "a second run copies nothing")
		requireVisits(t, b, 4*8, again.Unchanged)
	})
}

// A resumed run must keep the decisions its first run took, even when
// what they were decided from has changed since: an earlier version
// decided again at each start, and a resumed run that decided otherwise
// left the records it had copied without their entries.
func TestBackfillResumeKeepsTheRunsDecisions(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		l := newLegacy(t, b)
		l.state(3)
		// A job in sync but for a stale entry on the step side, which only
		// an authoritative run removes.
		stale := l.submit(50)
		l.claim(stale, "lw0")
		l.complete(stale, "lw0")
		requireCopy(t, b, "job:"+stale, "step:"+stale)
		require.NoError(t, b.rdb.ZAdd(ctx, b.key("steps:pending"), redis.Z{Score: 1, Member: stale}).Err())

		m := newMigrator(t, b, StageDualWrite)
		require.NoError(t, m.PublishStage(ctx, StageDualWrite, PublishOptions{}))
		cctx, cancel := context.WithCancel(ctx)
		first, err := m.Backfill(cctx, BackfillOptions{BatchSize: 2, Progress: func(p BackfillProgress) {
			if p.Copied > 0 {
				cancel()
			}
		}})
		require.ErrorIs(t, err, context.Canceled)
		require.True(t, first.Authoritative)
		require.Positive(t, first.Copied)
		require.Less(t, first.Records, int64(3*8+1), "stopped during the records")
		require.EqualValues(t, 1, b.rdb.Exists(ctx, b.key("jobstore:backfill:job-to-step")).Val())

		// The fleet moves on: a run starting now would find the step side
		// primary, so not authoritative.
		require.NoError(t, m.PublishStage(ctx, StageDualRead, PublishOptions{}))
		require.NoError(t, m.PublishStage(ctx, StageStepPrimary, PublishOptions{}))
		res := runBackfill(t, m, BackfillOptions{BatchSize: 5})
		require.True(t, res.Resumed)
		require.True(t, res.Authoritative, "the resumed run keeps the first run's decision")
		requireVisits(t, b, 3*8+1, res.Records, "the counts cover both runs")
		requireMirrored(t, b)

		fresh := runBackfill(t, m, BackfillOptions{Restart: true})
		require.False(t, fresh.Authoritative, "a restarted run decides anew")
	})
}

// Lua's unpack fails beyond about 8,000 values: an earlier version failed
// half-way through a large batch, after it had copied the batch's records
// but before their entries. (miniredis's Lua has no such limit: it runs a
// smaller batch, for the logic only.)
func TestBackfillBatchAboveLuaUnpackLimit(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		n := 9000
		if b.mr != nil {
			n = 500
		}
		pipe := b.rdb.Pipeline()
		for i := range n {
			id := fmt.Sprintf("big%05d", i)
			pipe.HSet(ctx, b.key("job:"+id), "id", id, "status", "completed", "retry_count", "0",
				"created_at", "2026-01-01T00:00:00.000Z", "worker_id", "w1")
			pipe.HSet(ctx, b.key("jobs:completed"), id, `{"success":true}`)
			pipe.HSet(ctx, b.key("job:"+id+":progress"), "progress", "100")
		}
		pipe.Expire(ctx, b.key("jobs:completed"), time.Hour)
		_, err := pipe.Exec(ctx)
		require.NoError(t, err)
		m := newMigrator(t, b, StageDualWrite)
		res := runBackfill(t, m, BackfillOptions{BatchSize: n})
		t.Logf("%s: backfill of %d records with their sub-keys and entries: %v", b.name, n, res.Elapsed)
		require.EqualValues(t, n, res.Copied)
		require.EqualValues(t, n, res.SubKeysCopied)
		require.EqualValues(t, n, b.rdb.HLen(ctx, b.key("steps:completed")).Val(), "the records' entries followed them")
		require.InDelta(t, b.rdb.PTTL(ctx, b.key("jobs:completed")).Val().Seconds(),
			b.rdb.PTTL(ctx, b.key("steps:completed")).Val().Seconds(), 1)
		v := runVerify(t, m, VerifyOptions{BatchSize: n, Rounds: 1, Delay: time.Millisecond})
		t.Logf("%s: verify: %v", b.name, v.Elapsed)
		require.Zero(t, v.Differences, "%v", v.Diffs)
	})
}

func TestBackfillNeverOverwritesNewerData(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		l := newLegacy(t, b)
		newer := l.submit(50)
		conflict := l.submit(50)
		requireCopy(t, b, "job:"+newer, "step:"+newer)
		requireCopy(t, b, "job:"+conflict, "step:"+conflict)
		// The step side moved on for one job, and differs without moving on
		// for the other.
		require.NoError(t, b.rdb.HSet(ctx, b.key("step:"+newer), "status", "completed", "completed_at", l.iso(l.now())).Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key("step:"+conflict), "payload", `{"other":1}`).Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key("steps:completed"), newer, `{"success":true}`).Err())
		before := nsSnapshot(t, b, StepNamespace)

		res := runBackfill(t, newMigrator(t, b, StageDualWrite), BackfillOptions{})
		requireVisits(t, b, 1, res.Newer)
		requireVisits(t, b, 1, res.Conflicts)
		require.Equal(t, conflict, res.ConflictIDs[0])
		require.Zero(t, res.Copied)
		require.Equal(t, before, nsSnapshot(t, b, StepNamespace),
			"the newer record and its entries, and the conflicting one, are left as they are")
		require.EqualValues(t, 3, res.EntriesSkipped, "their pending entries, and newer's completed one, wait for Verify")
	})
}

// requireVisits checks a count of keys a scan returned. SCAN may return
// a key twice when the keyspace is resized during the walk, as it is on a
// server other tests share: there the count may be higher.
func requireVisits(t testing.TB, b *backend, want int, got int64, msg ...any) {
	t.Helper()
	if b.mr != nil {
		require.EqualValues(t, want, got, msg...)
		return
	}
	require.GreaterOrEqual(t, got, int64(want), msg...)
}

// requireCopy copies a key of the backend, TTL included. (Not
// rdb.Copy: go-redis always sends a DB argument, and 0 is not ours.)
func requireCopy(t testing.TB, b *backend, from, to string) {
	t.Helper()
	require.NoError(t, b.rdb.Do(context.Background(), "COPY", b.key(from), b.key(to), "REPLACE").Err())
}

// RedisService's dual-write wrote step:<id> once, at submit: those
// snapshots are stale once the job moved on, and must be refreshed.
func TestBackfillRefreshesServiceSnapshots(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		l := newLegacy(t, b)
		waiting := l.svcSubmit()
		claimed := l.svcSubmit()
		l.claim(claimed, "lw1")
		done := l.svcSubmit()
		l.claim(done, "lw1")
		l.complete(done, "lw1")
		require.Equal(t, "pending", b.rdb.HGet(ctx, b.key("step:"+done), "status").Val(), "a stale snapshot")

		res := runBackfill(t, newMigrator(t, b, StageDualWrite), BackfillOptions{})
		require.EqualValues(t, 2, res.Copied, "the snapshots of the jobs that moved on")
		requireVisits(t, b, 1, res.Unchanged, "the snapshot of the waiting job is its record")
		require.Equal(t, "completed", b.rdb.HGet(ctx, b.key("step:"+done), "status").Val())
		require.Equal(t, "lw1", b.rdb.HGet(ctx, b.key("step:"+claimed), "worker_id").Val())
		require.True(t, b.rdb.HExists(ctx, b.key("steps:active:lw1"), claimed).Val())
		require.True(t, b.rdb.ZScore(ctx, b.key("steps:pending"), waiting).Err() == nil)
		require.Zero(t, runVerify(t, newMigrator(t, b, StageDualWrite), quickVerify).Differences)
		requireMirrored(t, b)
	})
}

func TestBackfillSubKeys(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		l := newLegacy(t, b)
		moved := l.submit(50)
		l.claim(moved, "lw1")
		l.start(moved, 10)
		kept := l.submit(50)
		orphan := "orphan-1"
		// Sub-keys of other types, with a TTL; one whose record is gone.
		require.NoError(t, b.rdb.RPush(ctx, b.key("job:"+moved+":log"), "a", "b").Err())
		require.NoError(t, b.rdb.Expire(ctx, b.key("job:"+moved+":log"), time.Hour).Err())
		require.NoError(t, b.rdb.Set(ctx, b.key("job:"+orphan+":lock"), "x", time.Hour).Err())
		// The step side has an old progress of moved, from before it moved
		// on; and kept's step record is newer, with a progress of its own.
		requireCopy(t, b, "job:"+moved+":progress", "step:"+moved+":progress")
		require.NoError(t, b.rdb.HSet(ctx, b.key("job:"+moved+":progress"), "progress", "90").Err())
		requireCopy(t, b, "job:"+kept, "step:"+kept)
		require.NoError(t, b.rdb.HSet(ctx, b.key("step:"+kept), "status", "in_progress").Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key("step:"+kept+":progress"), "progress", "70").Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key("job:"+kept+":progress"), "progress", "5").Err())

		res := runBackfill(t, newMigrator(t, b, StageDualWrite), BackfillOptions{})
		requireVisits(t, b, 4, res.SubKeys)
		require.EqualValues(t, 3, res.SubKeysCopied)
		require.Equal(t, "90", b.rdb.HGet(ctx, b.key("step:"+moved+":progress"), "progress").Val())
		log, copied := readKey(t, b.rdb, b.key("job:"+moved+":log")), readKey(t, b.rdb, b.key("step:"+moved+":log"))
		require.Equal(t, log.Value, copied.Value)
		require.InDelta(t, log.TTL.Seconds(), copied.TTL.Seconds(), 1)
		lock := readKey(t, b.rdb, b.key("step:"+orphan+":lock"))
		require.Equal(t, "string", lock.Type)
		require.InDelta(t, time.Hour.Seconds(), lock.TTL.Seconds(), 2, "the TTL is copied")
		require.Equal(t, "70", b.rdb.HGet(ctx, b.key("step:"+kept+":progress"), "progress").Val(),
			"the sub-key of a job whose step record is newer is kept")
	})
}

func TestBackfillReverse(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		l := newLegacy(t, b)
		l.ns = "step"
		l.state(2)
		// svcSubmit wrote step: records both times: remove what it wrote on
		// the job side.
		for _, k := range scanKeys(t, b.rdb, b.key("job*")) {
			require.NoError(t, b.rdb.Del(context.Background(), k).Err())
		}
		res := runBackfill(t, newMigrator(t, b, StageStepOnly), BackfillOptions{Reverse: true})
		require.Equal(t, "step", res.From)
		require.True(t, res.Authoritative)
		require.EqualValues(t, 2*8, res.Copied)
		require.Zero(t, runVerify(t, newMigrator(t, b, StageStepOnly), quickVerify).Differences)
		requireMirrored(t, b)
	})
}

func TestBackfillDoesNotResurrectDeletedRecords(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		l := newLegacy(t, b)
		for range 3 {
			l.submit(50)
		}
		m := newMigrator(t, b, StageDualWrite)
		var deleted string
		m.hooks = &migrateHooks{beforeBatch: func(phase string, items []string) {
			if phase == "records" && deleted == "" {
				deleted = items[0]
				require.NoError(t, b.rdb.Del(ctx, deleted).Err())
			}
		}}
		res := runBackfill(t, m, BackfillOptions{BatchSize: 1})
		requireVisits(t, b, 1, res.Gone)
		require.EqualValues(t, 2, res.Copied)
		id, _, _ := m.s.space(JobNamespace).parseRecordKey(deleted)
		require.Zero(t, b.rdb.Exists(ctx, b.key("step:"+id)).Val())
	})
}

func TestBackfillDryRun(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		newLegacy(t, b).state(2)
		res := runBackfill(t, newMigrator(t, b, StageDualWrite), BackfillOptions{DryRun: true, BatchSize: 3})
		require.True(t, res.DryRun)
		requireVisits(t, b, 2*7, res.Copied, "a dry run copies nothing, so a record seen twice counts twice")
		requireVisits(t, b, 2, res.SubKeysCopied)
		require.Positive(t, res.EntriesSynced)
		steps := nsSnapshot(t, b, StepNamespace)
		for name := range steps {
			require.Contains(t, name, "R:S", "only the snapshots the legacy service wrote: %s", name)
		}
		requireNoKeys(t, b, "jobstore:*")
	})
}

func TestBackfillRateLimit(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		l := newLegacy(t, b)
		for range 20 {
			l.submit(50)
		}
		const rate = 200.0
		var scanned int64
		res := runBackfill(t, newMigrator(t, b, StageDualWrite), BackfillOptions{BatchSize: 5, Rate: rate,
			Progress: func(p BackfillProgress) { scanned = p.Scanned }})
		require.GreaterOrEqual(t, res.Elapsed.Seconds(), float64(scanned-5)/rate)
	})
}

func TestBackfillRefusesBadOptions(t *testing.T) {
	b := miniBackend(t)
	m := newMigrator(t, b, StageDualWrite)
	for _, o := range []BackfillOptions{{BatchSize: -1}, {BatchSize: MaxBatchSize + 1}, {Rate: -1}, {Rate: math.NaN()}, {Rate: math.Inf(1)}} {
		_, err := m.Backfill(context.Background(), o)
		require.ErrorIs(t, err, ErrInvalidArgument, "%+v", o)
	}
	require.NoError(t, b.rdb.Set(context.Background(), "jobstore:backfill:job-to-step", "{", 0).Err())
	_, err := m.Backfill(context.Background(), BackfillOptions{})
	require.ErrorIs(t, err, ErrCorruptRecord)
	_, err = m.Backfill(context.Background(), BackfillOptions{Restart: true})
	require.NoError(t, err)
}

// dualWriteLoad runs a dual-writing Store's traffic until stop is
// closed: submitters of perSubmitter jobs each, and workers that claim,
// start, report progress, then complete or fail (retried or not) what they
// claim. wait returns how many operations succeeded.
func dualWriteLoad(t testing.TB, s *Store, submitters, perSubmitter, workers int, stop <-chan struct{}) (wait func() int64) {
	var wg sync.WaitGroup
	var ops atomic.Int64
	ctx := context.Background()
	run := func(f func(r *rand.Rand) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(rand.Uint64(), 1))
			for {
				select {
				case <-stop:
					return
				default:
				}
				switch err := f(r); {
				case err == nil:
					ops.Add(1)
				case errors.Is(err, ErrNoJob), errors.Is(err, errEnough):
					time.Sleep(time.Millisecond)
				default:
					t.Errorf("load: %v", err)
					return
				}
			}
		}()
	}
	for range submitters {
		n := 0
		run(func(r *rand.Rand) error {
			if n++; n > perSubmitter {
				return errEnough
			}
			_, err := s.SubmitJob(ctx, Job{Service: "comfyui", Priority: 1 + r.IntN(90), MaxRetries: 1 + r.IntN(3)})
			return err
		})
	}
	for i := range workers {
		caps := registerWorker(t, s, fmt.Sprintf("gw%d", i), "comfyui")
		run(func(r *rand.Rand) error { return workOne(ctx, s, caps, r) })
	}
	return func() int64 { wg.Wait(); return ops.Load() }
}

// errEnough tells a load goroutine that it has done its share.
var errEnough = errors.New("enough")

// workOne claims a job and takes it through to its end.
func workOne(ctx context.Context, s *Store, caps Capabilities, r *rand.Rand) error {
	j, err := s.ClaimJob(ctx, caps)
	if err != nil {
		return err
	}
	w := caps.WorkerID
	if r.IntN(2) == 0 {
		if err := s.StartJob(ctx, j.ID, w); err != nil {
			return err
		}
		if err := s.ReportProgress(ctx, j.ID, w, float64(r.IntN(100)), "working"); err != nil {
			return err
		}
	}
	if r.IntN(3) == 0 {
		_, err = s.FailJob(ctx, j.ID, w, "boom", true)
		return err
	}
	return s.CompleteJob(ctx, j.ID, w, json.RawMessage(`{"ok":true}`))
}

// A backfill that runs while a dual-writing fleet submits, claims,
// completes and fails jobs, legacy ones included, leaves the namespaces
// equal once the load stops.
func TestBackfillRacingADualWritingStore(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		newLegacy(t, b).state(10)
		s := newStore(t, b, WithStage(StageDualWrite))
		stop := make(chan struct{})
		wait := dualWriteLoad(t, s, 3, 80, 5, stop)
		m := newMigrator(t, b, StageDualWrite)
		batches := 0
		res := runBackfill(t, m, BackfillOptions{BatchSize: 5, Progress: func(BackfillProgress) { batches++ }})
		close(stop)
		ops := wait()
		t.Logf("%s: %d operations during a backfill of %d batches: %+v", b.name, ops, batches, res)
		require.Positive(t, res.Copied)
		require.Greater(t, ops, int64(100))
		v := runVerify(t, m, quickVerify)
		require.Zero(t, v.Differences, "%v", v.Diffs)
		requireMirrored(t, b)
	})
}

// benchRecords is the number of jobs the migration benchmarks write:
// JOBSTORE_BENCH_RECORDS, 5000 by default.
func benchRecords(b *testing.B) int {
	n := 5000
	if v := os.Getenv("JOBSTORE_BENCH_RECORDS"); v != "" {
		var err error
		if n, err = strconv.Atoi(v); err != nil || n <= 0 {
			b.Fatalf("JOBSTORE_BENCH_RECORDS=%q: want a positive number", v)
		}
	}
	return n
}

// benchBackend is the real server when JOBSTORE_TEST_REDIS_URL names one,
// else miniredis.
func benchBackend(b *testing.B) *backend {
	if os.Getenv(envTestRedis) != "" {
		return realBackend(b)
	}
	return miniBackend(b)
}

// writeBenchJobs writes n legacy jobs in the job namespace: of every ten,
// six pending, two completed, one in progress on one of 20 workers (with
// its progress hash), one failed.
func writeBenchJobs(b *testing.B, be *backend, n int) {
	ctx := context.Background()
	for lo := 0; lo < n; lo += 1000 {
		pipe := be.rdb.Pipeline()
		for i := lo; i < min(lo+1000, n); i++ {
			id := fmt.Sprintf("b%07d", i)
			status, w := "pending", fmt.Sprintf("w%d", i%20)
			switch i % 10 {
			case 6, 7:
				status = "completed"
				pipe.HSet(ctx, be.key("jobs:completed"), id, `{"success":true,"data":{"url":"x"}}`)
			case 8:
				status = "in_progress"
				pipe.HSet(ctx, be.key("jobs:active:"+w), id, `{"id":"`+id+`"}`)
				pipe.HSet(ctx, be.key("job:"+id+":progress"), "progress", "50", "status", "in_progress")
			case 9:
				status = "failed"
				pipe.HSet(ctx, be.key("jobs:failed"), id, `{"error":"boom"}`)
			default:
				pipe.ZAdd(ctx, be.key("jobs:pending"), redis.Z{Score: float64(i), Member: id})
			}
			pipe.HSet(ctx, be.key("job:"+id), "id", id, "service_required", "comfyui", "priority", "50",
				"payload", `{"prompt":"a cat"}`, "requirements", "", "created_at", "2026-11-28T12:00:00.000Z",
				"status", status, "retry_count", "0", "max_retries", "3", "worker_id", w)
		}
		pipe.Expire(ctx, be.key("jobs:completed"), 24*time.Hour)
		pipe.Expire(ctx, be.key("jobs:failed"), 7*24*time.Hour)
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBackfill copies JOBSTORE_BENCH_RECORDS legacy jobs, with their
// sub-keys and entries, to an empty step namespace, and reports records/s.
func BenchmarkBackfill(b *testing.B) {
	be := benchBackend(b)
	n := benchRecords(b)
	writeBenchJobs(b, be, n)
	m := newMigrator(b, be, StageDualWrite)
	rollback := newMigrator(b, be, StageLegacy)
	ctx := context.Background()
	var spent time.Duration
	for b.Loop() {
		b.StopTimer()
		if _, err := rollback.Cleanup(ctx, StepNamespace, CleanupOptions{Force: true}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		res, err := m.Backfill(ctx, BackfillOptions{})
		if err != nil || res.Copied != int64(n) {
			b.Fatalf("copied %d of %d: %v", res.Copied, n, err)
		}
		spent += res.Elapsed
	}
	b.ReportMetric(float64(n*b.N)/spent.Seconds(), "records/s")
}

// The migration's copy and check, on a job the legacy API wrote: Backfill
// copies it with its pending entry, Verify finds the namespaces equal.
func ExampleMigrator_Backfill() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	rdb.HSet(ctx, "job:42", "id", "42", "service_required", "comfyui", "status", "pending",
		"retry_count", "0", "created_at", "2026-11-28T12:00:00.000Z")
	rdb.ZAdd(ctx, "jobs:pending", redis.Z{Score: 50e15, Member: "42"})

	m, err := NewMigrator(rdb, WithStage(StageDualWrite))
	if err != nil {
		panic(err)
	}
	res, err := m.Backfill(ctx, BackfillOptions{})
	if err != nil {
		panic(err)
	}
	fmt.Printf("copied %d of %d records, %d entries\n", res.Copied, res.Records, res.EntriesSynced)
	v, err := m.Verify(ctx, VerifyOptions{})
	if err != nil {
		panic(err)
	}
	fmt.Println("differences:", v.Differences)
	// Output:
	// copied 1 of 1 records, 1 entries
	// differences: 0
}

// Keys of the wrong type stop nothing but their own job: a record that is
// not a hash, an active hash that is a string.
func TestBackfillPassesOverKeysOfTheWrongType(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		l := newLegacy(t, b)
		good := l.submit(50)
		require.NoError(t, b.rdb.Set(ctx, b.key("job:notahash"), "x", 0).Err())
		require.NoError(t, b.rdb.Set(ctx, b.key("jobs:active:broken"), "x", 0).Err())
		res := runBackfill(t, newMigrator(t, b, StageDualWrite), BackfillOptions{})
		require.EqualValues(t, 1, res.Copied)
		requireVisits(t, b, 2, res.WrongType)
		require.Subset(t, res.WrongTypeKeys, []string{b.key("job:notahash"), b.key("jobs:active:broken")})
		require.EqualValues(t, 1, b.rdb.Exists(ctx, b.key("step:"+good)).Val())
		require.Zero(t, b.rdb.Exists(ctx, b.key("step:notahash"), b.key("steps:active:broken")).Val())
	})
}

// TestBackfillDryRunPredictsTheRun: a dry run reports what the run would
// do. The records phase counts the entries it would sync with each record;
// the queue phases, finding those entries still different (a dry run
// writes nothing), must not count them again as differing, synced or left.
func TestBackfillDryRunPredictsTheRun(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		l := newLegacy(t, b)
		l.state(2)
		// A record already in sync whose entries are not: the records
		// phase syncs them as "unchanged".
		id := l.submit(50)
		requireCopy(t, b, "job:"+id, "step:"+id)
		m := newMigrator(t, b, StageDualWrite)
		dry := runBackfill(t, m, BackfillOptions{DryRun: true, BatchSize: 1000})
		real := runBackfill(t, m, BackfillOptions{BatchSize: 1000})
		require.Equal(t, real.Entries, dry.Entries, "entries found different")
		require.Equal(t, real.EntriesSkipped, dry.EntriesSkipped, "entries left")
		requireVisits(t, b, int(real.EntriesSynced), dry.EntriesSynced, "entries synced")
		requireVisits(t, b, int(real.Copied), dry.Copied, "records copied")
		require.Positive(t, real.EntriesSynced)
		requireMirrored(t, b)
	})
}

// TestBackfillInterruptedAfterTheLastPage: a run stopped while it paces
// after the last chunk of a phase's last page must not do that page again
// when resumed: the counts would cover it twice.
func TestBackfillInterruptedAfterTheLastPage(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		l := newLegacy(t, b)
		for range 10 {
			l.submit(50)
		}
		m := newMigrator(t, b, StageDualWrite)
		cctx, cancel := context.WithCancel(ctx)
		defer cancel()
		_, err := m.Backfill(cctx, BackfillOptions{BatchSize: 1000, Rate: 1, Progress: func(p BackfillProgress) {
			if p.Phase == "records" && p.Records == 10 {
				cancel() // while it paces, after the phase's last chunk
			}
		}})
		require.ErrorIs(t, err, context.Canceled)
		res := runBackfill(t, m, BackfillOptions{BatchSize: 1000})
		require.True(t, res.Resumed)
		requireVisits(t, b, 10, res.Records)
		if b.mr == nil {
			require.Less(t, res.Records, int64(20), "the last page was done twice")
		}
		require.EqualValues(t, 10, res.Copied+res.Unchanged)
		requireMirrored(t, b)
	})
}

// TestBackfillRefusesARateTooSmallToPace: a rate whose pause per item
// overflows a time.Duration would leave the run unpaced.
func TestBackfillRefusesARateTooSmallToPace(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		newLegacy(t, b).submit(50)
		for _, r := range []float64{1e-300, 1e-10} {
			_, err := newMigrator(t, b, StageDualWrite).Backfill(ctx, BackfillOptions{Rate: r})
			require.ErrorIs(t, err, ErrInvalidArgument, "rate %v", r)
		}
		require.Zero(t, b.rdb.Exists(ctx, b.key("step:L0001")).Val())
	})
}

// TestBackfillDryRunOnlyAddingPredictsTheRun: in a run that is not
// authoritative (the destination is the live side) the records phase only
// adds entries the destination lacks; an entry both sides hold with other
// values is left, then found different by the queue phase (Entries 1).
// The dry run must count it too.
func TestBackfillDryRunOnlyAddingPredictsTheRun(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		l := newLegacy(t, b)
		id := l.submit(50)
		requireCopy(t, b, "job:"+id, "step:"+id) // records in sync
		require.NoError(t, b.rdb.ZAdd(ctx, b.key("steps:pending"), redis.Z{Score: 1, Member: id}).Err())
		m := newMigrator(t, b, StageDualWrite)
		for _, st := range []Stage{StageDualWrite, StageDualRead, StageStepPrimary} {
			require.NoError(t, m.PublishStage(ctx, st, PublishOptions{}))
		}
		dry := runBackfill(t, m, BackfillOptions{DryRun: true, BatchSize: 1000})
		real := runBackfill(t, m, BackfillOptions{BatchSize: 1000})
		require.False(t, real.Authoritative)
		require.Equal(t, real.Entries, dry.Entries, "entries found different")
		require.Equal(t, real.EntriesSynced, dry.EntriesSynced, "entries synced")
		require.Equal(t, real.EntriesSkipped, dry.EntriesSkipped, "entries left")
	})
}

// TestBackfillDryRunRecordOfABadWorker: a record naming a worker whose
// destination active hash is not a hash is left by the records phase
// ("wrongtype"), so its completed entry is neither synced with it nor in
// sync afterwards: the real run counts it found different and left, and
// so must the dry run.
func TestBackfillDryRunRecordOfABadWorker(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		l := newLegacy(t, b)
		id := l.submit(50)
		l.claim(id, "bw")
		l.complete(id, "bw")
		require.NoError(t, b.rdb.Set(ctx, b.key("steps:active:bw"), "junk", 0).Err())
		m := newMigrator(t, b, StageDualWrite)
		dry := runBackfill(t, m, BackfillOptions{DryRun: true, BatchSize: 1000})
		real := runBackfill(t, m, BackfillOptions{BatchSize: 1000})
		require.True(t, real.Authoritative)
		require.Equal(t, real.WrongType, dry.WrongType)
		require.Equal(t, real.Entries, dry.Entries, "entries found different")
		require.Equal(t, real.EntriesSkipped, dry.EntriesSkipped, "entries left")
	})
}

// TestBackfillDryRunPredictsSubKeys: a sub-key both sides hold, whose record the
// records phase copies, is copied by the run (its records are then in
// sync) but reported kept by the dry run (they are not, as it wrote
// nothing), unless the dry run predicts the records phase.
func TestBackfillDryRunPredictsSubKeys(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		l := newLegacy(t, b)
		id := l.submit(50)
		l.claim(id, "lw0")
		l.start(id, 40)
		requireCopy(t, b, "job:"+id, "step:"+id)
		requireCopy(t, b, "job:"+id+":progress", "step:"+id+":progress")
		l.start(id, 80) // the source moves on: record and progress hash
		m := newMigrator(t, b, StageDualWrite)
		dry := runBackfill(t, m, BackfillOptions{DryRun: true, BatchSize: 1000})
		real := runBackfill(t, m, BackfillOptions{BatchSize: 1000})
		require.EqualValues(t, 1, real.Copied)
		require.Equal(t, real.Copied, dry.Copied)
		require.Equal(t, real.SubKeysCopied, dry.SubKeysCopied, "sub-keys copied")
	})
}
