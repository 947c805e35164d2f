package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/jobstep/jobstore"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func TestUsage(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	for _, h := range [][]string{{"--help"}, {"help"}, {"verify", "-h"}, {"follow", "--help"}} {
		code, out, _ := runArgs(h...)
		require.Equal(t, exitOK, code)
		require.Contains(t, out, "usage: stepmigrate")
	}
	_, out, _ := runArgs("help")
	for _, s := range []string{"status", "backfill", "verify [--repair] [--rounds N] [--batch N] [--blocking] [--limit N]",
		"follow [--configure] [--sweep D|off] [--debounce D] [--recheck D]", "cleanup", "rollback",
		"stage set NAME [--force] [--wait[=DURATION]]",
		"exit status: 0 success; 1 differences found, refused or failed; 2 bad usage;",
		"130 interrupted by a signal", "go install ./cmd/stepmigrate", "go run turns every\nnon-zero status into 1",
		"follow runs until a signal, then exits 0"} {
		require.Contains(t, out, s)
	}
	code, _, errOut := runArgs()
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, "usage: stepmigrate")
	require.Contains(t, errOut, "stepmigrate: no command given")

	mr := miniredis.RunT(t)
	t.Setenv("REDIS_URL", "redis://"+mr.Addr()+"/0")
	code, out, errOut = runArgs("stage")
	require.Equal(t, exitOK, code, errOut)
	require.Contains(t, out, "none published (the environment here says legacy)")
}

// TestREADMEExitStatus: the runbook's exit statuses are the command's:
// 130 on a signal, except follow, which runs until one and exits 0.
func TestREADMEExitStatus(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	i := strings.Index(string(raw), "Exit status: **0** success")
	require.GreaterOrEqual(t, i, 0, "the README lists stepmigrate's exit statuses")
	para, _, _ := strings.Cut(string(raw[i:]), "\n\n")
	para = strings.Join(strings.Fields(para), " ")
	require.Contains(t, para, "**130** interrupted by a signal")
	require.Contains(t, para, "except `follow`, which runs until a signal, then exits **0**")
}

// TestBinary runs the command as its own process: the exit statuses a
// script sees, and a stderr with one clear line where go-redis would
// print its pool's dial errors first.
func TestBinary(t *testing.T) {
	t.Setenv("REDIS_URL", "")
	runBin := func(t *testing.T, args ...string) (int, string, string) {
		t.Helper()
		cmd := binary(t, args...)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		err := cmd.Run()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), out.String(), errOut.String()
		}
		require.NoError(t, err)
		return 0, out.String(), errOut.String()
	}
	code, out, _ := runBin(t, "--help")
	require.Equal(t, exitOK, code)
	require.Contains(t, out, "usage: stepmigrate")
	code, _, errOut := runBin(t, "frobnicate")
	require.Equal(t, exitUsage, code)
	require.Contains(t, errOut, `unknown command "frobnicate"`)

	// Nothing listens there: one line says so, and go-redis says nothing.
	code, out, errOut = runBin(t, "--redis", fmt.Sprintf("redis://127.0.0.1:%d/0", freePort(t)), "status")
	require.Equal(t, exitFail, code)
	require.Empty(t, out)
	require.NotContains(t, errOut, "pool.go")
	require.Equal(t, 1, strings.Count(errOut, "\n"), "one line: %q", errOut)
	require.True(t, strings.HasPrefix(errOut, "stepmigrate: cannot reach Redis at 127.0.0.1:"), errOut)
}

// TestDatabaseOutOfRange: a URL naming a database the server does not
// have is bad usage, and said so, not "cannot reach Redis".
func TestDatabaseOutOfRange(t *testing.T) {
	t.Parallel()
	url := os.Getenv("JOBSTORE_TEST_REDIS_URL")
	if url == "" {
		url = "redis://" + startTestServer(t).addr() + "/0"
	}
	i := strings.LastIndexByte(url, '/')
	code, out, errOut := runArgs("--redis", url[:i]+"/99", "status")
	require.Equal(t, exitUsage, code, errOut)
	require.Empty(t, out)
	require.Contains(t, errOut, "has no database 99 (ERR DB index is out of range)")
	require.Contains(t, errOut, "below the server's `databases` setting")
	require.NotContains(t, errOut, "cannot reach")
}

