package jobstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Store reads and writes job records and queues in Redis. It is safe for
// concurrent use by many goroutines; one Store per process is enough.
type Store struct {
	rdb    redis.UniversalClient
	prefix string       // WithKeyPrefix
	stage  atomic.Int32 // a Stage; see Stage and SetStage
	log    *slog.Logger
	now    func() time.Time

	lease              time.Duration
	completedRetention time.Duration
	failedRetention    time.Duration
	maxPayload         int

	stats    dualWriteCounters
	reads    readCounters
	coalesce coalescer // SubmitJob calls written together
	// running counts the writing operations in flight by the stage they
	// started under; see AwaitStage.
	running [len(stageNames)]atomic.Int64
	// flushed is what FollowStage has added to the fleet stats so far.
	flushMu sync.Mutex
	flushed fleetCounts
	// shadowRatio is the share of plain reads checked against the other
	// namespace; see WithShadowReads.
	shadowRatio float64
	// mirrorHook, when set by tests, runs inside the mirror code paths so
	// that they can panic.
	mirrorHook func(op string)
}

// How ClaimJob and the maintenance calls walk the queues.
const (
	claimBatchFirst  = 8     // candidates in ClaimJob's first round trip
	claimBatchMax    = 128   // candidates per round trip later, doubling up to this
	claimScanLimit   = 10000 // candidates ClaimJob looks at before ErrNoJob
	maintenanceBatch = 100   // entries per RecoverExpired / TrimRetention script
)

// New returns a Store that uses rdb, a *redis.Client or a Sentinel
// *redis.FailoverClient. The caller owns rdb: the Store never closes it.
//
// Dual-write follows WithDualWrite when given, else the environment
// variable REDIS_DUAL_WRITE_STEPS (see EnvDualWrite). A value New cannot
// read is an error naming the variable and the value. New does no I/O.
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
		rdb:                rdb,
		prefix:             c.prefix,
		log:                log,
		now:                c.clock,
		lease:              c.lease,
		completedRetention: c.completedRetention,
		failedRetention:    c.failedRetention,
		maxPayload:         c.maxPayload,
		shadowRatio:        c.shadowRatio,
	}
	s.stage.Store(int32(stage))
	return s, nil
}

// newID returns a random UUID (version 4), the form existing ids take.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}

func ms(t time.Time) int64 { return t.UnixMilli() }

func ttlArg(d time.Duration) int64 { return d.Milliseconds() }

// GetJob returns the job with the given id, or an error wrapping
// ErrJobNotFound when there is none, or ErrCorruptRecord when its record
// cannot be read. It reads the stage's read namespace (see Stage.Reads).
func (s *Store) GetJob(ctx context.Context, id string) (*Job, error) {
	if err := validateID(id); err != nil {
		return nil, err
	}
	hs, err := s.readRecords(ctx, s.Stage(), []string{id})
	if err != nil {
		return nil, err
	}
	if len(hs[0]) == 0 {
		return nil, fmt.Errorf("%w: id=%q", ErrJobNotFound, id)
	}
	return decodeJob(id, hs[0])
}

