package prom_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jobstep/jobstore"
	"github.com/jobstep/jobstore/x/prom"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

var ctx = context.Background()

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newRedis(t *testing.T) (*miniredis.Miniredis, *redis.Client) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	return mr, rdb
}

func newStore(t *testing.T, rdb redis.UniversalClient, opts ...jobstore.Option) *jobstore.Store {
	t.Helper()
	s, err := jobstore.New(rdb, opts...)
	require.NoError(t, err)
	return s
}

// families is one scrape, by metric name.
type families map[string]*dto.MetricFamily

// scrape registers nothing: it GETs /metrics of reg through promhttp, as
// Prometheus does, and fails the test unless the answer is a 200.
func scrape(t *testing.T, reg *prometheus.Registry) families {
	t.Helper()
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.HTTPErrorOnError}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode, "the scrape succeeds")
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	require.NoError(t, err)
	return mfs
}

// find returns the series of name whose labels include want, or nil.
func (f families) find(name string, want map[string]string) *dto.Metric {
	mf := f[name]
	if mf == nil {
		return nil
	}
next:
	for _, m := range mf.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		return m
	}
	return nil
}

// value returns the value of a counter or gauge series, failing the test
// if there is none or the type is not typ.
func (f families) value(t *testing.T, typ dto.MetricType, name string, labels ...string) float64 {
	t.Helper()
	mf := f[name]
	require.NotNil(t, mf, "metric %s is exported", name)
	require.Equal(t, typ, mf.GetType(), "type of %s", name)
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	m := f.find(name, want)
	require.NotNil(t, m, "%s%v is exported", name, want)
	if typ == dto.MetricType_COUNTER {
		return m.GetCounter().GetValue()
	}
	return m.GetGauge().GetValue()
}

func (f families) counter(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	return f.value(t, dto.MetricType_COUNTER, name, labels...)
}

func (f families) gauge(t *testing.T, name string, labels ...string) float64 {
	t.Helper()
	return f.value(t, dto.MetricType_GAUGE, name, labels...)
}

