package jobstore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// sweptOnce runs a follower on b until its start sweep is done and its
// syncs have landed, then stops it.
func sweptOnce(t *testing.T, b *backend) FollowStats {
	t.Helper()
	_, stop, last := followerStats(t, newMigrator(t, b, StageDualWrite), FollowOptions{Configure: true, Sweep: -1})
	require.Eventually(t, func() bool { return last().Sweeps >= 1 }, 5*time.Second, 20*time.Millisecond)
	time.Sleep(300 * time.Millisecond)
	require.ErrorIs(t, stop(), context.Canceled)
	return last()
}

// TestFollowerSweepRemovesCopiesWhoseOriginalIsGone: a job:* key (record
// or sub-key) deleted while no follower listens goes from the step side
// at the next sweep. Sweeps walked job:* only, so they never met a step
// copy whose original was gone, and it stayed for ever.
func TestFollowerSweepRemovesCopiesWhoseOriginalIsGone(t *testing.T) {
	b := followerBackend(t)
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	db := b.rdb.Options().DB

	// Two jobs mirrored as the follower left them, plus a string sub-key.
	gone, kept := "sw-gone", "sw-kept"
	for _, id := range []string{gone, kept} {
		rec := legacyRecord(t, b, id)
		require.NoError(t, b.rdb.Copy(ctx, rec, b.key("step:"+id), db, true).Err())
		require.NoError(t, b.rdb.Set(ctx, rec+":note", "x", 0).Err())
		require.NoError(t, b.rdb.Copy(ctx, rec+":note", b.key("step:"+id+":note"), db, true).Err())
	}
	// While the follower is down: legacy code deletes a whole job and the
	// other job's sub-key.
	require.NoError(t, b.rdb.Del(ctx, b.key("job:"+gone), b.key("job:"+gone+":note")).Err())
	require.NoError(t, b.rdb.Del(ctx, b.key("job:"+kept+":note")).Err())

	sweptOnce(t, b)

	left := scanKeys(t, b.rdb, b.key("step:sw-*"))
	res := runVerify(t, newMigrator(t, b, StageDualWrite), quickVerify)
	t.Logf("step keys after the start sweep: %v; verify: %d differences %v", left, res.Differences, res.Diffs)
	require.Zero(t, b.rdb.Exists(ctx, b.key("step:"+gone)).Val(), "step:%s outlives job:%s", gone, gone)
	require.Zero(t, b.rdb.Exists(ctx, b.key("step:"+gone+":note")).Val(), "step:%s:note outlives its original", gone)
	require.Zero(t, b.rdb.Exists(ctx, b.key("step:"+kept+":note")).Val(), "step:%s:note outlives its original", kept)
	require.EqualValues(t, 1, b.rdb.Exists(ctx, b.key("step:"+kept)).Val(), "step:%s, whose original exists, stays", kept)
	require.Zero(t, res.Differences, "%v", res.Diffs)
}