// GetPendingJobs returns up to limit pending jobs in the order ClaimJob
// would take them. Queue entries whose record is gone are passed over. It
// reads the stage's read namespace; in dual-read, a steps:pending that
// does not exist yet falls back to jobs:pending.
func (s *Store) GetPendingJobs(ctx context.Context, limit int) ([]*Job, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("%w: limit %d must be positive", ErrInvalidArgument, limit)
	}
	st := s.Stage()
	pending := s.space(st.Reads()).queue(QueuePending)
	if st.readsFallBack() {
		n, err := s.rdb.Exists(ctx, pending).Result()
		if err != nil {
			return nil, redisError("list pending", "", err)
		}
		if n == 0 {
			pending = s.space(JobNamespace).queue(QueuePending)
			s.reads.fallbacks.Add(1)
		}
	}
	jobs := make([]*Job, 0, min(limit, 1000))
	for offset := int64(0); len(jobs) < limit; {
		want := int64(limit - len(jobs))
		ids, err := s.rdb.ZRevRange(ctx, pending, offset, offset+want-1).Result()
		if err != nil {
			return nil, redisError("list pending", "", err)
		}
		if len(ids) == 0 {
			break
		}
		offset += int64(len(ids))
		valid := ids[:0:0]
		for _, id := range ids {
			if validateID(id) != nil {
				s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: invalid id in pending queue, passed over",
					slog.String("queue", pending), slog.String("id", id))
				continue
			}
			valid = append(valid, id)
		}
		hs, err := s.readRecords(ctx, st, valid)
		if err != nil {
			return nil, err
		}
		for i, h := range hs {
			if len(h) == 0 {
				continue
			}
			j, err := decodeJob(valid[i], h)
			if err != nil {
				return nil, err
			}
			jobs = append(jobs, j)
		}
		if int64(len(ids)) < want {
			break
		}
	}
	return jobs, nil
}

// CancelJob cancels a job that has not finished, whether pending or held
// by a worker; the worker's later CompleteJob or FailJob gets ErrNotHeld.
// A finished job gives ErrJobFinished. The record is kept for the failed
// retention.
func (s *Store) CancelJob(ctx context.Context, id string) error {
	st, end := s.begin()
	defer end()
	if err := validateID(id); err != nil {
		return err
	}
	r, err := s.exec(ctx, st, "cancel", id, cancelScript,
		[]keyRef{recordRef(id), queueRef(QueuePending), queueRef(QueueActive)},
		id, formatTime(s.now()), ttlArg(s.failedRetention))
	if err != nil {
		return err
	}
	if r.status == "FINISHED" {
		return fmt.Errorf("%w: id=%q has status %s", ErrJobFinished, id, r.str(0))
	}
	return s.statusError("cancel", id, r)
}

// ClaimJob gives workerID the highest-priority, oldest pending job whose
// service is one of services (any service when none are given), and holds
// it for the lease duration. When no job matches it returns an error
// wrapping ErrNoJob.
//
// Each claim is atomic: two workers never hold the same job. ClaimJob
// looks at candidates in claim order, a page at a time; entries whose
// record is gone are removed from the queue as it goes, so they never
// block the jobs behind them. It gives up with ErrNoJob after looking at
// 10,000 candidates of other services.
func (s *Store) ClaimJob(ctx context.Context, workerID string, services ...string) (*Job, error) {
	if err := validateWorker(workerID); err != nil {
		return nil, err
	}
	for _, svc := range services {
		if err := validateService(svc); err != nil {
			return nil, err
		}
	}
	st, end := s.begin()
	defer end()
	pending := s.space(st.Primary()).queue(QueuePending)
	batch := int64(claimBatchFirst)
	for offset, scanned := int64(0), 0; scanned < claimScanLimit; batch = min(2*batch, claimBatchMax) {
		ids, err := s.rdb.ZRevRange(ctx, pending, offset, offset+batch-1).Result()
		if err != nil {
			return nil, redisError("claim", "", err)
		}
		if len(ids) == 0 {
			break
		}
		scanned += len(ids)
		refs := make([]keyRef, 0, 2+len(ids))
		refs = append(refs, queueRef(QueuePending), queueRef(QueueActive))
		now := s.now()
		args := make([]any, 0, 5+len(services)+len(ids))
		args = append(args, workerID, ms(now), formatTime(now), ms(now.Add(s.lease)), len(services))
		for _, svc := range services {
			args = append(args, svc)
		}
		var invalid int64
		for _, id := range ids {
			if validateID(id) != nil {
				invalid++
				s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: invalid id in pending queue, passed over",
					slog.String("queue", pending), slog.String("id", id))
				continue
			}
			refs = append(refs, recordRef(id))
			args = append(args, id)
		}
		r := reply{status: "NONE", data: []any{int64(0)}}
		if len(refs) > 2 {
			if r, err = s.exec(ctx, st, "claim", "", claimScript, refs, args...); err != nil {
				return nil, err
			}
		}
		switch r.status {
		case "OK":
			id := r.str(0)
			s.logNotes(ctx, r.list(2))
			j, err := decodePairs(id, r.list(1))
			if err != nil {
				// The claim stands: the job stays held by this worker
				// until its lease expires, then retries like any other.
				return nil, fmt.Errorf("claimed, but cannot read the record: %w", err)
			}
			return j, nil
		case "NONE":
			s.logNotes(ctx, r.list(1))
			// Entries passed over stay in the queue; the next page
			// starts after them. Entries that vanished were claimed by
			// other workers or were orphans: what moved up into their
			// places has not been looked at yet.
			passed := r.int(0) + invalid
			offset += passed
			if int64(len(ids)) < batch && passed == int64(len(ids)) {
				return nil, noJob(services)
			}
		default:
			return nil, s.statusError("claim", "", r)
		}
	}
	return nil, noJob(services)
}