// labelNames returns the label names of name's series, sorted.
func (f families) labelNames(name string) []string {
	set := map[string]bool{}
	for _, m := range f[name].GetMetric() {
		for _, l := range m.GetLabel() {
			set[l.GetName()] = true
		}
	}
	var out []string
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// TestStoreMetrics runs a job's life on a dual-writing Store whose mirror
// fails once, reads through fallbacks and shadow checks, and checks what a
// scrape through promhttp shows.
func TestStoreMetrics(t *testing.T) {
	mr, rdb := newRedis(t)
	c := prom.NewCollector(nil, prom.WithQueueSizes(50*time.Millisecond))
	s := newStore(t, rdb, jobstore.WithDualWrite(true), jobstore.WithShadowReads(1), jobstore.WithOpObserver(c.Observer()))
	c.SetStore(s)
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))

	// A key of the wrong type where the completion's mirror writes.
	require.NoError(t, rdb.Set(ctx, "steps:completed", "oops", 0).Err())
	done, err := s.SubmitJob(ctx, jobstore.Job{Service: "comfyui", Priority: 60})
	require.NoError(t, err)
	pending, err := s.SubmitJob(ctx, jobstore.Job{Service: "other"})
	require.NoError(t, err)
	caps := jobstore.Capabilities{WorkerID: "w1", Services: []string{"comfyui"}}
	require.NoError(t, s.RegisterWorker(ctx, caps))
	j, err := s.ClaimJob(ctx, caps)
	require.NoError(t, err)
	require.Equal(t, done, j.ID)
	require.NoError(t, s.StartJob(ctx, done, "w1"))
	require.NoError(t, s.CompleteJob(ctx, done, "w1", json.RawMessage(`{"url":"x"}`)))
	require.ErrorIs(t, s.CompleteJob(ctx, done, "w1", nil), jobstore.ErrNotHeld)

	// Shadow reads: one copy equal, one made to differ.
	_, err = s.GetJob(ctx, pending)
	require.NoError(t, err)
	require.NoError(t, rdb.HSet(ctx, "step:"+done, "status", "bogus").Err())
	_, err = s.GetJob(ctx, done)
	require.NoError(t, err)

	dw := s.DualWriteStats()
	require.Equal(t, uint64(1), dw.Failed, "the completion's mirror failed")

	f := scrape(t, reg)
	require.Equal(t, float64(dw.Attempted), f.counter(t, "jobstore_dual_write_attempted_total"))
	require.GreaterOrEqual(t, dw.Attempted, uint64(4), "two submits, a claim, a start and a completion mirrored")
	require.Equal(t, 1.0, f.counter(t, "jobstore_dual_write_failed_total", "op", "complete"))
	for _, op := range []string{"submit", "claim", "start", "progress", "fail", "cancel", "recover"} {
		require.Zero(t, f.counter(t, "jobstore_dual_write_failed_total", "op", op), "op %s starts at 0", op)
	}
	require.Zero(t, f.counter(t, "jobstore_dual_write_panics_total"))
	require.Equal(t, 2.0, f.counter(t, "jobstore_read_records_total"))
	require.Equal(t, 2.0, f.counter(t, "jobstore_read_shadow_checks_total"))
	require.Equal(t, 1.0, f.counter(t, "jobstore_read_shadow_mismatches_total"))
	require.Zero(t, f.counter(t, "jobstore_read_fallbacks_total"))
	for st := jobstore.StageLegacy; st <= jobstore.StageStepOnly; st++ {
		want := 0.0
		if st == jobstore.StageDualWrite {
			want = 1
		}
		require.Equal(t, want, f.gauge(t, "jobstore_stage", "stage", st.String()), "stage %s", st)
	}
	require.Equal(t, []string{"stage"}, f.labelNames("jobstore_stage"))
	require.Equal(t, []string{"op"}, f.labelNames("jobstore_dual_write_failed_total"))

	// Latency: one series per operation and outcome, counted once per call.
	h := f["jobstore_operation_duration_seconds"]
	require.NotNil(t, h)
	require.Equal(t, dto.MetricType_HISTOGRAM, h.GetType())
	require.Equal(t, []string{"op", "outcome"}, f.labelNames("jobstore_operation_duration_seconds"))
	for _, c := range []struct {
		op, outcome string
		n           uint64
	}{{"submit", "ok", 2}, {"claim", "ok", 1}, {"start", "ok", 1}, {"complete", "ok", 1}, {"complete", "notheld", 1}} {
		m := f.find("jobstore_operation_duration_seconds", map[string]string{"op": c.op, "outcome": c.outcome})
		require.NotNil(t, m, "%s/%s", c.op, c.outcome)
		require.Equal(t, c.n, m.GetHistogram().GetSampleCount(), "%s/%s", c.op, c.outcome)
		require.Positive(t, m.GetHistogram().GetSampleSum())
	}

	// The queue sizes of step:* cannot be read while steps:completed is a
	// string: the scrape still succeeds, and says so.
	require.Zero(t, f.gauge(t, "jobstore_collector_up", "source", "queue_sizes"))
	require.Equal(t, 1.0, f.counter(t, "jobstore_collector_errors_total", "source", "queue_sizes"))
	require.Nil(t, f["jobstore_queue_jobs"], "no sizes while they cannot be read")

	mr.Del("steps:completed")
	time.Sleep(60 * time.Millisecond) // the refresh interval
	f = scrape(t, reg)
	require.Equal(t, 1.0, f.gauge(t, "jobstore_collector_up", "source", "queue_sizes"))
	require.Equal(t, 1.0, f.counter(t, "jobstore_collector_errors_total", "source", "queue_sizes"))
	for _, c := range []struct {
		ns, queue string
		n         float64
	}{
		{"job", "pending", 1}, {"job", "active", 0}, {"job", "completed", 1}, {"job", "failed", 0},
		{"step", "pending", 1}, {"step", "active", 0}, {"step", "completed", 0}, {"step", "failed", 0},
	} {
		require.Equal(t, c.n, f.gauge(t, "jobstore_queue_jobs", "namespace", c.ns, "queue", c.queue), "%s %s", c.ns, c.queue)
	}
	require.Equal(t, []string{"namespace", "queue"}, f.labelNames("jobstore_queue_jobs"))
	require.Zero(t, f.gauge(t, "jobstore_queue_workers", "namespace", "job"))

	// Dual-read: a job the step side lacks is read from job:*.
	require.NoError(t, s.SetStage(jobstore.StageDualRead))
	mr.Del("step:" + pending)
	_, err = s.GetJob(ctx, pending)
	require.NoError(t, err)
	f = scrape(t, reg)
	require.Equal(t, 1.0, f.counter(t, "jobstore_read_fallbacks_total"))
	require.Equal(t, 1.0, f.gauge(t, "jobstore_stage", "stage", "dual-read"))
	require.Zero(t, f.gauge(t, "jobstore_stage", "stage", "dual-write"))

	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	require.Empty(t, problems)
}

