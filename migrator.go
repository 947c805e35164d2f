package jobstore

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Migrator is the operator's side of the migration: backfill, verify,
// cleanup and rollback, the shared stage and the fleet. Services and
// workers use a Store; the stepmigrate command and operators' tools use a
// Migrator. Both take the same options (the key prefix, logger, clock and
// score formula must match the services'), and the caller owns rdb.
//
// Backfill, Verify and NamespaceStats are safe to run while services and
// workers write, and concurrently with each other, except that two
// Backfills in the same direction share one checkpoint. Cleanup deletes a
// namespace only once no process uses it, which it checks from the stage.
// A Migrator is safe for concurrent use.
type Migrator struct {
	s *Store
	// hooks lets tests act at precise points of a run; nil in use.
	hooks *migrateHooks
}

// migrateHooks are the points where tests step into a run.
type migrateHooks struct {
	// beforeBatch runs before a batch of items of a phase is sent.
	beforeBatch func(phase string, items []string)
}

// NewMigrator returns a Migrator on rdb. Like New it does no I/O.
func NewMigrator(rdb redis.UniversalClient, opts ...Option) (*Migrator, error) {
	s, err := New(rdb, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w", err)
	}
	return &Migrator{s: s}, nil
}

// Stage returns the stage the Migrator acts under: the one its options
// or environment chose. Its methods that depend on the stage read the
// published one (SharedStage) where it matters.
func (m *Migrator) Stage() Stage { return m.s.Stage() }

// Batch sizes of Backfill, Verify and Cleanup.
const (
	// DefaultBatchSize is how many keys, members or fields each SCAN,
	// ZSCAN or HSCAN asks for and each script or pipeline handles, unless
	// an option says otherwise.
	DefaultBatchSize = 500
	// MaxBatchSize bounds the batch options. A batch is one script call;
	// the scripts never unpack their arguments, so the limit is not Lua's
	// (about 8,000 values) but how long one call keeps Redis busy.
	MaxBatchSize = 10_000
)

// batchSize checks a batch option: 0 means DefaultBatchSize.
func batchSize(n int) (int, error) {
	switch {
	case n == 0:
		return DefaultBatchSize, nil
	case n < 0 || n > MaxBatchSize:
		return 0, fmt.Errorf("%w: batch size %d is outside 1..%d", ErrInvalidArgument, n, MaxBatchSize)
	}
	return n, nil
}

// effectiveStage is the stage the fleet runs: the published shared stage,
// or, when none is published, the Migrator's own.
func (m *Migrator) effectiveStage(ctx context.Context) (Stage, error) {
	st, ok, err := m.s.sharedStage(ctx)
	if err != nil || !ok {
		return m.s.Stage(), err
	}
	return st, nil
}

// beforeBatch runs the test hook, if any.
func (m *Migrator) beforeBatch(phase string, items []string) {
	if m.hooks != nil && m.hooks.beforeBatch != nil {
		m.hooks.beforeBatch(phase, items)
	}
}
