package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jobstep/jobstore"
)

// sweepFlag is --sweep: a positive duration, or off (sweep only at start
// and after reconnections).
type sweepFlag struct{ d *time.Duration }

func (s sweepFlag) String() string {
	if s.d == nil || *s.d == 0 {
		return ""
	}
	if *s.d < 0 {
		return "off"
	}
	return s.d.String()
}

func (s sweepFlag) Set(v string) error {
	if v == "off" {
		*s.d = -1
		return nil
	}
	return positiveDuration{s.d}.Set(v)
}

// followLine is one report of the follower's counters, in --json.
type followLine struct {
	Time      time.Time `json:"time"`
	UptimeSec float64   `json:"uptime_seconds"`
	jobstore.FollowStats
	Stopped bool `json:"stopped,omitempty"` // the last line, after a signal
}

func (a *app) follow(ctx context.Context, args []string) error {
	fs := a.flagSet("follow")
	var opts jobstore.FollowOptions
	every := 5 * time.Second
	fs.BoolVar(&opts.Configure, "configure", false, "turn on the keyspace notifications the follower needs")
	fs.Var(sweepFlag{&opts.Sweep}, "sweep", "how often to re-check the whole namespace (default 10m; off: at start only)")
	fs.Var(positiveDuration{&opts.Debounce}, "debounce", "quiet time before a changed job is synced (default 20ms)")
	fs.Var(positiveDuration{&opts.Recheck}, "recheck", "when a synced job is synced once more (default 2s)")
	fs.Var(positiveDuration{&every}, "every", "how often to print the counters")
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	if err := noArgs("follow", pos); err != nil {
		return err
	}
	if err := a.connect(ctx); err != nil {
		return err
	}
	start := time.Now()
	var mu sync.Mutex
	var last time.Time
	var stats jobstore.FollowStats
	reported := false
	opts.Report = func(st jobstore.FollowStats) {
		mu.Lock()
		defer mu.Unlock()
		if !reported && !a.json {
			a.printf("follow: mirroring to step:* what is written to job:* without a mirror; counters every %s; Ctrl-C stops\n", durationText(every))
		}
		stats, reported = st, true
		if now := time.Now(); last.IsZero() || now.Sub(last) >= every {
			last = now
			a.printFollow(st, now, start, false)
		}
	}
	err = a.m.Follow(ctx, opts)
	mu.Lock()
	defer mu.Unlock()
	if interrupted(ctx, err) {
		if reported {
			a.printFollow(stats, time.Now(), start, true)
		}
		return nil
	}
	return followError(err)
}

// followError says what stopped the follower, and what to do.
func followError(err error) error {
	switch {
	case errors.Is(err, jobstore.ErrInvalidConfig):
		return failf("follow: %v.\nOn a managed Redis where CONFIG is disabled, set notify-keyspace-events in its parameter group instead", err)
	case errors.Is(err, jobstore.ErrNamespaceInUse):
		return failf("follow: %v; a follower is needed only while legacy processes write job:* (dual-write, dual-read)", err)
	}
	return failf("follow stopped: %v", err)
}

func (a *app) printFollow(st jobstore.FollowStats, now, start time.Time, stopped bool) {
	if a.json {
		b, err := json.Marshal(followLine{Time: now.UTC(), UptimeSec: now.Sub(start).Seconds(), FollowStats: st, Stopped: stopped})
		if err == nil {
			fmt.Fprintf(a.stdout, "%s\n", b)
		}
		return
	}
	head := "follow " + now.Format("15:04:05")
	if stopped {
		head = "follow stopped after " + durationText(now.Sub(start)) + ":"
	}
	segs := []segment{
		seg(9, "%s", head),
		seg(8, "events %s", group(st.Events)),
		seg(7, "synced %s", group(st.Synced)),
		seg(10, "changed %s", group(st.Changed)),
		seg(6, "backlog %s", group(st.Backlog)),
		seg(5, "lag p50 %s p99 %s", lagText(st.LagP50, st.Changed-st.SweepChanged), lagText(st.LagP99, st.Changed-st.SweepChanged)),
		seg(2, "sweeps %s", group(st.Sweeps)),
	}
	if !st.LastLegacyWrite.IsZero() {
		segs = append(segs, seg(1, "last legacy write %s ago", durationText(max(now.Sub(st.LastLegacyWrite), 0))))
	}
	width := 0
	if a.tty {
		width = terminalWidth(a.stdout) - 1
	}
	fmt.Fprintln(a.stdout, fitLine(width, segs...))
}

// lagText is a lag, or "-" before any sync changed something.
func lagText(d time.Duration, changed uint64) string {
	if changed == 0 {
		return "-"
	}
	return durationText(d)
}
