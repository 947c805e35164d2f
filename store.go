package jobstore

import (
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Store reads and writes jobs in Redis, in the legacy services' layout,
// and mirrors every write to the other namespace while the migration
// stage asks for it. It is safe for concurrent use by many goroutines; one
// Store per process is enough.
type Store struct {
	rdb    redis.UniversalClient
	prefix string       // WithKeyPrefix
	stage  atomic.Int32 // a Stage; see Stage and SetStage
	log    *slog.Logger
	now    func() time.Time

	formula         ScoreFormula
	window          int
	completedTTL    time.Duration
	failedTTL       time.Duration
	recordRetention time.Duration
	maxPayload      int
	shadowRatio     float64
	observe         func(op, outcome string, d time.Duration)

	stats dualWriteCounters
	reads readCounters
	pipe  pipeliner
	// running counts the writes in flight by the stage they started
	// under; see AwaitStage.
	running [len(stageNames)]atomic.Int64
	// flushed is what FollowStage has added to the fleet stats so far.
	flushMu sync.Mutex
	flushed fleetCounts
	// process names the Store in the fleet (see FollowStage).
	process string
	// passedOver remembers the jobs a claim passed over and logged, so
	// that each is logged once; passedCount bounds it (see logPassed).
	passedOver  sync.Map
	passedCount atomic.Int64
	// unsettled holds, per worker, the tokens of claims that ended in an
	// error: Redis may have applied them. The worker's next claim sends
	// them, and so gets such a job back (see ClaimJob).
	unsettledMu sync.Mutex
	unsettled   map[string][]string
	// mirrorHook, when set by tests, runs inside the mirror code paths so
	// that they can panic.
	mirrorHook func(op string)
}

// New returns a Store that uses rdb, a *redis.Client or a Sentinel
// *redis.FailoverClient. The caller owns rdb: the Store never closes it.
//
// The stage comes from WithStage or WithDualWrite when given, else from
// the environment: REDIS_DUAL_WRITE_STEPS (EnvDualWrite) and
// REDIS_STEP_MIGRATION_STAGE (EnvStage). A value New cannot read, or two
// that contradict each other, is an error naming the variables and
// values. New does no I/O.
func New(rdb redis.UniversalClient, opts ...Option) (*Store, error) {
	if rdb == nil {
		return nil, fmt.Errorf("%w: nil redis client", ErrInvalidConfig)
	}
	if _, ok := rdb.(*redis.ClusterClient); ok {
		return nil, fmt.Errorf("%w: job:<id> and jobs:pending are in different hash slots; use a single node or Sentinel", ErrClusterUnsupported)
	}
	c := defaultConfig()
	for _, o := range opts {
		o(&c)
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	var stage Stage
	if c.stage != nil {
		stage = *c.stage
	} else {
		var err error
		if stage, err = stageFromEnv(c.lookupEnv); err != nil {
			return nil, err
		}
	}
	log := c.logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{
		rdb:             rdb,
		prefix:          c.prefix,
		log:             log,
		now:             c.clock,
		formula:         c.formula,
		window:          c.window,
		completedTTL:    c.completedTTL,
		failedTTL:       c.failedTTL,
		recordRetention: c.recordRetention,
		maxPayload:      c.maxPayload,
		shadowRatio:     c.shadowRatio,
		observe:         c.observe,
		process:         processID(),
	}
	s.stage.Store(int32(stage))
	return s, nil
}

// space returns the keyspace of a namespace under the Store's prefix.
func (s *Store) space(ns Namespace) keyspace { return keyspace{prefix: s.prefix, ns: ns} }

func (s *Store) channel(name string) string { return channel(s.prefix, name) }

func nowMs(t time.Time) int64 { return t.UnixMilli() }

func secondsArg(d time.Duration) int64 { return int64(d / time.Second) }
