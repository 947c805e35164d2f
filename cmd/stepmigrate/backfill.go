package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jobstep/jobstore"
)

type backfillJSON struct {
	jobstore.BackfillResult
	// Scanned counts the keys, members and fields this run looked at
	// (not the runs it resumed), PerSecond their rate over this run.
	Scanned     int64   `json:"scanned"`
	PerSecond   float64 `json:"per_second"`
	Interrupted bool    `json:"interrupted"`
	// Phase is where the run was when it ended or stopped.
	Phase string `json:"phase,omitempty"`
}

func (a *app) backfill(ctx context.Context, args []string) error {
	fs := a.flagSet("backfill")
	var opts jobstore.BackfillOptions
	fs.BoolVar(&opts.Reverse, "reverse", false, "copy step:* to job:*")
	fs.Float64Var(&opts.Rate, "rate", 0, "keys per second (0: no limit)")
	fs.BoolVar(&opts.DryRun, "dry-run", false, "count what would be copied")
	fs.IntVar(&opts.BatchSize, "batch", 0, "keys per batch")
	fs.BoolVar(&opts.Restart, "restart", false, "discard the checkpoint and start over")
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("backfill", pos); err != nil {
		return err
	}
	if opts.Rate < 0 || opts.BatchSize < 0 {
		return usagef("backfill: --rate and --batch must not be negative")
	}
	if err := checkGiven(fs); err != nil {
		return err
	}
	if err := a.connect(ctx); err != nil {
		return err
	}
	from, to := jobstore.JobNamespace, jobstore.StepNamespace
	if opts.Reverse {
		from, to = to, from
	}
	if st := a.stageNow(); !writes(st, to) {
		fmt.Fprintf(a.stderr, "stepmigrate: warning: in stage %s nothing keeps %s:* up to date, so the copies will go stale; backfill once every process writes both namespaces\n", st, to)
	}

	tr := newBackfillTracker(fmt.Sprintf("backfill %s→%s", from, to))
	// The phases' sizes, for their share done, are counted beside the
	// run (NamespaceStats of both sides: scans that --rate does not
	// pace); until they are known the line shows counts only.
	sctx, stopStats := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		src, err := a.m.NamespaceStats(sctx, from)
		if err != nil {
			return
		}
		dst, err := a.m.NamespaceStats(sctx, to)
		if err == nil {
			tr.setTotals(src, dst)
		}
	})
	p := a.progress()
	opts.Progress = func(bp jobstore.BackfillProgress) { tr.update(p, bp) }
	res, err := a.m.Backfill(ctx, opts)
	stopStats()
	wg.Wait()
	p.finish()
	stopped := interrupted(ctx, err)
	if err != nil && !stopped {
		return backfillError(err)
	}
	scanned, rate := tr.runRate(res.Elapsed)
	if a.json {
		if err := a.printJSON(backfillJSON{res, scanned, rate, stopped, tr.phase}); err != nil {
			return err
		}
	} else {
		a.printBackfill(res, scanned, rate, stopped, tr)
	}
	if stopped {
		if res.DryRun {
			return exitError{exitInterrupted, "backfill --dry-run interrupted; it wrote nothing: run it again (a dry run starts over)"}
		}
		return exitError{exitInterrupted, "backfill interrupted; its checkpoint is saved: run the same command again to resume (--restart starts over)"}
	}
	return nil
}

// backfillError adds what to do to the errors an operator can fix.
func backfillError(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, jobstore.ErrCorruptRecord) && strings.Contains(msg, "checkpoint"):
		return failf("backfill: %s", strings.Replace(msg, "start over with Restart", "start over with stepmigrate backfill --restart", 1))
	case strings.Contains(msg, "WRONGTYPE") || strings.Contains(msg, " is a "):
		return failf("backfill: %v; fix or remove that key, then run again (the checkpoint is kept)", err)
	}
	return failf("backfill: %v", err)
}

// writes reports whether processes in stage st write namespace ns.
func writes(st jobstore.Stage, ns jobstore.Namespace) bool {
	if st.Primary() == ns {
		return true
	}
	m, ok := st.Mirror()
	return ok && m == ns
}

