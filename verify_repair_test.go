package jobstore

import (
	"testing"

	"github.com/stretchr/testify/require"
)

// Verify with Repair reads the stage once, at the start, and the
// repair script checks none: a stage published while Verify runs (here
// step-primary, between the first pass and the rounds) makes the repair
// copy the side that is no longer authoritative over the one that now is.
func TestRepairStopsWhenTheStageChangesDuringVerify(t *testing.T) {
	b := serverBackend(t)
	op := newMigrator(t, b, StageLegacy)
	for _, st := range []Stage{StageDualWrite, StageDualRead} {
		require.NoError(t, op.PublishStage(ctx, st, PublishOptions{}))
	}
	id := "r6-repair"
	rec := legacyRecord(t, b, id)
	require.NoError(t, b.rdb.Copy(ctx, rec, b.key("step:"+id), b.rdb.Options().DB, true).Err())
	// The step side is ahead (a step-primary write whose job mirror failed,
	// or a write made once step-primary is published).
	require.NoError(t, b.rdb.HSet(ctx, b.key("step:"+id), "status", "completed",
		"completed_at", "2026-11-29T23:05:00.000Z").Err())

	opts := quickVerify
	opts.Repair = true
	opts.Progress = func(p VerifyProgress) {
		if p.Phase == "rounds" {
			require.NoError(t, op.PublishStage(ctx, StageStepPrimary, PublishOptions{}))
		}
	}
	res, err := newMigrator(t, b, StageDualRead).Verify(ctx, opts)
	require.ErrorIs(t, err, ErrNamespaceInUse, "the repair must stop")
	st, _, err := op.s.sharedStage(ctx)
	require.NoError(t, err)
	t.Logf("published now: %s; verify authoritative=%s repaired=%d", st, res.Authoritative, res.Repaired)
	require.Equal(t, StageStepPrimary, st)
	require.Equal(t, "completed", b.rdb.HGet(ctx, b.key("step:"+id), "status").Val(),
		"the repair wrote the stale job record over the authoritative step record (step-primary)")
}

// Repair copies an authoritative "record" that is not a hash over a
// good copy: the follower and the backfill pass such a key over, Verify
// lists it as blocking, and --repair replaces the valid step record with
// the junk.
func TestRepairNeverCopiesAJunkRecordOverAGoodOne(t *testing.T) {
	b := serverBackend(t)
	id := "r6-junk"
	rec := legacyRecord(t, b, id)
	require.NoError(t, b.rdb.Copy(ctx, rec, b.key("step:"+id), b.rdb.Options().DB, true).Err())
	require.NoError(t, b.rdb.Del(ctx, rec).Err())
	require.NoError(t, b.rdb.Set(ctx, rec, "garbage", 0).Err()) // something else wrote job:<id>
	opts := quickVerify
	opts.Repair = true
	res, err := newMigrator(t, b, StageDualWrite).Verify(ctx, opts)
	require.ErrorIs(t, err, ErrCorruptRecord, "the junk is reported")
	require.ErrorContains(t, err, "not a hash")
	t.Logf("verify: %v repaired=%d", res.Diffs, res.Repaired)
	typ := b.rdb.Type(ctx, b.key("step:"+id)).Val()
	require.Equal(t, "hash", typ, "repair replaced the step record with the junk job key")
}

// TestRepairRefusesAnUnreadableStage: the writes ignore a stage key they
// cannot read, but a repair, which overwrites a namespace, stops. (Verify
// refuses such a key when it starts; this one is written meanwhile.)
func TestRepairRefusesAnUnreadableStage(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		id := mirroredJob(t, b)
		require.NoError(t, b.rdb.HSet(ctx, b.key("step:"+id), "status", "pending").Err())
		opts := quickVerify
		opts.Repair = true
		opts.Progress = func(p VerifyProgress) { // junk written while it verifies
			if p.Phase == "rounds" {
				require.NoError(t, b.rdb.HSet(ctx, b.key("jobstore:stage"), "stage", "sideways").Err())
			}
		}
		_, err := newMigrator(t, b, StageDualWrite).Verify(ctx, opts)
		require.ErrorIs(t, err, ErrNamespaceInUse)
		require.ErrorContains(t, err, "unreadable")
		require.Equal(t, "pending", b.rdb.HGet(ctx, b.key("step:"+id), "status").Val(), "nothing repaired")
	})
}
