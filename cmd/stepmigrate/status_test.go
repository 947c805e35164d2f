package main

import (
	"context"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jobstep/jobstore"
	"github.com/stretchr/testify/require"
)

// The advice status gives, per stage: never the old "key counts differ
// by N; run stepmigrate backfill, then verify" where it does not fit.
func TestAdvice(t *testing.T) {
	ns := func(name string, records, pending int64) jobstore.NamespaceStats {
		return jobstore.NamespaceStats{Namespace: name, Records: records, Pending: pending}
	}
	cases := []struct {
		name    string
		in      adviceInput
		says    []string
		notSays []string
	}{
		{"legacy before dual-write", adviceInput{stage: jobstore.StageLegacy, job: ns("job", 151_012, 40), step: ns("step", 0, 0)},
			[]string{"step:* is empty, as expected in legacy (before dual-write, or after a completed rollback): there is nothing to compare",
				"next: stepmigrate stage set dual-write"},
			[]string{"differ", "backfill"}},
		{"legacy with rollback leftovers", adviceInput{stage: jobstore.StageLegacy, job: ns("job", 100, 3), step: ns("step", 90, 3)},
			[]string{"step:* still holds 90 records and 3 queue entries that nothing writes in legacy: leftovers of dual-write",
				"stepmigrate rollback --dry-run, then stepmigrate rollback"},
			[]string{"differ by"}},
		{"dual-write with counts differing, legacy alive, no follower",
			adviceInput{stage: jobstore.StageDualWrite, job: ns("job", 1443, 0), step: ns("step", 1000, 0), legacyAlive: true},
			[]string{"legacy processes are alive and no follower runs", "run stepmigrate follow",
				"stepmigrate backfill, then stepmigrate verify", "record counts differ by 443 (job:* 1,443, step:* 1,000)",
				"not a snapshot", "stepmigrate verify, which re-checks what differs, is the check"},
			nil},
		{"dual-write with a follower", adviceInput{stage: jobstore.StageDualWrite, job: ns("job", 10, 0), step: ns("step", 10, 0),
			legacyAlive: true, followers: 1},
			[]string{"the follower mirrors what they write", "record counts match (10 each)"},
			[]string{"no follower runs", "not a snapshot"}},
		{"dual-read", adviceInput{stage: jobstore.StageDualRead, job: ns("job", 10, 0), step: ns("step", 9, 0)},
			[]string{"both namespaces are written, job:* first: stepmigrate verify checks them", "not a snapshot",
				"stepmigrate stage set step-primary"},
			nil},
		{"step-primary", adviceInput{stage: jobstore.StageStepPrimary, job: ns("job", 10, 0), step: ns("step", 10, 0)},
			[]string{"step:* first", "stepmigrate verify --repair rewrites job:* from step:*", "stepmigrate stage set step-only --wait"},
			[]string{"not a snapshot"}},
		{"step-only before cleanup", adviceInput{stage: jobstore.StageStepOnly, job: ns("job", 10, 0), step: ns("step", 12, 0)},
			[]string{"job:* is no longer written", "stepmigrate verify --blocking", "stepmigrate cleanup --dry-run, then stepmigrate cleanup"},
			[]string{"differ by"}},
		{"step-only after cleanup", adviceInput{stage: jobstore.StageStepOnly, job: ns("job", 0, 0), step: ns("step", 151_012, 0)},
			[]string{"job:* is empty, as expected after a cleanup: the migration is complete"},
			[]string{"differ", "backfill"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			text := strings.Join(advice(c.in), "\n")
			for _, s := range c.says {
				require.Contains(t, text, s)
			}
			for _, s := range c.notSays {
				require.NotContains(t, text, s)
			}
			require.NotContains(t, text, "run stepmigrate backfill, then verify")
		})
	}
}

func TestMemoryVerdict(t *testing.T) {
	v := memoryCheck(1_100, 100, 100, "step", "job")
	require.Equal(t, "PASS", v.Verdict)
	require.InDelta(t, 10.0, *v.IncreasePct, 1e-9)
	require.InDelta(t, 100.0, *v.CopyPct, 1e-9)
	lines := v.lines()
	require.Len(t, lines, 2)
	require.Contains(t, lines[0], "PASS: step:* adds 10.0% to the instance's memory (~100 B over the other 1000 B of used_memory; limit 25%); relative to job:* it is +100%")
	require.Contains(t, lines[1], "full second copy of job:* (about +100% of it)")
	require.Contains(t, lines[1], "it lasts until cleanup")

	v = memoryCheck(1_000, 250, 260, "step", "job")
	require.Equal(t, "FAIL", v.Verdict, "250 over 750 is 33%")
	require.InDelta(t, 100.0/3, *v.IncreasePct, 1e-9)
	require.Contains(t, v.lines()[0], "FAIL: step:* adds 33.3%")

	v = memoryCheck(0, 250, 260, "job", "step")
	require.Equal(t, "UNKNOWN", v.Verdict)
	require.Nil(t, v.IncreasePct)
	require.Contains(t, v.lines()[0], "UNKNOWN: INFO memory gives no used_memory here; job:* is ~250 B, +96% relative to step:*")

	v = memoryCheck(1_000, 0, 260, "step", "job")
	require.Equal(t, "PASS", v.Verdict)
	require.Equal(t, "step:* is empty, so it adds nothing", v.lines()[1])
}