func (a *app) printBackfill(res jobstore.BackfillResult, scanned int64, rate float64, stopped bool, tr *backfillTracker) {
	verb, dry := "copied", ""
	if res.DryRun {
		verb, dry = "would copy", " (dry run)"
	}
	if stopped {
		a.printf("backfill %s:* → %s:*%s INTERRUPTED in phase %s, after %s; so far, over all its runs:\n",
			res.From, res.To, dry, tr.phaseText(), durationText(res.Elapsed))
	}
	a.printf("backfill %s:* → %s:*%s: %s records: %s %s, %s unchanged, %s newer in %s:* (kept), %s conflicts, %s gone meanwhile, %s not hashes\n",
		res.From, res.To, dry, group(res.Records), verb, group(res.Copied), group(res.Unchanged), group(res.Newer), res.To,
		group(res.Conflicts), group(res.Gone), group(res.WrongType))
	a.printf("sub-keys: %s looked at, %s %s; queue entries: %s differed, %s synced, %s left (their records not in sync)\n",
		group(res.SubKeys), verb, group(res.SubKeysCopied), group(res.Entries), group(res.EntriesSynced), group(res.EntriesSkipped))
	if res.Foreign > 0 {
		a.printf("%s keys matched %s:* but belong to no job; left alone\n", group(res.Foreign), res.From)
	}
	if res.Newer > 0 {
		a.printf("destination looks newer (left alone): %s; verify lists them, and verify --repair settles them from the authoritative side\n",
			strings.Join(res.NewerIDs, ", "))
	}
	if res.Conflicts > 0 {
		a.printf("conflicts (as fresh, but different): %s; stepmigrate verify --repair settles them from the authoritative side\n",
			strings.Join(res.ConflictIDs, ", "))
	}
	if res.WrongType > 0 {
		a.printf("keys that are not hashes: %s; fix or remove them, then run again\n", strings.Join(res.WrongTypeKeys, ", "))
	}
	resumed := ""
	if res.Resumed {
		resumed = "; it resumed an interrupted run, whose counts the lines above include"
		if res.Paused > 0 {
			resumed += fmt.Sprintf(", after a pause of %s (what was written behind its position meanwhile reaches %s:* only through dual-write and the follower; verify checks it)",
				durationText(res.Paused), res.To)
		}
	}
	a.printf("this run: %s keys, members and fields looked at in %s (%s/s)%s\n",
		group(scanned), durationText(res.Elapsed), group(int64(rate)), resumed)
	switch {
	case stopped && res.DryRun:
		a.printf("a dry run keeps no checkpoint: run it again to start over\n")
	case stopped:
		a.printf("the checkpoint is saved: run the same command again to resume where it stopped (--restart starts over)\n")
	case !res.DryRun:
		a.printf("next: stepmigrate verify\n")
	}
}

// backfillTracker turns Backfill's reports into progress lines: the
// phase, its own share done, and a rate and ETA from this run's work
// only (a resumed run's counts include its earlier runs', its Scanned
// and elapsed time do not).
type backfillTracker struct {
	label string
	now   func() time.Time
	start time.Time

	mu       sync.Mutex
	src, dst *jobstore.NamespaceStats // nil until counted

	phase        string
	scannedLast  int64 // Scanned at the last report
	phaseScanned int64 // Scanned when the phase began, this run
	// The first report of the phase in this run: the ETA is the time the
	// share done since then took, scaled to the share left.
	firstAt   time.Time
	firstFrac float64
	hasFirst  bool
}

var backfillPhases = []string{"records", "subkeys", "pending", "active", "completed", "failed"}

func newBackfillTracker(label string) *backfillTracker {
	return &backfillTracker{label: label, now: time.Now, start: time.Now()}
}

func (t *backfillTracker) setTotals(src, dst jobstore.NamespaceStats) {
	t.mu.Lock()
	t.src, t.dst = &src, &dst
	t.mu.Unlock()
}

