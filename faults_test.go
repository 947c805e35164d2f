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

// TestSubmitReplyLost cuts the connection part way through the reply of a
// submit, after Redis has run the script. go-redis then sends the same
// command again on a new connection (its MaxRetries), so the script runs a
// second time with the same arguments. That replay must be recognised as
// the same submit: SubmitJob reports success, and the job exists once.
func TestSubmitReplyLost(t *testing.T) {
	via, p, direct := proxiedBackend(t, nil)
	s := newStore(t, via, WithDualWrite(true))
	_, err := s.SubmitJob(ctx, Job{ID: "warm", Service: "s"}) // opens a connection
	require.NoError(t, err)
	// The reply is {status, errors, log, mirrored}: "*4\r\n+OK\r\n*0\r\n...".
	// Cut after 1 byte, inside the status, and inside the mirror part.
	for _, n := range []int{1, 6, 14} {
		p.CutReplyAfter(n)
		id, err := s.SubmitJob(ctx, Job{Service: "s", Payload: []byte(`{"n":1}`)})
		require.NoError(t, err, "reply cut after %d bytes", n)
		_, cuts := p.Stats()
		require.Positive(t, cuts, "the proxy cut a reply")
		j, err := s.GetJob(ctx, id)
		require.NoError(t, err)
		require.Equal(t, StatusPending, j.Status)
		require.JSONEq(t, `{"n":1}`, string(j.Payload))
	}
	n, err := direct.rdb.ZCard(ctx, direct.key("jobs:pending")).Result()
	require.NoError(t, err)
	require.EqualValues(t, 4, n)
	requireMirrored(t, direct)
	// A different job under an id that exists is still refused.
	_, err = s.SubmitJob(ctx, Job{ID: "warm", Service: "other"})
	require.ErrorIs(t, err, ErrJobExists)
}

