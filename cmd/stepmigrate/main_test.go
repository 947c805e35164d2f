package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jobstep/jobstore"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

var ctx = context.Background()

// env is one Redis the command runs against: miniredis, and the real
// server named by JOBSTORE_TEST_REDIS_URL (under a prefix of its own,
// deleted afterwards), as in the library's tests.
type env struct {
	url, prefix string
	rdb         *redis.Client
}

func eachEnv(t *testing.T, fn func(t *testing.T, e *env)) { eachEnvAt(t, false, fn) }

// eachEnvAt runs fn on miniredis and, when JOBSTORE_TEST_REDIS_URL is set,
// on that server under a prefix of its own, deleted at the end. With
// realTime, miniredis's clock is set to now (see eachSnapshotEnv).
func eachEnvAt(t *testing.T, realTime bool, fn func(t *testing.T, e *env)) {
	t.Run("miniredis", func(t *testing.T) {
		mr := miniredis.RunT(t)
		if realTime {
			mr.SetTime(time.Now())
		}
		e := &env{url: "redis://" + mr.Addr() + "/0", rdb: redis.NewClient(&redis.Options{Addr: mr.Addr()})}
		t.Cleanup(func() { _ = e.rdb.Close() })
		fn(t, e)
	})
	url := os.Getenv("JOBSTORE_TEST_REDIS_URL")
	if url == "" {
		return
	}
	t.Run("redis", func(t *testing.T) {
		opt, err := redis.ParseURL(url)
		require.NoError(t, err)
		require.NotZero(t, opt.DB, "tests never use DB 0")
		e := &env{url: url, prefix: fmt.Sprintf("stepmigrate-test:%x:", rand.Uint64()), rdb: redis.NewClient(opt)}
		t.Cleanup(func() {
			iter := e.rdb.Scan(ctx, 0, e.prefix+"*", 1000).Iterator()
			var keys []string
			for iter.Next(ctx) {
				keys = append(keys, iter.Val())
			}
			for c := range slices.Chunk(keys, 500) {
				e.rdb.Unlink(ctx, c...)
			}
			_ = e.rdb.Close()
		})
		require.NoError(t, e.rdb.Ping(ctx).Err(), "JOBSTORE_TEST_REDIS_URL is set but the server does not answer")
		fn(t, e)
	})
}

func (e *env) key(k string) string { return e.prefix + k }

// run runs the command with --redis and --prefix for e.
func (e *env) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runArgs(append([]string{"--redis", e.url, "--prefix", e.prefix}, args...)...)
}

func runArgs(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// runJSON runs the command with --json and decodes its one object.
func (e *env) runJSON(t *testing.T, wantCode int, args ...string) map[string]any {
	t.Helper()
	code, out, errOut := e.run(t, append([]string{"--json"}, args...)...)
	require.Equal(t, wantCode, code, "stdout: %s\nstderr: %s", out, errOut)
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(out))
	require.NoError(t, dec.Decode(&m), "stdout: %s", out)
	require.False(t, dec.More(), "one JSON object, got: %s", out)
	return m
}

func (e *env) store(t *testing.T, st jobstore.Stage) *jobstore.Store {
	s, err := jobstore.New(e.rdb, jobstore.WithKeyPrefix(e.prefix), jobstore.WithStage(st))
	require.NoError(t, err)
	return s
}

func TestUsage(t *testing.T) {
	mr := miniredis.RunT(t)
	url := "redis://" + mr.Addr() + "/0"
	t.Setenv("REDIS_URL", "")
	cases := []struct {
		args   []string
		code   int
		stderr string
	}{
		{nil, 2, "no command given"},
		{[]string{"migrate"}, 2, `unknown command "migrate"`},
		{[]string{"--bogus"}, 2, "flag provided but not defined: -bogus"},
		{[]string{"status", "--bogus"}, 2, "status: flag provided but not defined: -bogus"},
		{[]string{"verify", "now"}, 2, `verify takes no arguments, got ["now"]`},
		{[]string{"backfill", "--rate", "-1"}, 2, "must not be negative"},
		{[]string{"backfill", "--batch", "x"}, 2, `invalid value "x" for flag -batch`},
		{[]string{"stage", "set", "sideways"}, 2, `unknown stage "sideways" (want legacy, dual-write, dual-read, step-primary, step-only)`},
		{[]string{"stage", "set"}, 2, "stage set takes one stage name"},
		{[]string{"stage", "flip"}, 2, `want "get" or "set NAME"`},
		{[]string{"status"}, 2, "pass --redis redis://HOST:6379/DB or set REDIS_URL"},
		{[]string{"--redis", "foo://u:secret@x", "status"}, 2, `bad Redis URL "foo://u:***@x"`},
		{[]string{"--redis", url, "--prefix", "a b", "status"}, 2, "WithKeyPrefix"},
		{[]string{"--redis", "redis://127.0.0.1:1/0", "status"}, 1, "cannot reach Redis at 127.0.0.1:1"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, _, errOut := runArgs(c.args...)
			require.Equal(t, c.code, code, errOut)
			require.Contains(t, errOut, c.stderr)
			require.NotContains(t, errOut, "secret")
		})
	}
	for _, h := range [][]string{{"--help"}, {"help"}, {"verify", "-h"}} {
		code, out, _ := runArgs(h...)
		require.Equal(t, 0, code)
		require.Contains(t, out, "usage: stepmigrate")
	}
	t.Setenv("REDIS_URL", url)
	code, out, errOut := runArgs("stage")
	require.Equal(t, 0, code, errOut)
	require.Contains(t, out, "none published (the environment here says legacy)")
}