// total is the phase's size in its unit, or -1 while unknown. The queue
// phases scan the destination too when the source is authoritative.
func (t *backfillTracker) total(phase string, authoritative bool) (int64, string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.src == nil {
		return -1, ""
	}
	both := func(f func(jobstore.NamespaceStats) int64) int64 {
		n := f(*t.src)
		if authoritative {
			n += f(*t.dst)
		}
		return n
	}
	switch phase {
	case "records":
		return t.src.Records, "records"
	case "subkeys":
		return t.src.SubKeys, "sub-keys"
	case "pending":
		return both(func(s jobstore.NamespaceStats) int64 { return s.Pending }), "entries"
	case "active":
		return both(func(s jobstore.NamespaceStats) int64 { return s.Workers }), "workers"
	case "completed":
		return both(func(s jobstore.NamespaceStats) int64 { return s.Completed }), "entries"
	case "failed":
		return both(func(s jobstore.NamespaceStats) int64 { return s.Failed }), "entries"
	}
	return -1, ""
}

// done is how much of the phase is done: the records and sub-keys phases
// count over all runs (the result's counts include the runs resumed);
// the queue phases count this run's items, so a run resumed in the middle
// of one shows less than is done.
func (t *backfillTracker) done(bp jobstore.BackfillProgress) int64 {
	switch bp.Phase {
	case "records":
		return bp.Records
	case "subkeys":
		return bp.SubKeys
	}
	return bp.Scanned - t.phaseScanned
}

func (t *backfillTracker) phaseText() string { return phaseText(t.phase) }

// phaseText names a phase with its place: "records (1/6)".
func phaseText(phase string) string {
	if i := slices.Index(backfillPhases, phase); i >= 0 {
		return fmt.Sprintf("%s (%d/%d)", phase, i+1, len(backfillPhases))
	}
	if phase == "" {
		return "(none yet)"
	}
	return phase
}

// runRate is what this run looked at and its rate.
func (t *backfillTracker) runRate(elapsed time.Duration) (int64, float64) {
	if s := elapsed.Seconds(); s > 0 {
		return t.scannedLast, float64(t.scannedLast) / s
	}
	return t.scannedLast, 0
}

// update takes a report and draws its line.
func (t *backfillTracker) update(p *progress, bp jobstore.BackfillProgress) {
	changed := bp.Phase != t.phase
	if changed {
		t.phase, t.phaseScanned, t.hasFirst = bp.Phase, t.scannedLast, false
	}
	t.scannedLast = bp.Scanned
	p.show(changed, t.segments(bp, p.tty)...)
}

// segments is the line for a report: what matters most is kept longest
// when the terminal is narrow.
func (t *backfillTracker) segments(bp jobstore.BackfillProgress, withBar bool) []segment {
	now := t.now()
	segs := []segment{seg(6, "%s", t.label), seg(10, "%s", phaseText(bp.Phase))}
	total, unit := t.total(bp.Phase, bp.Authoritative)
	done := t.done(bp)
	if total > 0 {
		frac := min(float64(done)/float64(total), 1)
		if withBar {
			segs = append(segs, seg(2, "%s", bar(frac, 20)))
		}
		segs = append(segs, seg(9, "%d%%", int(frac*100)), seg(4, "%s/%s %s", group(min(done, total)), group(total), unit))
		if !t.hasFirst {
			t.firstAt, t.firstFrac, t.hasFirst = now, frac, true
		} else if gained := frac - t.firstFrac; gained > 0 {
			eta := time.Duration(float64(now.Sub(t.firstAt)) * (1 - frac) / gained)
			segs = append(segs, seg(7, "ETA %s", durationText(eta)))
		}
	} else {
		segs = append(segs, seg(4, "%s looked at", group(done)))
	}
	if s := now.Sub(t.start).Seconds(); s > 0 && bp.Scanned > 0 {
		segs = append(segs, seg(3, "%s/s", group(int64(float64(bp.Scanned)/s))))
	}
	verb := "copied"
	if bp.DryRun {
		verb = "would copy"
	}
	segs = append(segs, seg(1, "%s %s", verb, group(bp.Copied+bp.SubKeysCopied+bp.EntriesSynced)))
	return segs
}
