package jobstore

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// Junk of another writer under the names jobstore reads (keys of the
// wrong type) is passed over, counted and logged once per Store; it never
// stops the work on the other keys.

// TestRecoverSkipsWrongTypeActiveKeys: RecoverExpired counts each
// jobs:active:* key that is not a hash in Skipped, returns no error for
// it, and logs it once however many runs meet it.
func TestRecoverSkipsWrongTypeActiveKeys(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		h := &logSink{}
		s := newStore(t, b, WithLogger(slogLogger(h)))
		require.NoError(t, b.rdb.Set(ctx, b.key("jobs:active:junk-a"), "x", 0).Err())
		require.NoError(t, b.rdb.RPush(ctx, b.key("jobs:active:junk-b"), "x").Err())
		for range 3 {
			rs, err := s.RecoverExpired(ctx)
			require.NoError(t, err)
			require.Equal(t, RecoveryStats{Skipped: 2}, rs)
		}
		var warned []string
		for _, l := range h.lines() {
			if strings.Contains(l, "not an active hash") {
				warned = append(warned, l)
			}
		}
		require.Len(t, warned, 2, "each junk key is logged once: %v", h.lines())
	})
}

// TestQueueSizesWrongTypeQueues: a wrong-type active key is passed over,
// but a pending queue of the wrong type is still an error that names it.
func TestQueueSizesWrongTypeQueues(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		caps := registerWorker(t, s, "w", "s")
		_, err := s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		_, err = s.SubmitJob(ctx, Job{Service: "s"})
		require.NoError(t, err)
		_, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.NoError(t, b.rdb.SAdd(ctx, b.key("jobs:active:junk"), "x").Err())
		q, err := s.QueueSizes(ctx)
		require.NoError(t, err)
		require.Equal(t, QueueSizes{Pending: 1, Active: 1, Workers: 1}, q)

		require.NoError(t, b.rdb.Del(ctx, b.key("jobs:pending")).Err())
		require.NoError(t, b.rdb.Set(ctx, b.key("jobs:pending"), "x", 0).Err())
		_, err = s.QueueSizes(ctx)
		require.ErrorIs(t, err, ErrCorruptRecord)
		require.ErrorContains(t, err, "jobs:pending")
	})
}
