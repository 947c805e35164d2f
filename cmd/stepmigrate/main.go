// Command stepmigrate is the operator's tool for moving a Redis job queue
// from job:<id> / jobs:* to step:<id> / steps:* with the jobstore library:
// status, backfill, verify, cleanup, rollback and the shared stage.
//
//	go run ./cmd/stepmigrate --redis redis://127.0.0.1:6379/0 status
//
// Run it without arguments for the usage. Exit status: 0 success, 1 when
// verify finds differences, a cleanup or rollback is refused, or an
// operation fails, 2 on bad usage.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jobstep/jobstore"
	"github.com/redis/go-redis/v9"
)

const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

const usage = `usage: stepmigrate [--redis URL] [--prefix P] [--json] <command> [flags]

Moves job:<id> / jobs:* to step:<id> / steps:* and back; see the README's runbook.

commands:
  status                          stage, record counts, memory and dual-write stats
  backfill [--reverse] [--rate N] [--dry-run] [--batch N] [--restart]
                                  copy job:* to step:* (--reverse: step:* to job:*)
  verify [--repair] [--rounds N] [--batch N]
                                  compare both namespaces; --repair fixes from the authoritative one
  cleanup [--dry-run] [--force] [--strict]   delete job:* (phase 4.3.5; only in step-only)
  rollback [--dry-run] [--force] [--strict]  delete step:* (only in legacy)
  stage [get]                     show the shared stage
  stage set NAME [--force]        publish a stage: legacy, dual-write, dual-read, step-primary, step-only

global flags (before or after the command):
  --redis URL    redis:// or rediss:// URL (default: $REDIS_URL)
  --prefix P     key prefix the services use (WithKeyPrefix), default none
  --json         print one JSON object with the figures

exit status: 0 success; 1 differences found, refused or failed; 2 bad usage
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// app is one invocation: its flags, output and connection.
type app struct {
	stdout, stderr io.Writer
	tty            bool
	json           bool
	redisURL       string
	prefix         string

	rdb   *redis.Client
	store *jobstore.Store
	// envStage is the stage the environment selects (REDIS_DUAL_WRITE_STEPS,
	// REDIS_STEP_MIGRATION_STAGE); shared is the published one, if any.
	envStage  jobstore.Stage
	shared    jobstore.Stage
	published bool
	// forceStage is set for stage set --force, which overwrites a shared
	// stage that cannot be read instead of refusing it.
	forceStage bool
}

// usageError is bad usage: exit status 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// exitError carries an exit status with its message.
type exitError struct {
	code int
	msg  string
}

func (e exitError) Error() string { return e.msg }

// run is the whole command, for main and for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	a := &app{stdout: stdout, stderr: stderr, tty: isTerminal(stdout)}
	err := a.main(ctx, args)
	if a.rdb != nil {
		_ = a.rdb.Close()
	}
	var ue usageError
	var ee exitError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "stepmigrate: %s\nRun stepmigrate --help for the usage.\n", ue.msg)
		return exitUsage
	case errors.As(err, &ee):
		if ee.msg != "" {
			fmt.Fprintf(stderr, "stepmigrate: %s\n", ee.msg)
		}
		return ee.code
	}
	fmt.Fprintf(stderr, "stepmigrate: %v\n", err)
	return exitFail
}

func (a *app) globalFlags(fs *flag.FlagSet) {
	fs.StringVar(&a.redisURL, "redis", a.redisURL, "redis:// or rediss:// URL (default $REDIS_URL)")
	fs.StringVar(&a.prefix, "prefix", a.prefix, "key prefix")
	fs.BoolVar(&a.json, "json", a.json, "print one JSON object")
}

func (a *app) flagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	a.globalFlags(fs)
	return fs
}

// parse parses flags and positional arguments in any order.
func (a *app) parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				fmt.Fprint(a.stdout, usage)
				return nil, err
			}
			return nil, usagef("%s: %v", fs.Name(), err)
		}
		if args = fs.Args(); len(args) == 0 {
			return pos, nil
		}
		pos, args = append(pos, args[0]), args[1:]
	}
}

func (a *app) main(ctx context.Context, args []string) error {
	fs := a.flagSet("stepmigrate")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(a.stdout, usage)
			return err
		}
		return usagef("%v", err)
	}
	if fs.NArg() == 0 {
		fmt.Fprint(a.stderr, usage)
		return exitError{code: exitUsage, msg: "no command given"}
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	commands := map[string]func(context.Context, []string) error{
		"status": a.status, "backfill": a.backfill, "verify": a.verify,
		"cleanup": a.cleanup, "rollback": a.rollback, "stage": a.stage,
	}
	if cmd == "help" {
		fmt.Fprint(a.stdout, usage)
		return nil
	}
	f, ok := commands[cmd]
	if !ok {
		return usagef("unknown command %q (want status, backfill, verify, cleanup, rollback or stage)", cmd)
	}
	return f(ctx, rest)
}

// connect opens the connection and the Store. The Store follows the
// shared stage when one is published, else the environment's.
func (a *app) connect(ctx context.Context) error {
	url := a.redisURL
	if url == "" {
		url = os.Getenv("REDIS_URL")
	}
	if url == "" {
		return usagef("no Redis to connect to: pass --redis redis://HOST:6379/DB or set REDIS_URL")
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		return usagef("bad Redis URL %q: %v; use redis://[USER:PASSWORD@]HOST:PORT/DB, or rediss:// for TLS", redactURL(url), err)
	}
	a.rdb = redis.NewClient(opt)
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.rdb.Ping(pctx).Err(); err != nil {
		return fmt.Errorf("cannot reach Redis at %s: %v; check the URL, the network and the password", opt.Addr, err)
	}
	a.store, err = jobstore.New(a.rdb, jobstore.WithKeyPrefix(a.prefix))
	if errors.Is(err, jobstore.ErrInvalidConfig) {
		return usagef("%v; fix or unset it", err)
	}
	if err != nil {
		return err
	}
	a.envStage = a.store.Stage()
	a.shared, a.published, err = a.store.SharedStage(ctx)
	if err != nil {
		return a.unreadableStage(ctx, err)
	}
	if a.published {
		_ = a.store.ForceStage(a.shared)
	}
	return nil
}

// redactURL hides a password in a URL for messages.
func redactURL(u string) string {
	at := strings.LastIndexByte(u, '@')
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return u
	}
	cred := u[scheme+3 : at]
	if i := strings.IndexByte(cred, ':'); i >= 0 {
		return u[:scheme+3] + cred[:i] + ":***" + u[at:]
	}
	return u
}

func (a *app) noArgs(name string, pos []string) error {
	if len(pos) > 0 {
		return usagef("%s takes no arguments, got %q", name, pos)
	}
	return nil
}

func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func (a *app) printf(format string, args ...any) {
	fmt.Fprintf(a.stdout, format, args...)
}

// progress returns the progress display: on stdout when it is a
// terminal, as plain lines on stderr otherwise (stdout then holds only
// the result, JSON or text).
func (a *app) progress(label, unit string) *progress {
	if a.tty && !a.json {
		return newProgress(a.stdout, true, label, unit)
	}
	return newProgress(a.stderr, false, label, unit)
}

func (a *app) stageSource() string {
	if a.published {
		return "shared"
	}
	return "environment"
}

// ---- status

type statusJSON struct {
	Stage struct {
		Effective   jobstore.Stage  `json:"effective"`
		Source      string          `json:"source"` // shared or environment
		Shared      *jobstore.Stage `json:"shared"`
		Environment jobstore.Stage  `json:"environment"`
	} `json:"stage"`
	Job               jobstore.NamespaceStats `json:"job"`
	Step              jobstore.NamespaceStats `json:"step"`
	RecordsMatch      bool                    `json:"records_match"`
	UsedMemory        int64                   `json:"used_memory"`
	MemoryIncreasePct float64                 `json:"memory_increase_pct"`
	DualWrite         struct {
		Attempted   uint64  `json:"attempted"`
		Failed      uint64  `json:"failed"`
		Panics      uint64  `json:"panics"`
		SuccessRate float64 `json:"success_rate"`
	} `json:"dual_write"`
	Reads jobstore.ReadStats `json:"reads"`
}

func (a *app) status(ctx context.Context, args []string) error {
	pos, err := a.parse(a.flagSet("status"), args)
	if err != nil {
		return err
	}
	if err := a.noArgs("status", pos); err != nil {
		return err
	}
	if err := a.connect(ctx); err != nil {
		return err
	}
	var out statusJSON
	st := a.store.Stage()
	out.Stage.Effective, out.Stage.Source, out.Stage.Environment = st, a.stageSource(), a.envStage
	if a.published {
		out.Stage.Shared = &a.shared
	}
	if out.Job, err = a.store.NamespaceStats(ctx, jobstore.JobNamespace); err != nil {
		return err
	}
	if out.Step, err = a.store.NamespaceStats(ctx, jobstore.StepNamespace); err != nil {
		return err
	}
	out.RecordsMatch = out.Job.Records == out.Step.Records
	out.UsedMemory = usedMemory(ctx, a.rdb)
	// The report's "memory increase": what the namespace that is not
	// authoritative adds to the rest of Redis's memory.
	extra := out.Step.MemoryBytes
	if st.Primary() == jobstore.StepNamespace {
		extra = out.Job.MemoryBytes
	}
	if base := out.UsedMemory - extra; base > 0 {
		out.MemoryIncreasePct = 100 * float64(extra) / float64(base)
	}
	dw, rd, err := a.store.FleetStats(ctx)
	if err != nil {
		return err
	}
	out.DualWrite.Attempted, out.DualWrite.Failed, out.DualWrite.Panics = dw.Attempted, dw.Failed, dw.Panics
	out.DualWrite.SuccessRate = dw.SuccessRate()
	out.Reads = rd
	if a.json {
		return a.printJSON(out)
	}
	if a.published {
		a.printf("stage        %s (shared stage; the environment here says %s)\n", st, a.envStage)
	} else {
		a.printf("stage        %s (from the environment; no shared stage published: stepmigrate stage set %s)\n", st, st)
	}
	for _, ns := range []jobstore.NamespaceStats{out.Job, out.Step} {
		a.printf("%-12s %s records (+%s other keys), queues pending %s active %s completed %s failed %s, ~%s\n",
			ns.Namespace+":*", group(ns.Records), group(ns.OtherKeys),
			group(ns.Queues[jobstore.QueuePending]), group(ns.Queues[jobstore.QueueActive]),
			group(ns.Queues[jobstore.QueueCompleted]), group(ns.Queues[jobstore.QueueFailed]), bytesText(ns.MemoryBytes))
	}
	if out.RecordsMatch {
		a.printf("key counts   match (%s records each); stepmigrate verify compares their content\n", group(out.Job.Records))
	} else {
		a.printf("key counts   differ by %s; run stepmigrate backfill, then stepmigrate verify\n", group(abs(out.Job.Records-out.Step.Records)))
	}
	if out.UsedMemory > 0 {
		a.printf("memory       used_memory %s; the non-authoritative namespace adds ~%.1f%% to the rest\n", bytesText(out.UsedMemory), out.MemoryIncreasePct)
	}
	if dw.Attempted == 0 {
		a.printf("dual-write   no fleet stats yet: services report them while running Store.FollowStage\n")
	} else {
		a.printf("dual-write   %s writes mirrored, %s failed (%s panics): success rate %.4f%%\n",
			group(int64(dw.Attempted)), group(int64(dw.Failed)), group(int64(dw.Panics)), 100*dw.SuccessRate())
	}
	a.printf("reads        %s, %s fell back to job:*, %s of %s shadow checks differed\n",
		group(int64(rd.Reads)), group(int64(rd.Fallbacks)), group(int64(rd.ShadowMismatches)), group(int64(rd.ShadowChecks)))
	return nil
}

func abs(n int64) int64 {
	if n < 0 {
		return -n
	}
	return n
}

// usedMemory reads used_memory from INFO memory; 0 when unavailable.
func usedMemory(ctx context.Context, rdb *redis.Client) int64 {
	info, err := rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "used_memory:"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	return 0
}

func bytesText(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// ---- backfill

type backfillJSON struct {
	jobstore.BackfillResult
	RecordsPerSecond float64 `json:"records_per_second"`
	Interrupted      bool    `json:"interrupted"`
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
	if err := a.noArgs("backfill", pos); err != nil {
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
	from, to := "job", "step"
	if opts.Reverse {
		from, to = to, from
	}
	st := a.store.Stage()
	if dst := map[bool]jobstore.Namespace{false: jobstore.StepNamespace, true: jobstore.JobNamespace}[opts.Reverse]; !writes(st, dst) {
		fmt.Fprintf(a.stderr, "stepmigrate: warning: in stage %s nothing keeps %s:* up to date, so the copies will go stale; backfill once every process writes both namespaces\n", st, to)
	}
	p := a.progress(fmt.Sprintf("backfill %s→%s", from, to), "keys")
	opts.Progress = func(bp jobstore.BackfillProgress) {
		p.update(bp.Scanned, bp.Fraction,
			fmt.Sprintf("%s: copied %s", bp.Phase, group(bp.Copied+bp.EntriesCopied)))
	}
	res, err := a.store.Backfill(ctx, opts)
	p.finish()
	interrupted := err != nil && ctx.Err() != nil
	if err != nil && !interrupted {
		return fmt.Errorf("backfill: %v", err)
	}
	rate := 0.0
	if s := res.Elapsed.Seconds(); s > 0 {
		rate = float64(res.Records) / s
	}
	if a.json {
		if err := a.printJSON(backfillJSON{res, rate, interrupted}); err != nil {
			return err
		}
	} else {
		verb := "copied"
		if res.DryRun {
			verb = "would copy"
		}
		a.printf("backfill %s:* → %s:*%s: %s records: %s %s, %s unchanged, %s newer in %s:* (kept), %s conflicts, %s gone meanwhile, %s not hashes\n",
			from, to, map[bool]string{true: " (dry run)", false: ""}[res.DryRun], group(res.Records), verb, group(res.Copied),
			group(res.Unchanged), group(res.Newer), to, group(res.Conflicts), group(res.Gone), group(res.WrongType))
		a.printf("queue entries without a record: %s, %s %s\n", group(res.Entries), verb, group(res.EntriesCopied))
		if res.Skipped > 0 {
			a.printf("skipped %s keys that are not records: %s\n", group(res.Skipped), strings.Join(res.SkippedKeys, ", "))
		}
		if res.Conflicts > 0 {
			a.printf("conflicts (as fresh, but different): %s; run stepmigrate verify --repair to settle them from the authoritative side\n", strings.Join(res.ConflictKeys, ", "))
		}
		if res.WrongType > 0 {
			a.printf("keys that are not hashes: %s; fix or remove them, then run again\n", strings.Join(res.WrongTypeKeys, ", "))
		}
		a.printf("took %s (%s records/s)%s\n", res.Elapsed.Round(time.Millisecond), group(int64(rate)),
			map[bool]string{true: "; resumed from a checkpoint", false: ""}[res.Resumed])
		if !interrupted && !res.DryRun {
			a.printf("next: stepmigrate verify\n")
		}
	}
	if interrupted {
		if res.DryRun {
			return exitError{exitFail, "interrupted; run the command again"}
		}
		return exitError{exitFail, "interrupted; the checkpoint is saved: run the same command again to resume"}
	}
	return nil
}

// writes reports whether processes in stage st write namespace ns.
func writes(st jobstore.Stage, ns jobstore.Namespace) bool {
	if st.Primary() == ns {
		return true
	}
	m, ok := st.Mirror()
	return ok && m == ns
}

// ---- verify

type verifyJSON struct {
	jobstore.VerifyResult
	Differences      int64   `json:"differences"`
	RecordsPerSecond float64 `json:"records_per_second"`
}

func (a *app) verify(ctx context.Context, args []string) error {
	fs := a.flagSet("verify")
	var opts jobstore.VerifyOptions
	fs.BoolVar(&opts.Repair, "repair", false, "rewrite differences from the authoritative namespace")
	fs.IntVar(&opts.Rounds, "rounds", 0, "re-check rounds (default 3)")
	fs.IntVar(&opts.BatchSize, "batch", 0, "keys per batch")
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	if err := a.noArgs("verify", pos); err != nil {
		return err
	}
	if opts.Rounds < 0 || opts.BatchSize < 0 {
		return usagef("verify: --rounds and --batch must not be negative")
	}
	if err := checkGiven(fs); err != nil {
		return err
	}
	if err := a.connect(ctx); err != nil {
		return err
	}
	p := a.progress("verify", "keys")
	opts.Progress = func(vp jobstore.VerifyProgress) {
		p.update(vp.Checked, vp.Fraction, fmt.Sprintf("%s, %d to re-check", vp.Phase, vp.Suspects))
	}
	res, err := a.store.Verify(ctx, opts)
	p.finish()
	if err != nil {
		if ctx.Err() != nil {
			return exitError{exitFail, "interrupted; nothing was changed except what --repair fixed: run it again"}
		}
		return fmt.Errorf("verify: %v", err)
	}
	rate := 0.0
	if s := res.Elapsed.Seconds(); s > 0 {
		rate = float64(res.JobRecords+res.StepRecords) / s
	}
	n := res.Differences()
	if a.json {
		if err := a.printJSON(verifyJSON{res, n, rate}); err != nil {
			return err
		}
	} else {
		a.printf("verify %s:* (authoritative) against %s:*: %s job records, %s step records, %s queue entries, in %s (%s records/s)\n",
			res.Primary, res.Mirror, group(res.JobRecords), group(res.StepRecords), group(res.Entries),
			res.Elapsed.Round(time.Millisecond), group(int64(rate)))
		a.printf("differences: %s missing, %s extra, %s different records; %s missing, %s extra queue entries, %s different scores",
			group(res.Missing), group(res.Extra), group(res.Different),
			group(res.MissingEntries), group(res.ExtraEntries), group(res.DifferentEntries))
		if res.Rounds > 0 {
			a.printf(" (still there after %d re-check rounds)", res.Rounds)
		}
		a.printf("\n")
		for _, d := range res.Diffs {
			a.printf("  %s\n", d)
		}
		if int64(len(res.Diffs)) < n {
			a.printf("  ... and %s more\n", group(n-int64(len(res.Diffs))))
		}
		if n > 0 && res.Unsafe == 0 {
			a.printf("none would be lost by deleting %s:* (missing or stale copies only)\n", res.Mirror)
		}
	}
	switch {
	case n == 0:
		return nil
	case opts.Repair:
		if !a.json {
			a.printf("repaired %s ids from %s:*; run stepmigrate verify again to confirm\n", group(res.Repaired), res.Primary)
		}
		return nil
	}
	return exitError{exitFail, fmt.Sprintf("%s differences between %s:* and %s:*; if services still write both, run stepmigrate verify --repair (it rewrites %s:* from %s:*); if not, see the runbook",
		group(n), res.Primary, res.Mirror, res.Mirror, res.Primary)}
}

// ---- cleanup and rollback

func (a *app) cleanup(ctx context.Context, args []string) error {
	return a.drop(ctx, "cleanup", jobstore.JobNamespace, jobstore.StageStepOnly, args)
}

func (a *app) rollback(ctx context.Context, args []string) error {
	return a.drop(ctx, "rollback", jobstore.StepNamespace, jobstore.StageLegacy, args)
}

func (a *app) drop(ctx context.Context, name string, ns jobstore.Namespace, needs jobstore.Stage, args []string) error {
	fs := a.flagSet(name)
	var opts jobstore.CleanupOptions
	fs.BoolVar(&opts.DryRun, "dry-run", false, "count what would be deleted")
	fs.BoolVar(&opts.Force, "force", false, "delete without verifying first")
	fs.BoolVar(&opts.Strict, "strict", false, "refuse on any difference, not only on what deleting would lose")
	fs.IntVar(&opts.BatchSize, "batch", 0, "keys per batch")
	pos, err := a.parse(fs, args)
	if err != nil {
		return err
	}
	if err := a.noArgs(name, pos); err != nil {
		return err
	}
	if opts.BatchSize < 0 {
		return usagef("%s: --batch must not be negative", name)
	}
	if err := checkGiven(fs); err != nil {
		return err
	}
	if err := a.connect(ctx); err != nil {
		return err
	}
	p := a.progress(name+" "+ns.String()+":*", "keys")
	vp := a.progress("verify", "keys")
	opts.Verify.Progress = func(x jobstore.VerifyProgress) { vp.update(x.Checked, x.Fraction, x.Phase) }
	opts.Progress = func(n int64) { p.update(n, 0, "") }
	res, err := a.store.Cleanup(ctx, ns, opts)
	vp.finish()
	p.finish()
	switch {
	case errors.Is(err, jobstore.ErrNamespaceInUse):
		return exitError{exitFail, fmt.Sprintf("%s refused: %v. Check every process with stepmigrate status, then: stepmigrate stage set %s", name, err, needs)}
	case errors.Is(err, jobstore.ErrCleanupRefused):
		if a.json {
			_ = a.printJSON(res)
		} else if res.Verify != nil {
			for _, d := range res.Verify.Diffs {
				if d.Unsafe {
					a.printf("  %s\n", d)
				}
			}
		}
		return exitError{exitFail, fmt.Sprintf("%s refused: %v. Run stepmigrate verify for the details; --force deletes anyway", name, err)}
	case err != nil && ctx.Err() != nil:
		return exitError{exitFail, fmt.Sprintf("%s interrupted after %s records; run it again to finish", name, group(res.Records))}
	case err != nil:
		return fmt.Errorf("%s: %v", name, err)
	}
	if a.json {
		return a.printJSON(res)
	}
	verb := "deleted"
	if res.DryRun {
		verb = "would delete"
	}
	if res.Verify != nil {
		a.printf("verified first: %s differences, none that deleting %s:* would lose\n", group(res.Verify.Differences()), ns)
	}
	a.printf("%s %s %s records, %s queue keys and %s backfill checkpoints of %s:*\n",
		name, verb, group(res.Records), group(res.Queues), group(res.Checkpoints), ns)
	if res.Kept > 0 {
		a.printf("kept %s keys that are not records: %s\n", group(res.Kept), strings.Join(res.KeptKeys, ", "))
	}
	return nil
}

// ---- stage

type stageJSON struct {
	Shared      *jobstore.Stage `json:"shared"`
	Published   bool            `json:"published"`
	Environment jobstore.Stage  `json:"environment"`
	Previous    *jobstore.Stage `json:"previous,omitempty"`
}

func (a *app) stage(ctx context.Context, args []string) error {
	fs := a.flagSet("stage")
	force := fs.Bool("force", false, "allow a jump of more than one stage")
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
	case action == "set" && len(pos) == 2:
		if to, err = jobstore.ParseStage(pos[1]); err != nil {
			return usagef("stage set: %v", err)
		}
	case action == "set":
		return usagef("stage set takes one stage name: legacy, dual-write, dual-read, step-primary or step-only")
	default:
		return usagef("stage: want \"get\" or \"set NAME\", got %q", pos)
	}
	a.forceStage = action == "set" && *force
	if err := a.connect(ctx); err != nil {
		return err
	}
	out := stageJSON{Published: a.published, Environment: a.envStage}
	if a.published {
		out.Shared = &a.shared
	}
	if action == "get" {
		if a.json {
			return a.printJSON(out)
		}
		if a.published {
			a.printf("%s (shared; the environment here says %s)\n", a.shared, a.envStage)
		} else {
			a.printf("none published (the environment here says %s); publish one with: stepmigrate stage set NAME\n", a.envStage)
		}
		return nil
	}
	prev := a.store.Stage()
	if err := a.store.PublishStage(ctx, to, *force); err != nil {
		if errors.Is(err, jobstore.ErrStageJump) {
			return exitError{exitFail, fmt.Sprintf("stage set refused: %v (the runbook says what to check between stages; --force jumps anyway)", err)}
		}
		return err
	}
	out.Shared, out.Published, out.Previous = &to, true, &prev
	if a.json {
		return a.printJSON(out)
	}
	a.printf("published %s (was %s); processes running Store.FollowStage switch within their interval\n", to, prev)
	return nil
}
