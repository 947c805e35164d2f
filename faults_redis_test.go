package jobstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// Faults on the Redis side: keys of the wrong type where the mirror
// writes, the script cache flushed, memory exhausted, and the server
// killed and restarted. The last three need a server of the test's own
// (startTestServer), so the shared one never sees them.

// TestMirrorWrongTypeKeys plants a key of the wrong type at each mirror
// key in turn and runs every writing operation. The primary must end
// exactly as in a run without the planted key; every write whose mirror
// hit the planted key is one counted failure, logged with the key; every
// other mirror key stays an exact copy.
func TestMirrorWrongTypeKeys(t *testing.T) {
	// How many writes of lifecycle mirror each key:
	//   steps:pending:   5 submits, 5 claims, 1 retry, 2 cancels, 1 recovery
	//   steps:active:w:  5 claims, complete, 2 fails, the held cancel, recovery
	//   steps:completed: complete
	//   steps:failed:    the final fail, 2 cancels
	cases := []struct {
		key    string
		plant  func(b *backend, key string) error
		failed uint64
	}{
		{"steps:pending", func(b *backend, k string) error { return b.rdb.Set(ctx, k, "x", 0).Err() }, 14},
		{"steps:active:w", func(b *backend, k string) error { return b.rdb.ZAdd(ctx, k, redisZ(1, "x")).Err() }, 10},
		{"steps:completed", func(b *backend, k string) error { return b.rdb.RPush(ctx, k, "x").Err() }, 1},
		{"steps:failed", func(b *backend, k string) error { return b.rdb.SAdd(ctx, k, "x").Err() }, 3},
		// COPY ... REPLACE and DEL replace a key of any type, so a
		// wrong-type step record is repaired by the first write: no failure.
		{"step:c", func(b *backend, k string) error { return b.rdb.Set(ctx, k, "x", 0).Err() }, 0},
		{"step:f", func(b *backend, k string) error { return b.rdb.LPush(ctx, k, "x").Err() }, 0},
	}
	// Times on a real server follow the real clock (TIME in the claim,
	// expiry times); the rest must be equal.
	noise := regexp.MustCompile(`exp=-?\d+ |"assigned_at"="[0-9.]+"|"(jobstore_op|job_trace_id|job_span_id)"="[^"]*"`)
	primary := func(t *testing.T, b *backend) map[string]string {
		out := map[string]string{}
		for k, v := range snapshotKeys(t, b) {
			if strings.HasPrefix(k, "job") {
				out[k] = noise.ReplaceAllString(v, "")
			}
		}
		return out
	}
	eachBackend(t, func(t *testing.T, b *backend) {
		sub := func(name string) *backend {
			return &backend{name: b.name, rdb: b.rdb, mr: b.mr, prefix: b.prefix + name + ":", clock: newFakeClock()}
		}
		ref := sub("ref")
		rs := newStore(t, ref, WithDualWrite(true))
		lifecycle(t, ref, rs, func(string) {})
		want := primary(t, ref)
		attempted := rs.DualWriteStats().Attempted

		for _, tc := range cases {
			t.Run(tc.key, func(t *testing.T) {
				bb := sub(strings.ReplaceAll(tc.key, ":", "-"))
				require.NoError(t, tc.plant(bb, bb.key(tc.key)))
				sink := &logSink{level: slog.LevelError}
				s := newStore(t, bb, WithDualWrite(true), WithLogger(slogLogger(sink)))
				lifecycle(t, bb, s, func(string) {}) // every call succeeds
				require.Equal(t, want, primary(t, bb), "the primary is as if nothing was planted")

				st := s.DualWriteStats()
				require.Equal(t, attempted, st.Attempted)
				require.Equal(t, tc.failed, st.Failed)
				lines := sink.lines()
				require.Len(t, lines, int(tc.failed), "one log line per failure")
				for _, l := range lines {
					require.Contains(t, l, "Dual-write failed; the primary write succeeded")
					require.Contains(t, l, bb.key(tc.key)+": WRONGTYPE")
				}
				if tc.failed > 0 {
					// Put the primary's key in place of the planted one:
					// everything else must already be an exact copy.
					require.NoError(t, bb.rdb.Del(ctx, bb.key(tc.key)).Err())
					src := bb.key(strings.Replace(tc.key, "steps:", "jobs:", 1))
					if bb.rdb.Exists(ctx, src).Val() == 1 {
						require.NoError(t, bb.rdb.Copy(ctx, src, bb.key(tc.key), b.rdb.Options().DB, true).Err())
					}
				}
				requireMirrored(t, bb)
			})
		}
	})
}