func noJob(services []string) error {
	if len(services) > 0 {
		return fmt.Errorf("%w: services=%q", ErrNoJob, services)
	}
	return ErrNoJob
}

// logNotes logs what a claim did to entries it could not claim.
func (s *Store) logNotes(ctx context.Context, notes []any) {
	for _, n := range notes {
		s.log.LogAttrs(ctx, slog.LevelWarn, fmt.Sprintf("jobstore: claim %v", n))
	}
}

// StartJob marks a job the worker holds as in progress and records
// started_at. Calling it is optional: a claimed job can be completed or
// failed directly.
func (s *Store) StartJob(ctx context.Context, id, workerID string) error {
	st, end := s.begin()
	defer end()
	if err := validateHeld(id, workerID); err != nil {
		return err
	}
	r, err := s.exec(ctx, st, "start", id, startScript,
		[]keyRef{recordRef(id), queueRef(QueueActive)},
		id, workerID, formatTime(s.now()))
	if err != nil {
		return err
	}
	return s.statusError("start", id, r)
}

// ExtendLease moves the lease deadline of a job the worker holds to d from
// now (the configured lease duration when d <= 0) and returns the new
// deadline. A worker that lost its lease gets ErrNotHeld.
func (s *Store) ExtendLease(ctx context.Context, id, workerID string, d time.Duration) (time.Time, error) {
	st, end := s.begin()
	defer end()
	if err := validateHeld(id, workerID); err != nil {
		return time.Time{}, err
	}
	if d <= 0 {
		d = s.lease
	}
	deadline := s.now().Add(d)
	r, err := s.exec(ctx, st, "extend", id, extendScript,
		[]keyRef{recordRef(id), queueRef(QueueActive)},
		id, workerID, ms(deadline))
	if err != nil {
		return time.Time{}, err
	}
	if err := s.statusError("extend", id, r); err != nil {
		return time.Time{}, err
	}
	return time.UnixMilli(ms(deadline)), nil
}

// CompleteJob marks a job the worker holds as completed, with an optional
// JSON result, and starts its retention. A worker that does not hold the
// job gets ErrNotHeld and nothing changes.
func (s *Store) CompleteJob(ctx context.Context, id, workerID string, result json.RawMessage) error {
	st, end := s.begin()
	defer end()
	if err := validateHeld(id, workerID); err != nil {
		return err
	}
	if len(result) > 0 {
		if err := validateJSON("result", result, s.maxPayload); err != nil {
			return err
		}
	}
	now := s.now()
	r, err := s.exec(ctx, st, "complete", id, completeScript,
		[]keyRef{recordRef(id), queueRef(QueueActive), queueRef(QueueCompleted)},
		id, workerID, ms(now), formatTime(now), ttlArg(s.completedRetention), string(result))
	if err != nil {
		return err
	}
	return s.statusError("complete", id, r)
}

