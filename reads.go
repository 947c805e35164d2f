package jobstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// ReadStats counts plain reads of records since the Store was created.
type ReadStats struct {
	// Reads counts records looked up by GetJob and GetPendingJobs.
	Reads uint64 `json:"reads"`
	// Fallbacks counts reads in dual-read that found no step record and
	// were answered from job:* instead (plus queue reads answered from
	// jobs:* because the steps queue did not exist).
	Fallbacks uint64 `json:"fallbacks"`
	// ShadowChecks counts reads compared with the other namespace
	// (WithShadowReads), and ShadowMismatches those that differed.
	ShadowChecks     uint64 `json:"shadow_checks"`
	ShadowMismatches uint64 `json:"shadow_mismatches"`
}

type readCounters struct {
	reads, fallbacks, shadowChecks, shadowMismatches atomic.Uint64
}

// ReadStats returns the read counters. It is safe for concurrent use.
func (s *Store) ReadStats() ReadStats {
	return ReadStats{
		Reads:            s.reads.reads.Load(),
		Fallbacks:        s.reads.fallbacks.Load(),
		ShadowChecks:     s.reads.shadowChecks.Load(),
		ShadowMismatches: s.reads.shadowMismatches.Load(),
	}
}

// stored is what one namespace holds of a job: its record and its entries
// in the completed and failed hashes ("" when none).
type stored struct {
	rec               map[string]string
	completed, failed string
	problems          map[string]string // entries that could not be read
	// bad is set when the record key exists but is no hash: an error
	// wrapping ErrCorruptRecord (rec is then empty).
	bad error
}

// GetJob returns the job with the given id, with its result or error from
// jobs:completed and jobs:failed, or an error wrapping ErrJobNotFound when
// it has no record. It reads the stage's read namespace (see Stage.Reads),
// in one round trip. A record without an id field, or another job's,
// gives ErrCorruptRecord.
func (s *Store) GetJob(ctx context.Context, id string) (*Job, error) {
	if err := validateID(id); err != nil {
		return nil, err
	}
	got, err := s.readJobs(ctx, s.Stage(), []string{id})
	if err != nil {
		return nil, err
	}
	if len(got[0].rec) == 0 && got[0].bad == nil {
		return nil, fmt.Errorf("%w: id=%q", ErrJobNotFound, id)
	}
	return got[0].job(id)
}

func (g stored) job(id string) (*Job, error) {
	if g.bad != nil {
		return nil, g.bad
	}
	j, err := decodeJob(id, g.rec)
	if err != nil {
		return nil, err
	}
	j.addResult(g.completed, g.failed)
	for k, v := range g.problems {
		j.addUnreadable(k, v)
	}
	return j, nil
}

// GetPendingJobs returns up to limit pending jobs in claim order. Entries
// whose record is gone, or is no job record (a key of another type, or a
// hash without its id), are passed over (the latter logged at Warn). It
// reads the stage's read namespace; in dual-read, a
// steps:pending that does not exist yet falls back to jobs:pending.
func (s *Store) GetPendingJobs(ctx context.Context, limit int) ([]*Job, error) {
	if limit <= 0 || limit > 100_000 {
		return nil, fmt.Errorf("%w: limit %d must be 1..100000", ErrInvalidArgument, limit)
	}
	st := s.Stage()
	pending := s.space(st.Reads()).pending()
	ids, err := s.rdb.ZRevRange(ctx, pending, 0, int64(limit-1)).Result()
	if err != nil {
		return nil, redisError("list pending", "", err)
	}
	if len(ids) == 0 && st.readsFallBack() {
		// An empty sorted set does not exist in Redis: a steps:pending
		// with nothing in it is no evidence that the step side lacks
		// anything, so only answers read from jobs:pending count.
		pending = s.space(JobNamespace).pending()
		if ids, err = s.rdb.ZRevRange(ctx, pending, 0, int64(limit-1)).Result(); err != nil {
			return nil, redisError("list pending", "", err)
		}
		if len(ids) > 0 {
			s.reads.fallbacks.Add(1)
		}
	}
	valid := ids[:0:0]
	for _, id := range ids {
		if validateID(id) != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: invalid id in pending queue, passed over",
				slog.String("queue", pending), slog.String("id", id))
			continue
		}
		valid = append(valid, id)
	}
	got, err := s.readJobs(ctx, st, valid)
	if err != nil {
		return nil, err
	}
	jobs := make([]*Job, 0, len(valid))
	for i, g := range got {
		if len(g.rec) == 0 && g.bad == nil {
			continue
		}
		j, err := g.job(valid[i])
		if err != nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: unreadable pending job passed over", slog.String("error", err.Error()))
			continue
		}
		jobs = append(jobs, j)
	}
	return jobs, nil
}

