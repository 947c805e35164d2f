package prom

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jobstep/jobstore"
	"github.com/prometheus/client_golang/prometheus"
)

// Collector exports a Store's counters, and optionally queue sizes, the
// fleet, followers and a backfill, as Prometheus metrics. It reads the
// counters when it is scraped; nothing runs in the background. What costs
// Redis calls (queue sizes, the fleet, follower reports) is read at most
// once per refresh interval, during a scrape, and a Redis error never
// fails the scrape: the source's jobstore_collector_up is 0 and its
// metrics are left out until it reads again.
//
// A Collector is safe for concurrent use. Register it once.
type Collector struct {
	store   atomic.Pointer[jobstore.Store]
	timeout time.Duration
	latency *prometheus.HistogramVec

	queues    *source[map[jobstore.Namespace]jobstore.QueueSizes]
	fleet     *source[fleetView]
	followers *source[followerView]

	follow   atomic.Pointer[followObs]
	backfill backfillState
}

// NewCollector returns a Collector of store. store may be nil: a process
// that only runs a Migrator (a follower, the stepmigrate tool) exports
// what its options give; and a Store built with WithOpObserver(c.Observer())
// must exist after the Collector, so it is attached later with SetStore.
func NewCollector(store *jobstore.Store, opts ...Option) *Collector {
	cfg := config{timeout: DefaultRedisTimeout, buckets: DefaultLatencyBuckets}
	for _, o := range opts {
		o(&cfg)
	}
	c := &Collector{
		timeout: cfg.timeout,
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "jobstore_operation_duration_seconds",
			Help:    "Time a write operation took, from its call to its reply, by operation and outcome (ok, error, or a status such as notheld).",
			Buckets: cfg.buckets,
		}, []string{"op", "outcome"}),
	}
	c.store.Store(store)
	if cfg.queues {
		c.queues = newSource("queue_sizes", cfg.queueEvery, func(ctx context.Context) (map[jobstore.Namespace]jobstore.QueueSizes, error) {
			return readQueues(ctx, c.store.Load())
		})
	}
	if m := cfg.migrator; m != nil {
		c.fleet = newSource("fleet", cfg.migratorEvery, func(ctx context.Context) (fleetView, error) { return readFleet(ctx, m) })
		c.followers = newSource("followers", cfg.migratorEvery, func(ctx context.Context) (followerView, error) { return readFollowers(ctx, m) })
	}
	return c
}

// SetStore attaches store to the Collector, replacing the one it had. It
// is safe to call while the Collector is being scraped.
func (c *Collector) SetStore(store *jobstore.Store) { c.store.Store(store) }

// Observer returns the function to pass to jobstore.WithOpObserver: it
// records each write's latency in jobstore_operation_duration_seconds.
func (c *Collector) Observer() func(op, outcome string, d time.Duration) {
	return func(op, outcome string, d time.Duration) {
		c.latency.WithLabelValues(op, outcome).Observe(d.Seconds())
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
	c.latency.Describe(ch)
}

// Collect implements prometheus.Collector. It reads the sources that are
// due, each at most once per refresh interval and within the Redis
// timeout, side by side.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	var wg sync.WaitGroup
	if c.queues != nil {
		wg.Go(func() { c.queues.refresh(ctx) })
	}
	if c.fleet != nil {
		wg.Go(func() { c.fleet.refresh(ctx) })
		wg.Go(func() { c.followers.refresh(ctx) })
	}
	if s := c.store.Load(); s != nil {
		collectStore(ch, s)
	}
	c.latency.Collect(ch)
	c.collectFollower(ch)
	c.backfill.collect(ch)
	wg.Wait()
	if c.queues != nil {
		c.queues.collect(ch, collectQueues)
	}
	if c.fleet != nil {
		c.fleet.collect(ch, collectFleet)
		c.followers.collect(ch, collectFollowers)
	}
}

// writeOps are the operations WithOpObserver names; failure counters start
// at 0 for each, so that rates and ratios exist before the first failure.
var writeOps = []string{"submit", "claim", "start", "progress", "complete", "fail", "cancel", "recover"}

func collectStore(ch chan<- prometheus.Metric, s *jobstore.Store) {
	dw := s.DualWriteStats()
	counter(ch, descDualWriteAttempted, dw.Attempted)
	counter(ch, descDualWritePanics, dw.Panics)
	for _, op := range writeOps {
		counter(ch, descDualWriteFailed, dw.FailedByOp[op], op)
	}
	for op, n := range dw.FailedByOp {
		if !isWriteOp(op) {
			counter(ch, descDualWriteFailed, n, op)
		}
	}
	rd := s.ReadStats()
	counter(ch, descReads, rd.Reads)
	counter(ch, descReadFallbacks, rd.Fallbacks)
	counter(ch, descShadowChecks, rd.ShadowChecks)
	counter(ch, descShadowMismatches, rd.ShadowMismatches)
	stateSet(ch, descStage, s.Stage())
}

func isWriteOp(op string) bool {
	for _, w := range writeOps {
		if w == op {
			return true
		}
	}
	return false
}

// readQueues reads the queue sizes of both namespaces.
func readQueues(ctx context.Context, s *jobstore.Store) (map[jobstore.Namespace]jobstore.QueueSizes, error) {
	out := map[jobstore.Namespace]jobstore.QueueSizes{}
	if s == nil {
		return out, nil
	}
	for _, ns := range []jobstore.Namespace{jobstore.JobNamespace, jobstore.StepNamespace} {
		q, err := s.QueueSizesIn(ctx, ns)
		if err != nil {
			return nil, err
		}
		out[ns] = q
	}
	return out, nil
}

func collectQueues(ch chan<- prometheus.Metric, qs map[jobstore.Namespace]jobstore.QueueSizes) {
	for ns, q := range qs {
		n := ns.String()
		gauge(ch, descQueueJobs, float64(q.Pending), n, "pending")
		gauge(ch, descQueueJobs, float64(q.Active), n, "active")
		gauge(ch, descQueueJobs, float64(q.Completed), n, "completed")
		gauge(ch, descQueueJobs, float64(q.Failed), n, "failed")
		gauge(ch, descQueueWorkers, float64(q.Workers), n)
	}
}

// stateSet exports one series per stage, 1 for st and 0 for the others.
func stateSet(ch chan<- prometheus.Metric, d *prometheus.Desc, st jobstore.Stage, labels ...string) {
	for s := jobstore.StageLegacy; s <= jobstore.StageStepOnly; s++ {
		v := 0.0
		if s == st {
			v = 1
		}
		gauge(ch, d, v, append(labels[:len(labels):len(labels)], s.String())...)
	}
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

// timestamp exports t as Unix seconds, or nothing when t is zero.
func timestamp(ch chan<- prometheus.Metric, d *prometheus.Desc, t time.Time, labels ...string) {
	if !t.IsZero() {
		gauge(ch, d, float64(t.UnixNano())/1e9, labels...)
	}
}
