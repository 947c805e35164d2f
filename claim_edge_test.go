package jobstore

import (
	"context"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestLostClaimOvertakenByTheNextClaim: a claim that timed out on a slow
// network can reach Redis after the worker's next claim, which carried its
// token and found no job holding it. The late claim must then take
// nothing: a job it took would be held in the worker's name with no call
// left to hand it over, and would never run while the worker lives.
func TestLostClaimOvertakenByTheNextClaim(t *testing.T) {
	via, p, direct := proxiedBackend(t, nil)
	s := newStore(t, via, WithDualWrite(true))
	caps := registerWorker(t, s, "w", "s")
	_, err := s.ClaimJob(ctx, caps) // loads the script
	require.ErrorIs(t, err, ErrNoJob)
	_, err = s.SubmitJob(ctx, Job{ID: "j1", Service: "s", Priority: 60})
	require.NoError(t, err)
	_, err = s.SubmitJob(ctx, Job{ID: "j2", Service: "s", Priority: 50})
	require.NoError(t, err)

	p.SetDelay(300 * time.Millisecond)
	c, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	_, err = s.ClaimJob(c, caps) // on its way, slowly
	cancel()
	require.ErrorIs(t, err, context.DeadlineExceeded)
	p.SetDelay(0)
	j, err := s.ClaimJob(ctx, caps) // overtakes it on another connection
	require.NoError(t, err)
	require.Equal(t, "j1", j.ID)

	// The late claim arrives within the proxy's delay; give it time.
	time.Sleep(600 * time.Millisecond)
	held, err := s.HeldJobs(ctx, "w")
	require.NoError(t, err)
	require.Equal(t, []string{"j1"}, held, "the late claim took a job nobody will hand over")
	require.Equal(t, []string{"j2"}, direct.rdb.ZRange(ctx, direct.key("jobs:pending"), 0, -1).Val())
	require.NoError(t, s.CompleteJob(ctx, "j1", "w", nil))
	j, err = s.ClaimJob(ctx, caps)
	require.NoError(t, err)
	require.Equal(t, "j2", j.ID)
	requireMirrored(t, direct)
}

// TestLostClaimThatRanIsStillHandedOver: voiding the tokens a claim did
// not find must not void one whose claim ran: its job is handed over by
// the next claim, as before.
func TestLostClaimThatRanIsStillHandedOver(t *testing.T) {
	// No retries by go-redis: the claim's error reaches the caller.
	via, p, direct := proxiedBackend(t, func(o *redis.Options) { o.MaxRetries = -1 })
	s := newStore(t, via, WithDualWrite(true))
	caps := registerWorker(t, s, "w", "s")
	_, err := s.SubmitJob(ctx, Job{ID: "j1", Service: "s", Priority: 60})
	require.NoError(t, err)
	_, err = s.SubmitJob(ctx, Job{ID: "j2", Service: "s", Priority: 50})
	require.NoError(t, err)
	p.CutReplyAfter(1) // the claim runs; its reply is lost
	_, err = s.ClaimJob(ctx, caps)
	require.Error(t, err)
	require.Equal(t, []string{"j1"}, direct.rdb.HKeys(ctx, direct.key("jobs:active:w")).Val(), "the lost claim ran")
	j, err := s.ClaimJob(ctx, caps)
	require.NoError(t, err)
	require.Equal(t, "j1", j.ID, "the job the lost claim took comes first")
	j, err = s.ClaimJob(ctx, caps)
	require.NoError(t, err)
	require.Equal(t, "j2", j.ID)
	requireMirrored(t, direct)
}

// TestClaimPassesOverAnExhaustedProgressStream: a progress:<id> stream
// whose last id is the largest possible makes XADD fail; the claim must
// find that out before it writes, and pass the job over, as it does a
// progress key of the wrong type, instead of stopping half-way with the
// job claimed on one side only.
func TestClaimPassesOverAnExhaustedProgressStream(t *testing.T) {
	b := serverBackend(t)
	s := newStore(t, b, WithDualWrite(true))
	caps := registerWorker(t, s, "w", "s")
	id, err := s.SubmitJob(ctx, Job{Service: "s", Priority: 9})
	require.NoError(t, err)
	require.NoError(t, b.rdb.Do(ctx, "XADD", b.key("progress:"+id), "18446744073709551615-18446744073709551615", "f", "v").Err())
	_, err = s.SubmitJob(ctx, Job{ID: "fine", Service: "s", Priority: 1})
	require.NoError(t, err)
	j, err := s.ClaimJob(ctx, caps)
	require.NoError(t, err)
	require.Equal(t, "fine", j.ID)
	require.Equal(t, []string{id}, b.rdb.ZRange(ctx, b.key("jobs:pending"), 0, -1).Val())
	require.Equal(t, "pending", b.rdb.HGet(ctx, b.key("job:"+id), "status").Val())
	requireMirrored(t, b)
}

// TestClaimRefusesCapabilitiesTooDeep: capabilities nested deeper than the
// claim script can decode (cjson stops at 1000 levels) are refused before
// anything is written, by RegisterWorker and ClaimJob alike, instead of
// being registered and then failing every claim with a Lua error.
func TestClaimRefusesCapabilitiesTooDeep(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		var v any = "x"
		for range 64 {
			v = map[string]any{"a": v}
		}
		caps := Capabilities{WorkerID: "w", Services: []string{"s"}, Extra: map[string]any{"deep": v}}
		before := snapshotKeys(t, b)
		err := s.RegisterWorker(ctx, caps)
		require.ErrorIs(t, err, ErrInvalidArgument)
		require.ErrorContains(t, err, "nested")
		_, err = s.ClaimJob(ctx, caps)
		require.ErrorIs(t, err, ErrInvalidArgument)
		require.Equal(t, before, snapshotKeys(t, b))

		// One level less is fine, and so is a string that looks deep.
		caps.Extra["deep"] = v.(map[string]any)["a"] // 63 levels, and the object around them
		caps.Extra["text"] = strings.Repeat("[{", 2000)
		require.NoError(t, s.RegisterWorker(ctx, caps))
		_, err = s.ClaimJob(ctx, caps)
		require.ErrorIs(t, err, ErrNoJob)
	})
}