// FailJob records that the worker failed the job it holds. While the job's
// retry_count is below its max_retries it goes back to pending with
// retry_count+1, in its original place; after that it is marked failed and
// its retention starts. A worker that does not hold the job gets
// ErrNotHeld and nothing changes.
func (s *Store) FailJob(ctx context.Context, id, workerID, reason string) error {
	st, end := s.begin()
	defer end()
	if err := validateHeld(id, workerID); err != nil {
		return err
	}
	if err := validateText("reason", reason, s.maxPayload); err != nil {
		return err
	}
	now := s.now()
	r, err := s.exec(ctx, st, "fail", id, failScript,
		[]keyRef{recordRef(id), queueRef(QueueActive), queueRef(QueuePending), queueRef(QueueFailed)},
		id, workerID, reason, ms(now), formatTime(now), ttlArg(s.failedRetention))
	if err != nil {
		return err
	}
	return s.statusError("fail", id, r)
}

// RecoveryStats says what RecoverExpired did.
type RecoveryStats struct {
	Requeued int // jobs put back to pending with retry_count+1
	Failed   int // jobs marked failed because their retries were used up
	Dropped  int // active entries whose record was gone or already finished
}

// RecoverExpired finds jobs whose lease ran out, as when a worker crashed,
// and moves each on as FailJob would, with the reason "lease expired". Run
// it periodically from one or more processes (Maintain does); concurrent
// runs are safe, as each job is moved atomically and only once.
func (s *Store) RecoverExpired(ctx context.Context) (RecoveryStats, error) {
	var rs RecoveryStats
	st, end := s.begin()
	defer end()
	active := s.space(st.Primary()).queue(QueueActive)
	for offset := int64(0); ; {
		now := s.now()
		ids, err := s.rdb.ZRangeByScore(ctx, active, &redis.ZRangeBy{
			Min: "-inf", Max: strconv.FormatInt(ms(now), 10), Offset: offset, Count: maintenanceBatch,
		}).Result()
		if err != nil {
			return rs, redisError("recover", "", err)
		}
		if len(ids) == 0 {
			return rs, nil
		}
		refs := []keyRef{queueRef(QueueActive), queueRef(QueuePending), queueRef(QueueFailed)}
		args := []any{ms(now), formatTime(now), ttlArg(s.failedRetention), "lease expired"}
		for _, id := range ids {
			if validateID(id) != nil {
				offset++
				continue
			}
			refs = append(refs, recordRef(id))
			args = append(args, id)
		}
		if len(refs) > 3 {
			r, err := s.exec(ctx, st, "recover", "", recoverScript, refs, args...)
			if err != nil {
				return rs, err
			}
			if err := s.statusError("recover", "", r); err != nil {
				return rs, err
			}
			moved := int(r.int(0) + r.int(1) + r.int(2))
			rs.Requeued += int(r.int(0))
			rs.Failed += int(r.int(1))
			rs.Dropped += int(r.int(2))
			// Entries left in place (corrupt records) are stepped over.
			offset += int64(len(refs) - 3 - moved)
		}
		if len(ids) < maintenanceBatch {
			return rs, nil
		}
	}
}