// TestFollowerSweepKeepsCopiesWhoseOriginalExists: sweeps that delete
// orphaned step copies, run back to back next to a dual-writing Store
// (both sides in one script) and a legacy writer that snapshots
// step:<id> after writing job:<id>, never delete a copy whose original
// exists: read together, in one MULTI, no job key ever lacks its copy
// once both were written.
func TestFollowerSweepKeepsCopiesWhoseOriginalExists(t *testing.T) {
	b := followerBackend(t)
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))
	_, stop, last := followerStats(t, newMigrator(t, b, StageDualWrite),
		FollowOptions{Configure: true, Sweep: 5 * time.Millisecond, SweepRate: 1e6})

	s := newStore(t, b, WithStage(StageDualWrite))
	caps := registerWorker(t, s, "go", "s")
	var mu sync.Mutex
	var both []string // ids written on both sides
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { // the dual-writing Store
		for wctx.Err() == nil {
			id, err := s.SubmitJob(wctx, Job{Service: "s"})
			if err != nil {
				return
			}
			mu.Lock()
			both = append(both, id)
			mu.Unlock()
			if j, err := s.ClaimJob(wctx, caps); err == nil && j != nil {
				_ = s.CompleteJob(wctx, j.ID, "go", nil)
			}
		}
	})
	wg.Go(func() { // the legacy snapshot writer
		db := b.rdb.Options().DB
		for i := 0; wctx.Err() == nil; i++ {
			id := fmt.Sprint("snap-", i)
			rec := b.key("job:" + id)
			if b.rdb.HSet(wctx, rec, "id", id, "status", "pending").Err() != nil ||
				b.rdb.Copy(wctx, rec, b.key("step:"+id), db, true).Err() != nil {
				return
			}
			mu.Lock()
			both = append(both, id)
			mu.Unlock()
		}
	})
	var missing []string
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) && len(missing) == 0 {
		mu.Lock()
		ids := append([]string(nil), both...)
		mu.Unlock()
		var jobs, steps []*redis.IntCmd
		_, err := b.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, id := range ids {
				jobs = append(jobs, p.Exists(ctx, b.key("job:"+id)))
				steps = append(steps, p.Exists(ctx, b.key("step:"+id)))
			}
			return nil
		})
		require.NoError(t, err)
		for i, id := range ids {
			if jobs[i].Val() == 1 && steps[i].Val() == 0 {
				missing = append(missing, id)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	wg.Wait()
	require.ErrorIs(t, stop(), context.Canceled)
	st := last()
	t.Logf("%d ids written on both sides; follower %+v", len(both), st)
	require.Empty(t, missing, "step copies deleted while their original existed")
	require.Greater(t, st.Sweeps, uint64(5), "sweeps ran meanwhile")
}

// TestFollowerSweepRemovesEntriesWhoseJobIsGone: a queue entry of the
// step side whose job has neither record nor entry any more (the legacy
// cleanup deleted both while no follower listened) goes at the next
// sweep. Sweeps walked the job side's queues only, so they never met it.
func TestFollowerSweepRemovesEntriesWhoseJobIsGone(t *testing.T) {
	b := followerBackend(t)
	op := newMigrator(t, b, StageLegacy)
	require.NoError(t, op.PublishStage(ctx, StageDualWrite, PublishOptions{}))

	// Entries on both sides, as the follower left them.
	for _, ns := range []string{"job", "step"} {
		require.NoError(t, b.rdb.ZAdd(ctx, b.key(ns+"s:pending"), redisZ(5, "sw-p-gone"), redisZ(6, "sw-p-kept")).Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key(ns+"s:completed"), "sw-c-gone", `{"ok":1}`, "sw-c-kept", `{"ok":2}`).Err())
		require.NoError(t, b.rdb.HSet(ctx, b.key(ns+"s:failed"), "sw-f-gone", `{"error":"x"}`, "sw-f-kept", `{"error":"y"}`).Err())
	}
	// While the follower is down: the legacy side drops three of them.
	require.NoError(t, b.rdb.ZRem(ctx, b.key("jobs:pending"), "sw-p-gone").Err())
	require.NoError(t, b.rdb.HDel(ctx, b.key("jobs:completed"), "sw-c-gone").Err())
	require.NoError(t, b.rdb.HDel(ctx, b.key("jobs:failed"), "sw-f-gone").Err())

	sweptOnce(t, b)

	res := runVerify(t, newMigrator(t, b, StageDualWrite), quickVerify)
	t.Logf("verify: %d differences %v", res.Differences, res.Diffs)
	require.Equal(t, []string{"sw-p-kept"}, b.rdb.ZRange(ctx, b.key("steps:pending"), 0, -1).Val())
	require.Equal(t, map[string]string{"sw-c-kept": `{"ok":2}`}, b.rdb.HGetAll(ctx, b.key("steps:completed")).Val())
	require.Equal(t, map[string]string{"sw-f-kept": `{"error":"y"}`}, b.rdb.HGetAll(ctx, b.key("steps:failed")).Val())
	require.Zero(t, res.Differences, "%v", res.Diffs)
}