// readJobs reads the jobs of ids as plain reads do in stage st: from the
// stage's read namespace, then, in dual-read, from the job namespace for
// those the step namespace does not have. A sampled share of the records
// found is compared with the other namespace. Each pass is one pipelined
// round trip.
func (s *Store) readJobs(ctx context.Context, st Stage, ids []string) ([]stored, error) {
	read := s.space(st.Reads())
	out, err := s.readIn(ctx, read, ids)
	if err != nil {
		return nil, err
	}
	s.reads.reads.Add(uint64(len(ids)))
	var fellBack []bool
	if st.readsFallBack() {
		// A step record missing, or of the wrong type (junk where the
		// mirror belongs), is read from job:*, authoritative in dual-read.
		var missing []int
		for i, g := range out {
			if len(g.rec) == 0 {
				missing = append(missing, i)
			}
		}
		if len(missing) > 0 {
			fids := make([]string, len(missing))
			for j, i := range missing {
				fids[j] = ids[i]
			}
			found, err := s.readIn(ctx, s.space(JobNamespace), fids)
			if err != nil {
				return nil, err
			}
			for j, i := range missing {
				if len(found[j].rec) > 0 {
					if out[i].bad != nil {
						s.logOnce(ctx, "badmirror:"+ids[i], "jobstore: dual-read: the step record is unreadable; answered from job:*",
							slog.String("error", out[i].bad.Error()))
					}
					out[i] = found[j]
					s.reads.fallbacks.Add(1)
					if fellBack == nil {
						fellBack = make([]bool, len(ids))
					}
					fellBack[i] = true
				}
			}
		}
	}
	if s.shadowRatio > 0 && st.DualWrites() {
		s.shadowCheck(ctx, read, ids, out, fellBack)
	}
	return out, nil
}

// readIn reads, in one pipelined round trip, the record of each id in k
// and its entries in the completed and failed hashes. A record of the
// wrong type is that job's ErrCorruptRecord (stored.bad), not the
// batch's: the other jobs are still read; result hashes of the wrong type
// are noted as problems of the job instead.
func (s *Store) readIn(ctx context.Context, k keyspace, ids []string) ([]stored, error) {
	pipe := s.rdb.Pipeline()
	recs := make([]*redis.MapStringStringCmd, len(ids))
	comp := make([]*redis.StringCmd, len(ids))
	fail := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		recs[i] = pipe.HGetAll(ctx, k.record(id))
		comp[i] = pipe.HGet(ctx, k.completed(), id)
		fail[i] = pipe.HGet(ctx, k.failed(), id)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) && !hasErrorPrefix(err, "WRONGTYPE") {
		return nil, redisError("read", "", err)
	}
	out := make([]stored, len(ids))
	for i, id := range ids {
		h, err := recs[i].Result()
		switch {
		case err == nil:
			out[i].rec = h
		case hasErrorPrefix(err, "WRONGTYPE"):
			out[i].bad = redisError("read", id, err)
		default:
			return nil, redisError("read", id, err)
		}
		for _, e := range []struct {
			key string
			cmd *redis.StringCmd
			dst *string
		}{{k.completed(), comp[i], &out[i].completed}, {k.failed(), fail[i], &out[i].failed}} {
			v, err := e.cmd.Result()
			switch {
			case err == nil:
				*e.dst = v
			case errors.Is(err, redis.Nil):
			default:
				if out[i].problems == nil {
					out[i].problems = map[string]string{}
				}
				out[i].problems[e.key] = err.Error()
			}
		}
	}
	return out, nil
}

// shadowCheck compares a sample of the records read from ns with their
// copies in the other namespace, counting and logging differences. Both
// copies of each sampled record are read again in one MULTI, so that a
// write landing between the read and the check (each write and its mirror
// are atomic) is no mismatch. Records answered by the fallback (fellBack)
// came from the other namespace and are not sampled. It never changes
// what the read returns, and its own errors are only logged.
func (s *Store) shadowCheck(ctx context.Context, ns keyspace, ids []string, got []stored, fellBack []bool) {
	var sample []string
	for i, id := range ids {
		if len(got[i].rec) > 0 && (fellBack == nil || !fellBack[i]) && rand.Float64() < s.shadowRatio {
			sample = append(sample, id)
		}
	}
	if len(sample) == 0 {
		return
	}
	oth := s.space(ns.ns.other())
	pipe := s.rdb.TxPipeline()
	reads := make([]*redis.MapStringStringCmd, len(sample))
	copies := make([]*redis.MapStringStringCmd, len(sample))
	for i, id := range sample {
		reads[i] = pipe.HGetAll(ctx, ns.record(id))
		copies[i] = pipe.HGetAll(ctx, oth.record(id))
	}
	if _, err := pipe.Exec(ctx); err != nil && !hasErrorPrefix(err, "WRONGTYPE") {
		s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: shadow read failed", slog.String("error", err.Error()))
		return
	}
	s.reads.shadowChecks.Add(uint64(len(sample)))
	for i, id := range sample {
		a, errA := reads[i].Result()
		b, errB := copies[i].Result()
		if errA == nil && errB == nil && maps.Equal(a, b) {
			continue
		}
		s.reads.shadowMismatches.Add(1)
		attrs := []slog.Attr{slog.String("read", ns.record(id)), slog.String("copy", oth.record(id))}
		if err := errors.Join(errA, errB); err != nil {
			attrs = append(attrs, slog.String("error", err.Error()))
		} else {
			attrs = append(attrs, slog.Any("diff", fieldDiff(a, b)))
		}
		s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: shadow read mismatch", attrs...)
	}
}