// TrimRetention ends the retention of completed and failed jobs: entries
// older than their retention leave jobs:completed and jobs:failed, and
// their records are deleted if they have not expired already. It returns
// how many entries it removed.
func (s *Store) TrimRetention(ctx context.Context) (int, error) {
	total := 0
	st, end := s.begin()
	defer end()
	for _, t := range []struct {
		q         Queue
		status    Status
		retention time.Duration
	}{
		{QueueCompleted, StatusCompleted, s.completedRetention},
		{QueueFailed, StatusFailed, s.failedRetention},
	} {
		if t.retention <= 0 {
			continue
		}
		cutoff := ms(s.now().Add(-t.retention))
		for {
			ids, err := s.rdb.ZRangeByScore(ctx, s.space(st.Primary()).queue(t.q), &redis.ZRangeBy{
				Min: "-inf", Max: strconv.FormatInt(cutoff, 10), Count: maintenanceBatch,
			}).Result()
			if err != nil {
				return total, redisError("trim", "", err)
			}
			refs := []keyRef{queueRef(t.q)}
			args := []any{cutoff, string(t.status)}
			for _, id := range ids {
				refs = append(refs, recordRef(id))
				args = append(args, id)
			}
			if len(ids) == 0 {
				break
			}
			r, err := s.exec(ctx, st, "trim", "", trimScript, refs, args...)
			if err != nil {
				return total, err
			}
			if err := s.statusError("trim", "", r); err != nil {
				return total, err
			}
			total += int(r.int(0))
			if len(ids) < maintenanceBatch || r.int(0) == 0 {
				break
			}
		}
	}
	return total, nil
}

// Maintain runs RecoverExpired and TrimRetention every interval until ctx
// is done, then returns ctx.Err(). Errors are logged, not returned, so one
// bad round does not stop it. Workers typically run it in a goroutine.
func (s *Store) Maintain(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return fmt.Errorf("%w: interval %v must be positive", ErrInvalidArgument, interval)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if st, err := s.RecoverExpired(ctx); err != nil {
			if ctx.Err() == nil {
				s.log.LogAttrs(ctx, slog.LevelError, "jobstore: recover expired leases", slog.String("error", err.Error()))
			}
		} else if st != (RecoveryStats{}) {
			s.log.LogAttrs(ctx, slog.LevelInfo, "jobstore: recovered expired leases",
				slog.Int("requeued", st.Requeued), slog.Int("failed", st.Failed), slog.Int("dropped", st.Dropped))
		}
		if _, err := s.TrimRetention(ctx); err != nil && ctx.Err() == nil {
			s.log.LogAttrs(ctx, slog.LevelError, "jobstore: trim retention", slog.String("error", err.Error()))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func validateHeld(id, workerID string) error {
	if err := validateID(id); err != nil {
		return err
	}
	return validateWorker(workerID)
}

// statusError maps a script status other than OK to an error.
func (s *Store) statusError(op, id string, r reply) error {
	switch r.status {
	case "OK":
		return nil
	case "NOTFOUND":
		return fmt.Errorf("%w: id=%q", ErrJobNotFound, id)
	case "NOTHELD":
		why, st := r.str(0), Status(r.str(1))
		if st.Finished() {
			return fmt.Errorf("%w: id=%q: %s: %w", ErrNotHeld, id, why, ErrJobFinished)
		}
		return fmt.Errorf("%w: id=%q: %s", ErrNotHeld, id, why)
	case "WRONGTYPE":
		return fmt.Errorf("%w: %s id=%q: %s", ErrCorruptRecord, op, id, r.str(0))
	}
	return fmt.Errorf("jobstore: %s id=%q: unexpected script status %q", op, id, r.status)
}

// QueueSizes is how many entries each queue of a namespace holds.
type QueueSizes struct {
	Pending, Active, Completed, Failed int64
}

// QueueSizes counts the entries of the four queues of the stage's read
// namespace in one round trip.
func (s *Store) QueueSizes(ctx context.Context) (QueueSizes, error) {
	reads := s.space(s.Stage().Reads())
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(Queues))
	for i, q := range Queues {
		cmds[i] = pipe.ZCard(ctx, reads.queue(q))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return QueueSizes{}, redisError("queue sizes", "", err)
	}
	return QueueSizes{
		Pending: cmds[0].Val(), Active: cmds[1].Val(), Completed: cmds[2].Val(), Failed: cmds[3].Val(),
	}, nil
}
