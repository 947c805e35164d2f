package jobstore

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// One jobs:active:<w> of the wrong type (a key the follower passes over by
// design) is a difference to report, not a reason to stop: the rest is
// still compared and a verdict given.
func TestVerifyReportsAWrongTypeActiveKeyAsADifference(t *testing.T) {
	b := serverBackend(t)
	mirroredJob(t, b)
	require.NoError(t, b.rdb.Set(ctx, b.key("jobs:active:junk"), "not a hash", 0).Err())
	res, err := newMigrator(t, b, StageDualWrite).Verify(ctx, quickVerify)
	t.Logf("verify: %+v, err %v", res.Diffs, err)
	require.NoError(t, err, "verify reports the key as a difference instead of failing")
	require.EqualValues(t, 1, res.Differences, "%v", res.Diffs)
	require.EqualValues(t, 1, res.Blocking)
	require.Equal(t, Diff{Kind: DiffDifferent, Item: ItemActive, Key: b.key("steps:active:junk"), Other: b.key("jobs:active:junk"),
		Detail: "not a hash: the job:* key is a string", Blocking: true}, res.Diffs[0])
}

// The same holds for pending, completed and failed, on either side, and a
// repair leaves such keys alone (what they hold is not the queue's) while
// it still rewrites the rest.
func TestVerifyReportsWrongTypeQueueKeysAndRepairsTheRest(t *testing.T) {
	b := serverBackend(t)
	id := mirroredJob(t, b)
	require.NoError(t, b.rdb.Del(ctx, b.key("steps:pending"), b.key("jobs:failed")).Err())
	require.NoError(t, b.rdb.Set(ctx, b.key("steps:pending"), "junk", 0).Err())
	require.NoError(t, b.rdb.RPush(ctx, b.key("jobs:failed"), "junk").Err())
	require.NoError(t, b.rdb.HSet(ctx, b.key("steps:failed"), id, "{}").Err())
	// A real difference next to them, which a repair rewrites.
	require.NoError(t, b.rdb.HSet(ctx, b.key("steps:active:w1"), id, `{"stale":1}`).Err())

	opts := quickVerify
	res := runVerify(t, newMigrator(t, b, StageDualWrite), opts)
	got := map[string]string{}
	for _, d := range res.Diffs {
		got[d.Item+" "+d.ID] = d.Detail
	}
	require.Equal(t, map[string]string{
		"pending ":     "not a zset: the step:* key is a string",
		"failed ":      "not a hash: the job:* key is a list",
		"active " + id: `value {"stale":1} vs value {}`,
	}, got, "%v", res.Diffs)
	require.EqualValues(t, 3, res.Blocking)

	opts.Repair = true
	res = runVerify(t, newMigrator(t, b, StageDualWrite), opts)
	require.EqualValues(t, 3, res.Differences, "%v", res.Diffs)
	require.EqualValues(t, 1, res.Repaired, "only the active entry is rewritten")
	require.Equal(t, "string", b.rdb.Type(ctx, b.key("steps:pending")).Val())
	require.Equal(t, "{}", b.rdb.HGet(ctx, b.key("steps:active:w1"), id).Val())
}