func TestJSONDepth(t *testing.T) {
	for in, want := range map[string]int{
		`1`:                      0,
		`"[{"`:                   0,
		`{}`:                     1,
		`{"a":[1,{"b":"]}\""}]}`: 3,
		`[[],[[]]]`:              3,
		`{"a":"\\\\","b":[{}]}`:  3,
	} {
		require.Equal(t, want, jsonDepth([]byte(in)), in)
	}
}

// TestLateCopyOfAHandedOverClaimTakesNothing: go-redis sends a claim
// again after its reply is cut (MaxRetries). When that second copy is late
// (slow network) it can reach Redis after the worker's next claim handed
// over the job the first copy took, and after the worker finished it. The
// late copy, finding no held job with its token, must not claim a fresh
// job in the worker's name, which no call would ever hand over: every
// token a claim carries is voided, found on a job or not.
func TestLateCopyOfAHandedOverClaimTakesNothing(t *testing.T) {
	var armed atomic.Bool
	var px atomic.Pointer[faultProxy]
	via, p, direct := proxiedBackend(t, func(o *redis.Options) {
		o.Dialer = func(ctx context.Context, network, addr string) (net.Conn, error) {
			if armed.CompareAndSwap(true, false) {
				px.Load().SetDelay(time.Second) // the retry's request is slow
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
	})
	px.Store(p)
	s := newStore(t, via, WithDualWrite(true))
	caps := registerWorker(t, s, "w", "s")
	_, err := s.SubmitJob(ctx, Job{ID: "j1", Service: "s", Priority: 60})
	require.NoError(t, err)
	_, err = s.SubmitJob(ctx, Job{ID: "j2", Service: "s", Priority: 50})
	require.NoError(t, err)
	// One live pooled connection, so that go-redis's retry dials.
	p.CutAll()
	require.NoError(t, via.rdb.Ping(ctx).Err())

	armed.Store(true)
	p.CutReplyAfter(1) // the first copy runs and takes j1; its reply is lost
	c, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = s.ClaimJob(c, caps)
	cancel()
	require.Error(t, err)
	p.SetDelay(0)
	require.Equal(t, []string{"j1"}, direct.rdb.HKeys(ctx, direct.key("jobs:active:w")).Val(), "the first copy ran")

	j, err := s.ClaimJob(ctx, caps) // hands j1 over
	require.NoError(t, err)
	require.Equal(t, "j1", j.ID)
	require.NoError(t, s.CompleteJob(ctx, "j1", "w", nil))

	time.Sleep(1500 * time.Millisecond) // the late copy arrives
	held, err := s.HeldJobs(ctx, "w")
	require.NoError(t, err)
	require.Empty(t, held, "a late copy of the handed-over claim took a job nobody will hand over")
	require.Equal(t, []string{"j2"}, direct.rdb.ZRange(ctx, direct.key("jobs:pending"), 0, -1).Val())
}
