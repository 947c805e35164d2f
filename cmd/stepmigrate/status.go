package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jobstep/jobstore"
	"github.com/redis/go-redis/v9"
)

// memoryLimitPct is the report's success criterion: "Redis memory
// increase < 25%".
const memoryLimitPct = 25.0

// followerStale is how old a follower's report may be before status says
// it looks stopped: followers report about every second.
const followerStale = 10 * time.Second

type statusJSON struct {
	Stage struct {
		Published   *jobstore.Stage `json:"published"`   // null when none is
		Migrator    jobstore.Stage  `json:"migrator"`    // what this command acts under
		Environment jobstore.Stage  `json:"environment"` // what the environment here says
		Source      string          `json:"source"`      // published or environment
	} `json:"stage"`
	Fleet     fleetJSON               `json:"fleet"`
	Legacy    legacyJSON              `json:"legacy"`
	Followers followersJSON           `json:"followers"`
	Job       jobstore.NamespaceStats `json:"job"`
	Step      jobstore.NamespaceStats `json:"step"`
	// RecordsDiffer is job records minus step records, from two scans
	// taken one after the other: not a snapshot.
	RecordsDiffer int64              `json:"records_differ"`
	Memory        memoryVerdict      `json:"memory"`
	DualWrite     dualWriteJSON      `json:"dual_write"`
	Reads         jobstore.ReadStats `json:"reads"`
	Warnings      []string           `json:"warnings"`
	Advice        []string           `json:"advice"`
}

type fleetJSON struct {
	Processes  []jobstore.Process `json:"processes"`
	Unreadable int                `json:"unreadable"`
	Stragglers []stragglerJSON    `json:"stragglers"`
	Silent     bool               `json:"silent"` // no process checked in
}

type stragglerJSON struct {
	ID        string         `json:"id"`
	Host      string         `json:"host"`
	Stage     jobstore.Stage `json:"stage"`
	CheckedAt time.Time      `json:"checked_at"`
	Why       string         `json:"why"` // "stage" or "stale"
}

type legacyJSON struct {
	jobstore.LegacyEvidence
	Alive bool `json:"alive"`
}

type followersJSON struct {
	Reports         map[string]jobstore.FollowReport `json:"reports"`
	Running         int                              `json:"running"` // reported within 10 s
	LastLegacyWrite time.Time                        `json:"last_legacy_write,omitzero"`
}

type dualWriteJSON struct {
	Attempted   uint64  `json:"attempted"`
	Failed      uint64  `json:"failed"`
	Panics      uint64  `json:"panics"`
	SuccessRate float64 `json:"success_rate"`
}

func (a *app) status(ctx context.Context, args []string) error {
	pos, err := a.parse(a.flagSet("status"), args)
	if err != nil {
		return err
	}
	if err := noArgs("status", pos); err != nil {
		return err
	}
	if err := a.connect(ctx); err != nil {
		return err
	}
	out, err := a.gatherStatus(ctx, time.Now())
	if err != nil {
		return err
	}
	if a.json {
		return a.printJSON(out)
	}
	a.printStatus(out)
	return nil
}

