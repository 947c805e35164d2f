package jobstore

import (
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