// TestQueueSizesCached: queue sizes are read at most once per interval,
// and a failed read is not retried before the interval is over either.
func TestQueueSizesCached(t *testing.T) {
	mr, rdb := newRedis(t)
	s := newStore(t, rdb, jobstore.WithDualWrite(false))
	c := prom.NewCollector(s, prom.WithQueueSizes(time.Hour))
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))

	_, err := s.SubmitJob(ctx, jobstore.Job{Service: "svc"})
	require.NoError(t, err)
	f := scrape(t, reg)
	require.Equal(t, 1.0, f.gauge(t, "jobstore_queue_jobs", "namespace", "job", "queue", "pending"))
	require.Equal(t, 0.0, f.gauge(t, "jobstore_queue_jobs", "namespace", "step", "queue", "pending"), "both namespaces, whatever the stage")

	_, err = s.SubmitJob(ctx, jobstore.Job{Service: "svc"})
	require.NoError(t, err)
	before := mr.CommandCount()
	f = scrape(t, reg)
	require.Equal(t, before, mr.CommandCount(), "a scrape within the interval calls Redis not at all")
	require.Equal(t, 1.0, f.gauge(t, "jobstore_queue_jobs", "namespace", "job", "queue", "pending"), "the cached size")

	// A failed read is cached too.
	mr.SetError("LOADING Redis is loading the dataset in memory")
	c2 := prom.NewCollector(s, prom.WithQueueSizes(time.Hour))
	reg2 := prometheus.NewPedanticRegistry()
	require.NoError(t, reg2.Register(c2))
	for range 3 {
		f = scrape(t, reg2)
	}
	require.Zero(t, f.gauge(t, "jobstore_collector_up", "source", "queue_sizes"))
	require.Equal(t, 1.0, f.counter(t, "jobstore_collector_errors_total", "source", "queue_sizes"), "read once in three scrapes")
}

// TestRedisDown: with Redis gone, the scrape still succeeds; every source
// that reads Redis says it is down, and the Store's counters are there.
func TestRedisDown(t *testing.T) {
	mr, rdb := newRedis(t)
	s := newStore(t, rdb, jobstore.WithDualWrite(true))
	m, err := jobstore.NewMigrator(rdb, jobstore.WithDualWrite(true))
	require.NoError(t, err)
	c := prom.NewCollector(s, prom.WithQueueSizes(time.Nanosecond), prom.WithMigrator(m, time.Nanosecond),
		prom.WithRedisTimeout(300*time.Millisecond))
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	_, err = s.SubmitJob(ctx, jobstore.Job{Service: "svc"})
	require.NoError(t, err)

	f := scrape(t, reg)
	for _, src := range []string{"queue_sizes", "fleet", "followers"} {
		require.Equal(t, 1.0, f.gauge(t, "jobstore_collector_up", "source", src), src)
	}
	mr.Close()
	start := time.Now()
	for range 2 {
		f = scrape(t, reg)
	}
	require.Less(t, time.Since(start), 2*time.Second, "each scrape ends within the Redis timeout")
	for _, src := range []string{"queue_sizes", "fleet", "followers"} {
		require.Zero(t, f.gauge(t, "jobstore_collector_up", "source", src), src)
		require.Equal(t, 2.0, f.counter(t, "jobstore_collector_errors_total", "source", src), src)
	}
	require.Equal(t, 1.0, f.counter(t, "jobstore_dual_write_attempted_total"))
	require.Equal(t, 1.0, f.gauge(t, "jobstore_stage", "stage", "dual-write"))
	require.Nil(t, f["jobstore_queue_jobs"])
	require.Nil(t, f["jobstore_fleet_process_stage"])
	require.Nil(t, f["jobstore_published_stage"])
}

