package main

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jobstep/jobstore"
)

// defaultWait is how long stage set --wait waits without a duration.
const defaultWait = 2 * time.Minute

type stageJSON struct {
	Published   *jobstore.Stage `json:"published"` // null when none is
	Environment jobstore.Stage  `json:"environment"`
	Previous    *jobstore.Stage `json:"previous,omitempty"` // stage set: what it replaced
	// PreviousInvalid is what stage set --force replaced when the shared
	// stage held a value that names no stage (then Previous is absent).
	PreviousInvalid *string   `json:"previous_invalid,omitempty"`
	Wait            *waitJSON `json:"wait,omitempty"`
	// Refused is set when stage set was refused, and nothing published:
	// Reason says why, Message what stderr says.
	Refused bool   `json:"refused,omitempty"`
	Reason  string `json:"reason,omitempty"` // stage_jump or legacy_alive
	Message string `json:"message,omitempty"`
}

type waitJSON struct {
	Reached    bool            `json:"reached"`
	Processes  int             `json:"processes"` // checked in when it returned
	Stragglers []stragglerJSON `json:"stragglers"`
	Seconds    float64         `json:"seconds"`
}

// takeWait removes --wait and --wait=DURATION from args: the flag package
// would call a bad duration an "invalid boolean value".
func takeWait(args []string) (rest []string, wait time.Duration, err error) {
	for _, arg := range args {
		name, value, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		if !strings.HasPrefix(arg, "-") || name != "wait" || arg == "-" {
			rest = append(rest, arg)
			continue
		}
		if !hasValue {
			wait = defaultWait
			continue
		}
		d, perr := time.ParseDuration(value)
		if perr != nil || d <= 0 {
			return nil, 0, usagef("stage set: --wait=%s: want a positive duration such as 30s or 5m (--wait alone waits %s)", value, defaultWait)
		}
		wait = d
	}
	return rest, wait, nil
}

func (a *app) stage(ctx context.Context, args []string) error {
	fs := a.flagSet("stage")
	force := fs.Bool("force", false, "allow a jump of more than one stage, and override the legacy gate")
	args, wait, err := takeWait(args)
	if err != nil {
		return err
	}
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	action := "get"
	if len(pos) > 0 {
		action = pos[0]
	}
	var to jobstore.Stage
	switch {
	case action == "get" && len(pos) <= 1:
		if wait > 0 || *force {
			return usagef("stage get takes no --wait or --force; they go with stage set NAME")
		}
	case action == "set" && len(pos) == 2:
		if to, err = jobstore.ParseStage(pos[1]); err != nil {
			return usagef("stage set: %v", err)
		}
	case action == "set" && len(pos) == 3 && wait > 0 && isDuration(pos[2]):
		return usagef("stage set: write --wait=%s, with '=': a --wait without one waits %s", pos[2], defaultWait)
	case action == "set":
		return usagef("stage set takes one stage name: legacy, dual-write, dual-read, step-primary or step-only")
	default:
		return usagef("stage: want \"get\" or \"set NAME\", got %q", pos)
	}
	a.forceStage = action == "set" && *force
	if err := a.connect(ctx); err != nil {
		return err
	}
	out := stageJSON{Environment: a.envStage}
	if a.published {
		out.Published = &a.shared
	}
	if action == "get" {
		if a.json {
			return a.printJSON(out)
		}
		if a.published {
			a.printf("%s (published; the environment here says %s)\n", a.shared, a.envStage)
		} else {
			a.printf("none published (the environment here says %s); publish one with: stepmigrate stage set NAME\n", a.envStage)
		}
		return nil
	}
	prev := a.stageNow()
	if err := a.m.PublishStage(ctx, to, jobstore.PublishOptions{Force: *force}); err != nil {
		reason, msg, refused := a.publishRefusal(ctx, to, err)
		if !refused {
			return failf("stage set: %v", err)
		}
		out.Refused, out.Reason, out.Message = true, reason, msg
		if a.json {
			_ = a.printJSON(out)
		}
		return failf("%s", msg)
	}
	out.Published, out.Previous = &to, &prev
	was := prev.String()
	if a.badStage != nil {
		out.Previous, out.PreviousInvalid = nil, a.badStage
		was = fmt.Sprintf("%q, which names no stage", *a.badStage)
	}
	if !a.json {
		a.printf("published %s (was %s); processes running Store.FollowStage switch within their interval\n", to, was)
	}
	if wait > 0 {
		if err := a.waitForStage(ctx, to, wait, &out); err != nil {
			if a.json {
				_ = a.printJSON(out)
			}
			return err
		}
	}
	if a.json {
		return a.printJSON(out)
	}
	return nil
}

func isDuration(s string) bool {
	_, err := time.ParseDuration(s)
	return err == nil
}

