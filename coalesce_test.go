package jobstore

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSubmitCoalesced: many goroutines submitting at once, their writes
// grouped, each still gets its own id and error, and every job is written
// whole with its mirror.
func TestSubmitCoalesced(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		const goroutines, each = 24, 40
		ids := make(chan string, goroutines*each)
		var wg sync.WaitGroup
		for range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					id, err := s.SubmitJob(ctx, Job{Service: "s", Payload: []byte(`{"x":1}`)})
					if err != nil {
						t.Error(err)
						return
					}
					ids <- id
				}
			}()
		}
		wg.Wait()
		close(ids)
		seen := map[string]bool{}
		for id := range ids {
			require.False(t, seen[id], "id %s returned twice", id)
			seen[id] = true
		}
		require.Len(t, seen, goroutines*each)
		n, err := b.rdb.ZCard(ctx, b.key("jobs:pending")).Result()
		require.NoError(t, err)
		require.EqualValues(t, goroutines*each, n)
		requireMirrored(t, b)
		require.Equal(t, DualWriteStats{Attempted: goroutines * each}, s.DualWriteStats())
	})
}

// TestSubmitCoalescedContext: a caller whose context ends returns by then,
// whether its job was written or not, and the others are not failed by it.
func TestSubmitCoalescedContext(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		var wg sync.WaitGroup
		var ok, cancelled sync.Map
		for g := range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 30 {
					c, cancel := context.WithCancel(ctx)
					if (g+i)%3 == 0 {
						cancel()
					}
					id, err := s.SubmitJob(c, Job{Service: "s"})
					cancel()
					switch {
					case err == nil:
						ok.Store(id, true)
					case errors.Is(err, context.Canceled):
						cancelled.Store(g*100+i, true)
					default:
						t.Error(err)
					}
				}
			}()
		}
		wg.Wait()
		// Every acknowledged job is there, whole and mirrored.
		ok.Range(func(k, _ any) bool {
			_, err := s.GetJob(ctx, k.(string))
			require.NoError(t, err)
			return true
		})
		require.Eventually(t, func() bool {
			s.coalesce.mu.Lock()
			defer s.coalesce.mu.Unlock()
			return s.coalesce.inflight == 0 && len(s.coalesce.queue) == 0
		}, 5*time.Second, time.Millisecond, "no write left in flight")
		requireMirrored(t, b)
	})
}
