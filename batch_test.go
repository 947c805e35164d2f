package jobstore

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestSubmitJobs(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithStage(StageDualWrite))
		jobs := make([]Job, 2*MaxBatch+7)
		for i := range jobs {
			jobs[i] = Job{Service: "s", Priority: i % 1001, Payload: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))}
		}
		jobs[5].ID = "fixed"
		ids, err := s.SubmitJobs(ctx, jobs)
		require.NoError(t, err)
		require.Len(t, ids, len(jobs))
		require.Equal(t, "fixed", ids[5])
		require.Empty(t, jobs[0].ID, "the caller's jobs are not modified")
		n, err := b.rdb.ZCard(ctx, b.key("jobs:pending")).Result()
		require.NoError(t, err)
		require.EqualValues(t, len(jobs), n)
		j, err := s.GetJob(ctx, ids[9])
		require.NoError(t, err)
		require.Equal(t, json.RawMessage(`{"i":9}`), j.Payload)
		requireMirrored(t, b)
		require.EqualValues(t, len(jobs), s.DualWriteStats().Attempted)

		// One existing id: the others are written, the error names it.
		ids, err = s.SubmitJobs(ctx, []Job{{Service: "s"}, {ID: "fixed", Service: "s"}, {Service: "s"}})
		require.ErrorIs(t, err, ErrJobExists)
		require.ErrorContains(t, err, "job 1:")
		require.NotEmpty(t, ids[0])
		require.Empty(t, ids[1])
		require.NotEmpty(t, ids[2])

		// One invalid job: nothing is written.
		before := scanKeys(t, b.rdb, b.key("*"))
		_, err = s.SubmitJobs(ctx, []Job{{Service: "s"}, {Service: "s", Priority: -5}})
		require.ErrorIs(t, err, ErrInvalidPriority)
		require.ErrorContains(t, err, "job 1:")
		require.Equal(t, before, scanKeys(t, b.rdb, b.key("*")))
		n2, err := b.rdb.ZCard(ctx, b.key("jobs:pending")).Result()
		require.NoError(t, err)
		require.Equal(t, n+2, n2)

		// After SCRIPT FLUSH the batch reloads the script.
		require.NoError(t, b.rdb.ScriptFlush(ctx).Err())
		ids, err = s.SubmitJobs(ctx, []Job{{Service: "s"}, {Service: "s"}})
		require.NoError(t, err)
		require.Len(t, ids, 2)

		ids, err = s.SubmitJobs(ctx, nil)
		require.NoError(t, err)
		require.Empty(t, ids)
	})
}
