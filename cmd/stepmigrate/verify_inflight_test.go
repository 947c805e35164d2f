package main

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jobstep/jobstore"
	"github.com/stretchr/testify/require"
)

// TestVerifyShowsWritesInFlight: a job the legacy services keep writing,
// followed a little late each time, is shown as in flight, in text and
// JSON, and verify exits 0: it is not a difference.
func TestVerifyShowsWritesInFlight(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *env) {
		e.publish(t, jobstore.StageDualWrite)
		e.submit(t, jobstore.StageDualWrite, "j", 2)
		sctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() {
			for i := 1; sctx.Err() == nil; i++ {
				_ = e.rdb.HSet(sctx, e.key("job:j1:progress"), "progress", fmt.Sprint(i)).Err()
				_ = e.rdb.HSet(sctx, e.key("step:j1:progress"), "progress", fmt.Sprint(i-1)).Err()
				time.Sleep(5 * time.Millisecond)
			}
		})
		defer func() { cancel(); wg.Wait() }()
		time.Sleep(20 * time.Millisecond)

		line := e.key("step:j1:progress") + " differs from " + e.key("job:j1:progress") + ": content\n"
		code, out, errOut := e.run(t, "verify", "--rounds", "1")
		require.Equal(t, exitOK, code, errOut+out)
		require.Contains(t, out, "differences: 0 (")
		require.Contains(t, out, "in flight: 1 item that job:* kept rewriting through the rounds while step:* followed; not differences, they block nothing:\n  "+line)

		m := e.runJSON(t, exitOK, "verify", "--rounds", "1")
		require.EqualValues(t, 0, m["differences"])
		require.EqualValues(t, 1, m["in_flight"])
		items := m["in_flight_items"].([]any)
		require.Len(t, items, 1)
		item := items[0].(map[string]any)
		require.Equal(t, e.key("step:j1:progress"), item["key"])
		require.Equal(t, false, item["blocking"])
		require.Equal(t, line, item["text"].(string)+"\n")
	})
}
