package jobstore

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// EnvTestRedis names a real Redis for the tests, as a redis:// URL whose
// database is not 0, e.g. redis://127.0.0.1:6379/15. When it is set, every
// backend test runs twice: on miniredis and on that server. Each test keeps
// its keys under a prefix of its own and deletes them when it ends, so runs
// may share the database.
const envTestRedis = "JOBSTORE_TEST_REDIS_URL"

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// backend is one Redis the tests run against.
type backend struct {
	name   string
	rdb    *redis.Client
	mr     *miniredis.Miniredis // nil on a real server
	prefix string
	clock  *fakeClock
}

// key returns a key name under the backend's prefix.
func (b *backend) key(name string) string { return b.prefix + name }

// advance moves the fake clock, and miniredis's TTL clock with it.
func (b *backend) advance(d time.Duration) {
	b.clock.Advance(d)
	if b.mr != nil {
		b.mr.FastForward(d)
	}
}

// eachBackend runs fn on miniredis and, when envTestRedis is set, on the
// real server. A configured server that cannot be reached fails the test:
// it never skips.
func eachBackend(t *testing.T, fn func(t *testing.T, b *backend)) {
	t.Helper()
	t.Run("miniredis", func(t *testing.T) { fn(t, miniBackend(t)) })
	if os.Getenv(envTestRedis) != "" {
		t.Run("redis", func(t *testing.T) { fn(t, realBackend(t)) })
	}
}

func miniBackend(t testing.TB) *backend {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	clk := newFakeClock()
	mr.SetTime(clk.Now())
	return &backend{name: "miniredis", rdb: rdb, mr: mr, clock: clk}
}

func realBackend(t testing.TB) *backend {
	url := os.Getenv(envTestRedis)
	opt, err := redis.ParseURL(url)
	require.NoError(t, err, "%s=%q", envTestRedis, url)
	if opt.DB == 0 {
		t.Fatalf("%s=%q selects DB 0; tests use a database of their own, such as /15", envTestRedis, url)
	}
	rdb := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		t.Fatalf("%s=%q is set but the server does not answer: %v", envTestRedis, url, err)
	}
	prefix := fmt.Sprintf("jobstore-test:%x:", rand.Uint64())
	t.Cleanup(func() {
		ctx := context.Background()
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		for c := range slices.Chunk(keys, 500) {
			rdb.Unlink(ctx, c...)
		}
		_ = rdb.Close()
	})
	return &backend{name: "redis", rdb: rdb, prefix: prefix, clock: newFakeClock()}
}

// newStore returns a Store on b with the fake clock and the given options.
func newStore(t testing.TB, b *backend, opts ...Option) *Store {
	t.Helper()
	all := append([]Option{WithKeyPrefix(b.prefix), WithClock(b.clock.Now), WithDualWrite(false)}, opts...)
	s, err := New(b.rdb, all...)
	require.NoError(t, err)
	return s
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// logSink is a slog.Handler that keeps records for assertions.
type logSink struct {
	mu      sync.Mutex
	records []slog.Record
	level   slog.Level
}

func (h *logSink) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h *logSink) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.records = append(h.records, r.Clone())
	h.mu.Unlock()
	return nil
}
func (h *logSink) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logSink) WithGroup(string) slog.Handler      { return h }

func slogLogger(h slog.Handler) *slog.Logger { return slog.New(h) }

// lines returns "LEVEL message key=value..." for each record.
func (h *logSink) lines() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, r := range h.records {
		var sb strings.Builder
		fmt.Fprintf(&sb, "%s %s", r.Level, r.Message)
		r.Attrs(func(a slog.Attr) bool {
			fmt.Fprintf(&sb, " %s=%v", a.Key, a.Value)
			return true
		})
		out = append(out, sb.String())
	}
	return out
}

// scanKeys returns every key matching pattern, sorted.
func scanKeys(t testing.TB, rdb *redis.Client, pattern string) []string {
	t.Helper()
	ctx := context.Background()
	var keys []string
	iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	require.NoError(t, iter.Err())
	slices.Sort(keys)
	return slices.Compact(keys)
}

// requireMirrored checks that the step namespace is an exact copy of the
// job namespace: the same record ids with the same fields and values and
// the same TTL (within a second), and the same queue members with the same
// scores. It reads the two sides independently of the library.
func requireMirrored(t testing.TB, b *backend) {
	t.Helper()
	ctx := context.Background()
	ids := func(ns Namespace) []string {
		var out []string
		k := keyspace{prefix: b.prefix, ns: ns}
		for _, key := range scanKeys(t, b.rdb, k.recordPattern()) {
			if id, ok := k.idFromRecordKey(key); ok {
				out = append(out, id)
			}
		}
		return out
	}
	jobIDs, stepIDs := ids(JobNamespace), ids(StepNamespace)
	require.Equal(t, jobIDs, stepIDs, "record ids differ between job:* and step:*")
	for _, id := range jobIDs {
		jk, sk := b.key("job:"+id), b.key("step:"+id)
		jh, err := b.rdb.HGetAll(ctx, jk).Result()
		require.NoError(t, err)
		sh, err := b.rdb.HGetAll(ctx, sk).Result()
		require.NoError(t, err)
		require.Equal(t, jh, sh, "fields of %s and %s differ", jk, sk)
		jt, err := b.rdb.PTTL(ctx, jk).Result()
		require.NoError(t, err)
		st, err := b.rdb.PTTL(ctx, sk).Result()
		require.NoError(t, err)
		require.InDelta(t, jt.Milliseconds(), st.Milliseconds(), 1000, "TTL of %s (%v) and %s (%v) differ", jk, jt, sk, st)
	}
	for _, q := range Queues {
		jq, sq := b.key("jobs:"+string(q)), b.key("steps:"+string(q))
		jz, err := b.rdb.ZRangeWithScores(ctx, jq, 0, -1).Result()
		require.NoError(t, err)
		sz, err := b.rdb.ZRangeWithScores(ctx, sq, 0, -1).Result()
		require.NoError(t, err)
		require.Equal(t, jz, sz, "members of %s and %s differ", jq, sq)
	}
}

// requireNoKeys checks that nothing matches pattern under the prefix.
func requireNoKeys(t testing.TB, b *backend, pattern string) {
	t.Helper()
	require.Empty(t, scanKeys(t, b.rdb, b.key(pattern)), "keys matching %s", b.key(pattern))
}

// score is the pending score the scripts compute, restated in Go so that
// tests can check it: priority*2^43 + (2^43-1-ms).
func score(priority int, t time.Time) float64 {
	const scale = 1 << 43
	return float64(int64(priority)*scale + (scale - 1 - t.UnixMilli()))
}

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }
