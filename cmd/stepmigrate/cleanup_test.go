package main

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jobstep/jobstore"
	"github.com/stretchr/testify/require"
)

// TestVerifyWording: differences read one way only ("step:X missing;
// job:X has it", not "missing step:X (job:X)"), and --blocking lists
// exactly those that would block a cleanup, in text and JSON.
func TestVerifyWording(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *env) {
		e.publish(t, jobstore.StageDualWrite)
		e.submit(t, jobstore.StageDualWrite, "j", 5)
		// Two that block a cleanup of step:*: a copy as fresh as the
		// original but different, and a record only step:* has.
		require.NoError(t, e.rdb.HSet(ctx, e.key("step:j1"), "priority", "99").Err())
		require.NoError(t, e.rdb.HSet(ctx, e.key("step:x"), "id", "x", "service_required", "s", "status", "pending").Err())
		// Two that do not: a stale copy, and a copy missing.
		require.NoError(t, e.rdb.HSet(ctx, e.key("job:j2"), "retry_count", "1").Err())
		require.NoError(t, e.rdb.Del(ctx, e.key("step:j3")).Err())

		code, out, errOut := e.run(t, "verify", "--rounds", "1")
		require.Equal(t, exitFail, code, errOut)
		for _, s := range []string{
			e.key("step:j1") + " differs from " + e.key("job:j1") + ": fields priority; neither is fresher [blocks cleanup]",
			e.key("step:j2") + " differs from " + e.key("job:j2") + ": fields retry_count; " + e.key("job:j2") + " is fresher\n",
			e.key("step:j3") + " missing; " + e.key("job:j3") + " has it",
			e.key("job:x") + " missing; " + e.key("step:x") + " has it",
		} {
			require.Contains(t, out, s)
		}
		require.NotContains(t, out, "missing "+e.key("step"))
		require.Contains(t, errOut, "differences between job:* and step:*")

		code, out, errOut = e.run(t, "verify", "--rounds", "1", "--blocking")
		require.Equal(t, exitFail, code, errOut)
		var listed []string
		for line := range strings.Lines(out) {
			if strings.HasPrefix(line, "  ") {
				listed = append(listed, strings.TrimSpace(line))
			}
		}
		require.Len(t, listed, 2, out)
		for _, l := range listed {
			require.True(t, strings.HasSuffix(l, "[blocks cleanup]"), l)
		}
		require.Contains(t, out, "those that would block a cleanup of step:*:")
		require.Contains(t, errOut, "stepmigrate: 2 differences would block a cleanup of step:*")

		m := e.runJSON(t, exitFail, "verify", "--rounds", "1", "--blocking")
		require.Equal(t, true, m["blocking_only"])
		require.EqualValues(t, 2, m["blocking"])
		bd := m["blocking_diffs"].([]any)
		require.Len(t, bd, 2)
		for _, d := range bd {
			d := d.(map[string]any)
			require.Equal(t, true, d["blocking"])
			require.Contains(t, d["text"], "[blocks cleanup]")
		}

		// --limit bounds the list and says how many more there are.
		code, out, _ = e.run(t, "verify", "--rounds", "1", "--limit", "1")
		require.Equal(t, exitFail, code)
		require.Contains(t, out, "  ... and 3 more (--limit lists more)")

		// Once repaired, nothing blocks.
		code, _, errOut = e.run(t, "verify", "--rounds", "1", "--repair")
		require.Equal(t, exitOK, code, errOut)
		code, out, errOut = e.run(t, "verify", "--blocking")
		require.Equal(t, exitOK, code, errOut)
		require.Contains(t, out, "differences: 0 (")
	})
}

