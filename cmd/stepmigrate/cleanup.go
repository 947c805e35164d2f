package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jobstep/jobstore"
)

func (a *app) cleanup(ctx context.Context, args []string) error {
	return a.drop(ctx, "cleanup", jobstore.JobNamespace, jobstore.StageStepOnly, args)
}

func (a *app) rollback(ctx context.Context, args []string) error {
	return a.drop(ctx, "rollback", jobstore.StepNamespace, jobstore.StageLegacy, args)
}

type cleanupJSON struct {
	jobstore.CleanupResult
	Verify *verifyJSON `json:"verify,omitempty"`
	// DeleteSeconds is the deletion's time alone, from its first batch;
	// VerifySeconds the verification's before it (also Verify's
	// elapsed_ns, which the library leaves 0 in a cleanup).
	DeleteSeconds float64 `json:"delete_seconds"`
	VerifySeconds float64 `json:"verify_seconds"`
	KeysPerSecond float64 `json:"keys_per_second"`
	// Refused is set when the library refused the deletion, or stopped it
	// (the stage moved): Reason says why, Message what stderr says.
	Refused bool   `json:"refused"`
	Reason  string `json:"reason,omitempty"` // namespace_in_use, would_lose or strict
	Message string `json:"message,omitempty"`
}

// drop runs cleanup (ns job) or rollback (ns step), which the library
// allows only in stage needs.
func (a *app) drop(ctx context.Context, name string, ns jobstore.Namespace, needs jobstore.Stage, args []string) error {
	fs := a.flagSet(name)
	var opts jobstore.CleanupOptions
	fs.BoolVar(&opts.DryRun, "dry-run", false, "count what would be deleted")
	fs.BoolVar(&opts.Force, "force", false, "delete without verifying first")
	fs.BoolVar(&opts.Strict, "strict", false, "refuse on any difference, not only on what deleting would lose")
	fs.IntVar(&opts.BatchSize, "batch", 0, "keys per batch")
	limit := fs.Int("limit", jobstore.DefaultMaxReported, "differences listed when refused")
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs(name, pos); err != nil {
		return err
	}
	if opts.BatchSize < 0 || *limit < 0 {
		return usagef("%s: --batch and --limit must not be negative", name)
	}
	if err := checkGiven(fs); err != nil {
		return err
	}
	if err := a.connect(ctx); err != nil {
		return err
	}
	// The differences that refuse the deletion, all of them up to the
	// limit: with --strict every one, else those that would be lost.
	var refusing []jobstore.Diff
	var kinds diffKinds
	opts.Verify.MaxReported = *limit
	opts.Verify.OnDiff = func(d jobstore.Diff) {
		if (opts.Strict || d.Blocking) && len(refusing) < *limit {
			refusing = append(refusing, d)
		}
		kinds.count(d)
	}
	p := a.progress()
	opts.Verify.Progress = func(x jobstore.VerifyProgress) {
		p.show(false, seg(6, "verify before %s", name), seg(9, "%s", x.Phase), seg(8, "%s compared", group(x.Checked)))
	}
	verb := "deleted"
	if opts.DryRun {
		verb = "found"
	}
	opts.Progress = func(n int64) {
		p.show(false, seg(6, "%s %s:*", name, ns), seg(9, "%s keys %s", group(n), verb))
	}
	res, err := a.m.Cleanup(ctx, ns, opts)
	p.finish()
	out := cleanupJSON{CleanupResult: res}
	// The library times the deletion from its first batch, apart from the
	// verification before it, so that its rate counts the deletion alone.
	deleting := res.Deleting > 0
	if deleting {
		out.DeleteSeconds = res.Deleting.Seconds()
		out.KeysPerSecond = float64(res.Deleted) / out.DeleteSeconds
	}
	if res.Verify != nil {
		v := *res.Verify
		out.VerifySeconds = v.Elapsed.Seconds()
		vj := newVerifyJSON(v)
		out.Verify = &vj
		if s := v.Elapsed.Seconds(); s > 0 {
			out.Verify.PerSecond = float64(v.Checked) / s
		}
	}
	// A refusal is also a result: with --json, stdout has it.
	refuse := func(reason, msg string) error {
		out.Refused, out.Reason, out.Message = true, reason, msg
		if a.json {
			_ = a.printJSON(out)
		}
		return failf("%s", msg)
	}
	switch {
	case errors.Is(err, jobstore.ErrNamespaceInUse):
		verb := "refused"
		if deleting {
			verb = "stopped"
		}
		return refuse("namespace_in_use", fmt.Sprintf("%s %s: %s", name, verb, a.inUse(err, ns, needs)))
	case errors.Is(err, jobstore.ErrCleanupRefused):
		reason := "would_lose"
		if opts.Strict {
			reason = "strict"
		}
		return refuse(reason, refusal(name, ns, opts.Strict, res.Verify, refusing, kinds))
	case interrupted(ctx, err):
		return exitError{exitInterrupted, fmt.Sprintf("%s interrupted after it %s %s keys; run it again to finish", name, verb, group(res.Deleted))}
	case err != nil:
		return failf("%s: %v", name, err)
	}
	if a.json {
		return a.printJSON(out)
	}
	if v := res.Verify; v != nil {
		a.printf("verified first: %s items of %s:* compared with %s:* in %s: %s, none that deleting %s:* would lose\n",
			group(v.Checked), ns, v.Authoritative, durationText(secs(out.VerifySeconds)), plural(v.Differences, "difference"), ns)
	}
	if res.DryRun {
		a.printf("%s would delete %s keys of %s:*: %s records, %s sub-keys, %s worker active hashes, %s queue keys and %s backfill checkpoints\n",
			name, group(res.Deleted), ns, group(res.Records), group(res.SubKeys), group(res.ActiveHashes), group(res.Queues), group(res.Checkpoints))
		return nil
	}
	timing := ""
	if deleting {
		timing = fmt.Sprintf(" in %s (%s keys/s, the deletion alone)", durationText(secs(out.DeleteSeconds)), group(int64(out.KeysPerSecond)))
	}
	a.printf("%s deleted %s keys of %s:*%s: %s records, %s sub-keys, %s worker active hashes, %s queue keys and %s backfill checkpoints\n",
		name, group(res.Deleted), ns, timing, group(res.Records), group(res.SubKeys), group(res.ActiveHashes), group(res.Queues), group(res.Checkpoints))
	a.printf("keys outside %s:* and look-alikes (such as %ss:pending:old) were left alone\n", ns, ns)
	return nil
}

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

