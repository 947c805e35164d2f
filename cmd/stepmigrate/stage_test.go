package main

import (
	"strings"
	"testing"
	"time"

	"github.com/jobstep/jobstore"
	"github.com/stretchr/testify/require"
)

// TestStageSetWait: --wait returns once every process following the
// stage reports it; on timeout it lists the stragglers, exit status 1,
// with the stage published all the same.
func TestStageSetWait(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *env) {
		code, out, errOut := e.run(t, "stage", "set", "dual-write", "--wait")
		require.Equal(t, exitOK, code, errOut)
		require.Contains(t, out, "waiting up to 2m0s for every process to report dual-write")
		require.Contains(t, out, "no process has checked in, so there is nobody to wait for")

		prompt := e.store(t, jobstore.StageLegacy)
		follow(t, prompt, 50*time.Millisecond)
		waitFleet(t, e, 1)
		code, out, errOut = e.run(t, "stage", "set", "dual-read", "--wait=10s")
		require.Equal(t, exitOK, code, errOut)
		require.Contains(t, out, "published dual-read (was dual-write)")
		require.Contains(t, out, "every process checked in reports dual-read (1), after ")
		require.Equal(t, jobstore.StageDualRead, prompt.Stage())

		// A process that reads the stage once an hour is a straggler.
		late := e.store(t, jobstore.StageLegacy)
		follow(t, late, time.Hour)
		waitFleet(t, e, 2)
		start := time.Now()
		code, out, errOut = e.run(t, "stage", "set", "step-primary", "--wait=1500ms")
		require.Equal(t, exitFail, code, out)
		require.Less(t, time.Since(start), 10*time.Second)
		require.Contains(t, out, "published step-primary (was dual-read)")
		require.Contains(t, errOut, "stepmigrate: stage set --wait: after 1.5s, 1 process does not report step-primary yet:\n")
		require.Contains(t, errOut, "  "+late.ProcessID()+"  host ")
		require.Contains(t, errOut, "still dual-read  checked in ")
		require.Contains(t, errOut, "(every 1h)")
		require.NotContains(t, errOut, prompt.ProcessID())
		require.Contains(t, errOut, "step-primary is published; they move at their next check-in, or need a restart")

		m := e.runJSON(t, exitFail, "stage", "set", "step-primary", "--wait=300ms")
		w := m["wait"].(map[string]any)
		require.Equal(t, false, w["reached"])
		require.Len(t, w["stragglers"], 1)
		require.Equal(t, late.ProcessID(), w["stragglers"].([]any)[0].(map[string]any)["id"])
	})
}

// TestLegacyGate: dual-read is refused while a legacy worker's heartbeat
// lives, with the evidence, what --force risks, and nothing published;
// --force publishes.
func TestLegacyGate(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *env) {
		e.publish(t, jobstore.StageDualWrite)
		require.NoError(t, e.rdb.HSet(ctx, e.key("worker:legacy-1"), "worker_id", "legacy-1", "status", "busy").Err())
		require.NoError(t, e.rdb.Set(ctx, e.key("worker:legacy-1:heartbeat"), "1", time.Minute).Err())

		code, out, errOut := e.run(t, "stage", "set", "dual-read")
		require.Equal(t, exitFail, code)
		require.Empty(t, out)
		require.Contains(t, errOut, "stepmigrate: stage set refused: legacy processes are still running: legacy worker heartbeat of legacy-1.\n")
		require.Contains(t, errOut, "their job:* writes make reads of step:* stale")
		require.Contains(t, errOut, "a legacy worker and a jobstore worker can run the same job")
		require.Contains(t, errOut, "then run stepmigrate stage set dual-read again. --force publishes anyway, with those risks.")
		require.Equal(t, 1, strings.Count(errOut, "stepmigrate:"))
		code, out, _ = e.run(t, "stage", "get")
		require.Equal(t, exitOK, code)
		require.Contains(t, out, "dual-write (published")

		code, out, errOut = e.run(t, "status")
		require.Equal(t, exitOK, code, errOut)
		require.Contains(t, out, "legacy       legacy worker heartbeat of legacy-1 (alive)")

		code, out, errOut = e.run(t, "stage", "set", "dual-read", "--force")
		require.Equal(t, exitOK, code, errOut)
		require.Contains(t, out, "published dual-read (was dual-write)")
		code, out, errOut = e.run(t, "status")
		require.Equal(t, exitOK, code, errOut)
		require.Contains(t, out, "warning      legacy processes are alive in dual-read")

		// Legacy and dual-write are never gated: legacy processes belong there.
		code, _, errOut = e.run(t, "stage", "set", "dual-write")
		require.Equal(t, exitOK, code, errOut)
	})
}

// TestLegacyGateOnAJump: when the legacy gate refuses a move of more than
// one stage, the advice is not to run the same stage set again (which,
// the legacy processes stopped, would be refused as a jump) but the next
// stage on the way; which works.
func TestLegacyGateOnAJump(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *env) {
		e.publish(t, jobstore.StageDualWrite)
		require.NoError(t, e.rdb.HSet(ctx, e.key("worker:legacy-1"), "worker_id", "legacy-1", "status", "busy").Err())
		require.NoError(t, e.rdb.Set(ctx, e.key("worker:legacy-1:heartbeat"), "1", time.Minute).Err())

		code, _, errOut := e.run(t, "stage", "set", "step-only")
		require.Equal(t, exitFail, code)
		require.Contains(t, errOut, "stage set refused: legacy processes are still running: legacy worker heartbeat of legacy-1.\n")
		require.NotContains(t, errOut, "run stepmigrate stage set step-only again")
		require.Contains(t, errOut, "step-only is 3 stages away from dual-write, which stage set refuses without --force: "+
			"stop them (a follower's last legacy write must be over 1m old), then move one stage at a time; the next is: stepmigrate stage set dual-read.")
		require.Contains(t, errOut, "--force publishes step-only anyway, jumping, with those risks")

		// From legacy the next stage is dual-write, which legacy
		// processes may still run in: it is not gated.
		e.publish(t, jobstore.StageLegacy)
		code, _, errOut = e.run(t, "stage", "set", "step-primary")
		require.Equal(t, exitFail, code)
		require.Contains(t, errOut, "the next is: stepmigrate stage set dual-write (legacy processes may still run in dual-write; stop them before dual-read)")
		code, out, errOut := e.run(t, "stage", "set", "dual-write")
		require.Equal(t, exitOK, code, errOut)
		require.Contains(t, out, "published dual-write (was legacy)")

		// The advice followed: legacy stopped, the next stage.
		require.NoError(t, e.rdb.Del(ctx, e.key("worker:legacy-1:heartbeat")).Err())
		code, out, errOut = e.run(t, "stage", "set", "dual-read")
		require.Equal(t, exitOK, code, errOut)
		require.Contains(t, out, "published dual-read (was dual-write)")
	})
}
