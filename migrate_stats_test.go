package jobstore

import (
	"context"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestNamespaceStats(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		newLegacy(t, b).state(2)
		lookAlikes(t, b, "job")
		m := newMigrator(t, b, StageDualWrite)
		st, err := m.NamespaceStats(context.Background(), JobNamespace)
		require.NoError(t, err)
		// Per round of state: 8 records, 1 sub-key, 3 pending, 2 active, 2
		// completed and 1 failed; the workers are lw0 and lw1.
		require.Equal(t, NamespaceStats{Namespace: "job", Records: st.Records, SubKeys: st.SubKeys, Pending: 6, Active: 4,
			Workers: 2, Completed: 4, Failed: 2, MemoryBytes: st.MemoryBytes, Sampled: st.Sampled}, st)
		requireVisits(t, b, 16, st.Records)
		requireVisits(t, b, 2, st.SubKeys)
		require.LessOrEqual(t, st.Sampled, memorySample)
		require.Positive(t, st.MemoryBytes)

		steps, err := m.NamespaceStats(context.Background(), StepNamespace)
		require.NoError(t, err)
		requireVisits(t, b, 4, steps.Records, "the RedisService snapshots")
		require.Zero(t, steps.Pending+steps.Active+steps.Completed+steps.Failed+steps.SubKeys)

		_, err = m.NamespaceStats(context.Background(), Namespace(7))
		require.ErrorIs(t, err, ErrInvalidArgument)
	})
}