// TestSubmitIdempotentReplay states the contract behind TestSubmitReplyLost
// without a network: the same submit sent twice, the same fields and the
// same created_at, succeeds twice and writes once; any difference is a
// different job and gets ErrJobExists.
func TestSubmitIdempotentReplay(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		j := Job{ID: "a", Service: "s", Priority: 3, Payload: []byte(`{"x":1}`), Extra: map[string]string{"trace_id": "t"}}
		_, err := s.SubmitJob(ctx, j)
		require.NoError(t, err)
		_, err = s.ClaimJob(ctx, "w") // status moves on; the replay still matches
		require.NoError(t, err)
		before := snapshotKeys(t, b)
		id, err := s.SubmitJob(ctx, j)
		require.NoError(t, err)
		require.Equal(t, "a", id)
		require.Equal(t, before, snapshotKeys(t, b), "a replay writes nothing")
		require.Equal(t, DualWriteStats{Attempted: 2}, s.DualWriteStats(), "the replay mirrored nothing")

		for name, other := range map[string]Job{
			"payload":    {ID: "a", Service: "s", Priority: 3, Payload: []byte(`{"x":2}`), Extra: j.Extra},
			"extra":      {ID: "a", Service: "s", Priority: 3, Payload: j.Payload},
			"created_at": {ID: "a", Service: "s", Priority: 3, Payload: j.Payload, Extra: j.Extra, CreatedAt: b.clock.Now().Add(time.Millisecond)},
		} {
			_, err := s.SubmitJob(ctx, other)
			require.ErrorIs(t, err, ErrJobExists, name)
		}
		require.Equal(t, before, snapshotKeys(t, b))
	})
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
// open, as a dead route does. Every call, scripts and pipelines alike, on
// an open connection or a new one, must return with an error once its
// context deadline passes, and the store must work again by itself when
// the network heals.
//
// go-redis honours context deadlines on the socket only with
// ContextTimeoutEnabled; without it, ReadTimeout and WriteTimeout bound
// each call instead (5s by default in this go-redis). Both are shown: the first with socket
// timeouts far beyond the deadline, so that returning at all shows the
// deadline was honoured.
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
			for i := range 3 {
				_, err := s.SubmitJob(ctx, Job{ID: fmt.Sprint("j", i), Service: "s"})
				require.NoError(t, err)
			}
			held, err := s.ClaimJob(ctx, "w")
			require.NoError(t, err)
			before := snapshotKeys(t, direct)

			calls := map[string]func(context.Context) error{
				"submit":   func(c context.Context) error { _, err := s.SubmitJob(c, Job{Service: "s"}); return err },
				"get":      func(c context.Context) error { _, err := s.GetJob(c, "j1"); return err },
				"pending":  func(c context.Context) error { _, err := s.GetPendingJobs(c, 10); return err },
				"sizes":    func(c context.Context) error { _, err := s.QueueSizes(c); return err },
				"claim":    func(c context.Context) error { _, err := s.ClaimJob(c, "w2"); return err },
				"complete": func(c context.Context) error { return s.CompleteJob(c, held.ID, "w", nil) },
				"recover":  func(c context.Context) error { _, err := s.RecoverExpired(c); return err },
			}
			p.SetBlackhole(true)
			for _, name := range slices.Sorted(maps.Keys(calls)) {
				err := callWithin(t, 200*time.Millisecond, calls[name])
				require.Error(t, err, name)
				var netErr net.Error
				require.True(t, errors.Is(err, context.DeadlineExceeded) || errors.As(err, &netErr),
					"%s: want a deadline or network timeout, got %v", name, err)
			}
			// A new connection is blackholed too: its handshake never
			// answers.
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
// pipeline (GetPendingJobs reads records in one) and of a script. Reads
// are retried by go-redis and must return the right data; nothing may be
// half applied.
func TestPipelineReplyCut(t *testing.T) {
	via, p, direct := proxiedBackend(t, nil)
	s := newStore(t, via, WithDualWrite(true))
	for i := range 30 {
		_, err := s.SubmitJob(ctx, Job{ID: fmt.Sprintf("j%02d", i), Service: "s", Priority: i,
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
	// A request cut part way is never executed; go-redis sends it again.
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
//   - no call ran far past its deadline;
//   - the store works again by itself, and no job is lost: after lease
//     recovery every acknowledged job can be run to completion;
//   - the mirror equals the primary: each script is atomic, whatever the
//     network did to its request or reply.
func TestNetworkChaos(t *testing.T) {
	via, p, direct := proxiedBackend(t, func(o *redis.Options) {
		o.ContextTimeoutEnabled = true
		o.PoolSize = 8
	})
	s := newStore(t, via, WithDualWrite(true))
	// The faults come in rounds; the goroutines run until they end.
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
			switch round % 5 { // every kind of fault, in turn
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
				j := Job{ID: fmt.Sprintf("g%d-%03d", g, i), Service: "s", Priority: i % 7,
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
		wg.Add(1)
		go func() {
			defer wg.Done()
			worker := fmt.Sprint("w", w)
			for submitting.Load() > 0 {
				var j *Job
				err := timed(func(c context.Context) (err error) { j, err = s.ClaimJob(c, worker); return err })
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
				err = timed(func(c context.Context) error { return s.CompleteJob(c, j.ID, worker, nil) })
				// A complete whose reply was lost is sent again by go-redis
				// and finds its own result: ErrJobFinished.
				if err != nil && !networkError(err) && !errors.Is(err, ErrJobFinished) {
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

	// Every acknowledged submit is present and complete.
	for id, j := range acked {
		h, err := direct.rdb.HGetAll(ctx, direct.key("job:"+id)).Result()
		require.NoError(t, err)
		got, err := decodeJob(id, h)
		require.NoError(t, err, "acknowledged job %s", id)
		require.Equal(t, j.Service, got.Service)
		require.Equal(t, j.Priority, got.Priority)
		require.JSONEq(t, string(j.Payload), string(got.Payload))
		require.Equal(t, direct.clock.Now(), got.CreatedAt)
	}
	ambiguous := 0
	for _, id := range failedIDs {
		n, err := direct.rdb.Exists(ctx, direct.key("job:"+id)).Result()
		require.NoError(t, err)
		ambiguous += int(n)
	}
	requireMirrored(t, direct)
	require.Zero(t, s.DualWriteStats().Failed)

	// It works again by itself.
	require.Eventually(t, func() bool {
		return timed(func(c context.Context) error { _, err := s.SubmitJob(c, Job{ID: "after", Service: "t"}); return err }) == nil
	}, 30*time.Second, 50*time.Millisecond)
	j, err := s.ClaimJob(ctx, "w", "t")
	require.NoError(t, err)
	require.NoError(t, s.CompleteJob(ctx, j.ID, "w", nil))

	// Jobs whose claim or complete reply was lost are still held; lease
	// recovery hands them out again. Then every job runs to its end.
	direct.clock.Advance(DefaultLeaseDuration + time.Second)
	ds := newStore(t, direct, WithDualWrite(true))
	recovered, err := ds.RecoverExpired(ctx)
	require.NoError(t, err)
	for {
		j, err := ds.ClaimJob(ctx, "drain")
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
	require.Equal(t, QueueSizes{Completed: int64(len(acked) + ambiguous + 1)}, sizes)
	requireMirrored(t, direct)
	t.Logf("submits: %d acknowledged, %d failed (%d of those written anyway); claims %d, completes %d; "+
		"lease recovery requeued %d; proxy: %d connections, %d cut; %d calls failed with network errors; slowest call %v",
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
