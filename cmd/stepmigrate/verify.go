package main

import (
	"context"
	"fmt"

	"github.com/jobstep/jobstore"
)

// diffJSON is a difference with the line that says it.
type diffJSON struct {
	jobstore.Diff
	Text string `json:"text"`
}

func diffsJSON(ds []jobstore.Diff) []diffJSON {
	out := make([]diffJSON, len(ds))
	for i, d := range ds {
		out[i] = diffJSON{d, d.String()}
	}
	return out
}

type verifyJSON struct {
	jobstore.VerifyResult
	// Diffs and BlockingDiffs are the result's, each with its text, up to
	// --limit.
	Diffs         []diffJSON `json:"diffs"`
	BlockingDiffs []diffJSON `json:"blocking_diffs"`
	// InFlightItems are the result's, each with its text: writes in
	// flight, not differences.
	InFlightItems []diffJSON `json:"in_flight_items"`
	BlockingOnly  bool       `json:"blocking_only"` // --blocking: the exit status looks at blocking differences only
	PerSecond     float64    `json:"per_second"`
}

// newVerifyJSON is a result with the text of each difference listed.
func newVerifyJSON(res jobstore.VerifyResult) verifyJSON {
	return verifyJSON{VerifyResult: res, Diffs: diffsJSON(res.Diffs), BlockingDiffs: diffsJSON(res.BlockingDiffs),
		InFlightItems: diffsJSON(res.InFlightItems)}
}

func (a *app) verify(ctx context.Context, args []string) error {
	fs := a.flagSet("verify")
	var opts jobstore.VerifyOptions
	fs.BoolVar(&opts.Repair, "repair", false, "rewrite differences from the authoritative namespace")
	fs.IntVar(&opts.Rounds, "rounds", 0, "re-check rounds (default 3)")
	fs.IntVar(&opts.BatchSize, "batch", 0, "keys per batch")
	blocking := fs.Bool("blocking", false, "list only the differences that block a cleanup")
	limit := fs.Int("limit", jobstore.DefaultMaxReported, "differences listed")
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("verify", pos); err != nil {
		return err
	}
	if opts.Rounds < 0 || opts.BatchSize < 0 || *limit < 0 {
		return usagef("verify: --rounds, --batch and --limit must not be negative")
	}
	if err := checkGiven(fs); err != nil {
		return err
	}
	if err := a.connect(ctx); err != nil {
		return err
	}
	opts.MaxReported = *limit
	// Every difference goes through OnDiff, where the result's lists stop
	// at the limit: --blocking lists exactly those that would block a
	// cleanup, in the order found.
	var listed []jobstore.Diff
	opts.OnDiff = func(d jobstore.Diff) {
		if (!*blocking || d.Blocking) && len(listed) < *limit {
			listed = append(listed, d)
		}
	}
	p := a.progress()
	opts.Progress = func(vp jobstore.VerifyProgress) {
		p.show(false, seg(6, "verify"), seg(9, "%s", vp.Phase), seg(8, "%s compared", group(vp.Checked)),
			seg(5, "%s to re-check", group(vp.Suspects)))
	}
	res, err := a.m.Verify(ctx, opts)
	p.finish()
	if err != nil {
		if interrupted(ctx, err) {
			return exitError{exitInterrupted, "verify interrupted; it changed nothing but what --repair had rewritten: run it again"}
		}
		return failf("verify: %v", err)
	}
	rate := 0.0
	if s := res.Elapsed.Seconds(); s > 0 {
		rate = float64(res.Checked) / s
	}
	found := res.Differences
	if *blocking {
		found = res.Blocking
	}
	if a.json {
		out := newVerifyJSON(res)
		out.BlockingOnly, out.PerSecond = *blocking, rate
		if err := a.printJSON(out); err != nil {
			return err
		}
	} else {
		a.printVerify(res, listed, found, *blocking, rate)
	}
	switch {
	case found == 0:
		return nil
	case opts.Repair && res.Repaired >= res.Differences:
		if !a.json {
			a.printf("repaired %s from %s:*; run stepmigrate verify again to confirm\n", plural(res.Repaired, "difference"), res.Authoritative)
		}
		return nil
	case opts.Repair:
		return failf("repaired %s of %s; run stepmigrate verify again to see what is left", group(res.Repaired), plural(res.Differences, "difference"))
	}
	return failf("%s; %s", verifySummary(res, *blocking), a.verifyAdvice(res))
}

func verifySummary(res jobstore.VerifyResult, blocking bool) string {
	if blocking {
		return fmt.Sprintf("%s would block a cleanup of %s:*", plural(res.Blocking, "difference"), res.Other)
	}
	return fmt.Sprintf("%s between %s:* and %s:*", plural(res.Differences, "difference"), res.Authoritative, res.Other)
}

// verifyAdvice says what differences mean in the stage.
func (a *app) verifyAdvice(res jobstore.VerifyResult) string {
	st := a.stageNow()
	switch {
	case st == jobstore.StageLegacy:
		return "in legacy nothing writes step:*, so it differs as it falls behind: see stepmigrate status for what fits the stage"
	case st == jobstore.StageStepOnly:
		return "in step-only nothing writes job:*, so it differs as it falls behind; a cleanup minds only the differences marked [blocks cleanup] (stepmigrate verify --blocking)"
	}
	return fmt.Sprintf("while every process writes both namespaces, stepmigrate verify --repair rewrites %s:* from %s:*; while legacy processes remain, keep stepmigrate follow running",
		res.Other, res.Authoritative)
}

func (a *app) printVerify(res jobstore.VerifyResult, listed []jobstore.Diff, found int64, blocking bool, rate float64) {
	rounds := ""
	if res.Rounds > 0 {
		rounds = fmt.Sprintf("; what differed was re-checked over %d rounds", res.Rounds)
	}
	a.printf("verify %s:* (authoritative) against %s:*: %s items compared in %s (%s/s)%s\n",
		res.Authoritative, res.Other, group(res.Checked), durationText(res.Elapsed), group(int64(rate)), rounds)
	a.printf("differences: %s (%s missing, %s different, %s in TTL); %s would block a cleanup of %s:*\n",
		group(res.Differences), group(res.Missing), group(res.Different), group(res.TTL), group(res.Blocking), res.Other)
	if blocking && found > 0 {
		a.printf("those that would block a cleanup of %s:*:\n", res.Other)
	}
	for _, d := range listed {
		a.printf("  %s\n", d)
	}
	if more := found - int64(len(listed)); more > 0 {
		a.printf("  ... and %s more (--limit lists more)\n", group(more))
	}
	if res.InFlight > 0 {
		a.printf("in flight: %s that %s:* kept rewriting through the rounds while %s:* followed; not differences, they block nothing:\n",
			plural(res.InFlight, "item"), res.Authoritative, res.Other)
		for _, d := range res.InFlightItems {
			a.printf("  %s\n", d)
		}
		if more := res.InFlight - int64(len(res.InFlightItems)); more > 0 {
			a.printf("  ... and %s more\n", group(more))
		}
	}
}
