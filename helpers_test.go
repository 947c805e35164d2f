package jobstore

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math"
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

var ctx = context.Background()

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

// keyState is what a test reads of one key, independently of the
// library: its type, its content in a comparable form, and its TTL.
type keyState struct {
	Type  string
	Value any // map[string]string, []redis.Z, string, []string (set), or stream entries
	TTL   time.Duration
}

// readKey reads one key's state.
func readKey(t testing.TB, rdb *redis.Client, key string) keyState {
	t.Helper()
	ctx := context.Background()
	typ, err := rdb.Type(ctx, key).Result()
	require.NoError(t, err)
	st := keyState{Type: typ}
	switch typ {
	case "hash":
		st.Value, err = rdb.HGetAll(ctx, key).Result()
	case "zset":
		st.Value, err = rdb.ZRangeWithScores(ctx, key, 0, -1).Result()
	case "string":
		st.Value, err = rdb.Get(ctx, key).Result()
	case "set":
		var m []string
		m, err = rdb.SMembers(ctx, key).Result()
		slices.Sort(m)
		st.Value = m
	case "list":
		st.Value, err = rdb.LRange(ctx, key, 0, -1).Result()
	case "stream":
		var xs []redis.XMessage
		xs, err = rdb.XRange(ctx, key, "-", "+").Result()
		st.Value = xs
	case "none":
		return st
	}
	require.NoError(t, err)
	st.TTL, err = rdb.PTTL(ctx, key).Result()
	require.NoError(t, err)
	return st
}

// nsSnapshot reads every key of a namespace under the backend's prefix
// (records, sub-keys and queues: job:* and jobs:*), keyed by the name
// without the prefix and the namespace's words, so that two namespaces
// compare: "job:7" and "step:7" are both "R:7", "jobs:pending" and
// "steps:pending" both "Q:pending". TTLs are rounded to seconds.
func nsSnapshot(t testing.TB, b *backend, ns Namespace) map[string]keyState {
	t.Helper()
	k := keyspace{prefix: b.prefix, ns: ns}
	out := map[string]keyState{}
	for _, pat := range []string{k.recordPattern(), k.queuePrefix() + "*"} {
		for _, key := range scanKeys(t, b.rdb, pat) {
			st := readKey(t, b.rdb, key)
			if st.TTL > 0 {
				st.TTL = st.TTL.Round(time.Second)
			}
			name, ok := strings.CutPrefix(key, k.recordPrefix())
			if ok {
				name = "R:" + name
			} else {
				name = "Q:" + strings.TrimPrefix(key, k.queuePrefix())
			}
			out[name] = st
		}
	}
	return out
}

// requireMirrored checks that the step namespace is an exact copy of the
// job namespace: the same keys (records, sub-keys, queues, every worker's
// active hash), of the same types, contents and TTLs (within a second).
// It reads the two sides independently of the library; the TTLs of each
// pair of keys are read together, so that a slow machine does not make
// them differ.
func requireMirrored(t testing.TB, b *backend) {
	t.Helper()
	jobs, steps := nsSnapshot(t, b, JobNamespace), nsSnapshot(t, b, StepNamespace)
	require.Equal(t, sortedKeys(jobs), sortedKeys(steps), "keys differ between job:*/jobs:* and step:*/steps:*")
	for name, j := range jobs {
		s := steps[name]
		require.Equal(t, j.Type, s.Type, "type of %s", name)
		require.Equal(t, j.Value, s.Value, "content of %s", name)
		jt, st := pairTTL(t, b, name)
		require.InDelta(t, jt.Seconds(), st.Seconds(), 1, "TTL of %s", name)
	}
}

// pairTTL reads the TTLs of a snapshot name's key in both namespaces in
// one round trip.
func pairTTL(t testing.TB, b *backend, name string) (job, step time.Duration) {
	t.Helper()
	key := func(ns Namespace) string {
		k := keyspace{prefix: b.prefix, ns: ns}
		if rest, ok := strings.CutPrefix(name, "R:"); ok {
			return k.recordPrefix() + rest
		}
		return k.queuePrefix() + strings.TrimPrefix(name, "Q:")
	}
	pipe := b.rdb.Pipeline()
	a, c := pipe.PTTL(ctx, key(JobNamespace)), pipe.PTTL(ctx, key(StepNamespace))
	_, err := pipe.Exec(ctx)
	require.NoError(t, err)
	return a.Val(), c.Val()
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}

// requireNoKeys checks that nothing matches pattern under the prefix.
func requireNoKeys(t testing.TB, b *backend, pattern string) {
	t.Helper()
	require.Empty(t, scanKeys(t, b.rdb, b.key(pattern)), "keys matching %s", b.key(pattern))
}

// apiScore is the legacy API's pending score, restated for tests:
// priority*1e15 - floor(ms/1000).
func apiScore(priority int, t time.Time) float64 {
	return float64(priority)*1e15 - math.Floor(float64(t.UnixMilli())/1000)
}

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }
