package jobstore

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"pgregory.net/rapid"
)

// The model-based test: rapid generates random sequences of operations
// (submit, claim, start, extend, complete, fail, cancel, lease recovery,
// clock ticks and dual-write flips), runs each on a Store and on a small
// in-memory model of what it must do, and after every step compares Redis
// with the model. When a sequence fails, rapid shrinks it to a shortest
// one that still fails, which hand-written tables cannot do.

// modelJob is what the model knows of one job.
type modelJob struct {
	service    string
	maxRetries int
	retries    int
	status     Status
	worker     string  // worker_id as stored; "" when absent
	pending    float64 // its score in the pending queue, kept across retries
	queue      Queue   // the one queue it is in, "" for none
	score      float64 // its score there
}

// jobModel runs the operations on a Store and on the model side by side.
type jobModel struct {
	t    *testing.T // the enclosing test, for rapidTB
	b    *backend
	s    *Store
	jobs map[string]*modelJob
	ids  []string // in submit order

	dual      bool // dual-write as the Store has it now
	flips     bool // whether this run flips dual-write
	attempted uint64
	// What the mirror must hold: for each record, a copy of the primary
	// as it was after its last write with dual-write on (none if it never
	// had one); for each queue, the entries as they were after the last
	// write with dual-write on that touched them.
	mirrorRecords map[string]map[string]string
	mirrorQueues  map[Queue]map[string]float64
}

var (
	modelServices = []string{"a", "b"}
	modelWorkers  = []string{"w1", "w2"}
)

func (m *jobModel) now() time.Time { return m.b.clock.Now() }

// pick draws an id among the jobs, or one that does not exist.
func (m *jobModel) pick(t *rapid.T) string {
	return rapid.SampledFrom(append(slices.Clone(m.ids), "nope")).Draw(t, "id")
}

// holds reports whether worker holds job id, as the scripts' not_held does.
func (m *jobModel) holds(id, worker string) bool {
	j := m.jobs[id]
	return j != nil && (j.status == StatusAssigned || j.status == StatusInProgress) &&
		j.worker == worker && j.queue == QueueActive
}

// wantHeldError checks the error of an operation on a job the worker does
// not hold, or that does not exist.
func (m *jobModel) wantHeldError(t *rapid.T, id string, err error) {
	if m.jobs[id] == nil {
		require.ErrorIs(t, err, ErrJobNotFound)
		return
	}
	require.ErrorIs(t, err, ErrNotHeld)
	if m.jobs[id].status.Finished() {
		require.ErrorIs(t, err, ErrJobFinished)
	}
}

// wrote records one successful write (one script) of the jobs ids that
// touched queues: with dual-write on, the mirror now holds a copy of each
// record and of each id's entries in those queues.
func (m *jobModel) wrote(t *rapid.T, queues []Queue, ids ...string) {
	if !m.dual {
		return
	}
	m.attempted++
	for _, id := range ids {
		m.copied(t, id, queues)
	}
}

func (m *jobModel) copied(t *rapid.T, id string, queues []Queue) {
	h, err := m.b.rdb.HGetAll(ctx, m.b.key("job:"+id)).Result()
	require.NoError(t, err)
	m.mirrorRecords[id] = h
	for _, q := range queues {
		s, err := m.b.rdb.ZScore(ctx, m.b.key("jobs:"+string(q)), id).Result()
		if errors.Is(err, redis.Nil) {
			delete(m.mirrorQueues[q], id)
			continue
		}
		require.NoError(t, err)
		m.mirrorQueues[q][id] = s
	}
}

// failed moves a held job on after a failure, as FailJob and lease
// recovery do.
func (m *jobModel) failed(id string) Status {
	j := m.jobs[id]
	if j.retries < j.maxRetries {
		j.retries++
		j.status, j.worker, j.queue, j.score = StatusPending, "", QueuePending, j.pending
		return StatusPending
	}
	j.status, j.queue, j.score = StatusFailed, QueueFailed, float64(ms(m.now()))
	return StatusFailed
}

