package jobstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// proxiedBackend returns two backends on the server named by
// JOBSTORE_TEST_REDIS_URL, with the same key prefix: one whose client goes
// through a fault proxy, and one direct, to look at what really happened.
// tweak, if not nil, adjusts the proxied client's options.
func proxiedBackend(t *testing.T, tweak func(*redis.Options)) (via *backend, p *faultProxy, direct *backend) {
	t.Helper()
	url := realRedisURL(t)
	direct = realBackend(t)
	opt, err := redis.ParseURL(url)
	require.NoError(t, err)
	p = startFaultProxy(t, opt.Addr)
	opt.Addr = p.Addr()
	if tweak != nil {
		tweak(opt)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	return &backend{name: "proxied", rdb: rdb, prefix: direct.prefix, clock: direct.clock}, p, direct
}

// replyCuts are where TestReplyLost cuts a reply: inside the status, the
// mirror part, and the data. A script reply starts "*5\r\n$2\r\nOK\r\n*0\r\n".
var replyCuts = []int{1, 6, 14, 40}

// TestReplyLost cuts the connection part way through the reply of every
// kind of write, after Redis has run the script. go-redis then sends the
// same script again on a new connection (its MaxRetries). Each script must
// recognise its own earlier run from the call's token: the call reports
// what the first run did, and nothing happens twice. A claim takes one
// job, not two; a complete, fail or cancel does not report ErrNotHeld or
// ErrJobFinished for its own work.
func TestReplyLost(t *testing.T) {
	via, p, direct := proxiedBackend(t, nil)
	s := newStore(t, via, WithDualWrite(true))
	caps := registerWorker(t, s, "w", "s")
	_, err := s.SubmitJob(ctx, Job{ID: "warm", Service: "other"}) // opens a connection
	require.NoError(t, err)
	cut := func(n int) {
		t.Helper()
		_, before := p.Stats()
		p.CutReplyAfter(n)
		t.Cleanup(func() {})
		_ = before
	}
	cuts := func() int { _, c := p.Stats(); return c }

	for _, n := range replyCuts {
		// Submit, generated id and chosen id.
		before := cuts()
		cut(n)
		id, err := s.SubmitJob(ctx, Job{Service: "s", Payload: []byte(`{"n":1}`)})
		require.NoError(t, err, "submit, reply cut after %d bytes", n)
		require.Greater(t, cuts(), before, "the proxy cut the reply")
		cut(n)
		_, err = s.SubmitJob(ctx, Job{ID: fmt.Sprint("chosen-", n), Service: "other"})
		require.NoError(t, err, "submit with an id, reply cut after %d bytes", n)

		// Claim: one job taken, the one reported.
		cut(n)
		j, err := s.ClaimJob(ctx, caps)
		require.NoError(t, err, "claim, reply cut after %d bytes", n)
		require.Equal(t, id, j.ID)
		held, err := direct.rdb.HKeys(ctx, direct.key("jobs:active:w")).Result()
		require.NoError(t, err)
		require.Equal(t, []string{id}, held, "a claim sent twice takes one job")

		// Start and progress are idempotent as they are.
		cut(n)
		require.NoError(t, s.StartJob(ctx, id, "w"))

		// Fail with a retry, then claim again, then complete.
		cut(n)
		out, err := s.FailJob(ctx, id, "w", "oops", true)
		require.NoError(t, err, "fail, reply cut after %d bytes", n)
		require.Equal(t, Retried, out)
		got, err := s.GetJob(ctx, id)
		require.NoError(t, err)
		require.Equal(t, 1, got.RetryCount, "a fail sent twice counts once")
		j, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.Equal(t, id, j.ID)
		cut(n)
		require.NoError(t, s.CompleteJob(ctx, id, "w", []byte(`{"ok":true}`)), "complete, reply cut after %d bytes", n)

		// Cancel.
		cid, err := s.SubmitJob(ctx, Job{Service: "other"})
		require.NoError(t, err)
		cut(n)
		require.NoError(t, s.CancelJob(ctx, cid, ""), "cancel, reply cut after %d bytes", n)
	}
	_, err = s.ClaimJob(ctx, caps)
	require.ErrorIs(t, err, ErrNoJob, "every job of the service was claimed exactly as often as it was released")
	requireMirrored(t, direct)
	require.Zero(t, s.DualWriteStats().Failed)
	// A different job under an id that exists is still refused.
	_, err = s.SubmitJob(ctx, Job{ID: "warm", Service: "other"})
	require.ErrorIs(t, err, ErrJobExists)
}

// callWithin runs call with a context whose deadline is d away and fails
// the test if it has not returned well after that deadline: a hang
// detector, with slack for a loaded machine, not a latency assertion.
func callWithin(t *testing.T, d time.Duration, call func(context.Context) error) error {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- call(c) }()
	select {
	case err := <-done:
		return err
	case <-time.After(d + 15*time.Second):
		t.Fatalf("call still running 15s after its %v deadline", d)
		return nil
	}
}