// TestCleanupRefused: a cleanup refused by its verification lists every
// difference that blocks it (up to --limit), says "cleanup refused" once,
// and deletes nothing. What blocks it is what only job:* has, or its
// fresher copies: the advice is what keeps them (a backfill to step:*),
// never verify --repair, which would rewrite them from step:* and lose
// them; and following it, the cleanup runs, with the data kept.
func TestCleanupRefused(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *env) {
		e.publish(t, jobstore.StageDualWrite)
		e.submit(t, jobstore.StageDualWrite, "j", 8)
		e.publish(t, jobstore.StageStepOnly)
		// A straggler still writing job:*: six records fresher there.
		for i := range 6 {
			require.NoError(t, e.rdb.HSet(ctx, e.key(fmt.Sprint("job:j", i)), "retry_count", "2").Err())
		}
		before := e.keys(t, "job*")

		code, out, errOut := e.run(t, "cleanup")
		require.Equal(t, exitFail, code)
		require.Empty(t, out)
		require.Equal(t, 1, strings.Count(errOut, "cleanup refused"), errOut)
		require.Contains(t, errOut, "stepmigrate: cleanup refused: 6 differences would be lost by deleting job:* (what only it has, or its copies not older than step:*'s):\n")
		for i := range 6 {
			require.Contains(t, errOut, fmt.Sprintf("  %s differs from %s: fields retry_count; %s is fresher [blocks cleanup]\n",
				e.key(fmt.Sprint("job:j", i)), e.key(fmt.Sprint("step:j", i)), e.key(fmt.Sprint("job:j", i))))
		}
		require.Contains(t, errOut, "To keep them, copy them to step:* first: stepmigrate backfill")
		require.Contains(t, errOut, "do not run stepmigrate verify --repair before that: it rewrites job:* from step:*, and would lose them")
		require.NotContains(t, errOut, "stepmigrate verify --repair rewrites job:* from step:*")
		require.NotContains(t, errOut, "neither is fresher", "no conflict here")
		require.Contains(t, errOut, "--force deletes without verifying")
		for _, s := range []string{"Verify with Repair", "(first:", "more (--limit"} {
			require.NotContains(t, errOut, s)
		}
		require.Equal(t, before, e.keys(t, "job*"), "nothing deleted")

		code, _, errOut = e.run(t, "cleanup", "--limit", "2")
		require.Equal(t, exitFail, code)
		require.Equal(t, 2, strings.Count(errOut, "[blocks cleanup]"))
		require.Contains(t, errOut, "  ... and 4 more (--limit lists more; stepmigrate verify --blocking lists them too)")

		m := e.runJSON(t, exitFail, "cleanup")
		require.Equal(t, true, m["refused"])
		require.Equal(t, "would_lose", m["reason"])
		require.Contains(t, m["message"], "cleanup refused: 6 differences would be lost by deleting job:*")
		require.Len(t, m["verify"].(map[string]any)["blocking_diffs"], 6)

		// --strict refuses on a stale copy too.
		require.NoError(t, e.rdb.HSet(ctx, e.key("step:j7"), "retry_count", "2").Err())
		require.Equal(t, "strict", e.runJSON(t, exitFail, "cleanup", "--strict")["reason"])
		code, _, errOut = e.run(t, "cleanup", "--strict", "--limit", "100")
		require.Equal(t, exitFail, code)
		require.Contains(t, errOut, "cleanup refused (--strict): job:* differs from step:* in 7 places:")
		require.Contains(t, errOut, e.key("job:j7")+" differs from "+e.key("step:j7"))
		require.Contains(t, errOut, "To keep them, copy them to step:* first: stepmigrate backfill")
		require.Contains(t, errOut, "1 difference is stale or missing in job:*, which loses nothing: after that, stepmigrate verify --repair rewrites job:* from step:*")

		// The advice, followed: the backfill keeps job:*'s fresher copies,
		// and the cleanup runs.
		code, _, errOut = e.run(t, "backfill")
		require.Equal(t, exitOK, code, errOut)
		code, _, errOut = e.run(t, "cleanup")
		require.Equal(t, exitOK, code, errOut)
		for i := range 6 {
			require.Equal(t, "2", e.rdb.HGet(ctx, e.key(fmt.Sprint("step:j", i)), "retry_count").Val(), "kept")
		}
		require.Empty(t, e.keys(t, "job:*"))
	})
}

