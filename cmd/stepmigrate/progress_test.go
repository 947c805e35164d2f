package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/jobstep/jobstore"
	"github.com/stretchr/testify/require"
)

func TestFormatting(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -4200: "-4,200"} {
		require.Equal(t, want, group(n))
	}
	for d, want := range map[time.Duration]string{
		300 * time.Microsecond: "<1ms", 340 * time.Millisecond: "340ms", 7 * time.Second: "7s",
		72 * time.Second: "1m12s", time.Minute: "1m", 70 * time.Second: "1m10s",
		2*time.Hour + 5*time.Minute: "2h5m", time.Hour: "1h",
	} {
		require.Equal(t, want, durationText(d), "%v", d)
	}
	require.Equal(t, "1 difference", plural(1, "difference"))
	require.Equal(t, "1,002 differences", plural(int64(1002), "difference"))
}

// aLongBackfill is a report from the middle of a long run, whose line at
// full length is well over 80 columns.
func aLongBackfill(tr *backfillTracker) jobstore.BackfillProgress {
	tr.setTotals(jobstore.NamespaceStats{Records: 12_345_678, Pending: 5_000_000}, jobstore.NamespaceStats{Pending: 4_000_000})
	return jobstore.BackfillProgress{Phase: "records", Scanned: 5_800_000, BackfillResult: jobstore.BackfillResult{
		From: "job", To: "step", Authoritative: true, Records: 5_678_901, Copied: 5_600_000}}
}

// TestProgressFitsTheTerminal: on a terminal a progress line never
// reaches the last column (a line that wraps leaves a copy of itself at
// every redraw), at 80 or 40 columns or fewer; the most useful parts
// stay; off a terminal the lines are plain and whole.
func TestProgressFitsTheTerminal(t *testing.T) {
	clock := time.Unix(1_000, 0)
	tr := newBackfillTracker("backfill job→step")
	tr.now, tr.start = func() time.Time { return clock }, clock.Add(-100*time.Second)
	bp := aLongBackfill(tr)
	segs := tr.segments(bp, true)
	full := fitLine(0, segs...)
	require.Greater(t, utf8.RuneCountInString(full), 100, full)
	require.Equal(t, "backfill job→step records (1/6) [#########-----------] 45% 5,678,901/12,345,678 records 58,000/s copied 5,600,000", full)

	for _, width := range []int{80, 40, 24, 12} {
		var buf bytes.Buffer
		p := newProgress(&buf, true)
		p.width = func() int { return width }
		now := clock
		p.now = func() time.Time { return now }
		for i := range 5 {
			now = now.Add(time.Second)
			clock = now
			bp.Scanned += 100_000
			bp.Records += 100_000 * int64(i)
			tr.update(p, bp)
		}
		p.finish()
		out := buf.String()
		require.True(t, strings.HasSuffix(out, "\r\033[K"), "the line is erased at the end")
		draws := strings.Split(strings.TrimSuffix(out, "\r\033[K"), "\r\033[K")[1:]
		require.Len(t, draws, 5)
		for _, line := range draws {
			require.NotContains(t, line, "\n")
			require.LessOrEqual(t, utf8.RuneCountInString(line), width-1, "%q at %d columns", line, width)
		}
		want := map[int]string{
			80: "backfill job→step records (1/6) 54% 6,678,901/12,345,678 records ETA 23s",
			40: "records (1/6) 62% ETA 21s",
			24: "records (1/6) 70%",
			12: "records (1…",
		}
		require.Equal(t, want[width], draws[len(draws)-1], "what stays at %d columns", width)
	}

	// Off a terminal: plain lines, whole, at most one every 3 seconds.
	var buf bytes.Buffer
	p := newProgress(&buf, false)
	now := clock
	p.now = func() time.Time { return now }
	for range 7 {
		now = now.Add(time.Second)
		tr.update(p, bp)
	}
	p.finish()
	require.NotContains(t, buf.String(), "\033")
	require.NotContains(t, buf.String(), "\r")
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	require.Len(t, lines, 3, "at 0s, 3s and 6s: %q", buf.String())
	require.Greater(t, utf8.RuneCountInString(lines[0]), 80, "not cut")
}

func TestFitLine(t *testing.T) {
	segs := []segment{seg(5, "label"), seg(9, "phase"), seg(1, "detail that is long"), seg(7, "ETA 5s")}
	require.Equal(t, "label phase detail that is long ETA 5s", fitLine(0, segs...))
	require.Equal(t, "label phase detail that is long ETA 5s", fitLine(38, segs...))
	require.Equal(t, "label phase ETA 5s", fitLine(37, segs...))
	require.Equal(t, "phase ETA 5s", fitLine(12, segs...))
	require.Equal(t, "phase", fitLine(11, segs...))
	require.Equal(t, "pha…", fitLine(4, segs...))
	require.Equal(t, "phase", fitLine(5, seg(1, ""), seg(9, "phase")), "empty segments are left out")
}