// TestDeadlinesUnderBlackhole swallows every byte while keeping connections
// open, as a dead route does. Every call must return with an error once
// its context deadline passes, nothing must reach Redis, and the store
// must work again by itself when the network heals. go-redis honours
// context deadlines on the socket only with ContextTimeoutEnabled; without
// it, ReadTimeout and WriteTimeout bound each call instead. Both are shown.
func TestDeadlinesUnderBlackhole(t *testing.T) {
	for _, tc := range []struct {
		name  string
		tweak func(*redis.Options)
	}{
		{"ContextTimeoutEnabled", func(o *redis.Options) {
			o.ContextTimeoutEnabled = true
			o.ReadTimeout, o.WriteTimeout, o.DialTimeout = time.Minute, time.Minute, time.Minute
		}},
		{"socket timeouts", func(o *redis.Options) {
			o.ReadTimeout, o.WriteTimeout, o.DialTimeout = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			via, p, direct := proxiedBackend(t, tc.tweak)
			s := newStore(t, via, WithDualWrite(true))
			caps := registerWorker(t, s, "w", "s")
			for i := range 3 {
				_, err := s.SubmitJob(ctx, Job{ID: fmt.Sprint("j", i), Service: "s"})
				require.NoError(t, err)
			}
			held, err := s.ClaimJob(ctx, caps)
			require.NoError(t, err)
			before := snapshotKeys(t, direct)

			calls := map[string]func(context.Context) error{
				"submit":   func(c context.Context) error { _, err := s.SubmitJob(c, Job{Service: "s"}); return err },
				"get":      func(c context.Context) error { _, err := s.GetJob(c, "j1"); return err },
				"pending":  func(c context.Context) error { _, err := s.GetPendingJobs(c, 10); return err },
				"sizes":    func(c context.Context) error { _, err := s.QueueSizes(c); return err },
				"claim":    func(c context.Context) error { _, err := s.ClaimJob(c, caps); return err },
				"complete": func(c context.Context) error { return s.CompleteJob(c, held.ID, "w", nil) },
				"recover":  func(c context.Context) error { _, err := s.RecoverExpired(c); return err },
			}
			p.SetBlackhole(true)
			for _, name := range slices.Sorted(maps.Keys(calls)) {
				err := callWithin(t, 200*time.Millisecond, calls[name])
				require.Error(t, err, name)
				require.True(t, networkError(err), "%s: want a deadline or network timeout, got %v", name, err)
			}
			p.CutAll()
			require.Error(t, callWithin(t, 200*time.Millisecond, calls["get"]))
			require.Equal(t, before, snapshotKeys(t, direct), "nothing reached Redis")

			p.Heal()
			require.Eventually(t, func() bool {
				return callWithin(t, 2*time.Second, calls["get"]) == nil
			}, 30*time.Second, 50*time.Millisecond, "the store recovers by itself")
			require.NoError(t, s.CompleteJob(ctx, held.ID, "w", nil))
			requireMirrored(t, direct)
		})
	}
}