// TestMigrationMetrics: the fleet and published stage, follower reports
// read from Redis, a follower in this process, and a backfill's progress.
func TestMigrationMetrics(t *testing.T) {
	_, rdb := newRedis(t)
	m, err := jobstore.NewMigrator(rdb, jobstore.WithDualWrite(true))
	require.NoError(t, err)
	require.NoError(t, m.PublishStage(ctx, jobstore.StageDualWrite, jobstore.PublishOptions{}))
	c := prom.NewCollector(nil, prom.WithMigrator(m, time.Nanosecond))
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))

	// A process in the fleet.
	s := newStore(t, rdb, jobstore.WithDualWrite(true))
	runCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.FollowStage(runCtx, 20*time.Millisecond) })
	defer func() { stop(); wg.Wait() }()
	var proc jobstore.Process
	require.Eventually(t, func() bool {
		procs, _, err := m.Fleet(ctx)
		if err != nil || len(procs) != 1 {
			return false
		}
		proc = procs[0]
		return true
	}, 5*time.Second, 10*time.Millisecond)

	// Two followers' reports, as followers write them: one current, one
	// that stopped long ago.
	now := time.Now()
	lastLegacy := now.Add(-3 * time.Second).Truncate(time.Millisecond)
	report := func(at time.Time, st jobstore.FollowStats) string {
		b, err := json.Marshal(st)
		require.NoError(t, err)
		return fmt.Sprintf(`{"checked_at_ms":%d,"stats":%s}`, at.UnixMilli(), b)
	}
	require.NoError(t, rdb.HSet(ctx, "jobstore:follower",
		"f-live", report(now, jobstore.FollowStats{Events: 40, Synced: 30, Changed: 7, Backlog: 3, Sweeps: 2, Restarts: 1,
			LagP50: 25 * time.Millisecond, LagP99: 400 * time.Millisecond, LastLegacyWrite: lastLegacy}),
		"f-gone", report(now.Add(-time.Hour), jobstore.FollowStats{Events: 1}),
		"last_legacy_write_ms", lastLegacy.UnixMilli()).Err())

	// A follower in this process, and a backfill.
	c.FollowerObserver()(jobstore.FollowStats{Events: 5, Synced: 4, Changed: 1, LagP50: 20 * time.Millisecond, LagP99: 90 * time.Millisecond})
	obs := c.BackfillObserver()
	obs("records", 100, 100)
	obs("queues", 3, -1)

	f := scrape(t, reg)
	require.Equal(t, 1.0, f.gauge(t, "jobstore_fleet_process_stage", "process", proc.ID, "stage", "dual-write"))
	require.Zero(t, f.gauge(t, "jobstore_fleet_process_stage", "process", proc.ID, "stage", "legacy"))
	require.Len(t, f["jobstore_fleet_process_stage"].GetMetric(), int(jobstore.StageStepOnly)+1)
	require.InDelta(t, float64(proc.CheckedAt.UnixNano())/1e9,
		f.gauge(t, "jobstore_fleet_process_checkin_timestamp_seconds", "process", proc.ID), 1)
	require.Zero(t, f.gauge(t, "jobstore_fleet_unreadable_checkins"))
	require.Equal(t, 1.0, f.gauge(t, "jobstore_published_stage", "stage", "dual-write"))
	require.Zero(t, f.gauge(t, "jobstore_published_stage", "stage", "dual-read"))

	require.Equal(t, 40.0, f.counter(t, "jobstore_follower_events_total", "follower", "f-live"))
	require.Equal(t, 30.0, f.counter(t, "jobstore_follower_synced_total", "follower", "f-live"))
	require.Equal(t, 7.0, f.counter(t, "jobstore_follower_changed_total", "follower", "f-live"))
	require.Equal(t, 2.0, f.counter(t, "jobstore_follower_sweeps_total", "follower", "f-live"))
	require.Equal(t, 1.0, f.counter(t, "jobstore_follower_restarts_total", "follower", "f-live"))
	require.Equal(t, 3.0, f.gauge(t, "jobstore_follower_backlog_jobs", "follower", "f-live"))
	require.Equal(t, 0.025, f.gauge(t, "jobstore_follower_lag_p50_seconds", "follower", "f-live"))
	require.Equal(t, 0.4, f.gauge(t, "jobstore_follower_lag_p99_seconds", "follower", "f-live"))
	require.InDelta(t, float64(lastLegacy.UnixMilli())/1e3,
		f.gauge(t, "jobstore_follower_last_legacy_write_timestamp_seconds", "follower", "f-live"), 1e-3)
	require.InDelta(t, float64(lastLegacy.UnixMilli())/1e3, f.gauge(t, "jobstore_legacy_last_write_timestamp_seconds"), 1e-3)
	require.Nil(t, f.find("jobstore_follower_events_total", map[string]string{"follower": "f-gone"}), "stale reports are left out")

	require.Equal(t, 5.0, f.counter(t, "jobstore_follower_events_total", "follower", prom.LocalFollower))
	require.Equal(t, 0.09, f.gauge(t, "jobstore_follower_lag_p99_seconds", "follower", prom.LocalFollower))
	require.Nil(t, f.find("jobstore_follower_last_legacy_write_timestamp_seconds", map[string]string{"follower": prom.LocalFollower}),
		"no legacy write yet: no timestamp")
	require.InDelta(t, float64(time.Now().Unix()), f.gauge(t, "jobstore_follower_last_report_timestamp_seconds", "follower", prom.LocalFollower), 5)

	require.Equal(t, 1.0, f.gauge(t, "jobstore_backfill_phase", "phase", "queues"))
	require.Zero(t, f.gauge(t, "jobstore_backfill_phase", "phase", "records"))
	require.Equal(t, 100.0, f.gauge(t, "jobstore_backfill_done_items", "phase", "records"))
	require.Equal(t, 100.0, f.gauge(t, "jobstore_backfill_expected_items", "phase", "records"))
	require.Equal(t, 3.0, f.gauge(t, "jobstore_backfill_done_items", "phase", "queues"))
	require.Nil(t, f.find("jobstore_backfill_expected_items", map[string]string{"phase": "queues"}), "unknown total: absent")
	require.InDelta(t, float64(time.Now().Unix()), f.gauge(t, "jobstore_backfill_last_progress_timestamp_seconds"), 5)

	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	require.Empty(t, problems)
}