// TestSignalInterruptsBackfill sends SIGINT to a running backfill: it
// stops with exit status 130, says it was interrupted, what it did, and
// that the same command resumes; which it then does.
func TestSignalInterruptsBackfill(t *testing.T) {
	t.Parallel()
	mr := miniredis.RunT(t)
	e := &env{url: "redis://" + mr.Addr() + "/0", mr: mr}
	e.rdb = redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = e.rdb.Close() })
	e.publish(t, jobstore.StageDualWrite)
	e.submit(t, jobstore.StageLegacy, "j", 40)

	cmd := binary(t, e.args("backfill", "--batch", "1", "--rate", "20")...)
	var out bytes.Buffer
	cmd.Stdout = &out
	stderr, err := cmd.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	lines := bufio.NewScanner(stderr)
	var errOut strings.Builder
	for lines.Scan() {
		errOut.WriteString(lines.Text() + "\n")
		if strings.HasPrefix(lines.Text(), "backfill job→step records (1/6)") {
			require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
			break
		}
	}
	for lines.Scan() {
		errOut.WriteString(lines.Text() + "\n")
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "stderr: %s", errOut.String())
	require.Equal(t, exitInterrupted, ee.ExitCode(), "stdout: %s\nstderr: %s", out.String(), errOut.String())
	require.Contains(t, out.String(), "backfill job:* → step:* INTERRUPTED in phase records (1/6)")
	require.Contains(t, out.String(), "the checkpoint is saved: run the same command again to resume where it stopped")
	require.NotContains(t, out.String(), "next: stepmigrate verify")
	require.Contains(t, errOut.String(), "stepmigrate: backfill interrupted; its checkpoint is saved: run the same command again to resume")

	code, o, eo := e.run(t, "backfill")
	require.Equal(t, exitOK, code, eo)
	require.Contains(t, o, "it resumed an interrupted run")
	require.Contains(t, o, "next: stepmigrate verify")
	m := e.runJSON(t, exitOK, "verify")
	require.EqualValues(t, 0, m["differences"])
}