// TestPipelineReplyCut cuts a connection part way through the reply of a
// pipeline (GetPendingJobs reads records in one). Reads are retried by
// go-redis and must return the right data; a request cut part way is
// never executed and is sent again.
func TestPipelineReplyCut(t *testing.T) {
	via, p, direct := proxiedBackend(t, nil)
	s := newStore(t, via, WithDualWrite(true))
	for i := range 30 {
		_, err := s.SubmitJob(ctx, Job{ID: fmt.Sprintf("j%02d", i), Service: "s", Priority: i + 1,
			Payload: []byte(`{"text":"` + strings.Repeat("x", 100) + `"}`)})
		require.NoError(t, err)
	}
	want, err := newStore(t, direct).GetPendingJobs(ctx, 30)
	require.NoError(t, err)
	for _, n := range []int{1, 100, 2000} {
		p.CutReplyAfter(n)
		got, err := s.GetPendingJobs(ctx, 30)
		require.NoError(t, err, "pipeline reply cut after %d bytes", n)
		require.Equal(t, want, got)
	}
	p.CutRequestAfter(20)
	_, err = s.SubmitJob(ctx, Job{ID: "late", Service: "s"})
	require.NoError(t, err)
	_, cuts := p.Stats()
	require.Equal(t, 4, cuts)
	requireMirrored(t, direct)
	n, err := direct.rdb.ZCard(ctx, direct.key("jobs:pending")).Result()
	require.NoError(t, err)
	require.EqualValues(t, 31, n)
}

// networkError reports whether err is what a network fault may cause: a
// deadline, a timeout, a reset or closed connection.
func networkError(err error) bool {
	var netErr net.Error
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, io.EOF) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) || errors.As(err, &netErr)
}