func (a *app) gatherStatus(ctx context.Context, now time.Time) (*statusJSON, error) {
	out := &statusJSON{}
	st := a.stageNow()
	out.Stage.Migrator, out.Stage.Environment, out.Stage.Source = st, a.envStage, a.stageSource()
	if a.published {
		out.Stage.Published = &a.shared
	}
	// Each of these reads scans the keyspace or reads a key of its own;
	// they run side by side, as on a large keyspace each scan takes a
	// while. (The two namespaces' counts are then taken at about the
	// same time, which still is no snapshot.)
	var (
		wg      sync.WaitGroup
		errMu   sync.Mutex
		errs    []error
		used    int64
		dw      jobstore.DualWriteStats
		reading = func(f func() error) {
			wg.Go(func() {
				if err := f(); err != nil {
					errMu.Lock()
					errs = append(errs, err)
					errMu.Unlock()
				}
			})
		}
	)
	reading(func() (err error) {
		out.Fleet.Processes, out.Fleet.Unreadable, err = a.m.Fleet(ctx)
		return err
	})
	reading(func() (err error) {
		out.Legacy.LegacyEvidence, err = a.m.LegacyEvidence(ctx)
		return err
	})
	reading(func() (err error) {
		out.Followers.Reports, out.Followers.LastLegacyWrite, err = a.m.FollowerReports(ctx)
		return err
	})
	reading(func() (err error) {
		out.Job, err = a.m.NamespaceStats(ctx, jobstore.JobNamespace)
		return err
	})
	reading(func() (err error) {
		out.Step, err = a.m.NamespaceStats(ctx, jobstore.StepNamespace)
		return err
	})
	reading(func() (err error) {
		dw, out.Reads, err = a.m.FleetStats(ctx)
		return err
	})
	reading(func() error { used = usedMemory(ctx, a.rdb); return nil })
	wg.Wait()
	if len(errs) > 0 {
		return nil, errs[0]
	}
	if out.Fleet.Processes == nil {
		out.Fleet.Processes = []jobstore.Process{}
	}
	out.Fleet.Stragglers = stragglers(out.Fleet.Processes, st, now)
	out.Fleet.Silent = len(out.Fleet.Processes) == 0
	out.Legacy.Alive = out.Legacy.LegacyEvidence.Alive(now, jobstore.DefaultLegacyWindow)
	for _, r := range out.Followers.Reports {
		if now.Sub(r.CheckedAt) <= followerStale {
			out.Followers.Running++
		}
	}
	out.RecordsDiffer = out.Job.Records - out.Step.Records
	primary, copy := out.Job, out.Step
	if st.Primary() == jobstore.StepNamespace {
		primary, copy = copy, primary
	}
	out.Memory = memoryCheck(used, copy.MemoryBytes, primary.MemoryBytes, copy.Namespace, primary.Namespace)
	out.DualWrite = dualWriteJSON{dw.Attempted, dw.Failed, dw.Panics, dw.SuccessRate()}
	out.Warnings = warnings(out, st, now)
	out.Advice = advice(adviceInput{stage: st, job: out.Job, step: out.Step,
		legacyAlive: out.Legacy.Alive, followers: out.Followers.Running})
	return out, nil
}

// stragglers are the processes not on stage st, or whose check-in is
// stale (they missed two).
func stragglers(procs []jobstore.Process, st jobstore.Stage, now time.Time) []stragglerJSON {
	out := []stragglerJSON{}
	for _, p := range procs {
		why := ""
		switch {
		case p.Stage != st:
			why = "stage"
		case p.Stale(now):
			why = "stale"
		default:
			continue
		}
		out = append(out, stragglerJSON{ID: p.ID, Host: p.Host, Stage: p.Stage, CheckedAt: p.CheckedAt, Why: why})
	}
	return out
}

// warnings are what needs the operator's attention whatever the stage.
func warnings(out *statusJSON, st jobstore.Stage, now time.Time) []string {
	w := []string{}
	if out.Fleet.Silent {
		w = append(w, "no process has checked in: API services and workers report here while they run Store.FollowStage, "+
			"so nothing confirms which stage they run (or none is running)")
	}
	for _, s := range out.Fleet.Stragglers {
		if s.Why == "stage" {
			w = append(w, fmt.Sprintf("straggler %s (%s) runs %s, not %s; it moves within its interval, or was not restarted with FollowStage",
				s.ID, s.Host, s.Stage, st))
		} else {
			w = append(w, fmt.Sprintf("straggler %s (%s) last checked in %s ago, missing two check-ins: hung, or stopping",
				s.ID, s.Host, durationText(now.Sub(s.CheckedAt))))
		}
	}
	if out.Fleet.Unreadable > 0 {
		w = append(w, fmt.Sprintf("%d fleet check-ins could not be read", out.Fleet.Unreadable))
	}
	if out.Legacy.Alive {
		switch {
		case st == jobstore.StageDualRead:
			w = append(w, "legacy processes are alive in dual-read: their job:* writes make reads of step:* stale until a follower copies them; stop them")
		case st >= jobstore.StageStepPrimary:
			w = append(w, fmt.Sprintf("legacy processes are alive in %s: a legacy worker and a jobstore worker can run the same job; stop them now", st))
		}
	}
	for _, id := range slices.Sorted(maps.Keys(out.Followers.Reports)) {
		r := out.Followers.Reports[id]
		if age := now.Sub(r.CheckedAt); age > followerStale {
			w = append(w, fmt.Sprintf("follower %s last reported %s ago: it looks stopped (a stopped follower removes its report; this one crashed or lost Redis)",
				id, durationText(age)))
		}
	}
	return w
}