// TestMemoryVerdictOnRedis reads used_memory from a real server: the
// verdict is the copy's estimate over the rest of used_memory.
func TestMemoryVerdictOnRedis(t *testing.T) {
	t.Parallel()
	e := startTestServer(t).env(t)
	e.publish(t, jobstore.StageDualWrite)
	e.submit(t, jobstore.StageDualWrite, "j", 50)
	m := e.runJSON(t, exitOK, "status")
	mem := m["memory"].(map[string]any)
	used, copied := mem["used_memory"].(float64), mem["copy_bytes"].(float64)
	require.Positive(t, used)
	require.Positive(t, copied)
	require.Equal(t, "step", mem["copy"])
	require.InDelta(t, 100*copied/(used-copied), mem["increase_pct"], 1e-6)
	require.Contains(t, []any{"PASS", "FAIL"}, mem["verdict"])
	code, out, _ := e.run(t, "status")
	require.Equal(t, exitOK, code)
	require.Regexp(t, `memory       (PASS|FAIL): step:\* adds \d+\.\d% to the instance's memory`, out)
}

// snakeKeys checks that every key of a JSON document is snake_case,
// except in the maps whose keys are data (ids, item names).
func snakeKeys(t *testing.T, v any, path string) {
	t.Helper()
	snake := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	switch x := v.(type) {
	case map[string]any:
		for k, val := range x {
			require.Regexp(t, snake, k, "key %q at %s", k, path)
			switch k {
			case "reports", "by_item", "attempted_by_op", "failed_by_op":
				for id, sub := range asMap(val) {
					snakeKeys(t, sub, path+"."+k+"["+id+"]")
				}
				continue
			}
			snakeKeys(t, val, path+"."+k)
		}
	case []any:
		for i, val := range x {
			snakeKeys(t, val, fmt.Sprintf("%s[%d]", path, i))
		}
	}
}

func asMap(v any) map[string]any {
	m, _ := v.(map[string]any)
	return m
}

// follow runs s.FollowStage in the background until the test ends.
func follow(t *testing.T, s *jobstore.Store, every time.Duration) func() {
	t.Helper()
	fctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.FollowStage(fctx, every) })
	stop := func() { cancel(); wg.Wait() }
	t.Cleanup(stop)
	return stop
}

// waitFleet waits until the fleet lists n processes.
func waitFleet(t *testing.T, e *env, n int) {
	t.Helper()
	m := e.migrator(t, jobstore.StageLegacy)
	require.Eventually(t, func() bool {
		procs, _, err := m.Fleet(ctx)
		return err == nil && len(procs) == n
	}, 10*time.Second, 20*time.Millisecond)
}