// inUse says why the library refused to delete ns (ErrNamespaceInUse), in
// its words, which name the stage or the processes at fault, and how to
// move on. The stage read when the command connected only chooses the
// advice: the library reads it again, and also refuses on live processes
// that report another stage while the right one is published.
func (a *app) inUse(err error, ns jobstore.Namespace, needs jobstore.Stage) string {
	why := strings.TrimPrefix(err.Error(), jobstore.ErrNamespaceInUse.Error()+": ")
	if !a.published {
		// The library's Migrator runs in the environment's stage here.
		why = strings.Replace(why, "this Migrator's stage is", "no stage is published, and this environment's stage is", 1)
	}
	if a.published && a.shared == needs {
		return fmt.Sprintf("%s. %s is published: stepmigrate status lists them and every process that does not report it yet; "+
			"a process moves at its next check-in (Store.FollowStage), or needs a restart. Run it again once every live process reports %s",
			why, needs, needs)
	}
	from := a.stageNow()
	next := needs
	if from > needs+1 {
		next = from - 1
	} else if from+1 < needs {
		next = from + 1
	}
	if next != needs {
		return fmt.Sprintf("%s. %s:* can go only in %s: move the fleet there one stage at a time, with the runbook's checks between stages "+
			"(stepmigrate status lists the fleet); the next is: stepmigrate stage set %s --wait", why, ns, needs, next)
	}
	return fmt.Sprintf("%s. %s:* can go only in %s. Once every process can run it (stepmigrate status lists the fleet): stepmigrate stage set %s --wait",
		why, ns, needs, needs)
}

