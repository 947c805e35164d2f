package prom

import (
	"time"

	"github.com/jobstep/jobstore"
)

// Defaults of the options.
const (
	// DefaultRefreshInterval is how often, at most, the sources that cost
	// Redis calls are read: queue sizes and the Migrator's fleet and
	// follower reports. Scrapes in between export what was read last.
	DefaultRefreshInterval = 30 * time.Second
	// DefaultRedisTimeout bounds the Redis reads of one scrape.
	DefaultRedisTimeout = 5 * time.Second
)

// DefaultLatencyBuckets are the buckets of
// jobstore_operation_duration_seconds, from 250µs to 2.5s: a write is one
// script run, normally well under 10ms.
var DefaultLatencyBuckets = []float64{.00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5}

// Option configures NewCollector. Options are applied in order; a later one
// wins.
type Option func(*config)

type config struct {
	timeout       time.Duration
	buckets       []float64
	queues        bool
	queueEvery    time.Duration
	migrator      *jobstore.Migrator
	migratorEvery time.Duration
}

// WithQueueSizes exports jobstore_queue_jobs and jobstore_queue_workers of
// both namespaces, read with the Collector's Store (Store.QueueSizesIn) at
// most once per every (DefaultRefreshInterval when 0 or less). Each read
// SCANs the keyspace for the active hashes, so keep every long on a large
// keyspace and turn it on in one process, not in every replica.
func WithQueueSizes(every time.Duration) Option {
	return func(c *config) { c.queues, c.queueEvery = true, orDefault(every) }
}

// WithMigrator exports the fleet (Migrator.Fleet: the stage of every
// process that runs FollowStage), the published stage, and every
// follower's last report (Migrator.FollowerReports), read at most once
// per every (DefaultRefreshInterval when 0 or less). These describe the
// whole fleet, so give it to one Collector only (the operator's process or
// one designated replica), or dashboards see each process once per
// exporter.
func WithMigrator(m *jobstore.Migrator, every time.Duration) Option {
	return func(c *config) { c.migrator, c.migratorEvery = m, orDefault(every) }
}

// WithRedisTimeout bounds the Redis reads of one scrape; DefaultRedisTimeout
// when 0 or less. A source that does not answer in time counts as down for
// that scrape.
func WithRedisTimeout(d time.Duration) Option {
	return func(c *config) {
		if d <= 0 {
			d = DefaultRedisTimeout
		}
		c.timeout = d
	}
}

// WithLatencyBuckets sets the buckets of jobstore_operation_duration_seconds,
// in seconds; DefaultLatencyBuckets when empty.
func WithLatencyBuckets(b []float64) Option {
	return func(c *config) {
		if len(b) == 0 {
			b = DefaultLatencyBuckets
		}
		c.buckets = b
	}
}

func orDefault(every time.Duration) time.Duration {
	if every <= 0 {
		return DefaultRefreshInterval
	}
	return every
}