// TestRollbackRefusalKeepsStepOnly: a rollback refused because step:*
// holds a record job:* lacks advises the backfill that copies it to job:*
// (backfill --reverse), not verify --repair, which would delete it; a
// conflict (as fresh on both sides, different) is said to be left by the
// backfill and to be the operator's call. Following the advice, the
// rollback runs and the record is kept.
func TestRollbackRefusalKeepsStepOnly(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *env) {
		e.publish(t, jobstore.StageDualWrite)
		e.submit(t, jobstore.StageDualWrite, "j", 3)
		e.publish(t, jobstore.StageLegacy)
		require.NoError(t, e.rdb.HSet(ctx, e.key("step:extra1"), "id", "extra1", "service_required", "s", "status", "pending",
			"priority", "1", "retry_count", "0", "max_retries", "3", "created_at", "2026-11-29T23:00:00.000Z").Err())

		code, out, errOut := e.run(t, "rollback")
		require.Equal(t, exitFail, code, out)
		require.Contains(t, errOut, e.key("job:extra1")+" missing; "+e.key("step:extra1")+" has it")
		require.Contains(t, errOut, "To keep them, copy them to job:* first: stepmigrate backfill --reverse")
		require.NotContains(t, errOut, "stepmigrate verify --repair rewrites step:* from job:*")
		code, _, errOut = e.run(t, "backfill", "--reverse")
		require.Equal(t, exitOK, code, errOut)
		code, out, errOut = e.run(t, "rollback", "--dry-run")
		require.Equal(t, exitOK, code, errOut)
		require.Contains(t, out, "rollback would delete")

		// A conflict: as fresh on both sides, but different.
		require.NoError(t, e.rdb.HSet(ctx, e.key("step:j1"), "priority", "99").Err())
		code, _, errOut = e.run(t, "rollback")
		require.Equal(t, exitFail, code)
		require.Contains(t, errOut, "neither is fresher [blocks cleanup]")
		require.Contains(t, errOut, "backfill leaves alone the copies as fresh on both sides but different (\"neither is fresher\"; 1 here)")
		require.NotContains(t, errOut, "To keep them", "the backfill keeps nothing here")
		require.Contains(t, errOut, "stepmigrate verify --repair keeps job:*'s and drops step:*'s")
		code, _, errOut = e.run(t, "verify", "--repair")
		require.Equal(t, exitOK, code, errOut)
		code, _, errOut = e.run(t, "rollback")
		require.Equal(t, exitOK, code, errOut)
		require.Equal(t, "extra1", e.rdb.HGet(ctx, e.key("job:extra1"), "id").Val(), "kept")
	})
}

// TestCleanupTimesTheDeletion: the rate cleanup prints is the deletion's
// alone, not the verification's before it (the old command said "249
// keys 41/s" for a cleanup that spent its time verifying). The library
// deletes with a script (EVALSHA), never a plain UNLINK: the times must
// be real, in JSON and in text, for cleanup and rollback.
func TestCleanupTimesTheDeletion(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *env) {
		e.publish(t, jobstore.StageDualWrite)
		e.submit(t, jobstore.StageDualWrite, "j", 20)
		e.publish(t, jobstore.StageStepOnly)
		// Stale copies in job:* go through the verification's rounds
		// (3 x 200 ms) and do not block.
		for i := range 3 {
			require.NoError(t, e.rdb.HSet(ctx, e.key(fmt.Sprint("step:j", i)), "retry_count", "1").Err())
		}
		m := e.runJSON(t, exitOK, "cleanup")
		require.EqualValues(t, 21, m["deleted"])
		verifySecs, deleteSecs, rate := m["verify_seconds"].(float64), m["delete_seconds"].(float64), m["keys_per_second"].(float64)
		require.Greater(t, deleteSecs, 0.0, "the deletion is timed")
		require.Greater(t, rate, 0.0)
		require.GreaterOrEqual(t, verifySecs, 0.6, "three rounds 200 ms apart")
		require.Less(t, deleteSecs, verifySecs, "the deletion is not counted in the verification")
		require.InDelta(t, 21/deleteSecs, rate, 1e-6*21/deleteSecs)
		elapsed := m["verify"].(map[string]any)["elapsed_ns"].(float64)
		require.InDelta(t, verifySecs, elapsed/1e9, 1e-6, "the embedded verification's elapsed_ns is its time")

		e.submit(t, jobstore.StageStepOnly, "k", 1) // keep step:* busy; job:* is empty now
		code, out, errOut := e.run(t, "cleanup")
		require.Equal(t, exitOK, code, errOut)
		require.Contains(t, out, "verified first: 0 items of job:* compared with step:*")
		require.Contains(t, out, "cleanup deleted 0 keys of job:*")

		// A rollback, in text: the deletion's time and rate (the 61 records
		// and steps:pending).
		e.submit(t, jobstore.StageStepOnly, "r", 40)
		code, _, errOut = e.run(t, "stage", "set", "legacy", "--force")
		require.Equal(t, exitOK, code, errOut)
		code, _, errOut = e.run(t, "backfill", "--reverse")
		require.Equal(t, exitOK, code, errOut)
		code, out, errOut = e.run(t, "rollback", "--batch", "10")
		require.Equal(t, exitOK, code, errOut)
		require.Regexp(t, `rollback deleted 62 keys of step:\* in [^ ]+ \([1-9][0-9,]* keys/s, the deletion alone\)`, out)
	})
}