// adviceInput is what the stage-aware advice looks at.
type adviceInput struct {
	stage       jobstore.Stage
	job, step   jobstore.NamespaceStats
	legacyAlive bool
	followers   int // followers reporting now
}

// empty reports whether a namespace holds nothing a job owns.
func empty(ns jobstore.NamespaceStats) bool {
	return ns.Records+ns.SubKeys+ns.Pending+ns.Active+ns.Completed+ns.Failed == 0
}

func entries(ns jobstore.NamespaceStats) int64 {
	return ns.Pending + ns.Active + ns.Completed + ns.Failed
}

// notSnapshot is said wherever two counts of namespaces that services
// write are compared.
const notSnapshot = "counts taken while services write are not a snapshot: the two namespaces are scanned one after the other, " +
	"so the writes in between make them differ; stepmigrate verify, which re-checks what differs, is the check"

// advice says what fits the stage, in place of comparing key counts
// that mean something in none of them alone.
func advice(in adviceInput) []string {
	var out []string
	add := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	differ := in.job.Records != in.step.Records
	counts := func() {
		if differ {
			add("record counts differ by %s (job:* %s, step:* %s); %s",
				group(abs(in.job.Records-in.step.Records)), group(in.job.Records), group(in.step.Records), notSnapshot)
		} else {
			add("record counts match (%s each), which says nothing of their content: stepmigrate verify compares it", group(in.job.Records))
		}
	}
	switch in.stage {
	case jobstore.StageLegacy:
		if empty(in.step) {
			add("step:* is empty, as expected in legacy (before dual-write, or after a completed rollback): there is nothing to compare")
			add("next: stepmigrate stage set dual-write")
			break
		}
		add("step:* still holds %s records and %s queue entries that nothing writes in legacy: leftovers of dual-write (counts are not compared in legacy)",
			group(in.step.Records), group(entries(in.step)))
		add("to finish a rollback, once every process reports legacy: stepmigrate rollback --dry-run, then stepmigrate rollback; " +
			"to go forward instead: stepmigrate stage set dual-write, then stepmigrate backfill")
	case jobstore.StageDualWrite:
		switch {
		case in.legacyAlive && in.followers == 0:
			add("legacy processes are alive and no follower runs: what they write reaches step:* only through a backfill; " +
				"run stepmigrate follow until the last of them is gone")
		case in.legacyAlive:
			add("legacy processes are alive; the follower mirrors what they write: keep it running until the last of them is gone")
		}
		if differ {
			add("step:* gets what was written before dual-write, and what processes that do not mirror write, from the backfill: " +
				"stepmigrate backfill, then stepmigrate verify")
		}
		counts()
		add("next, once stepmigrate verify exits 0 and no legacy process is left: stepmigrate stage set dual-read")
	case jobstore.StageDualRead, jobstore.StageStepPrimary:
		auth, other := "job", "step"
		next := "stepmigrate stage set step-primary"
		if in.stage == jobstore.StageStepPrimary {
			auth, other = other, auth
			next = "stepmigrate stage set step-only --wait, then stepmigrate cleanup"
		}
		add("both namespaces are written, %s:* first: stepmigrate verify checks them (exit 0); stepmigrate verify --repair rewrites %s:* from %s:*",
			auth, other, auth)
		if differ {
			add("record counts differ by %s (job:* %s, step:* %s); %s",
				group(abs(in.job.Records-in.step.Records)), group(in.job.Records), group(in.step.Records), notSnapshot)
		}
		add("next, once stepmigrate verify exits 0: %s", next)
	case jobstore.StageStepOnly:
		if empty(in.job) {
			add("job:* is empty, as expected after a cleanup: the migration is complete")
			break
		}
		add("job:* is no longer written and falls behind step:* (its counts differ as it does): " +
			"when stepmigrate verify --blocking finds nothing that deleting job:* would lose, " +
			"stepmigrate cleanup --dry-run, then stepmigrate cleanup")
	}
	return out
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

// memoryVerdict is the report's "Redis memory increase < 25%". The copy
// namespace is a full second copy of the authoritative one, so relative
// to it the increase is about 100%: what the criterion can mean is the
// increase of the whole instance's memory (INFO memory's used_memory)
// that the copy causes, its estimated size over used_memory without it.
type memoryVerdict struct {
	UsedMemory int64 `json:"used_memory"` // the whole instance's; 0 when INFO memory is unavailable
	// Copy is the namespace that is not authoritative, CopyBytes its
	// estimated size (NamespaceStats); Primary likewise.
	Copy         string `json:"copy"`
	CopyBytes    int64  `json:"copy_bytes"`
	Primary      string `json:"primary"`
	PrimaryBytes int64  `json:"primary_bytes"`
	// IncreasePct is CopyBytes over UsedMemory-CopyBytes; null when
	// UsedMemory is unknown.
	IncreasePct *float64 `json:"increase_pct"`
	// CopyPct is CopyBytes over PrimaryBytes: the copy relative to the
	// namespace it copies (about 100 once it is complete).
	CopyPct  *float64 `json:"copy_pct"`
	LimitPct float64  `json:"limit_pct"`
	Verdict  string   `json:"verdict"` // PASS, FAIL or UNKNOWN
}

func memoryCheck(used, copyBytes, primaryBytes int64, copyNS, primaryNS string) memoryVerdict {
	v := memoryVerdict{UsedMemory: used, Copy: copyNS, CopyBytes: copyBytes, Primary: primaryNS,
		PrimaryBytes: primaryBytes, LimitPct: memoryLimitPct, Verdict: "UNKNOWN"}
	if primaryBytes > 0 {
		p := 100 * float64(copyBytes) / float64(primaryBytes)
		v.CopyPct = &p
	}
	if base := used - copyBytes; used > 0 && base > 0 {
		p := 100 * float64(copyBytes) / float64(base)
		v.IncreasePct = &p
		v.Verdict = "PASS"
		if p >= memoryLimitPct {
			v.Verdict = "FAIL"
		}
	}
	return v
}

// lines says the verdict with both figures, and how to read them.
func (v memoryVerdict) lines() []string {
	rel := "unknown"
	if v.CopyPct != nil {
		rel = fmt.Sprintf("+%.0f%%", *v.CopyPct)
	}
	first := fmt.Sprintf("UNKNOWN: INFO memory gives no used_memory here; %s:* is ~%s, %s relative to %s:*",
		v.Copy, bytesText(v.CopyBytes), rel, v.Primary)
	if v.IncreasePct != nil {
		first = fmt.Sprintf("%s: %s:* adds %.1f%% to the instance's memory (~%s over the other %s of used_memory; limit %.0f%%); relative to %s:* it is %s",
			v.Verdict, v.Copy, *v.IncreasePct, bytesText(v.CopyBytes), bytesText(v.UsedMemory-v.CopyBytes), v.LimitPct, v.Primary, rel)
	}
	if v.CopyBytes == 0 {
		return []string{first, fmt.Sprintf("%s:* is empty, so it adds nothing", v.Copy)}
	}
	return []string{first,
		fmt.Sprintf("%s:* is a full second copy of %s:* (about +100%% of it), so the criterion is read as the increase of the whole instance's used_memory; it lasts until cleanup (or a rollback) deletes one namespace",
			v.Copy, v.Primary)}
}

// usedMemory reads used_memory from INFO memory; 0 when unavailable.
func usedMemory(ctx context.Context, rdb *redis.Client) int64 {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

func (a *app) printStatus(out *statusJSON) {
	st := out.Stage.Migrator
	if out.Stage.Published != nil {
		a.printf("stage        %s (published; the environment here says %s)\n", st, out.Stage.Environment)
	} else {
		a.printf("stage        %s (none published: this is the environment's; publish it with stepmigrate stage set %s)\n", st, st)
	}
	now := time.Now()
	a.printf("fleet        %s processes checked in\n", group(len(out.Fleet.Processes)))
	for _, p := range out.Fleet.Processes {
		a.printf("  %s  host %s  %s  checked in %s ago  dual-writes %s (%s failed)\n", p.ID, p.Host, p.Stage,
			durationText(max(now.Sub(p.CheckedAt), 0)), group(p.DualWrite.Attempted), group(p.DualWrite.Failed))
	}
	ev := out.Legacy
	switch {
	case len(ev.Workers) == 0 && ev.LastLegacyWrite.IsZero():
		a.printf("legacy       no legacy worker alive, no legacy write mirrored by a follower\n")
	default:
		a.printf("legacy       %s (%s)\n", ev.LegacyEvidence, map[bool]string{true: "alive", false: "nothing recent"}[ev.Alive])
	}
	if len(out.Followers.Reports) == 0 {
		a.printf("followers    none running (stepmigrate follow)\n")
	}
	for _, id := range slices.Sorted(maps.Keys(out.Followers.Reports)) {
		r := out.Followers.Reports[id]
		lag := "no event-driven sync yet"
		if r.Stats.Changed > r.Stats.SweepChanged {
			lag = "lag p50 " + durationText(r.Stats.LagP50) + " p99 " + durationText(r.Stats.LagP99)
		}
		a.printf("followers    %s: %s, %s legacy writes mirrored (%s by sweeps), backlog %s, reported %s ago\n", id,
			lag, group(r.Stats.Changed), group(r.Stats.SweepChanged), group(r.Stats.Backlog),
			durationText(max(now.Sub(r.CheckedAt), 0)))
	}
	for _, ns := range []jobstore.NamespaceStats{out.Job, out.Step} {
		a.printf("%-12s %s records, %s sub-keys; pending %s, active %s (%s workers), completed %s, failed %s; ~%s\n",
			ns.Namespace+":*", group(ns.Records), group(ns.SubKeys), group(ns.Pending), group(ns.Active),
			group(ns.Workers), group(ns.Completed), group(ns.Failed), bytesText(ns.MemoryBytes))
	}
	for i, l := range out.Memory.lines() {
		a.printf("%-12s %s\n", map[bool]string{true: "memory", false: ""}[i == 0], l)
	}
	dw := out.DualWrite
	if dw.Attempted == 0 {
		a.printf("dual-write   no writes mirrored yet by processes running Store.FollowStage\n")
	} else {
		a.printf("dual-write   %s writes mirrored by the fleet, %s failed (%s panics): success rate %.4f%%\n",
			group(dw.Attempted), group(dw.Failed), group(dw.Panics), 100*dw.SuccessRate)
	}
	rd := out.Reads
	a.printf("reads        %s, %s fell back to job:*, %s of %s shadow checks differed\n",
		group(rd.Reads), group(rd.Fallbacks), group(rd.ShadowMismatches), group(rd.ShadowChecks))
	for _, w := range out.Warnings {
		a.printf("warning      %s\n", w)
	}
	for _, l := range out.Advice {
		a.printf("advice       %s\n", l)
	}
}
