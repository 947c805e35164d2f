package jobstore

import (
	"context"
	"log/slog"
	"maps"
	"math/rand/v2"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// ReadStats counts plain reads of records since the Store was created.
type ReadStats struct {
	// Reads counts records looked up by GetJob and GetPendingJobs.
	Reads uint64
	// Fallbacks counts reads in dual-read that found no step record and
	// were answered from job:* instead (plus queue reads answered from
	// jobs:* because the steps queue did not exist).
	Fallbacks uint64
	// ShadowChecks counts reads compared with the other namespace
	// (WithShadowReads), and ShadowMismatches those that differed.
	ShadowChecks     uint64
	ShadowMismatches uint64
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

// other returns the namespace that is not ns.
func other(ns Namespace) Namespace {
	if ns == JobNamespace {
		return StepNamespace
	}
	return JobNamespace
}

// readRecords reads the records of ids as plain reads do in stage st: from
// the stage's read namespace, then, in dual-read, from job:* for those the
// step namespace does not have. An empty map means no record. A sampled
// share of the records found is compared with the other namespace. Each
// pass is one pipelined round trip.
func (s *Store) readRecords(ctx context.Context, st Stage, ids []string) ([]map[string]string, error) {
	read := s.space(st.Reads())
	out, err := s.hgetall(ctx, read, ids)
	if err != nil {
		return nil, err
	}
	s.reads.reads.Add(uint64(len(ids)))

	if st.readsFallBack() {
		var missing []int
		for i, h := range out {
			if len(h) == 0 {
				missing = append(missing, i)
			}
		}
		if len(missing) > 0 {
			fids := make([]string, len(missing))
			for j, i := range missing {
				fids[j] = ids[i]
			}
			found, err := s.hgetall(ctx, s.space(JobNamespace), fids)
			if err != nil {
				return nil, err
			}
			for j, i := range missing {
				if len(found[j]) > 0 {
					out[i] = found[j]
					s.reads.fallbacks.Add(1)
				}
			}
		}
	}

	if s.shadowRatio > 0 && st.DualWrites() {
		s.shadowCheck(ctx, read, ids, out)
	}
	return out, nil
}

// shadowCheck compares a sample of the records read from ns with their
// copies in the other namespace, counting and logging differences. It
// never changes what the read returns, and its own errors are only logged.
func (s *Store) shadowCheck(ctx context.Context, ns keyspace, ids []string, got []map[string]string) {
	var sample []string
	var want []map[string]string
	for i, id := range ids {
		if len(got[i]) > 0 && rand.Float64() < s.shadowRatio {
			sample = append(sample, id)
			want = append(want, got[i])
		}
	}
	if len(sample) == 0 {
		return
	}
	oth := s.space(other(ns.ns))
	copies, err := s.hgetall(ctx, oth, sample)
	if err != nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: shadow read failed", slog.String("error", err.Error()))
		return
	}
	s.reads.shadowChecks.Add(uint64(len(sample)))
	for i, id := range sample {
		if !maps.Equal(want[i], copies[i]) {
			s.reads.shadowMismatches.Add(1)
			s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: shadow read mismatch",
				slog.String("read", ns.record(id)), slog.String("copy", oth.record(id)),
				slog.Any("diff", fieldDiff(want[i], copies[i])))
		}
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

// hgetall reads the record of each id in ns in one pipelined round trip.
// A missing record is an empty map; a key of the wrong type is an error
// wrapping ErrCorruptRecord.
func (s *Store) hgetall(ctx context.Context, ns keyspace, ids []string) ([]map[string]string, error) {
	if len(ids) == 1 {
		h, err := s.rdb.HGetAll(ctx, ns.record(ids[0])).Result()
		if err != nil {
			return nil, redisError("read", ids[0], err)
		}
		return []map[string]string{h}, nil
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGetAll(ctx, ns.record(id))
	}
	if _, err := pipe.Exec(ctx); err != nil && !isWrongType(err) {
		return nil, redisError("read", "", err)
	}
	out := make([]map[string]string, len(ids))
	for i, cmd := range cmds {
		h, err := cmd.Result()
		if err != nil {
			return nil, redisError("read", ids[i], err)
		}
		out[i] = h
	}
	return out, nil
}