// TestRollbackTwice: a rollback deletes step:*; a second one, on an empty
// namespace, verifies nothing, reports 0 differences and deletes nothing.
func TestRollbackTwice(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *env) {
		e.publish(t, jobstore.StageDualWrite)
		e.submit(t, jobstore.StageDualWrite, "r", 5)
		require.NoError(t, e.rdb.Set(ctx, e.key("job:r1:progress"), "x", 0).Err())
		require.NoError(t, e.rdb.Set(ctx, e.key("step:r1:progress"), "x", 0).Err())
		require.NoError(t, e.rdb.HSet(ctx, e.key("steps:pending:old"), "x", "1").Err())
		code, _, errOut := e.run(t, "stage", "set", "legacy", "--force")
		require.Equal(t, exitOK, code, errOut)

		code, out, errOut := e.run(t, "rollback", "--dry-run")
		require.Equal(t, exitOK, code, errOut)
		require.Contains(t, out, "rollback would delete 7 keys of step:*: 5 records, 1 sub-keys, 0 worker active hashes, 1 queue keys and 0 backfill checkpoints")
		code, out, errOut = e.run(t, "rollback")
		require.Equal(t, exitOK, code, errOut)
		require.Contains(t, out, "verified first: ")
		require.Contains(t, out, ": 0 differences, none that deleting step:* would lose")
		require.Contains(t, out, "rollback deleted 7 keys of step:*")
		require.Equal(t, []string{e.key("steps:pending:old")}, e.keys(t, "step*"), "look-alikes stay")

		code, out, errOut = e.run(t, "rollback")
		require.Equal(t, exitOK, code, errOut)
		require.Contains(t, out, "verified first: 0 items of step:* compared with job:*")
		require.Contains(t, out, ": 0 differences, none that deleting step:* would lose")
		require.Contains(t, out, "rollback deleted 0 keys of step:*")
		m := e.runJSON(t, exitOK, "rollback")
		require.EqualValues(t, 0, m["verify"].(map[string]any)["differences"])
		require.EqualValues(t, 0, m["deleted"])
	})
}

// TestInUseNamesTheStragglers: with the right stage published, a live
// process still checked in with another stage refuses a cleanup and a
// rollback; the refusal says so, naming the process as the library does,
// and does not claim the stage is wrong.
func TestInUseNamesTheStragglers(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *env) {
		e.publish(t, jobstore.StageDualWrite)
		s := e.store(t, jobstore.StageDualWrite)
		follow(t, s, time.Hour) // checks in now, with dual-write, then once an hour
		waitFleet(t, e, 1)
		code, _, errOut := e.run(t, "stage", "set", "legacy")
		require.Equal(t, exitOK, code, errOut)

		code, out, errOut := e.run(t, "rollback", "--dry-run")
		require.Equal(t, exitFail, code, out)
		require.Contains(t, errOut, "stepmigrate: rollback refused: 1 live processes report a stage in which step:* is still used: "+
			s.ProcessID()+" (dual-write); move them to legacy first")
		require.Contains(t, errOut, "stepmigrate status lists them")
		require.NotContains(t, errOut, "the published stage is legacy, in which processes still use step:*")
		require.NotContains(t, errOut, "stage set legacy", "legacy is published already")

		e.publish(t, jobstore.StageStepOnly)
		code, _, errOut = e.run(t, "cleanup", "--force")
		require.Equal(t, exitFail, code)
		require.Contains(t, errOut, "stepmigrate: cleanup refused: 1 live processes report a stage in which job:* is still used: "+
			s.ProcessID()+" (dual-write); move them to step-only first")
		require.NotContains(t, errOut, "the published stage is step-only, in which")

		// With --json, the refusal is a JSON object on stdout too.
		m := e.runJSON(t, exitFail, "cleanup")
		require.Equal(t, true, m["refused"])
		require.Equal(t, "namespace_in_use", m["reason"])
		require.Contains(t, m["message"], s.ProcessID()+" (dual-write)")
		require.EqualValues(t, 0, m["deleted"])
	})
}