// TestStatusPerStage runs status where the old command gave the wrong
// advice: in legacy, in dual-write with counts that differ and a fleet
// with stragglers, after a cleanup and after a rollback.
func TestStatusPerStage(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *env) {
		code, out, errOut := e.run(t, "status")
		require.Equal(t, exitOK, code, errOut)
		require.Contains(t, out, "advice       step:* is empty, as expected in legacy")
		require.Contains(t, out, "warning      no process has checked in")
		require.NotContains(t, out, "differ by")

		// dual-write, with jobs written by legacy services that do not
		// mirror (raw HSET, as theirs), a legacy worker alive and no
		// follower; a fleet with one process on the stage, one whose
		// check-in is stale and one that has not moved yet.
		e.publish(t, jobstore.StageDualWrite)
		e.submit(t, jobstore.StageDualWrite, "d", 4)
		for i := range 3 {
			require.NoError(t, e.rdb.HSet(ctx, e.key(fmt.Sprint("job:l", i)), "id", fmt.Sprint("l", i), "service_required", "s",
				"priority", "50", "status", "pending", "created_at", "2026-11-29T23:00:00.000Z").Err())
		}
		require.NoError(t, e.rdb.HSet(ctx, e.key("worker:lw"), "worker_id", "lw").Err())
		require.NoError(t, e.rdb.Set(ctx, e.key("worker:lw:heartbeat"), "1", time.Minute).Err())
		prompt := e.store(t, jobstore.StageDualWrite)
		follow(t, prompt, 50*time.Millisecond)
		stale := e.store(t, jobstore.StageDualWrite, jobstore.WithClock(func() time.Time { return time.Now().Add(-time.Hour) }))
		follow(t, stale, time.Second)
		late := e.store(t, jobstore.StageLegacy)
		follow(t, late, time.Hour)
		waitFleet(t, e, 3)
		for i := range 2 {
			_, err := prompt.SubmitJob(ctx, jobstore.Job{ID: fmt.Sprint("p", i), Service: "s"})
			require.NoError(t, err)
		}
		mig := e.migrator(t, jobstore.StageDualWrite)
		require.Eventually(t, func() bool {
			dw, _, err := mig.FleetStats(ctx)
			return err == nil && dw.Attempted == 2
		}, 5*time.Second, 20*time.Millisecond, "the fleet's stats count what the process mirrored")

		code, out, errOut = e.run(t, "status")
		require.Equal(t, exitOK, code, errOut)
		for _, s := range []string{
			"stage        dual-write (published; the environment here says legacy)",
			"fleet        3 processes checked in",
			"legacy       legacy worker heartbeat of lw (alive)",
			"job:*        9 records", "step:*       6 records",
			"advice       legacy processes are alive and no follower runs",
			"stepmigrate backfill, then stepmigrate verify",
			"record counts differ by 3 (job:* 9, step:* 6); counts taken while services write are not a snapshot",
			"last checked in 1h ago, missing two check-ins",
			"dual-write   2 writes mirrored by the fleet, 0 failed (0 panics): success rate 100.0000%",
		} {
			require.Contains(t, out, s)
		}
		require.NotContains(t, out, "warning      no process has checked in")

		e.publish(t, jobstore.StageDualRead)
		require.Eventually(t, func() bool {
			procs, _, err := mig.Fleet(ctx)
			require.NoError(t, err)
			for _, p := range procs {
				if p.ID == prompt.ProcessID() {
					return p.Stage == jobstore.StageDualRead
				}
			}
			return false
		}, 5*time.Second, 20*time.Millisecond)
		m := e.runJSON(t, exitOK, "status")
		snakeKeys(t, m, "status")
		fleet := m["fleet"].(map[string]any)
		require.Len(t, fleet["processes"], 3)
		whys := map[string]string{}
		for _, s := range fleet["stragglers"].([]any) {
			whys[s.(map[string]any)["id"].(string)] = s.(map[string]any)["why"].(string)
		}
		require.Equal(t, "stage", whys[late.ProcessID()], "it reads the stage once an hour")
		require.Contains(t, whys, stale.ProcessID(), "stale, or not moved yet")
		require.NotContains(t, whys, prompt.ProcessID())
		require.Equal(t, true, m["legacy"].(map[string]any)["alive"])
		require.Equal(t, []any{"lw"}, m["legacy"].(map[string]any)["workers"])
		require.Contains(t, strings.Join(toStrings(m["warnings"]), "\n"), "legacy processes are alive in dual-read")
	})
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// TestStatusAfterCleanupAndRollback: one namespace empty is what a
// cleanup or a rollback leaves, and status says so instead of counting
// the other's records as a difference.
func TestStatusAfterCleanupAndRollback(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *env) {
		e.publish(t, jobstore.StageDualWrite)
		e.submit(t, jobstore.StageDualWrite, "j", 6)
		e.publish(t, jobstore.StageStepOnly)
		code, _, errOut := e.run(t, "cleanup")
		require.Equal(t, exitOK, code, errOut)
		code, out, errOut := e.run(t, "status")
		require.Equal(t, exitOK, code, errOut)
		require.Contains(t, out, "advice       job:* is empty, as expected after a cleanup: the migration is complete")
		require.NotContains(t, out, "differ by")
		require.Contains(t, out, "job:* is empty, so it adds nothing")

		// Back to legacy the long way round: a reverse backfill, then
		// the rollback of step:*.
		e.publish(t, jobstore.StageStepPrimary)
		code, _, errOut = e.run(t, "backfill", "--reverse")
		require.Equal(t, exitOK, code, errOut)
		e.publish(t, jobstore.StageLegacy)
		code, _, errOut = e.run(t, "rollback")
		require.Equal(t, exitOK, code, errOut)
		code, out, errOut = e.run(t, "status")
		require.Equal(t, exitOK, code, errOut)
		require.Contains(t, out, "job:*        6 records")
		require.Contains(t, out, "advice       step:* is empty, as expected in legacy (before dual-write, or after a completed rollback)")
		require.NotContains(t, out, "differ by")
	})
}