// TestRunbook walks the runbook with the command: dual-write, backfill,
// verify, the stages up to step-only, cleanup; then back with a reverse
// backfill.
func TestRunbook(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		legacy := e.store(t, jobstore.StageLegacy)
		const n = 12
		for i := range n {
			_, err := legacy.SubmitJob(ctx, jobstore.Job{ID: fmt.Sprint("j", i), Service: "s", Priority: i})
			require.NoError(t, err)
		}
		for range 4 {
			j, err := legacy.ClaimJob(ctx, "w")
			require.NoError(t, err)
			require.NoError(t, legacy.CompleteJob(ctx, j.ID, "w", nil))
		}
		require.NoError(t, e.rdb.Set(ctx, e.key("job:j1:progress"), "10%", 0).Err())

		m := e.runJSON(t, 0, "stage", "set", "dual-write")
		require.Equal(t, "dual-write", m["shared"])
		require.Equal(t, "legacy", m["previous"])
		code, _, errOut := e.run(t, "stage", "set", "step-only")
		require.Equal(t, 1, code)
		require.Contains(t, errOut, "stage set refused")
		require.Contains(t, errOut, "--force")

		m = e.runJSON(t, 0, "status")
		require.Equal(t, map[string]any{"effective": "dual-write", "source": "shared", "shared": "dual-write", "environment": "legacy"}, m["stage"])
		require.EqualValues(t, n, m["job"].(map[string]any)["records"])
		require.EqualValues(t, 1, m["job"].(map[string]any)["other_keys"])
		require.EqualValues(t, 0, m["step"].(map[string]any)["records"])
		require.Equal(t, false, m["records_match"])
		for _, k := range []string{"used_memory", "memory_increase_pct", "dual_write", "reads"} {
			require.Contains(t, m, k)
		}

		m = e.runJSON(t, 0, "backfill", "--dry-run")
		require.EqualValues(t, n, m["copied"])
		require.Equal(t, true, m["dry_run"])
		keys, err := e.rdb.Keys(ctx, e.key("step*")).Result()
		require.NoError(t, err)
		require.Empty(t, keys)

		m = e.runJSON(t, 1, "verify", "--rounds", "1")
		require.EqualValues(t, n, m["missing"])
		for _, k := range []string{"job_records", "step_records", "missing", "extra", "different", "differences", "diffs"} {
			require.Contains(t, m, k)
		}

		code, out, errOut := e.run(t, "backfill", "--batch", "5")
		require.Equal(t, 0, code, errOut)
		require.Contains(t, out, fmt.Sprintf("%d records: copied %d", n, n))
		require.Contains(t, out, "skipped 1 keys that are not records: "+e.key("job:j1:progress"))
		require.Contains(t, out, "next: stepmigrate verify")
		m = e.runJSON(t, 0, "backfill")
		require.EqualValues(t, 0, m["copied"], "a second run copies nothing")

		m = e.runJSON(t, 0, "verify")
		require.EqualValues(t, n, m["job_records"])
		require.EqualValues(t, n, m["step_records"])
		require.EqualValues(t, 0, m["differences"])

		require.NoError(t, e.rdb.HSet(ctx, e.key("step:j3"), "priority", "99").Err())
		code, out, errOut = e.run(t, "verify", "--rounds", "1")
		require.Equal(t, 1, code)
		require.Contains(t, out, "different "+e.key("job:j3"))
		require.Contains(t, errOut, "stepmigrate verify --repair")
		code, out, errOut = e.run(t, "verify", "--repair", "--rounds", "1")
		require.Equal(t, 0, code, errOut)
		require.Contains(t, out, "repaired 1 ids from job:*")
		m = e.runJSON(t, 0, "verify")
		require.EqualValues(t, 0, m["differences"])

		code, _, errOut = e.run(t, "cleanup")
		require.Equal(t, 1, code)
		require.Contains(t, errOut, "cleanup refused")
		require.Contains(t, errOut, "stepmigrate stage set step-only")
		code, _, errOut = e.run(t, "rollback")
		require.Equal(t, 1, code)
		require.Contains(t, errOut, "stepmigrate stage set legacy")

		for _, st := range []string{"dual-read", "step-primary", "step-only"} {
			code, out, errOut := e.run(t, "stage", "set", st)
			require.Equal(t, 0, code, errOut)
			require.Contains(t, out, "published "+st)
		}
		code, out, _ = e.run(t, "stage", "get")
		require.Equal(t, 0, code)
		require.Contains(t, out, "step-only (shared")

		m = e.runJSON(t, 0, "cleanup", "--dry-run")
		require.EqualValues(t, n, m["records"])
		require.Equal(t, true, m["dry_run"])
		require.EqualValues(t, 0, m["verify"].(map[string]any)["unsafe"])

		// A straggler still writing job:* makes cleanup refuse.
		require.NoError(t, e.rdb.HSet(ctx, e.key("job:j5"), "retry_count", "9").Err())
		code, out, errOut = e.run(t, "cleanup")
		require.Equal(t, 1, code)
		require.Contains(t, out, "different "+e.key("step:j5"))
		require.Contains(t, errOut, "--force deletes anyway")
		m = e.runJSON(t, 0, "cleanup", "--force")
		require.EqualValues(t, n, m["records"])
		require.EqualValues(t, 2, m["queues"])
		keys, err = e.rdb.Keys(ctx, e.key("job*")).Result()
		require.NoError(t, err)
		require.ElementsMatch(t, []string{e.key("job:j1:progress"), e.key("jobstore:stage")}, keys)

		code, out, errOut = e.run(t, "status")
		require.Equal(t, 0, code, errOut)
		require.Contains(t, out, "stage        step-only (shared stage")
		require.Contains(t, out, "key counts   differ by 12")

		// And back: step-primary, then a reverse backfill.
		code, _, errOut = e.run(t, "stage", "set", "step-primary")
		require.Equal(t, 0, code, errOut)
		m = e.runJSON(t, 0, "backfill", "--reverse")
		require.Equal(t, "step", m["from"])
		require.EqualValues(t, n, m["copied"])
		m = e.runJSON(t, 0, "verify")
		require.Equal(t, "step", m["primary"])
		require.EqualValues(t, 0, m["differences"])
	})
}

