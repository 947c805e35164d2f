package jobstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// envSoak sets how long TestSoak runs its load, as a Go duration
// ("60s", "5m"). Unset, it runs for defaultSoak, so that CI stays fast.
const envSoak = "JOBSTORE_SOAK"

const defaultSoak = 8 * time.Second

// The shape of the soak. The lease is short so that abandoned jobs come
// back within the run; everything else is sized for two shared cores
// under -race.
const (
	soakAPI          = 4 // API goroutines
	soakWorkers      = 6 // worker goroutines
	soakLease        = 200 * time.Millisecond
	soakMaxPending   = 1000 // API goroutines hold back above this many pending jobs
	soakSeedPending  = 1500 // legacy records left pending for the soak
	soakSeedHeld     = 40   // legacy records held by a worker that is gone
	soakSeedDone     = 60   // legacy records completed before the soak
	soakSeedFailed   = 20   // legacy records failed before the soak
	soakDrainTimeout = 2 * time.Minute
)

var soakServices = []string{"comfyui", "llm", "whisper", "upscale"}

func soakDuration(t *testing.T) time.Duration {
	t.Helper()
	v := os.Getenv(envSoak)
	if v == "" {
		return defaultSoak
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("%s=%q: want a positive Go duration such as 60s", envSoak, v)
	}
	return d
}

// soakLedger is the test's own account of every job: which ids were
// submitted, and each transition that ends a job, as the caller of the
// library saw it succeed. It is what the final state is checked against.
type soakLedger struct {
	mu          sync.Mutex
	submitted   map[string]bool
	completions map[string]int  // CompleteJob calls that returned nil
	finalFails  map[string]int  // FailJob calls that returned nil with no retry left
	cancelled   map[string]bool // CancelJob calls that returned nil
	problems    []string        // transitions seen twice
}

func newSoakLedger() *soakLedger {
	return &soakLedger{
		submitted: map[string]bool{}, completions: map[string]int{},
		finalFails: map[string]int{}, cancelled: map[string]bool{},
	}
}

func (l *soakLedger) submit(ids ...string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, id := range ids {
		if l.submitted[id] {
			l.problems = append(l.problems, fmt.Sprintf("id %s submitted twice", id))
		}
		l.submitted[id] = true
	}
}

// finish records a transition that ends job id; a second one for the same
// id, of any kind, is a problem: a job ends exactly once.
func (l *soakLedger) finish(kind, id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if n := l.completions[id] + l.finalFails[id]; n > 0 || l.cancelled[id] {
		l.problems = append(l.problems, fmt.Sprintf("id %s %s after it had already ended", id, kind))
	}
	switch kind {
	case "completed":
		l.completions[id]++
	case "failed":
		l.finalFails[id]++
	case "cancelled":
		l.cancelled[id] = true
	}
}

// soakCounts are the figures the soak reports.
type soakCounts struct {
	claims, abandoned, leaseLost, retried, lateWorkers atomic.Int64
	requeued, recoveredFailed, dropped, trimmed        atomic.Int64
	cancelAttempts, reads                              atomic.Int64
	backfillPasses, backfillCopied, backfillInterrupts atomic.Int64
	verifyRuns                                         atomic.Int64
}