// publishRefusal explains a refused PublishStage: why (a JSON reason),
// and the message. refused is false for other errors.
func (a *app) publishRefusal(ctx context.Context, to jobstore.Stage, err error) (reason, msg string, refused bool) {
	switch {
	case errors.Is(err, jobstore.ErrStageJump):
		return "stage_jump", fmt.Sprintf("stage set refused: %s (the runbook says what to check between stages; --force jumps anyway, "+
			"which risks processes of two stages that cannot run side by side)", strings.TrimPrefix(err.Error(), jobstore.ErrStageJump.Error()+": ")), true
	case errors.Is(err, jobstore.ErrLegacyAlive):
		ev, everr := a.m.LegacyEvidence(ctx)
		evidence := ev.String()
		if everr != nil {
			evidence = err.Error()
		}
		risks := "From dual-read on they break the migration: their job:* writes make reads of step:* stale, and from step-primary on " +
			"a legacy worker and a jobstore worker can run the same job."
		stop := fmt.Sprintf("a follower's last legacy write must be over %s old", durationText(jobstore.DefaultLegacyWindow))
		// The gate is checked before the jump: when the move is also a
		// jump, the same stage set would then be refused as one.
		if from := a.stageNow(); to > from+1 || to+1 < from {
			next := from + 1
			if to < from {
				next = from - 1
			}
			how := fmt.Sprintf("the next is: stepmigrate stage set %s", next)
			if next < jobstore.StageDualRead {
				how += fmt.Sprintf(" (legacy processes may still run in %s; stop them before dual-read)", next)
			}
			return "legacy_alive", fmt.Sprintf("stage set refused: legacy processes are still running: %s.\n%s "+
				"And %s is %d stages away from %s, which stage set refuses without --force: stop them (%s), then move one stage at a time; %s. "+
				"--force publishes %s anyway, jumping, with those risks.",
				evidence, risks, to, max(to-from, from-to), from, stop, how, to), true
		}
		return "legacy_alive", fmt.Sprintf("stage set refused: legacy processes are still running: %s.\n%s "+
			"Stop them (%s), then run stepmigrate stage set %s again. --force publishes anyway, with those risks.",
			evidence, risks, stop, to), true
	}
	return "", "", false
}

// waitForStage waits until every process checked in reports st, or the
// wait is over (exit 1, listing the stragglers), or a signal comes (130).
func (a *app) waitForStage(ctx context.Context, st jobstore.Stage, wait time.Duration, out *stageJSON) error {
	if !a.json {
		a.printf("waiting up to %s for every process to report %s ...\n", wait, st)
	}
	start := time.Now()
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	behind, err := a.m.WaitForStage(wctx, st, 0)
	w := &waitJSON{Stragglers: []stragglerJSON{}, Seconds: time.Since(start).Seconds()}
	out.Wait = w
	if err != nil && ctx.Err() != nil {
		return exitError{exitInterrupted, fmt.Sprintf("stage set --wait interrupted; %s is published all the same (stepmigrate status shows who follows it)", st)}
	}
	if err != nil && wctx.Err() == nil {
		return failf("stage set --wait: %v; %s is published all the same: stepmigrate status shows who follows it", err, st)
	}
	procs, _, ferr := a.m.Fleet(ctx)
	if ferr == nil {
		w.Processes = len(procs)
	}
	if err != nil && behind == nil {
		// The time ran out during a listing of the fleet (a scan, long
		// on a large keyspace), which WaitForStage then returns nothing
		// of: list it once more.
		if ferr != nil {
			return failf("stage set --wait: %v; %s is published all the same: stepmigrate status shows who follows it", ferr, st)
		}
		for _, p := range procs {
			if p.Stage != st {
				behind = append(behind, p)
			}
		}
		if len(behind) == 0 {
			err = nil
		}
	}
	if err == nil {
		w.Reached = true
		if !a.json {
			if w.Processes == 0 {
				a.printf("no process has checked in, so there is nobody to wait for (services report while they run Store.FollowStage)\n")
			} else {
				a.printf("every process checked in reports %s (%d), after %s\n", st, w.Processes, durationText(time.Since(start)))
			}
		}
		return nil
	}
	now := time.Now()
	var lines []string
	for _, p := range behind {
		w.Stragglers = append(w.Stragglers, stragglerJSON{ID: p.ID, Host: p.Host, Stage: p.Stage, CheckedAt: p.CheckedAt, Why: "stage"})
		lines = append(lines, fmt.Sprintf("  %s  host %s  still %s  checked in %s ago (every %s)", p.ID, p.Host, p.Stage,
			durationText(max(now.Sub(p.CheckedAt), 0)), durationText(p.Interval)))
	}
	return failf("stage set --wait: after %s, %s not report %s yet:\n%s\n%s is published; they move at their next check-in, or need a restart: run stepmigrate status",
		wait, map[bool]string{true: "1 process does", false: fmt.Sprintf("%d processes do", len(behind))}[len(behind) == 1],
		st, strings.Join(lines, "\n"), st)
}