// TestScriptFlushMidRun empties the script cache every millisecond while
// API and worker goroutines run with dual-write on. go-redis answers
// NOSCRIPT by sending the script body (and the pipeliner loads it), so no
// call may fail, and the mirror must stay exact. SCRIPT FLUSH acts on the
// whole server, so this runs on miniredis and on a server of the test's
// own, never on the shared one.
func TestScriptFlushMidRun(t *testing.T) {
	run := func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		stop := make(chan struct{})
		var flushes atomic.Int64
		var flusher sync.WaitGroup
		flusher.Add(1)
		go func() {
			defer flusher.Done()
			for !closed(stop) {
				if b.rdb.ScriptFlush(ctx).Err() == nil {
					flushes.Add(1)
				}
				time.Sleep(time.Millisecond)
			}
		}()
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for g := range 2 {
			caps := registerWorker(t, s, fmt.Sprint("w", g), "s")
			wg.Add(2)
			go func() {
				defer wg.Done()
				for i := range 100 {
					if _, err := s.SubmitJob(ctx, Job{ID: fmt.Sprintf("g%d-%d", g, i), Service: "s"}); err != nil {
						errs <- err
						return
					}
				}
			}()
			go func() {
				defer wg.Done()
				for range 100 {
					j, err := s.ClaimJob(ctx, caps)
					if errors.Is(err, ErrNoJob) {
						time.Sleep(time.Millisecond)
						continue
					}
					if err == nil {
						err = s.CompleteJob(ctx, j.ID, caps.WorkerID, nil)
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(stop)
		flusher.Wait()
		close(errs)
		for err := range errs {
			require.NoError(t, err)
		}
		require.Positive(t, flushes.Load())
		requireMirrored(t, b)
		require.Zero(t, s.DualWriteStats().Failed)
		t.Logf("%d script flushes during 200 submits and their claims", flushes.Load())
	}
	t.Run("miniredis", func(t *testing.T) { run(t, miniBackend(t)) })
	t.Run("redis-server", func(t *testing.T) { run(t, startTestServer(t).Backend(nil)) })
}

// TestOutOfMemory fills a server of the test's own up to a low maxmemory
// under the noeviction policy. Redis refuses a script's first write that
// may grow memory (HSET, ZADD) with an OOM error, and lets every later
// write of a script that has already written through; as every script
// checks before it writes, a refused script has written nothing. So:
//
//   - SubmitJob, StartJob, ReportProgress, CompleteJob and CancelJob
//     return the OOM error and change nothing, with or without dual-write;
//   - ClaimJob and FailJob still apply, whole and mirrored: their first
//     write is a ZREM or an HDEL, which Redis allows under OOM;
//   - once memory is freed, everything works again by itself.
func TestOutOfMemory(t *testing.T) {
	srv := startTestServer(t, "--maxmemory", "4mb", "--maxmemory-policy", "noeviction")
	b := srv.Backend(nil)
	s := newStore(t, b, WithDualWrite(true))
	caps := registerWorker(t, s, "w", "s")
	for _, id := range []string{"a", "b", "c"} {
		_, err := s.SubmitJob(ctx, Job{ID: id, Service: "s", Priority: int(id[0])})
		require.NoError(t, err)
	}
	_, err := s.ClaimJob(ctx, caps) // c
	require.NoError(t, err)

	filler := strings.Repeat("x", 64<<10)
	var fill int
	for ; fill < 1000; fill++ {
		err := b.rdb.Set(ctx, fmt.Sprintf("filler:%d", fill), filler, 0).Err()
		if err != nil {
			require.ErrorContains(t, err, "OOM")
			break
		}
	}
	require.Less(t, fill, 1000, "maxmemory was never reached")
	before := snapshotKeys(t, b)
	oom := func(name string, err error) {
		t.Helper()
		require.Error(t, err, name)
		require.ErrorContains(t, err, "OOM command not allowed", name)
		require.NotErrorIs(t, err, ErrCorruptRecord, name)
		require.Equal(t, before, snapshotKeys(t, b), "%s wrote something", name)
	}
	for _, dual := range []bool{false, true} {
		require.NoError(t, s.SetDualWrite(dual))
		_, err = s.SubmitJob(ctx, Job{ID: "new", Service: "s", Payload: []byte(`{"big":"` + strings.Repeat("y", 1000) + `"}`)})
		oom("submit", err)
		_, err = s.SubmitJob(ctx, Job{Service: "s"})
		oom("submit with a generated id", err)
		oom("start", s.StartJob(ctx, "c", "w"))
		oom("progress", s.ReportProgress(ctx, "c", "w", 5, ""))
		oom("complete", s.CompleteJob(ctx, "c", "w", nil))
		oom("cancel", s.CancelJob(ctx, "a", ""))
	}
	// Scripts whose first write is a ZREM or HDEL are let through, and
	// apply whole.
	out, err := s.FailJob(ctx, "c", "w", "out of memory", true)
	require.NoError(t, err)
	require.Equal(t, Retried, out)
	j, err := s.ClaimJob(ctx, caps)
	require.NoError(t, err)
	require.Equal(t, "c", j.ID)
	requireMirrored(t, b)
	require.Zero(t, s.DualWriteStats().Failed)

	for i := range fill {
		require.NoError(t, b.rdb.Del(ctx, fmt.Sprintf("filler:%d", i)).Err())
	}
	_, err = s.SubmitJob(ctx, Job{ID: "new", Service: "s"})
	require.NoError(t, err)
	require.NoError(t, s.CompleteJob(ctx, "c", "w", nil))
	for range 3 {
		j, err := s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.NoError(t, s.CompleteJob(ctx, j.ID, "w", nil))
	}
	requireMirrored(t, b)
	t.Logf("maxmemory 4mb reached after %d keys of 64 KiB", fill)
}

// TestServerRestart kills a server of the test's own with SIGKILL and
// starts it again on the same port. While it is down every call fails
// promptly; after it is back the same Store and client work again by
// themselves (go-redis redials; the empty script cache is refilled). What
// survives is Redis's business: without persistence every acknowledged
// job is gone, with appendfsync always every one is there, mirror included.
func TestServerRestart(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		kept bool
	}{
		{"no persistence", nil, false},
		{"appendfsync always", []string{"--appendonly", "yes", "--appendfsync", "always"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startTestServer(t, tc.args...)
			b := srv.Backend(&redis.Options{DialTimeout: time.Second, ReadTimeout: time.Second})
			s := newStore(t, b, WithDualWrite(true))
			caps := registerWorker(t, s, "w", "s")
			const n = 50
			for i := range n {
				_, err := s.SubmitJob(ctx, Job{ID: fmt.Sprint("j", i), Service: "s"})
				require.NoError(t, err)
			}
			_, err := s.ClaimJob(ctx, caps)
			require.NoError(t, err)

			srv.Kill()
			err = callWithin(t, 500*time.Millisecond, func(c context.Context) error {
				_, err := s.SubmitJob(c, Job{ID: "down", Service: "s"})
				return err
			})
			require.Error(t, err, "submit while the server is down")
			_, err = s.GetJob(ctx, "j1")
			require.Error(t, err)

			srv.Restart()
			require.Eventually(t, func() bool {
				_, err := s.SubmitJob(ctx, Job{ID: "after", Service: "s"})
				return err == nil || errors.Is(err, ErrJobExists)
			}, 30*time.Second, 50*time.Millisecond, "the store works again by itself")

			kept := 0
			for i := range n {
				_, err := s.GetJob(ctx, fmt.Sprint("j", i))
				if err == nil {
					kept++
				} else {
					require.ErrorIs(t, err, ErrJobNotFound)
				}
			}
			if tc.kept {
				require.Equal(t, n, kept, "acknowledged jobs kept by the append-only file")
				requireMirrored(t, b)
			} else {
				require.Zero(t, kept, "without persistence Redis restarts empty")
			}
			t.Logf("%d of %d acknowledged jobs survived a SIGKILL and restart", kept, n)
		})
	}
}
