package main

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func newRedis(t *testing.T) (*miniredis.Miniredis, *redis.Client) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return mr, rdb
}

// The embedded run names the legacy keys and their step counterparts.
func TestRunShowsTheLegacyLayout(t *testing.T) {
	_, rdb := newRedis(t)
	var out bytes.Buffer
	require.NoError(t, run(t.Context(), &out, rdb, "", false))
	text := out.String()
	for _, want := range []string{
		"job:", "jobs:pending  (zset, no TTL)", "priority             50",
		":progress  (hash, no TTL)", "progress             40",
		"jobs:active:quickstart-worker  (hash, no TTL)",
		"jobs:completed  (hash, TTL 24h0m0s)", `"success":true`,
		"steps:pending  (zset, no TTL, a copy of jobs:pending)",
		"steps:active:quickstart-worker  (hash, no TTL, a copy of jobs:active:quickstart-worker)",
		"steps:completed  (hash, TTL 24h0m0s, a copy of jobs:completed)",
		"Dual-write: copied job:", "worker:quickstart-worker:heartbeat  (string, TTL 1m0s)",
		"status completed", "0 failed: success rate 100.0%",
	} {
		require.Contains(t, text, want)
	}
	require.NotContains(t, text, "jobstore-quickstart:")
}

// Under a prefix (a real server), a run deletes what earlier runs left
// there first, and its own keys at the end; it never touches other keys.
func TestRunUnderPrefixCleansUp(t *testing.T) {
	mr, rdb := newRedis(t)
	mr.HSet(keyPrefix+"job:left-over", "id", "left-over")
	mr.Set(keyPrefix+"worker:w:heartbeat", "x")
	require.NoError(t, mr.Set("job:real", "not ours"))
	var out bytes.Buffer
	require.NoError(t, run(t.Context(), &out, rdb, keyPrefix, false))
	require.Contains(t, out.String(), `Keys under "jobstore-quickstart:": 2 left by earlier runs, deleted.`)
	require.Contains(t, out.String(), keyPrefix+"jobs:completed  (hash, TTL 24h0m0s)")
	require.Regexp(t, `Deleted the quickstart's \d+ keys under "jobstore-quickstart:"`, out.String())
	require.Equal(t, []string{"job:real"}, mr.Keys())

	// -keep keeps them, and the next run deletes them first.
	out.Reset()
	require.NoError(t, run(t.Context(), &out, rdb, keyPrefix, true))
	require.Greater(t, len(mr.Keys()), 5)
	out.Reset()
	require.NoError(t, run(t.Context(), &out, rdb, keyPrefix, false))
	require.NotContains(t, out.String(), ": 0 left by earlier runs")
	require.Equal(t, []string{"job:real"}, mr.Keys())
}

// cancelAt is an io.Writer that cancels a context once what was written
// contains a marker, as a SIGINT at that point would.
type cancelAt struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	marker string
	cancel context.CancelFunc
}

func (c *cancelAt) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.buf.Write(p)
	if strings.Contains(c.buf.String(), c.marker) {
		c.cancel()
	}
	return n, err
}

// Interrupted midway (SIGINT or SIGTERM cancel the context), a run
// under a prefix still deletes its keys.
func TestRunInterruptedCleansUp(t *testing.T) {
	mr, rdb := newRedis(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	w := &cancelAt{marker: "claimed ", cancel: cancel}
	err := run(ctx, w, rdb, keyPrefix, false)
	require.ErrorIs(t, err, context.Canceled)
	require.Contains(t, w.buf.String(), "Deleted the quickstart's")
	require.Empty(t, mr.Keys())
}
