package jobstore

import (
	"fmt"

	"github.com/redis/go-redis/v9"
)

// Migrator is the operator's side of the migration: backfill, verify,
// cleanup and rollback, the shared stage and the fleet. Services and
// workers use a Store; the stepmigrate command and operators' tools use a
// Migrator. Both take the same options (the key prefix, logger, clock and
// score formula must match the services'), and the caller owns rdb.
type Migrator struct {
	s *Store
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