// TestSoak runs everything at once on a real Redis with dual-write on, for
// JOBSTORE_SOAK (default 8s): API goroutines submitting (single and batch,
// generated and chosen ids, mixed priorities, services and workflows) and
// cancelling; workers claiming, starting, extending, completing and
// failing with retries, some of them crashing with a job in hand or
// outliving their lease; lease recovery and retention trimming from two
// processes; a backfill of records written in the legacy stage before the
// soak (interrupted once and resumed), pass after pass; and repeated
// verifies. Then it stops the submitters, lets the
// workers drain every queue and recovers leases until nothing is active.
//
// It must end with: a verify that finds no difference and an independent
// comparison that agrees; no mirror failure; and every submitted id,
// the legacy ones included, ended exactly once: completed, failed, or
// cancelled by the test, in the queue that state belongs to and in no
// other. The ledger counts each ending the library reported, so "exactly
// once" is checked both per id and in total.
//
// Nothing is timed: the duration only bounds how much load is generated.
func TestSoak(t *testing.T) {
	d := soakDuration(t)
	realRedisURL(t) // skips without a real server, fails under JOBSTORE_CI=1
	b := realBackend(t)
	seed := rand.Uint64()
	t.Logf("soak for %v, seed %d", d, seed)

	errLog := &logSink{level: slog.LevelError}
	opts := func(st Stage) []Option {
		return []Option{WithStage(st), WithClock(time.Now), WithLeaseDuration(soakLease),
			WithLogger(slogLogger(errLog))}
	}
	legacy := newStore(t, b, opts(StageLegacy)...)
	api := newStore(t, b, opts(StageDualWrite)...)
	work := newStore(t, b, opts(StageDualWrite)...)
	maint := newStore(t, b, opts(StageDualWrite)...)
	ops := newStore(t, b, opts(StageDualWrite)...) // the operator's backfill and verify

	ledger := newSoakLedger()
	var n soakCounts
	seedSoakLegacy(t, legacy, ledger, rand.New(rand.NewPCG(seed, 0)))
	requireNoKeys(t, b, "step*") // the backfill has all of these to copy

	// Stopping is in stages, each a flag the loops poll between calls, so
	// that no call is ever cut off half way: an interrupted call leaves
	// its outcome unknown, and the ledger must know every outcome.
	var apiStop, soakOver, workersStop, maintStop, backfillStop atomic.Bool
	soakCtx, endSoak := context.WithCancel(ctx) // verify is interruptible by design
	var apiWG, workWG, maintWG, opsWG sync.WaitGroup
	stopAll := func() {
		apiStop.Store(true)
		soakOver.Store(true)
		endSoak()
		backfillStop.Store(true)
		workersStop.Store(true)
		maintStop.Store(true)
		apiWG.Wait()
		opsWG.Wait()
		workWG.Wait()
		maintWG.Wait()
	}
	defer stopAll() // also on a failure of the test goroutine: no goroutine outlives the test
	fail := func(format string, args ...any) { t.Errorf(format, args...) }

	start := time.Now()
	for g := range soakAPI {
		apiWG.Go(func() {
			soakAPIClient(api, ledger, &n, rand.New(rand.NewPCG(seed, uint64(100+g))), g, &apiStop, b, fail)
		})
	}
	for w := range soakWorkers {
		workWG.Go(func() {
			soakWorker(work, ledger, &n, rand.New(rand.NewPCG(seed, uint64(200+w))), w, &soakOver, &workersStop, fail)
		})
	}
	// Two processes recover leases and trim, as Maintain does; concurrent
	// runs are safe by contract. Their counts feed the ledger's total.
	for _, s := range []*Store{work, maint} {
		maintWG.Go(func() {
			for !maintStop.Load() {
				rs, err := s.RecoverExpired(ctx)
				if err != nil {
					fail("RecoverExpired: %v", err)
					return
				}
				n.requeued.Add(int64(rs.Requeued))
				n.recoveredFailed.Add(int64(rs.Failed))
				n.dropped.Add(int64(rs.Dropped))
				trimmed, err := s.TrimRetention(ctx)
				if err != nil {
					fail("TrimRetention: %v", err)
					return
				}
				n.trimmed.Add(int64(trimmed))
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	// backfilled is set once a backfill pass has run to its end: from then
	// on both namespaces must stay identical, as every write is mirrored.
	var backfilled atomic.Bool
	opsWG.Go(func() { soakBackfill(ops, &n, &backfilled, &backfillStop, fail) })
	opsWG.Go(func() {
		for soakCtx.Err() == nil {
			after := backfilled.Load()
			res, err := ops.Verify(soakCtx, VerifyOptions{BatchSize: 200})
			if soakCtx.Err() != nil {
				return
			}
			if err != nil {
				fail("Verify: %v", err)
				return
			}
			n.verifyRuns.Add(1)
			if after && res.Differences() > 0 {
				fail("a verify that began after the backfill found %d differences under load: %v", res.Differences(), res.Diffs)
				return
			}
			_ = sleepCtx(soakCtx, 300*time.Millisecond)
		}
	})

	time.Sleep(d)
	apiStop.Store(true)
	apiWG.Wait()
	soakOver.Store(true) // workers stop crashing and stalling
	drainStart := time.Now()
	drainPending, drainActive := queueCounts(t, b, JobNamespace)
	endSoak()
	backfillStop.Store(true) // the pass under way finishes, while workers go on
	opsWG.Wait()

	// Drain: workers and recovery run until no job is pending or active.
	// The two counts are read in one MULTI: read apart, a job moving from
	// active back to pending in between could hide from both.
	deadline := time.Now().Add(soakDrainTimeout)
	for {
		p, a := queueCounts(t, b, JobNamespace)
		if p == 0 && a == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not drained after %v: %d pending, %d active", soakDrainTimeout, p, a)
		}
		time.Sleep(50 * time.Millisecond)
	}
	drained := time.Since(drainStart)
	workersStop.Store(true)
	workWG.Wait()
	maintStop.Store(true)
	maintWG.Wait()
	elapsed := time.Since(start)
	require.Empty(t, errLog.lines(), "errors logged by the stores")
	if t.Failed() {
		t.FailNow()
	}

	rs, err := maint.RecoverExpired(ctx)
	require.NoError(t, err)
	require.Zero(t, rs, "nothing left to recover")
	require.Zero(t, n.trimmed.Load(), "retention is a day: nothing may be trimmed during the soak")

	// One more pass over the final state: dual-write mirrored everything
	// since the first complete pass, so it finds nothing to copy.
	require.True(t, backfilled.Load(), "the first backfill pass ran to its end")
	res, err := ops.Backfill(ctx, BackfillOptions{})
	require.NoError(t, err)
	n.backfillPasses.Add(1)
	require.False(t, res.Resumed, "no pass was left unfinished")
	require.Zero(t, res.Conflicts+res.WrongType, "backfill: %+v", res)
	require.Zero(t, res.Copied+res.EntriesCopied, "a backfill after a complete one found something dual-write had not mirrored: %+v", res)

	vr, err := ops.Verify(ctx, VerifyOptions{})
	require.NoError(t, err)
	require.Zero(t, vr.Differences(), "final verify: %v", vr.Diffs)
	n.verifyRuns.Add(1)
	requireMirrored(t, b)

	dw := DualWriteStats{}
	for _, s := range []*Store{api, work, maint, ops} {
		st := s.DualWriteStats()
		dw.Attempted += st.Attempted
		dw.Failed += st.Failed
		dw.Panics += st.Panics
	}
	require.Zero(t, dw.Failed, "mirror failures")
	require.Zero(t, dw.Panics, "mirror panics")
	require.Zero(t, legacy.DualWriteStats().Attempted, "the legacy stage mirrors nothing")

	final := checkSoakEndings(t, b, ledger, &n)

	t.Logf("soak %v (load %v, then %d pending and %d active drained in %v): submitted %d (%d legacy), completed %d, failed %d (%d by workers, %d by lease recovery), cancelled %d (of %d attempts), "+
		"retried %d (%d by workers, %d by lease recovery), claims %d, abandoned %d, late workers %d, lease lost %d, dropped %d, "+
		"backfill copied %d in %d passes (%d interrupted and resumed), verify runs %d, dual-write attempted %d failed %d, reads %d",
		elapsed.Round(time.Millisecond), d, drainPending, drainActive, drained.Round(time.Millisecond), len(ledger.submitted), soakSeedTotal, final.completed, final.failed,
		final.failed-n.recoveredFailed.Load(), n.recoveredFailed.Load(), final.cancelled, n.cancelAttempts.Load(),
		n.retried.Load()+n.requeued.Load(), n.retried.Load(), n.requeued.Load(), n.claims.Load(), n.abandoned.Load(),
		n.lateWorkers.Load(), n.leaseLost.Load(), n.dropped.Load(),
		n.backfillCopied.Load(), n.backfillPasses.Load(), n.backfillInterrupts.Load(), n.verifyRuns.Load(),
		dw.Attempted, dw.Failed, n.reads.Load())
}

const soakSeedTotal = soakSeedPending + soakSeedHeld + soakSeedDone + soakSeedFailed

// seedSoakLegacy writes records the way services did before the migration, in
// the legacy stage (job:* only): some pending, some held by a worker that
// is gone (lease recovery must pick them up), some completed and some
// failed. The ledger learns each of them.
func seedSoakLegacy(t *testing.T, s *Store, l *soakLedger, r *rand.Rand) {
	t.Helper()
	batch := make([]Job, 0, 100)
	flush := func() {
		ids, err := s.SubmitJobs(ctx, batch)
		require.NoError(t, err)
		l.submit(ids...)
		batch = batch[:0]
	}
	for i := range soakSeedPending {
		j := soakJob(r, "")
		if i%2 == 0 {
			j.ID = fmt.Sprintf("legacy-%d", i)
		}
		batch = append(batch, j)
		if len(batch) == cap(batch) {
			flush()
		}
	}
	flush()

	// Each group has a service of its own, and its jobs are handled one at
	// a time, so that a claim of that service picks the job just submitted.
	group := func(service string, count, maxRetries int, then func(id string)) {
		for i := range count {
			id, err := s.SubmitJob(ctx, Job{ID: fmt.Sprintf("%s-%d", service, i), Service: service,
				Priority: r.IntN(MaxPriority + 1), MaxRetries: maxRetries})
			require.NoError(t, err)
			l.submit(id)
			j, err := s.ClaimJob(ctx, "legacy-worker", service)
			require.NoError(t, err)
			require.Equal(t, id, j.ID)
			then(id)
		}
	}
	group("legacy-held", soakSeedHeld, 2, func(string) {}) // abandoned: the worker is gone
	group("legacy-done", soakSeedDone, 1, func(id string) {
		require.NoError(t, s.CompleteJob(ctx, id, "legacy-worker", json.RawMessage(`{"ok":true}`)))
		l.finish("completed", id)
	})
	group("legacy-failed", soakSeedFailed, 1, func(id string) {
		require.NoError(t, s.FailJob(ctx, id, "legacy-worker", "first try"))
		j, err := s.ClaimJob(ctx, "legacy-worker", "legacy-failed")
		require.NoError(t, err)
		require.Equal(t, id, j.ID, "the retried job is the only one of its service pending")
		require.NoError(t, s.FailJob(ctx, id, "legacy-worker", "second try"))
		l.finish("failed", id)
	})
}

// soakJob returns a job of a random shape: service, priority, retries,
// sometimes a workflow, sometimes unknown fields that copies must keep.
func soakJob(r *rand.Rand, id string) Job {
	j := Job{
		ID:         id,
		Service:    soakServices[r.IntN(len(soakServices))],
		Priority:   r.IntN(MaxPriority + 1),
		MaxRetries: 1 + r.IntN(3),
		Payload:    json.RawMessage(fmt.Sprintf(`{"n":%d}`, r.IntN(1e6))),
		CustomerID: fmt.Sprintf("cust-%d", r.IntN(20)),
	}
	if r.IntN(5) == 0 {
		j.WorkflowID = fmt.Sprintf("wf-%d", r.IntN(50))
		j.WorkflowPriority = r.IntN(MaxPriority + 1)
		j.CurrentStep, j.TotalSteps = 1+r.IntN(3), 3
	}
	if r.IntN(3) == 0 {
		j.Extra = map[string]string{"trace_id": fmt.Sprintf("%016x", r.Uint64())}
	}
	return j
}

// soakAPIClient is one API service: it submits (alone and in batches,
// with generated and chosen ids), cancels some of its jobs and reads some
// back, until stop. It holds back while the pending queue is long, so the
// drain stays short however long the soak.
func soakAPIClient(s *Store, l *soakLedger, n *soakCounts, r *rand.Rand, g int, stop *atomic.Bool, b *backend, fail func(string, ...any)) {
	var mine []string
	pending := b.key("jobs:pending")
	for i := 0; !stop.Load(); i++ {
		for i%16 == 0 && !stop.Load() {
			p, err := b.rdb.ZCard(ctx, pending).Result()
			if err != nil {
				fail("ZCARD: %v", err)
				return
			}
			if p <= soakMaxPending {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		switch x := r.IntN(100); {
		case x < 65:
			id := ""
			if x >= 50 {
				id = fmt.Sprintf("api%d-%d", g, i)
			}
			got, err := s.SubmitJob(ctx, soakJob(r, id))
			if err != nil {
				fail("SubmitJob: %v", err)
				return
			}
			l.submit(got)
			mine = append(mine, got)
		case x < 80:
			jobs := make([]Job, 2+r.IntN(19))
			for k := range jobs {
				id := ""
				if r.IntN(3) == 0 {
					id = fmt.Sprintf("api%d-%d-%d", g, i, k)
				}
				jobs[k] = soakJob(r, id)
			}
			ids, err := s.SubmitJobs(ctx, jobs)
			if err != nil {
				fail("SubmitJobs: %v", err)
				return
			}
			l.submit(ids...)
			mine = append(mine, ids...)
		case x < 90:
			if len(mine) == 0 {
				continue
			}
			// Recent jobs are likelier to be pending or held.
			id := mine[max(0, len(mine)-1-r.IntN(min(len(mine), 200)))]
			n.cancelAttempts.Add(1)
			switch err := s.CancelJob(ctx, id); {
			case err == nil:
				l.finish("cancelled", id)
			case errors.Is(err, ErrJobFinished):
			default:
				fail("CancelJob(%s): %v", id, err)
				return
			}
		default:
			if len(mine) == 0 {
				continue
			}
			id := mine[r.IntN(len(mine))]
			if _, err := s.GetJob(ctx, id); err != nil {
				fail("GetJob(%s): %v", id, err)
				return
			}
			n.reads.Add(1)
		}
	}
}

// soakWorker is one worker process. Until soakOver it also misbehaves: it
// sometimes crashes with a job in hand (a new process with a new worker
// id takes its place, and lease recovery must give the job back), and
// sometimes stalls past its lease without extending it. A worker that
// lost its job (lease recovery, a cancel) gets ErrNotHeld and moves on.
func soakWorker(s *Store, l *soakLedger, n *soakCounts, r *rand.Rand, w int, soakOver, stop *atomic.Bool, fail func(string, ...any)) {
	incarnation := 0
	worker := fmt.Sprintf("w%d.%d", w, incarnation)
	lost := func(err error) bool {
		if errors.Is(err, ErrNotHeld) {
			n.leaseLost.Add(1)
			return true
		}
		return false
	}
	for !stop.Load() {
		misbehave := !soakOver.Load()
		var services []string
		if r.IntN(5) >= 2 {
			services = []string{soakServices[r.IntN(len(soakServices))], soakServices[r.IntN(len(soakServices))]}
		}
		j, err := s.ClaimJob(ctx, worker, services...)
		if errors.Is(err, ErrNoJob) {
			time.Sleep(2 * time.Millisecond)
			continue
		}
		if err != nil {
			fail("ClaimJob: %v", err)
			return
		}
		n.claims.Add(1)
		if misbehave && r.IntN(100) < 3 {
			n.abandoned.Add(1)
			incarnation++
			worker = fmt.Sprintf("w%d.%d", w, incarnation)
			continue
		}
		if r.IntN(2) == 0 {
			if err := s.StartJob(ctx, j.ID, worker); err != nil {
				if lost(err) {
					continue
				}
				fail("StartJob(%s): %v", j.ID, err)
				return
			}
		}
		switch {
		case r.IntN(40) == 0: // a long job that keeps its lease
			time.Sleep(soakLease / 2)
			if _, err := s.ExtendLease(ctx, j.ID, worker, 0); err != nil {
				if lost(err) {
					continue
				}
				fail("ExtendLease(%s): %v", j.ID, err)
				return
			}
			time.Sleep(soakLease / 2)
		case misbehave && r.IntN(150) == 0: // outlives its lease
			n.lateWorkers.Add(1)
			time.Sleep(2 * soakLease)
		}
		if r.IntN(4) == 0 {
			final := j.RetryCount >= j.MaxRetries // only the holder changes retry_count
			if err := s.FailJob(ctx, j.ID, worker, "soak: simulated failure"); err != nil {
				if lost(err) {
					continue
				}
				fail("FailJob(%s): %v", j.ID, err)
				return
			}
			if final {
				l.finish("failed", j.ID)
			} else {
				n.retried.Add(1)
			}
			continue
		}
		if err := s.CompleteJob(ctx, j.ID, worker, json.RawMessage(`{"done":true}`)); err != nil {
			if lost(err) {
				continue
			}
			fail("CompleteJob(%s): %v", j.ID, err)
			return
		}
		l.finish("completed", j.ID)
	}
}

// soakBackfill runs the backfill while the soak lasts: a first pass that
// is interrupted after a few batches and resumed from its checkpoint, then
// full passes one after another until stop. A pass after the first
// complete one must copy nothing: dual-write has mirrored every write
// since. The pass under way at stop runs to its end rather than being
// cancelled: a run cancelled after its last batch leaves a checkpoint it
// cannot resume (TestKnownBugBackfillResumeAfterLastBatch), which the
// first, deliberate interruption never comes near.
func soakBackfill(s *Store, n *soakCounts, backfilled, stop *atomic.Bool, fail func(string, ...any)) {
	interrupted := false
	for !stop.Load() {
		runCtx, cancel := context.WithCancel(ctx)
		opts := BackfillOptions{BatchSize: 100, Rate: 4000}
		if !interrupted {
			batches := 0
			opts.Progress = func(BackfillProgress) {
				if batches++; batches == 3 {
					cancel()
				}
			}
		}
		res, err := s.Backfill(runCtx, opts)
		cancel()
		switch {
		case !interrupted && errors.Is(err, context.Canceled):
			interrupted = true
			n.backfillInterrupts.Add(1)
			continue
		case err != nil:
			fail("Backfill: %v", err)
			return
		}
		n.backfillPasses.Add(1)
		n.backfillCopied.Add(res.Copied)
		if res.Conflicts+res.WrongType > 0 {
			fail("backfill found conflicts or keys of the wrong type: %+v", res)
			return
		}
		if backfilled.Load() && res.Copied+res.EntriesCopied > 0 {
			fail("a backfill after a complete one copied %d records and %d entries: a write was not mirrored: %+v",
				res.Copied, res.EntriesCopied, res)
			return
		}
		if !backfilled.Load() && !res.Resumed {
			fail("the first backfill pass should have been interrupted and resumed: %+v", res)
			return
		}
		backfilled.Store(true)
		time.Sleep(300 * time.Millisecond)
	}
}

// queueCounts reads the sizes of the pending and active queues of ns in
// one MULTI, so that they describe one moment.
func queueCounts(t *testing.T, b *backend, ns Namespace) (pending, active int64) {
	t.Helper()
	k := keyspace{prefix: b.prefix, ns: ns}
	var p, a *redis.IntCmd
	_, err := b.rdb.TxPipelined(ctx, func(tx redis.Pipeliner) error {
		p = tx.ZCard(ctx, k.queue(QueuePending))
		a = tx.ZCard(ctx, k.queue(QueueActive))
		return nil
	})
	require.NoError(t, err)
	return p.Val(), a.Val()
}

type soakEndings struct{ completed, failed, cancelled int64 }

// checkSoakEndings checks, reading Redis directly, that every submitted id
// ended exactly once and that nothing else exists: its record's status is
// completed, failed or cancelled; it is in jobs:completed or jobs:failed
// to match, or in neither when cancelled; and the ledger agrees. The
// total of every ending the library reported, including lease
// recovery's, must equal the number of ids: with every id ended at least
// once, none can have ended twice.
func checkSoakEndings(t *testing.T, b *backend, l *soakLedger, n *soakCounts) soakEndings {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	require.Empty(t, l.problems)

	jobs := keyspace{prefix: b.prefix, ns: JobNamespace}
	var stored []string
	for _, key := range scanKeys(t, b.rdb, jobs.recordPattern()) {
		if id, ok := jobs.idFromRecordKey(key); ok {
			stored = append(stored, id)
		}
	}
	ids := slices.Sorted(maps.Keys(l.submitted))
	require.Equal(t, ids, stored, "the records in job:* are exactly the ids submitted")

	members := func(q Queue) map[string]bool {
		m, err := b.rdb.ZRange(ctx, jobs.queue(q), 0, -1).Result()
		require.NoError(t, err)
		set := make(map[string]bool, len(m))
		for _, id := range m {
			set[id] = true
		}
		return set
	}
	completedQ, failedQ := members(QueueCompleted), members(QueueFailed)
	require.Empty(t, members(QueuePending))
	require.Empty(t, members(QueueActive))

	var e soakEndings
	var bad []string
	for c := range slices.Chunk(ids, 1000) {
		pipe := b.rdb.Pipeline()
		cmds := make([]*redis.StringCmd, len(c))
		for i, id := range c {
			cmds[i] = pipe.HGet(ctx, jobs.record(id), fStatus)
		}
		_, err := pipe.Exec(ctx)
		require.NoError(t, err)
		for i, id := range c {
			st := Status(cmds[i].Val())
			done, fails, cancelled := l.completions[id], l.finalFails[id], l.cancelled[id]
			ok := false
			switch st {
			case StatusCompleted:
				e.completed++
				ok = done == 1 && fails == 0 && !cancelled && completedQ[id] && !failedQ[id]
			case StatusFailed:
				e.failed++
				// Failed by a worker (in the ledger) or by lease recovery.
				ok = done == 0 && fails <= 1 && !cancelled && failedQ[id] && !completedQ[id]
			case StatusCancelled:
				e.cancelled++
				ok = done == 0 && fails == 0 && cancelled && !completedQ[id] && !failedQ[id]
			}
			if !ok {
				bad = append(bad, fmt.Sprintf("%s: status %q, completed %d times, failed %d times by workers, cancelled %v, in completed %v, in failed %v",
					id, st, done, fails, cancelled, completedQ[id], failedQ[id]))
			}
		}
	}
	require.Empty(t, bad, "ids that did not end exactly once (%d of %d): %s", len(bad), len(ids), strings.Join(bad[:min(len(bad), 20)], "\n"))
	require.Len(t, completedQ, int(e.completed), "jobs:completed holds only completed ids")
	require.Len(t, failedQ, int(e.failed), "jobs:failed holds only failed ids")

	var workerFails int64
	for _, c := range l.finalFails {
		workerFails += int64(c)
	}
	endings := int64(len(l.completions)) + workerFails + n.recoveredFailed.Load() + int64(len(l.cancelled))
	require.EqualValues(t, len(ids), endings,
		"endings reported (%d completed, %d failed by workers, %d by recovery, %d cancelled) against ids",
		len(l.completions), workerFails, n.recoveredFailed.Load(), len(l.cancelled))
	require.EqualValues(t, e.failed, workerFails+n.recoveredFailed.Load())
	return e
}