// fieldDiff names the fields in which a and b differ.
func fieldDiff(a, b map[string]string) []string {
	var d []string
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			d = append(d, k)
		}
	}
	for k := range b {
		if _, ok := a[k]; !ok {
			d = append(d, k)
		}
	}
	return d
}

// QueueSizes is how many entries each queue of a namespace holds.
type QueueSizes struct {
	Pending   int64 `json:"pending"`
	Active    int64 `json:"active"`  // jobs held, over every worker's active hash
	Workers   int64 `json:"workers"` // active hashes, one per worker holding jobs
	Completed int64 `json:"completed"`
	Failed    int64 `json:"failed"`
}

// QueueSizes counts the entries of the queues of the stage's read
// namespace. Active jobs are summed over the jobs:active:<worker> hashes,
// found with SCAN; a jobs:active:* key that is not a hash (a look-alike,
// or junk of another writer) is passed over and logged, not counted. A
// pending, completed or failed queue of the wrong type is an error
// wrapping ErrCorruptRecord.
func (s *Store) QueueSizes(ctx context.Context) (QueueSizes, error) {
	return s.queueSizes(ctx, s.space(s.Stage().Reads()))
}

// QueueSizesIn counts the entries of the queues of a namespace, whatever
// the stage.
func (s *Store) QueueSizesIn(ctx context.Context, ns Namespace) (QueueSizes, error) {
	if !ns.valid() {
		return QueueSizes{}, fmt.Errorf("%w: namespace %d", ErrInvalidArgument, int(ns))
	}
	return s.queueSizes(ctx, s.space(ns))
}

func (s *Store) queueSizes(ctx context.Context, k keyspace) (QueueSizes, error) {
	var q QueueSizes
	var actives []string
	iter := s.rdb.Scan(ctx, 0, k.activePattern(), 500).Iterator()
	for iter.Next(ctx) {
		if _, ok := k.workerFromActive(iter.Val()); ok {
			actives = append(actives, iter.Val())
		}
	}
	if err := iter.Err(); err != nil {
		return q, redisError("queue sizes", "", err)
	}
	actives = dedupe(actives)
	pipe := s.rdb.Pipeline()
	p := pipe.ZCard(ctx, k.pending())
	c := pipe.HLen(ctx, k.completed())
	f := pipe.HLen(ctx, k.failed())
	lens := make([]*redis.IntCmd, len(actives))
	for i, a := range actives {
		lens[i] = pipe.HLen(ctx, a)
	}
	if _, err := pipe.Exec(ctx); err != nil && !hasErrorPrefix(err, "WRONGTYPE") {
		return q, redisError("queue sizes", "", err)
	}
	for _, n := range []struct {
		cmd *redis.IntCmd
		key string
		dst *int64
	}{{p, k.pending(), &q.Pending}, {c, k.completed(), &q.Completed}, {f, k.failed(), &q.Failed}} {
		v, err := n.cmd.Result()
		if err != nil {
			return QueueSizes{}, redisError("queue sizes "+n.key, "", err)
		}
		*n.dst = v
	}
	for i, l := range lens {
		if err := l.Err(); err != nil {
			if !hasErrorPrefix(err, "WRONGTYPE") {
				return QueueSizes{}, redisError("queue sizes", "", err)
			}
			s.logOnce(ctx, "queue sizes: wrong type: "+actives[i], "jobstore: queue sizes passed over a key that is not an active hash",
				slog.String("key", actives[i]))
			continue
		}
		if l.Val() > 0 {
			q.Workers++
			q.Active += l.Val()
		}
	}
	return q, nil
}

// logOnce logs msg at Warn the first time this Store meets what (a
// problem named by its key, such as a key of the wrong type), so that a
// problem that lasts does not log at every call. It shares the set of
// claim's logPassed, under keys that begin with "once ", which a claim's
// note (a job id, then ": ") does not.
func (s *Store) logOnce(ctx context.Context, what, msg string, attrs ...slog.Attr) {
	if _, seen := s.passedOver.LoadOrStore("once "+what, true); seen {
		return
	}
	s.log.LogAttrs(ctx, slog.LevelWarn, msg, attrs...)
}