// TestRunbook walks the runbook with the command: dual-write, backfill,
// verify, the stages up to step-only, cleanup; then back with a reverse
// backfill.
func TestRunbook(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *env) {
		legacy := e.store(t, jobstore.StageLegacy)
		const n = 12
		e.submit(t, jobstore.StageLegacy, "j", n)
		caps := jobstore.Capabilities{WorkerID: "w", Services: []string{"s"}}
		require.NoError(t, legacy.RegisterWorker(ctx, caps))
		for range 4 {
			j, err := legacy.ClaimJob(ctx, caps)
			require.NoError(t, err)
			require.NoError(t, legacy.CompleteJob(ctx, j.ID, "w", nil))
		}
		require.NoError(t, legacy.UnregisterWorker(ctx, "w"))
		require.NoError(t, e.rdb.Set(ctx, e.key("job:j1:progress"), "10%", 0).Err())

		m := e.runJSON(t, exitOK, "stage", "set", "dual-write")
		require.Equal(t, "dual-write", m["published"])
		require.Equal(t, "legacy", m["previous"])
		code, _, errOut := e.run(t, "stage", "set", "step-only")
		require.Equal(t, exitFail, code)
		require.Contains(t, errOut, "stage set refused: the shared stage is dual-write, not next to step-only")
		require.Contains(t, errOut, "--force jumps anyway")

		m = e.runJSON(t, exitOK, "status")
		require.Equal(t, map[string]any{"published": "dual-write", "migrator": "dual-write", "environment": "legacy", "source": "published"}, m["stage"])
		require.EqualValues(t, n, m["job"].(map[string]any)["records"])
		require.EqualValues(t, 1, m["job"].(map[string]any)["sub_keys"])
		require.EqualValues(t, 0, m["step"].(map[string]any)["records"])
		require.EqualValues(t, n, m["records_differ"])

		m = e.runJSON(t, exitOK, "backfill", "--dry-run")
		require.EqualValues(t, n, m["copied"])
		require.Equal(t, true, m["dry_run"])
		require.Empty(t, e.keys(t, "step*"))

		m = e.runJSON(t, exitFail, "verify", "--rounds", "1")
		require.EqualValues(t, n+1+8+4, m["missing"], "the records, the sub-key, 8 pending and 4 completed entries")
		for _, k := range []string{"authoritative", "other", "checked", "differences", "missing", "different", "blocking", "diffs", "blocking_diffs", "by_item"} {
			require.Contains(t, m, k)
		}
		first := m["diffs"].([]any)[0].(map[string]any)
		require.Contains(t, first["text"], "missing; "+e.key("job:j0")+" has it")

		batch := "5" // several batches per phase; on a shared server with a large keyspace, the default
		if e.mr == nil {
			batch = "500"
		}
		code, out, errOut := e.run(t, "backfill", "--batch", batch)
		require.Equal(t, exitOK, code, errOut)
		require.Contains(t, out, fmt.Sprintf("%d records: copied %d", n, n))
		require.Contains(t, out, "sub-keys: 1 looked at, copied 1")
		require.Contains(t, out, "next: stepmigrate verify")
		m = e.runJSON(t, exitOK, "backfill")
		require.EqualValues(t, 0, m["copied"], "a second run copies nothing")

		m = e.runJSON(t, exitOK, "verify")
		require.EqualValues(t, 0, m["differences"])

		require.NoError(t, e.rdb.HSet(ctx, e.key("step:j3"), "priority", "99").Err())
		code, out, errOut = e.run(t, "verify", "--rounds", "1")
		require.Equal(t, exitFail, code)
		require.Contains(t, out, e.key("step:j3")+" differs from "+e.key("job:j3"))
		require.Contains(t, errOut, "stepmigrate verify --repair rewrites step:* from job:*")
		code, out, errOut = e.run(t, "verify", "--repair", "--rounds", "1")
		require.Equal(t, exitOK, code, errOut)
		require.Contains(t, out, "repaired 1 difference from job:*")
		m = e.runJSON(t, exitOK, "verify")
		require.EqualValues(t, 0, m["differences"])

		code, _, errOut = e.run(t, "cleanup")
		require.Equal(t, exitFail, code)
		require.Contains(t, errOut, "cleanup refused")
		require.Contains(t, errOut, "job:* can go only in step-only: move the fleet there one stage at a time")
		require.Contains(t, errOut, "the next is: stepmigrate stage set dual-read --wait")
		code, _, errOut = e.run(t, "rollback")
		require.Equal(t, exitFail, code)
		require.Contains(t, errOut, "stepmigrate stage set legacy")

		for _, st := range []string{"dual-read", "step-primary", "step-only"} {
			code, out, errOut := e.run(t, "stage", "set", st)
			require.Equal(t, exitOK, code, errOut)
			require.Contains(t, out, "published "+st)
		}
		code, out, _ = e.run(t, "stage", "get")
		require.Equal(t, exitOK, code)
		require.Contains(t, out, "step-only (published")

		m = e.runJSON(t, exitOK, "cleanup", "--dry-run")
		require.EqualValues(t, n, m["records"])
		require.Equal(t, true, m["dry_run"])
		require.EqualValues(t, 0, m["verify"].(map[string]any)["blocking"])

		m = e.runJSON(t, exitOK, "cleanup")
		require.EqualValues(t, n, m["records"])
		require.EqualValues(t, 1, m["sub_keys"])
		require.EqualValues(t, 2, m["queues"])
		require.Equal(t, []string{e.key("jobstore:stage")}, e.keys(t, "job*"))

		code, out, errOut = e.run(t, "status")
		require.Equal(t, exitOK, code, errOut)
		require.Contains(t, out, "stage        step-only (published")
		require.Contains(t, out, "job:* is empty, as expected after a cleanup: the migration is complete")
		require.NotContains(t, out, "differ by")

		// And back: step-primary, then a reverse backfill.
		code, _, errOut = e.run(t, "stage", "set", "step-primary")
		require.Equal(t, exitOK, code, errOut)
		m = e.runJSON(t, exitOK, "backfill", "--reverse")
		require.Equal(t, "step", m["from"])
		require.EqualValues(t, n, m["copied"])
		m = e.runJSON(t, exitOK, "verify")
		require.Equal(t, "step", m["authoritative"])
		require.EqualValues(t, 0, m["differences"])
	})
}