func TestRollbackCommand(t *testing.T) {
	eachEnv(t, func(t *testing.T, e *env) {
		s := e.store(t, jobstore.StageDualWrite)
		for i := range 5 {
			_, err := s.SubmitJob(ctx, jobstore.Job{ID: fmt.Sprint("r", i), Service: "s"})
			require.NoError(t, err)
		}
		require.NoError(t, e.rdb.Set(ctx, e.key("step:r1:progress"), "x", 0).Err())
		require.NoError(t, e.rdb.ZAdd(ctx, e.key("steps:pending:old"), redis.Z{Score: 1, Member: "x"}).Err())
		code, _, errOut := e.run(t, "stage", "set", "legacy", "--force")
		require.Equal(t, 0, code, errOut)

		code, out, errOut := e.run(t, "rollback", "--dry-run")
		require.Equal(t, 0, code, errOut)
		require.Contains(t, out, "rollback would delete 5 records, 1 queue keys and 0 backfill checkpoints of step:*")
		require.Contains(t, out, "kept 1 keys that are not records: "+e.key("step:r1:progress"))
		m := e.runJSON(t, 0, "rollback")
		require.EqualValues(t, 5, m["records"])
		require.Equal(t, "step", m["namespace"])
		keys, err := e.rdb.Keys(ctx, e.key("step*")).Result()
		require.NoError(t, err)
		require.ElementsMatch(t, []string{e.key("step:r1:progress"), e.key("steps:pending:old")}, keys)
	})
}

func TestProgress(t *testing.T) {
	require.Equal(t, "backfill [#######-------------] 35% 1,000 keys 100/s ETA 19s copied 9",
		progressLine("backfill", "keys", 1000, 0.35, 10*time.Second, "copied 9", true))
	require.Equal(t, "verify 35% 1,000 keys 100/s ETA 19s",
		progressLine("verify", "keys", 1000, 0.35, 10*time.Second, "", false))
	require.Equal(t, "verify 12 keys 6/s", progressLine("verify", "keys", 12, 0, 2*time.Second, "", false))
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -4200: "-4,200"} {
		require.Equal(t, want, group(n))
	}

	var buf bytes.Buffer
	now := time.Unix(0, 0)
	p := newProgress(&buf, false, "x", "keys")
	p.start, p.now = now, func() time.Time { return now }
	for range 5 {
		now = now.Add(time.Second)
		p.update(10, 0, "")
	}
	require.Equal(t, 2, strings.Count(buf.String(), "\n"), "plain lines every 3s: %q", buf.String())

	buf.Reset()
	p = newProgress(&buf, true, "x", "keys")
	p.now = func() time.Time { return now }
	p.update(1, 0.5, "")
	p.finish()
	require.True(t, strings.HasPrefix(buf.String(), "\r\033[Kx ["), "%q", buf.String())
	require.True(t, strings.HasSuffix(buf.String(), "\r\033[K"))
	require.False(t, isTerminal(&buf))
}