// TestNothingConfigured: a Collector with no Store and no option exports
// nothing but an empty histogram, and lints clean.
func TestNothingConfigured(t *testing.T) {
	c := prom.NewCollector(nil)
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	f := scrape(t, reg)
	require.Empty(t, f)
	problems, err := testutil.CollectAndLint(c)
	require.NoError(t, err)
	require.Empty(t, problems)
}

// TestEveryDescribedMetricIsExported: a Collector with everything turned on
// exports each metric it describes, so that the README and the dashboard
// test see them all.
func TestEveryDescribedMetricIsExported(t *testing.T) {
	f, _ := fullScrape(t)
	ch := make(chan *prometheus.Desc, 100)
	prom.NewCollector(nil).Describe(ch)
	close(ch)
	n := 0
	for d := range ch {
		name := descName(d)
		require.Contains(t, f, name, "described and exported")
		n++
	}
	require.Equal(t, n, len(f), "exported and described")
}

// descName reads a Desc's name from its String form, the only way the
// client library shows it.
func descName(d *prometheus.Desc) string {
	s := d.String()
	const key = `fqName: "`
	i := strings.Index(s, key)
	if i < 0 {
		return ""
	}
	s = s[i+len(key):]
	return s[:strings.IndexByte(s, '"')]
}