func (m *jobModel) actions() map[string]func(*rapid.T) {
	a := map[string]func(*rapid.T){
		"": m.check,
		"submit": func(t *rapid.T) {
			id := fmt.Sprintf("j%03d", len(m.ids))
			svc := rapid.SampledFrom(modelServices).Draw(t, "service")
			pri := rapid.IntRange(0, 3).Draw(t, "priority")
			maxRetries := rapid.IntRange(0, 2).Draw(t, "maxRetries")
			_, err := m.s.SubmitJob(ctx, Job{ID: id, Service: svc, Priority: pri, MaxRetries: maxRetries})
			require.NoError(t, err)
			if maxRetries == 0 {
				maxRetries = DefaultMaxRetries
			}
			sc := score(pri, m.now())
			m.jobs[id] = &modelJob{service: svc, maxRetries: maxRetries, status: StatusPending,
				pending: sc, queue: QueuePending, score: sc}
			m.ids = append(m.ids, id)
			m.wrote(t, []Queue{QueuePending}, id)
		},
		"claim": func(t *rapid.T) {
			worker := rapid.SampledFrom(modelWorkers).Draw(t, "worker")
			services := rapid.SampledFrom([][]string{nil, {"a"}, {"b"}, {"a", "b"}}).Draw(t, "services")
			// The model's choice: the highest score, and among equal
			// scores the greatest id, as ZREVRANGE orders them.
			want := ""
			for id, j := range m.jobs {
				if j.queue != QueuePending || (len(services) > 0 && !slices.Contains(services, j.service)) {
					continue
				}
				if w := m.jobs[want]; want == "" || j.score > w.score || (j.score == w.score && id > want) {
					want = id
				}
			}
			got, err := m.s.ClaimJob(ctx, worker, services...)
			if want == "" {
				require.ErrorIs(t, err, ErrNoJob)
				return
			}
			require.NoError(t, err)
			require.Equal(t, want, got.ID)
			j := m.jobs[want]
			j.status, j.worker, j.queue, j.score = StatusAssigned, worker, QueueActive, float64(ms(m.now().Add(DefaultLeaseDuration)))
			m.wrote(t, []Queue{QueuePending, QueueActive}, want)
		},
		"start": func(t *rapid.T) {
			id, worker := m.pick(t), rapid.SampledFrom(modelWorkers).Draw(t, "worker")
			err := m.s.StartJob(ctx, id, worker)
			if !m.holds(id, worker) {
				m.wantHeldError(t, id, err)
				return
			}
			require.NoError(t, err)
			m.jobs[id].status = StatusInProgress
			m.wrote(t, []Queue{QueueActive}, id)
		},
		"extend": func(t *rapid.T) {
			id, worker := m.pick(t), rapid.SampledFrom(modelWorkers).Draw(t, "worker")
			d := rapid.SampledFrom([]time.Duration{time.Minute, 10 * time.Minute}).Draw(t, "lease")
			until, err := m.s.ExtendLease(ctx, id, worker, d)
			if !m.holds(id, worker) {
				m.wantHeldError(t, id, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, ms(m.now().Add(d)), ms(until))
			m.jobs[id].score = float64(ms(m.now().Add(d)))
			m.wrote(t, []Queue{QueueActive}, id)
		},
		"complete": func(t *rapid.T) {
			id, worker := m.pick(t), rapid.SampledFrom(modelWorkers).Draw(t, "worker")
			err := m.s.CompleteJob(ctx, id, worker, nil)
			if !m.holds(id, worker) {
				m.wantHeldError(t, id, err)
				return
			}
			require.NoError(t, err)
			j := m.jobs[id]
			j.status, j.queue, j.score = StatusCompleted, QueueCompleted, float64(ms(m.now()))
			m.wrote(t, []Queue{QueueActive, QueueCompleted}, id)
		},
		"fail": func(t *rapid.T) {
			id, worker := m.pick(t), rapid.SampledFrom(modelWorkers).Draw(t, "worker")
			err := m.s.FailJob(ctx, id, worker, "boom")
			if !m.holds(id, worker) {
				m.wantHeldError(t, id, err)
				return
			}
			require.NoError(t, err)
			m.failed(id)
			m.wrote(t, []Queue{QueueActive, QueuePending, QueueFailed}, id)
		},
		"cancel": func(t *rapid.T) {
			id := m.pick(t)
			err := m.s.CancelJob(ctx, id)
			j := m.jobs[id]
			switch {
			case j == nil:
				require.ErrorIs(t, err, ErrJobNotFound)
			case j.status.Finished():
				require.ErrorIs(t, err, ErrJobFinished)
			default:
				require.NoError(t, err)
				j.status, j.queue, j.score = StatusCancelled, "", 0
				m.wrote(t, []Queue{QueuePending, QueueActive}, id)
			}
		},
		"tick": func(t *rapid.T) {
			m.b.clock.Advance(time.Duration(rapid.IntRange(1, 2000).Draw(t, "ms")) * time.Millisecond)
		},
		"recover": func(t *rapid.T) {
			m.b.clock.Advance(rapid.SampledFrom([]time.Duration{30 * time.Second, DefaultLeaseDuration, 6 * time.Minute}).Draw(t, "advance"))
			var want RecoveryStats
			var expired []string
			for _, id := range m.ids {
				if j := m.jobs[id]; j.queue == QueueActive && j.score <= float64(ms(m.now())) {
					expired = append(expired, id)
					if m.failed(id) == StatusPending {
						want.Requeued++
					} else {
						want.Failed++
					}
				}
			}
			got, err := m.s.RecoverExpired(ctx)
			require.NoError(t, err)
			require.Equal(t, want, got)
			if len(expired) > 0 { // one script for all of them
				m.wrote(t, []Queue{QueueActive, QueuePending, QueueFailed}, expired...)
			}
		},
	}
	if m.flips {
		a["flip"] = func(t *rapid.T) {
			m.dual = !m.dual
			m.s.SetDualWrite(m.dual)
		}
	}
	return a
}

// check compares Redis with the model: the primary always, the mirror as
// the dual-write history says it must be. It reads everything in one
// pipeline, independently of the library.
func (m *jobModel) check(t *rapid.T) {
	tb := rapidTB{TB: m.t, rt: t}
	var ids []string
	for _, key := range scanKeys(tb, m.b.rdb, m.b.key("job:*")) {
		ids = append(ids, key[len(m.b.key("job:")):])
	}
	require.Equal(t, slices.Sorted(maps.Keys(m.jobs)), ids, "record ids")

	pipe := m.b.rdb.Pipeline()
	jobs := make(map[string]*redis.MapStringStringCmd, len(m.ids))
	steps := make(map[string]*redis.MapStringStringCmd, len(m.ids))
	for _, id := range m.ids {
		jobs[id] = pipe.HGetAll(ctx, m.b.key("job:"+id))
		steps[id] = pipe.HGetAll(ctx, m.b.key("step:"+id))
	}
	queues := make(map[string]*redis.ZSliceCmd, 2*len(Queues))
	for _, q := range Queues {
		for _, ns := range []string{"jobs:", "steps:"} {
			queues[ns+string(q)] = pipe.ZRangeWithScores(ctx, m.b.key(ns+string(q)), 0, -1)
		}
	}
	_, err := pipe.Exec(ctx)
	require.NoError(t, err)
	zset := func(key string) map[string]float64 {
		out := map[string]float64{}
		for _, e := range queues[key].Val() {
			out[e.Member.(string)] = e.Score
		}
		return out
	}

	for _, id := range m.ids {
		j, h := m.jobs[id], jobs[id].Val()
		require.Equal(t, string(j.status), h["status"], "%s status", id)
		require.Equal(t, strconv.Itoa(j.retries), h["retry_count"], "%s retry_count", id)
		require.Equal(t, j.worker, h["worker_id"], "%s worker_id", id)
	}
	for _, q := range Queues {
		want := map[string]float64{}
		for id, j := range m.jobs {
			if j.queue == q {
				want[id] = j.score
			}
		}
		require.Equal(t, want, zset("jobs:"+string(q)), "jobs:%s", q)
	}

	if !m.flips {
		requireMirrored(tb, m.b)
	}
	for _, id := range m.ids {
		want := m.mirrorRecords[id]
		if want == nil {
			want = map[string]string{}
		}
		require.Equal(t, want, steps[id].Val(), "step:%s is the record after its last mirrored write", id)
	}
	for _, q := range Queues {
		require.Equal(t, m.mirrorQueues[q], zset("steps:"+string(q)), "steps:%s", q)
	}
	require.Equal(t, DualWriteStats{Attempted: m.attempted}, m.s.DualWriteStats())
}

// rapidTB lets helpers that take a testing.TB, such as requireMirrored,
// report to rapid, so that their failures are shrunk like any other.
// testing.TB cannot be implemented outside package testing, so it embeds
// the enclosing test and overrides every method that reports.
type rapidTB struct {
	testing.TB
	rt *rapid.T
}

func (r rapidTB) Helper()                   {}
func (r rapidTB) Errorf(f string, a ...any) { r.rt.Errorf(f, a...) }
func (r rapidTB) Error(a ...any)            { r.rt.Error(a...) }
func (r rapidTB) Fatalf(f string, a ...any) { r.rt.Fatalf(f, a...) }
func (r rapidTB) Fatal(a ...any)            { r.rt.Fatal(a...) }
func (r rapidTB) FailNow()                  { r.rt.FailNow() }
func (r rapidTB) Fail()                     { r.rt.Fail() }
func (r rapidTB) Failed() bool              { return r.rt.Failed() }
func (r rapidTB) Logf(f string, a ...any)   { r.rt.Logf(f, a...) }
func (r rapidTB) Log(a ...any)              { r.rt.Log(a...) }

// runModel checks the model on backend b: each run works under a key
// prefix of its own and deletes its keys at the end.
func runModel(t *testing.T, b *backend, flips bool) {
	run := 0
	rapid.Check(t, func(rt *rapid.T) {
		run++
		rb := &backend{name: b.name, rdb: b.rdb, mr: b.mr, prefix: fmt.Sprintf("%smodel%d:", b.prefix, run), clock: newFakeClock()}
		rt.Cleanup(func() {
			if keys := scanKeys(t, rb.rdb, rb.prefix+"*"); len(keys) > 0 {
				require.NoError(t, rb.rdb.Del(context.Background(), keys...).Err())
			}
		})
		dual := !flips || rapid.Bool().Draw(rt, "dual-write at start")
		s, err := New(rb.rdb, WithKeyPrefix(rb.prefix), WithClock(rb.clock.Now), WithDualWrite(dual))
		require.NoError(rt, err)
		m := &jobModel{t: t, b: rb, s: s, jobs: map[string]*modelJob{}, dual: dual, flips: flips,
			mirrorRecords: map[string]map[string]string{},
			mirrorQueues:  map[Queue]map[string]float64{},
		}
		for _, q := range Queues {
			m.mirrorQueues[q] = map[string]float64{}
		}
		rt.Repeat(m.actions())
	})
}

// TestModel runs the model with dual-write on throughout, where the mirror
// must equal the primary exactly after every step (requireMirrored), and
// with dual-write flipped at random, where each mirrored record and queue
// entry must be the primary's as of its last write with dual-write on.
func TestModel(t *testing.T) {
	// 100 sequences of each kind on each backend take minutes under -race
	// on a small machine; 25 keep CI quick. -rapid.checks overrides it.
	defaultRapidChecks(t, 25)
	eachBackend(t, func(t *testing.T, b *backend) {
		t.Run("dual-write on", func(t *testing.T) { runModel(t, b, false) })
		t.Run("dual-write flips", func(t *testing.T) { runModel(t, b, true) })
	})
}

// defaultRapidChecks sets how many sequences rapid.Check runs, for the
// rest of the test, unless -rapid.checks was given on the command line.
func defaultRapidChecks(t *testing.T, n int) {
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "rapid.checks" })
	if given {
		return
	}
	old := flag.Lookup("rapid.checks").Value.String()
	require.NoError(t, flag.Set("rapid.checks", strconv.Itoa(n)))
	t.Cleanup(func() { _ = flag.Set("rapid.checks", old) })
}
