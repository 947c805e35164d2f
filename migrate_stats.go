package jobstore

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"
)

// memorySample is how many record and sub-key keys NamespaceStats
// measures with MEMORY USAGE to estimate a namespace's memory.
const memorySample = 200

// NamespaceStats describes what one namespace holds, for a status
// command: what the report's key counts look at, without their
// miscounts (a `--scan --pattern 'job:*' | wc -l` counts sub-keys and
// look-alikes as jobs).
type NamespaceStats struct {
	Namespace string `json:"namespace"` // "job" or "step"
	// Records and SubKeys count the keys of jobs: job:<id> and
	// job:<id>:<suffix>. (SCAN returns a key twice when the keyspace is
	// resized during the walk; such a key is counted twice.)
	Records int64 `json:"records"`
	SubKeys int64 `json:"sub_keys"`
	// Pending counts the members of jobs:pending.
	Pending int64 `json:"pending"`
	// Active counts the fields of every worker's active hash, Workers the
	// hashes.
	Active  int64 `json:"active"`
	Workers int64 `json:"workers"`
	// Completed and Failed count the fields of those hashes.
	Completed int64 `json:"completed"`
	Failed    int64 `json:"failed"`
	// MemoryBytes estimates the memory of it all: the MEMORY USAGE of the
	// queue keys, plus the mean MEMORY USAGE of up to 200 records and
	// sub-keys (the first the scan returns) times their number. Sampled
	// is how many were measured.
	MemoryBytes int64 `json:"memory_bytes"`
	Sampled     int   `json:"sampled"`
}

// NamespaceStats counts what ns holds and estimates its memory. It
// streams the keys with SCAN: on a large database it takes time, little
// memory, and never blocks Redis. Counts taken while services write are a
// moment's, not one instant's.
func (m *Migrator) NamespaceStats(ctx context.Context, ns Namespace) (NamespaceStats, error) {
	st := NamespaceStats{Namespace: ns.String()}
	if !ns.valid() {
		return st, fmt.Errorf("%w: namespace %d: want job or step", ErrInvalidArgument, int(ns))
	}
	k, rdb := m.s.space(ns), m.s.rdb
	var sample, queues []string
	err := scanAll(ctx, keyScanner(rdb, k.recordPattern(), DefaultBatchSize), func(key string) {
		switch _, suffix, ok := k.parseRecordKey(key); {
		case !ok:
			return
		case suffix == "":
			st.Records++
		default:
			st.SubKeys++
		}
		if len(sample) < memorySample {
			sample = append(sample, key)
		}
	})
	if err != nil {
		return st, err
	}
	seen := map[string]bool{} // a worker's hash is counted once, even if the scan returns it twice
	err = scanAll(ctx, keyScanner(rdb, k.activePattern(), DefaultBatchSize), func(key string) {
		if _, ok := k.workerFromActive(key); ok && !seen[key] {
			seen[key] = true
			queues = append(queues, key)
		}
	})
	if err != nil {
		return st, err
	}
	st.Workers = int64(len(queues))
	return st, m.countQueues(ctx, k, &st, queues, sample)
}

// countQueues sizes the queue keys and measures them and the sample.
func (m *Migrator) countQueues(ctx context.Context, k keyspace, st *NamespaceStats, active, sample []string) error {
	pipe := m.s.rdb.Pipeline()
	pending := pipe.ZCard(ctx, k.pending())
	completed, failed := pipe.HLen(ctx, k.completed()), pipe.HLen(ctx, k.failed())
	lens := make([]*redis.IntCmd, len(active))
	for i, key := range active {
		lens[i] = pipe.HLen(ctx, key)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return redisError("stats: queue sizes", "", err)
	}
	st.Pending, st.Completed, st.Failed = pending.Val(), completed.Val(), failed.Val()
	for _, l := range lens {
		st.Active += l.Val()
	}
	queueBytes, err := m.memoryUsage(ctx, append([]string{k.pending(), k.completed(), k.failed()}, active...))
	if err != nil {
		return err
	}
	sampleBytes, err := m.memoryUsage(ctx, sample)
	if err != nil {
		return err
	}
	st.Sampled = len(sample)
	st.MemoryBytes = queueBytes
	if st.Sampled > 0 {
		st.MemoryBytes += sampleBytes * (st.Records + st.SubKeys) / int64(st.Sampled)
	}
	return nil
}

// scanAll calls fn with each key of a scan, once.
func scanAll(ctx context.Context, scan scanner, fn func(key string)) error {
	for cursor := uint64(0); ; {
		page, next, err := scan(ctx, cursor)
		if err != nil {
			return err
		}
		for _, it := range notDone(page, nil) {
			fn(it.name)
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// memoryUsage sums MEMORY USAGE of keys, in batches; keys that do not
// exist count 0.
func (m *Migrator) memoryUsage(ctx context.Context, keys []string) (int64, error) {
	var sum int64
	for chunk := range slices.Chunk(keys, DefaultBatchSize) {
		pipe := m.s.rdb.Pipeline()
		cmds := make([]*redis.IntCmd, len(chunk))
		for i, k := range chunk {
			cmds[i] = pipe.MemoryUsage(ctx, k)
		}
		_, _ = pipe.Exec(ctx)
		for _, c := range cmds {
			n, err := c.Result()
			if errors.Is(err, redis.Nil) {
				continue
			}
			if err != nil {
				return sum, redisError("stats: memory usage", "", err)
			}
			sum += n
		}
	}
	return sum, nil
}
