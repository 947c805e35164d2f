package jobstore

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"
)

// memorySample is how many records NamespaceStats measures with MEMORY
// USAGE to estimate a namespace's memory.
const memorySample = 200

// NamespaceStats describes one namespace: what the report's key counts
// and memory figures look at, without their miscounts.
type NamespaceStats struct {
	Namespace string `json:"namespace"` // "job" or "step"
	// Records counts record keys. Unlike `redis-cli --scan --pattern
	// 'job:*' | wc -l` it leaves out sub-keys, counted in OtherKeys.
	Records   int64 `json:"records"`
	OtherKeys int64 `json:"other_keys"`
	// Queues holds the number of entries of each queue.
	Queues map[Queue]int64 `json:"queues"`
	// MemoryBytes estimates the memory of the records and queues: the
	// queues' MEMORY USAGE plus the mean MEMORY USAGE of up to 200
	// records (the first SCAN returns) times Records.
	MemoryBytes int64 `json:"memory_bytes"`
	// Sampled is how many records the estimate measured.
	Sampled int `json:"sampled"`
}

// NamespaceStats counts the records, sub-keys and queue entries of ns
// and estimates their memory. It streams the keys with SCAN, so it takes
// time on a large database but little memory.
func (s *Store) NamespaceStats(ctx context.Context, ns Namespace) (NamespaceStats, error) {
	if ns != JobNamespace && ns != StepNamespace {
		return NamespaceStats{}, fmt.Errorf("%w: namespace %q: want job or step", ErrInvalidArgument, ns)
	}
	k := s.space(ns)
	st := NamespaceStats{Namespace: ns.String(), Queues: map[Queue]int64{}}
	var sampleBytes int64
	for cursor := uint64(0); ; {
		keys, next, err := s.rdb.Scan(ctx, cursor, k.recordPattern(), DefaultBatchSize).Result()
		if err != nil {
			return st, redisError("stats: scan", "", err)
		}
		var sample []string
		for _, key := range slices.Compact(keys) {
			if _, ok := k.idFromRecordKey(key); !ok {
				st.OtherKeys++
				continue
			}
			st.Records++
			if st.Sampled+len(sample) < memorySample {
				sample = append(sample, key)
			}
		}
		if len(sample) > 0 {
			n, err := s.memoryUsage(ctx, sample)
			if err != nil {
				return st, err
			}
			sampleBytes += n
			st.Sampled += len(sample)
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	if st.Sampled > 0 {
		st.MemoryBytes = sampleBytes * st.Records / int64(st.Sampled)
	}
	pipe := s.rdb.Pipeline()
	cards := make([]*redis.IntCmd, len(Queues))
	for i, q := range Queues {
		cards[i] = pipe.ZCard(ctx, k.queue(q))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return st, redisError("stats: queue sizes", "", err)
	}
	var queues []string
	for i, q := range Queues {
		st.Queues[q] = cards[i].Val()
		queues = append(queues, k.queue(q))
	}
	n, err := s.memoryUsage(ctx, queues)
	st.MemoryBytes += n
	return st, err
}

// memoryUsage sums MEMORY USAGE of keys; keys that do not exist count 0.
func (s *Store) memoryUsage(ctx context.Context, keys []string) (int64, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.IntCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.MemoryUsage(ctx, k)
	}
	_, _ = pipe.Exec(ctx)
	var sum int64
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
	return sum, nil
}