// TestBackfillRateOfThisRun: a run resumed at 46% shows its phase's share
// done over all runs, but its rate and ETA come from its own work: no
// ETA until it has made progress of its own, then the time that progress
// took, scaled to what is left (the old command said "46% ... ETA 0s").
func TestBackfillRateOfThisRun(t *testing.T) {
	clock := time.Unix(1_000, 0)
	tr := newBackfillTracker("backfill job→step")
	tr.now, tr.start = func() time.Time { return clock }, clock
	tr.setTotals(jobstore.NamespaceStats{Records: 1_000}, jobstore.NamespaceStats{})
	report := func(scanned, records int64) jobstore.BackfillProgress {
		return jobstore.BackfillProgress{Phase: "records", Scanned: scanned, BackfillResult: jobstore.BackfillResult{
			From: "job", To: "step", Authoritative: true, Resumed: true, Records: records}}
	}
	clock = clock.Add(500 * time.Millisecond)
	line := fitLine(0, tr.segments(report(5, 460), false)...)
	require.Equal(t, "backfill job→step records (1/6) 46% 460/1,000 records 10/s copied 0", line, "no ETA yet")
	tr.update(newProgress(&bytes.Buffer{}, false), report(5, 460))
	clock = clock.Add(time.Second)
	line = fitLine(0, tr.segments(report(15, 470), false)...)
	require.Contains(t, line, "records (1/6) 47% 470/1,000 records")
	require.Contains(t, line, "ETA 53s", "1 s for 1%, 53% left")
	require.Contains(t, line, "10/s", "15 items in this run's 1.5 s")
	require.NotContains(t, line, "ETA 0s")

	scanned, rate := tr.runRate(1500 * time.Millisecond)
	require.EqualValues(t, 5, scanned, "what the last update saw")
	require.InDelta(t, 5/1.5, rate, 1e-9)
}

// TestBackfillProgressPhases: the line names the phase and its own
// share, so the queue phases no longer sit at 100%.
func TestBackfillProgressPhases(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *env) {
		e.publish(t, jobstore.StageDualWrite)
		e.submit(t, jobstore.StageLegacy, "j", 12)
		var out, errOut syncBuffer
		code := e.runCtx(ctx, &out, &errOut, "backfill")
		require.Equal(t, exitOK, code, errOut.String())
		var phases []string
		for line := range strings.Lines(errOut.String()) {
			f := strings.Fields(line)
			require.GreaterOrEqual(t, len(f), 4, line)
			require.Equal(t, "backfill", f[0])
			phases = append(phases, f[2]+" "+f[3])
		}
		require.Contains(t, phases, "records (1/6)")
		require.Contains(t, phases, "pending (3/6)", "a new phase is shown at once")
	})
}

// TestBackfillInterrupted: a backfill stopped by a signal (its context
// cancelled) says so, with what it did, and that running it again
// resumes; exit status 130. Then the same command resumes and finishes.
func TestBackfillInterrupted(t *testing.T) {
	t.Parallel()
	eachEnv(t, func(t *testing.T, e *env) {
		e.publish(t, jobstore.StageDualWrite)
		e.submit(t, jobstore.StageLegacy, "j", 30)
		// The store mirrors under the published stage; make step:* lack
		// them, as before a backfill.
		for _, k := range e.keys(t, "step*") {
			require.NoError(t, e.rdb.Del(ctx, k).Err())
		}
		// Small batches make many reports; on a shared server, whose
		// keyspace may be large, they would make the scans slow.
		batch := "1"
		if e.mr == nil {
			batch = "500"
		}
		rctx, cancel := context.WithCancel(ctx)
		defer cancel()
		var out syncBuffer
		errOut := syncBuffer{cancelOn: "backfill job→step records", cancel: cancel}
		code := e.runCtx(rctx, &out, &errOut, "backfill", "--batch", batch, "--rate", "100")
		require.Equal(t, exitInterrupted, code, "stdout: %s\nstderr: %s", out.String(), errOut.String())
		o := out.String()
		require.Contains(t, o, "backfill job:* → step:* INTERRUPTED in phase records (1/6), after ")
		require.Contains(t, o, "so far, over all its runs:")
		require.Regexp(t, `\d+ records: copied \d+`, o)
		require.Regexp(t, `this run: \d+ keys, members and fields looked at in`, o)
		require.Contains(t, o, "the checkpoint is saved: run the same command again to resume where it stopped (--restart starts over)")
		require.NotContains(t, o, "next: stepmigrate verify", "nothing that reads as a success")
		require.Contains(t, errOut.String(), "stepmigrate: backfill interrupted; its checkpoint is saved: run the same command again to resume")

		m := e.runJSON(t, exitOK, "backfill")
		require.Equal(t, true, m["resumed"])
		require.Equal(t, false, m["interrupted"])
		// The counts of both runs: at least every record once (a resumed
		// run may look at some again, and counts them again).
		require.GreaterOrEqual(t, m["records"], float64(30))
		if e.mr != nil { // stopped after its first record, not at the end of the records' one page
			require.Less(t, m["scanned"], float64(30*3), "this run's own items only")
		}
		m = e.runJSON(t, exitOK, "verify")
		require.EqualValues(t, 0, m["differences"])

		// Interrupted in --json: the result says so.
		for _, k := range e.keys(t, "step*") {
			require.NoError(t, e.rdb.Del(ctx, k).Err())
		}
		rctx, cancel = context.WithCancel(ctx)
		defer cancel()
		out, errOut = syncBuffer{}, syncBuffer{cancelOn: "backfill job→step records", cancel: cancel}
		code = e.runCtx(rctx, &out, &errOut, "--json", "backfill", "--batch", batch, "--rate", "100")
		require.Equal(t, exitInterrupted, code, errOut.String())
		var res map[string]any
		require.NoError(t, json.Unmarshal([]byte(out.String()), &res), out.String())
		require.Equal(t, true, res["interrupted"])
		require.Equal(t, "records", res["phase"])
	})
}
