package prom_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jobstep/jobstore"
	"github.com/jobstep/jobstore/x/prom"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"
)

// fullScrape scrapes a Collector with every source turned on and given
// something to report, so that it exports every metric it has.
func fullScrape(t *testing.T) (families, *prom.Collector) {
	t.Helper()
	_, rdb := newRedis(t)
	m, err := jobstore.NewMigrator(rdb, jobstore.WithDualWrite(true))
	require.NoError(t, err)
	require.NoError(t, m.PublishStage(ctx, jobstore.StageDualWrite, jobstore.PublishOptions{}))
	c := prom.NewCollector(nil, prom.WithQueueSizes(time.Nanosecond), prom.WithMigrator(m, time.Nanosecond))
	s := newStore(t, rdb, jobstore.WithDualWrite(true), jobstore.WithOpObserver(c.Observer()))
	c.SetStore(s)
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))

	_, err = s.SubmitJob(ctx, jobstore.Job{Service: "svc"})
	require.NoError(t, err)

	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.FollowStage(runCtx, 20*time.Millisecond) })
	t.Cleanup(func() { stop(); wg.Wait() })
	require.Eventually(t, func() bool {
		procs, _, err := m.Fleet(ctx)
		return err == nil && len(procs) == 1
	}, 5*time.Second, 10*time.Millisecond)

	now := time.Now()
	st, err := json.Marshal(jobstore.FollowStats{Events: 1, Synced: 1, Changed: 1, LagP50: time.Millisecond, LagP99: time.Millisecond, LastLegacyWrite: now})
	require.NoError(t, err)
	require.NoError(t, rdb.HSet(ctx, "jobstore:follower",
		"f1", fmt.Sprintf(`{"checked_at_ms":%d,"stats":%s}`, now.UnixMilli(), st),
		"last_legacy_write_ms", now.UnixMilli()).Err())
	c.BackfillObserver()("records", 1, 2)
	return scrape(t, reg), c
}