// TestNetworkChaos runs API goroutines that submit, workers that claim and
// complete, and a reader of pipelines, all through the fault proxy, while
// the proxy delays, blackholes and cuts connections (also part way through
// requests and replies) at random. Then the network heals, and:
//
//   - every SubmitJob that returned success is present and complete;
//   - no call ran far past its deadline, and no error is one that network
//     faults do not explain (a lost reply is never reported as ErrNotHeld);
//   - no job is lost: after recovery every acknowledged job runs to its end;
//   - the mirror equals the primary: each script is atomic, whatever the
//     network did to its request or reply.
func TestNetworkChaos(t *testing.T) {
	via, p, direct := proxiedBackend(t, func(o *redis.Options) {
		o.ContextTimeoutEnabled = true
		o.PoolSize = 8
	})
	s := newStore(t, via, WithDualWrite(true))
	const submitters, maxPerSubmitter, workers, chaosRounds = 4, 300, 2, 15
	const deadline = 150 * time.Millisecond

	var (
		wg, chaos    sync.WaitGroup
		mu           sync.Mutex
		acked        = map[string]Job{}
		failedIDs    []string
		unexpected   []error
		maxElapsed   time.Duration
		netErrs      int
		submitting   atomic.Int32
		claims, done atomic.Int64
	)
	timed := func(call func(context.Context) error) error {
		c, cancel := context.WithTimeout(ctx, deadline)
		defer cancel()
		start := time.Now()
		err := call(c)
		mu.Lock()
		maxElapsed = max(maxElapsed, time.Since(start))
		if err != nil && networkError(err) {
			netErrs++
		}
		mu.Unlock()
		return err
	}
	report := func(what string, err error) {
		mu.Lock()
		unexpected = append(unexpected, fmt.Errorf("%s: %w", what, err))
		mu.Unlock()
	}

	stop, calm := make(chan struct{}), make(chan struct{})
	chaos.Add(1)
	go func() {
		defer chaos.Done()
		defer close(calm)
		r := rand.New(rand.NewPCG(1, 2))
		for round := range chaosRounds {
			switch round % 5 {
			case 0:
				p.SetDelay(time.Duration(1+r.IntN(20)) * time.Millisecond)
			case 1:
				p.SetBlackhole(true)
			case 2:
				p.CutAll()
			case 3:
				p.CutReplyAfter(1 + r.IntN(40))
			case 4:
				p.CutRequestAfter(1 + r.IntN(40))
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(50+r.IntN(350)) * time.Millisecond):
			}
			p.Heal()
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(r.IntN(50)) * time.Millisecond):
			}
		}
	}()

	for g := range submitters {
		wg.Add(1)
		submitting.Add(1)
		go func() {
			defer wg.Done()
			defer submitting.Add(-1)
			for i := 0; i < maxPerSubmitter && !closed(calm); i++ {
				j := Job{ID: fmt.Sprintf("g%d-%03d", g, i), Service: "s", Priority: 1 + i%7,
					Payload: []byte(fmt.Sprintf(`{"g":%d,"i":%d}`, g, i))}
				err := timed(func(c context.Context) error { _, err := s.SubmitJob(c, j); return err })
				mu.Lock()
				if err == nil {
					acked[j.ID] = j
				} else {
					failedIDs = append(failedIDs, j.ID)
				}
				mu.Unlock()
				if err != nil && !networkError(err) {
					report("submit "+j.ID, err)
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	for w := range workers {
		caps := Capabilities{WorkerID: fmt.Sprint("w", w), Services: []string{"s", "t"}}
		require.NoError(t, newStore(t, direct).RegisterWorker(ctx, caps))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for submitting.Load() > 0 {
				var j *Job
				err := timed(func(c context.Context) (err error) { j, err = s.ClaimJob(c, caps); return err })
				switch {
				case errors.Is(err, ErrNoJob):
					time.Sleep(2 * time.Millisecond)
					continue
				case err != nil:
					if !networkError(err) {
						report("claim", err)
					}
					continue
				}
				claims.Add(1)
				err = timed(func(c context.Context) error { return s.CompleteJob(c, j.ID, caps.WorkerID, nil) })
				if err != nil && !networkError(err) {
					report("complete "+j.ID, err)
				}
				if err == nil {
					done.Add(1)
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for submitting.Load() > 0 {
			err := timed(func(c context.Context) error { _, err := s.GetPendingJobs(c, 50); return err })
			if err != nil && !networkError(err) {
				report("pending", err)
			}
			err = timed(func(c context.Context) error { _, err := s.QueueSizes(c); return err })
			if err != nil && !networkError(err) {
				report("sizes", err)
			}
		}
	}()

	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(2 * time.Minute):
		t.Fatal("calls hung under network faults")
	}
	close(stop)
	chaos.Wait()
	p.Heal()

	require.Empty(t, unexpected, "errors that network faults do not explain")
	require.Less(t, maxElapsed, deadline+15*time.Second, "a call ran far past its deadline")
	accepted, cuts := p.Stats()
	require.Positive(t, cuts)

	for id, j := range acked {
		h, err := direct.rdb.HGetAll(ctx, direct.key("job:"+id)).Result()
		require.NoError(t, err)
		got, err := decodeJob(id, h)
		require.NoError(t, err, "acknowledged job %s", id)
		require.Equal(t, j.Service, got.Service)
		require.Equal(t, j.Priority, got.Priority)
		require.JSONEq(t, string(j.Payload), string(got.Payload))
		require.Empty(t, got.Unreadable)
	}
	ambiguous := 0
	for _, id := range failedIDs {
		n, err := direct.rdb.Exists(ctx, direct.key("job:"+id)).Result()
		require.NoError(t, err)
		ambiguous += int(n)
	}
	requireMirrored(t, direct)
	require.Zero(t, s.DualWriteStats().Failed)

	// Jobs whose claim or complete reply was lost past go-redis's retries
	// are still held by w0 and w1. Their heartbeat stops (the workers are
	// gone); recovery hands the jobs out again, and every job runs to its
	// end.
	ds := newStore(t, direct, WithDualWrite(true))
	for w := range workers {
		require.NoError(t, direct.rdb.Del(ctx, direct.key(fmt.Sprint("worker:w", w, ":heartbeat"))).Err())
	}
	recovered, err := ds.RecoverExpired(ctx)
	require.NoError(t, err)
	drain := registerWorker(t, ds, "drain", "s")
	for {
		j, err := ds.ClaimJob(ctx, drain)
		if errors.Is(err, ErrNoJob) {
			break
		}
		require.NoError(t, err)
		require.NoError(t, ds.CompleteJob(ctx, j.ID, "drain", nil))
	}
	for id := range acked {
		got, err := ds.GetJob(ctx, id)
		require.NoError(t, err)
		require.Equal(t, StatusCompleted, got.Status, id)
	}
	sizes, err := ds.QueueSizes(ctx)
	require.NoError(t, err)
	require.Equal(t, QueueSizes{Completed: int64(len(acked) + ambiguous)}, sizes)
	requireMirrored(t, direct)
	t.Logf("submits: %d acknowledged, %d failed (%d of those written anyway); claims %d, completes %d; "+
		"recovery requeued %d; proxy: %d connections, %d cut; %d calls failed with network errors; slowest call %v",
		len(acked), len(failedIDs), ambiguous, claims.Load(), done.Load(), recovered.Requeued, accepted, cuts, netErrs, maxElapsed)
}

func closed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
