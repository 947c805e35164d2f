package main

import (
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jobstep/jobstore"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// TestFollow runs the follower on a redis-server of the test's own (the
// shared server's keyspace notifications are never turned on): without
// --configure it stops at once, naming the CONFIG SET to run; with it,
// it mirrors a write made as the legacy services make it (HSET and ZADD,
// no mirror), prints its counters, and stops on a signal with exit 0.
// The write it mirrored is then evidence of a legacy writer.
func TestFollow(t *testing.T) {
	t.Parallel()
	e := startTestServer(t).env(t)
	e.publish(t, jobstore.StageDualWrite)

	code, out, errOut := e.run(t, "follow")
	require.Equal(t, exitFail, code)
	require.Empty(t, out)
	require.Contains(t, errOut, "stepmigrate: follow: jobstore: invalid configuration: the follower needs keyspace notifications: run CONFIG SET notify-keyspace-events Kg$lshztxe")
	require.Contains(t, errOut, "(--configure)")
	cfg, err := e.rdb.ConfigGet(ctx, "notify-keyspace-events").Result()
	require.NoError(t, err)
	require.Empty(t, cfg["notify-keyspace-events"], "nothing turned on without --configure")

	fctx, stop := context.WithCancel(ctx)
	defer stop()
	var fout, ferr syncBuffer
	var wg sync.WaitGroup
	var fcode int
	wg.Go(func() {
		fcode = e.runCtx(fctx, &fout, &ferr, "follow", "--configure", "--every", "100ms", "--recheck", "100ms", "--sweep", "off")
	})
	require.Eventually(t, func() bool { return strings.Contains(fout.String(), "follow: mirroring to step:*") },
		10*time.Second, 10*time.Millisecond, "stderr: %s", ferr.String())

	require.NoError(t, e.rdb.HSet(ctx, "job:legacy-1", "id", "legacy-1", "service_required", "s", "priority", "50",
		"payload", "{}", "status", "pending", "created_at", "2026-11-29T23:00:00.000Z", "retry_count", "0", "max_retries", "3").Err())
	require.NoError(t, e.rdb.ZAdd(ctx, "jobs:pending", redisZ(5e16, "legacy-1")).Err())
	require.Eventually(t, func() bool {
		rec, err := e.rdb.HGetAll(ctx, "step:legacy-1").Result()
		if err != nil || rec["status"] != "pending" {
			return false
		}
		_, err = e.rdb.ZScore(ctx, "steps:pending", "legacy-1").Result()
		return err == nil
	}, 10*time.Second, 10*time.Millisecond, "the follower mirrors the legacy write")
	require.Eventually(t, func() bool { return strings.Contains(fout.String(), "changed 1") },
		10*time.Second, 10*time.Millisecond, "its counters: %s", fout.String())

	// While it runs, status shows its report.
	require.Eventually(t, func() bool {
		_, out, _ := e.run(t, "status")
		return strings.Contains(out, "1 legacy writes mirrored (0 by sweeps), backlog 0, reported ")
	}, 5*time.Second, 50*time.Millisecond)
	_, out, _ = e.run(t, "status")
	require.Regexp(t, `followers    \S+: lag p50 \S+ p99 \S+, 1 legacy writes mirrored`, out)

	stop()
	wg.Wait()
	require.Equal(t, exitOK, fcode, "a signal is how follow stops: %s", ferr.String())
	lines := strings.Split(strings.TrimSpace(fout.String()), "\n")
	last := lines[len(lines)-1]
	require.True(t, strings.HasPrefix(last, "follow stopped after "), last)
	require.Regexp(t, `events \d+ synced \d+ changed 1 backlog 0 lag p50 \S+ p99 \S+`, last)
	require.Empty(t, ferr.String())

	// What it mirrored is a legacy writer's: dual-read waits for it.
	code, _, errOut = e.run(t, "stage", "set", "dual-read")
	require.Equal(t, exitFail, code)
	require.Contains(t, errOut, "stage set refused: legacy processes are still running: a legacy write mirrored by the follower at ")
	code, out, _ = e.run(t, "status")
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "legacy       a legacy write mirrored by the follower at ")

	// --json: one object a line, snake_case.
	fctx, stop = context.WithCancel(ctx)
	defer stop()
	fout, ferr = syncBuffer{}, syncBuffer{}
	wg.Go(func() {
		fcode = e.runCtx(fctx, &fout, &ferr, "--json", "follow", "--every", "100ms", "--sweep", "off")
	})
	require.Eventually(t, func() bool { return strings.Count(fout.String(), "\n") >= 2 }, 10*time.Second, 10*time.Millisecond)
	stop()
	wg.Wait()
	require.Equal(t, exitOK, fcode, ferr.String())
	for line := range strings.Lines(fout.String()) {
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(line), &m), line)
		snakeKeys(t, m, "follow")
		for _, k := range []string{"time", "events", "synced", "changed", "backlog", "lag_p50_ns", "lag_p99_ns"} {
			require.Contains(t, m, k)
		}
	}
	require.Contains(t, fout.String(), `"stopped":true`)
}

func redisZ(score float64, member string) redis.Z { return redis.Z{Score: score, Member: member} }