// diffKinds sorts the differences a cleanup's verification found by what
// keeps them: what deleting the namespace would lose (Blocking) is what
// only it has or its copies not older than the other's, which a backfill
// to the other namespace keeps, but for conflicts (records as fresh on
// both sides but different, or not hashes), which it leaves alone; the
// rest is stale or missing in the namespace, and loses nothing.
type diffKinds struct {
	blocking, conflicts, stale int64
}

func (k *diffKinds) count(d jobstore.Diff) {
	switch {
	case !d.Blocking:
		k.stale++
	case d.Item == jobstore.ItemRecord && d.Kind == jobstore.DiffDifferent &&
		(strings.Contains(d.Detail, "neither is fresher") || !strings.Contains(d.Detail, " is fresher")):
		k.blocking++
		k.conflicts++
	default:
		k.blocking++
	}
}

// refusal lists what refuses a cleanup: every difference up to the limit,
// and how many more there are; then what keeps what deleting ns would
// lose, before anything that rewrites ns.
func refusal(name string, ns jobstore.Namespace, strict bool, v *jobstore.VerifyResult, listed []jobstore.Diff, k diffKinds) string {
	var b strings.Builder
	n := int64(len(listed))
	if v != nil {
		n = v.Blocking
		if strict {
			n = v.Differences
		}
	}
	other := "the other namespace"
	if v != nil {
		other = v.Authoritative + ":*"
	}
	if strict {
		fmt.Fprintf(&b, "%s refused (--strict): %s:* differs from %s in %s:\n", name, ns, other, plural(n, "place"))
	} else {
		fmt.Fprintf(&b, "%s refused: %s would be lost by deleting %s:* (what only it has, or its copies not older than %s's):\n",
			name, plural(n, "difference"), ns, other)
	}
	for _, d := range listed {
		fmt.Fprintf(&b, "  %s\n", d)
	}
	if more := n - int64(len(listed)); more > 0 {
		fmt.Fprintf(&b, "  ... and %s more (--limit lists more; stepmigrate verify --blocking lists them too)\n", group(more))
	}
	backfill := "stepmigrate backfill"
	if ns == jobstore.StepNamespace {
		backfill += " --reverse"
	}
	if k.blocking > 0 || !strict {
		fmt.Fprintf(&b, "First find the process still writing %s:* (stepmigrate status lists stragglers and legacy processes).\n", ns)
	}
	if k.blocking > k.conflicts || (!strict && k.blocking == 0) {
		fmt.Fprintf(&b, "To keep them, copy them to %s first: %s (it copies what %s lacks or holds older, never over newer data), then run %s again; "+
			"do not run stepmigrate verify --repair before that: it rewrites %s:* from %s, and would lose them.\n",
			other, backfill, other, name, ns, other)
	}
	if k.conflicts > 0 {
		fmt.Fprintf(&b, "The backfill leaves alone the copies as fresh on both sides but different (\"neither is fresher\"; %s here): "+
			"which is right is your call; stepmigrate verify --repair keeps %s's and drops %s:*'s.\n", group(k.conflicts), other, ns)
	}
	if strict && k.stale > 0 {
		then := "after that, "
		if k.blocking == 0 {
			then = ""
		}
		are := "differences are"
		if k.stale == 1 {
			are = "difference is"
		}
		fmt.Fprintf(&b, "%s %s stale or missing in %s:*, which loses nothing: %sstepmigrate verify --repair rewrites %s:* from %s "+
			"(only --strict refuses on them).\n", group(k.stale), are, ns, then, ns, other)
	}
	fmt.Fprintf(&b, "--force deletes without verifying, losing what only %s:* has", ns)
	return b.String()
}
