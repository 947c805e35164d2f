package jobstore

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// A job the legacy services keep writing (a progress stream, HMSET every
// 10 ms) while the follower mirrors it within its MaxDelay: the rounds
// find the step side a few milliseconds behind each time. That is a write
// in flight, not drift, and verify must pass (the runbook's step 2 wants
// `stepmigrate verify` to exit 0 while the legacy services still run).
func TestVerifyDoesNotReportAFollowedStreamAsDrift(t *testing.T) {
	b := followerBackend(t)
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	_, stop, last := followerStats(t, newMigrator(t, b, StageDualWrite), FollowOptions{Configure: true, Sweep: -1})
	require.Eventually(t, func() bool { return last().Sweeps >= 1 }, 5*time.Second, 20*time.Millisecond)

	id := "inflight-stream"
	legacyRecord(t, b, id)
	followerSynced(t, b, id)
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var writes atomic.Int64
	wg.Go(func() {
		for i := 0; sctx.Err() == nil; i++ {
			// workerSendProgress: HMSET job:<id>:progress, every 10 ms.
			_ = b.rdb.HSet(sctx, b.key("job:"+id+":progress"), "progress", fmt.Sprint(i%100), "message", "step").Err()
			writes.Add(1)
			time.Sleep(10 * time.Millisecond)
		}
	})
	time.Sleep(300 * time.Millisecond)
	reported := 0
	for range 5 {
		res := runVerify(t, newMigrator(t, b, StageDualWrite), VerifyOptions{}) // the defaults: 3 rounds, 200 ms
		if res.Differences > 0 {
			reported++
			t.Logf("verify: %v", res.Diffs)
		}
		t.Logf("in flight: %d %v", res.InFlight, res.InFlightItems)
	}
	cancel()
	wg.Wait()
	require.ErrorIs(t, stop(), context.Canceled)
	t.Logf("%d progress writes; follower %+v", writes.Load(), last())
	require.Zero(t, reported, "verify reported the followed stream as drift in %d of 5 runs", reported)
}

// streamWrites writes job:<id>:progress every 5 ms, and step:<id>:progress
// one write behind when follow is set (a follower a little late each
// time), until stop is closed; then the step side stays one behind.
func streamWrites(t *testing.T, b *backend, id string, follow bool) (stop func()) {
	sctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 1; sctx.Err() == nil; i++ {
			_ = b.rdb.HSet(sctx, b.key("job:"+id+":progress"), "progress", fmt.Sprint(i)).Err()
			if follow {
				_ = b.rdb.HSet(sctx, b.key("step:"+id+":progress"), "progress", fmt.Sprint(i-1)).Err()
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	return func() { cancel(); wg.Wait() }
}

// A write in flight that stops leaves a real difference, which is
// reported: an item is counted as in flight only while its authoritative
// side still changes when the time runs out.
func TestVerifyReportsADifferenceOnceItsWritesStop(t *testing.T) {
	b := serverBackend(t)
	id := mirroredJob(t, b)
	for _, ns := range []string{"job", "step"} {
		require.NoError(t, b.rdb.Expire(ctx, b.key(ns+":"+id+":progress"), time.Hour).Err())
	}
	stop := streamWrites(t, b, id, true)
	time.AfterFunc(400*time.Millisecond, stop)
	defer stop()
	time.Sleep(30 * time.Millisecond)
	res := runVerify(t, newMigrator(t, b, StageDualWrite), VerifyOptions{Rounds: 2, Delay: 50 * time.Millisecond, InFlightWait: 5 * time.Second})
	t.Logf("rounds %d; in flight %d; %v", res.Rounds, res.InFlight, res.Diffs)
	require.EqualValues(t, 1, res.Differences, "%v", res.Diffs)
	require.Equal(t, ItemSubKey, res.Diffs[0].Item)
	require.Equal(t, b.key("step:"+id+":progress"), res.Diffs[0].Key)
	require.Zero(t, res.InFlight)
}

// A job whose authoritative side keeps changing while the other side never
// does is not followed: that is drift, reported, not a write in flight.
func TestVerifyReportsAStreamNothingFollows(t *testing.T) {
	b := serverBackend(t)
	id := mirroredJob(t, b)
	stop := streamWrites(t, b, id, false)
	defer stop()
	time.Sleep(20 * time.Millisecond)
	res := runVerify(t, newMigrator(t, b, StageDualWrite), VerifyOptions{Rounds: 3, Delay: 20 * time.Millisecond, InFlightWait: time.Second})
	require.EqualValues(t, 1, res.Differences, "%v", res.Diffs)
	require.Equal(t, b.key("step:"+id+":progress"), res.Diffs[0].Key)
	require.True(t, res.Diffs[0].Blocking)
	require.Zero(t, res.InFlight)
	require.Equal(t, 3, res.Rounds, "reported after the rounds asked for")
}

// A followed stream still changing when the time runs out is counted and
// listed as in flight: not a difference, not blocking.
func TestVerifyCountsAFollowedStreamAsInFlight(t *testing.T) {
	b := serverBackend(t)
	id := mirroredJob(t, b)
	other := mirroredJob(t, b) // with a static difference, reported as usual
	require.NoError(t, b.rdb.HSet(ctx, b.key("step:"+other), "status", "pending").Err())
	stop := streamWrites(t, b, id, true)
	defer stop()
	time.Sleep(20 * time.Millisecond)
	res := runVerify(t, newMigrator(t, b, StageDualWrite), VerifyOptions{Rounds: 2, Delay: 20 * time.Millisecond, InFlightWait: 200 * time.Millisecond})
	t.Logf("rounds %d; in flight %v; %v", res.Rounds, res.InFlightItems, res.Diffs)
	require.EqualValues(t, 1, res.Differences, "%v", res.Diffs)
	require.Equal(t, b.key("step:"+other), res.Diffs[0].Key)
	require.EqualValues(t, 1, res.InFlight)
	require.Len(t, res.InFlightItems, 1)
	require.Equal(t, ItemSubKey, res.InFlightItems[0].Item)
	require.Equal(t, b.key("step:"+id+":progress"), res.InFlightItems[0].Key)
	require.False(t, res.InFlightItems[0].Blocking)
}
