// Command jobstore-bench measures jobstore against its anchors, side by
// side in one run, and prints the figures and their ratios (as a table, or
// one JSON object with --json).
//
//	go run ./cmd/jobstore-bench --redis redis://127.0.0.1:6379/15
//
// The submit, batch, worker and memory sections run on the server --redis
// names. It must be on loopback and the database must not be 0; every key
// the benchmark writes there is under the prefix "jobstore-bench:" (or is
// asynq's queue "jobstore-bench"), deleted before and after.
//
// The claim section runs the legacy claim function, findMatchingJob, which
// uses fixed, unprefixed keys and must be loaded with FUNCTION LOAD, global
// to a server. So it never touches the --redis server: it starts a private
// redis-server (from PATH) on a free loopback port, uses it, and kills it.
//
// The benchmark stops by itself: each contender runs at most --duration
// per round, for --rounds rounds.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

const keyPrefix = "jobstore-bench:"

type config struct {
	url      string
	json     bool
	duration time.Duration
	rounds   int
	workers  int
	batch    int
	records  int
	sections []string

	// The claim section.
	function     string
	claimJobs    int
	claimWorkers int
	claimCap     int
	cpuProfile   string
}

// allSections are the sections, in the order they run.
var allSections = []string{"submit", "batch", "worker", "memory", "backfill", "claim"}

// sharedSections are the sections that use the --redis server.
var sharedSections = []string{"submit", "batch", "worker", "memory", "backfill"}

// functionName is the legacy claim function's file in shared/legacy/fixtures.
const functionName = "findMatchingJob.91d0fd0.lua"

// defaultFunction is where --function points by default: see findFunction.
var defaultFunction = findFunction()

// findFunction locates the legacy claim function: under
// $JOBSTORE_LEGACY_DIR when set; else in shared/legacy/fixtures beside the
// working directory or any directory above it (the README runs the bench
// from the repository's root, beside which shared/ lies); else under
// /work/shared/legacy, where these machines keep it. When none exists it
// names the first, for the error message.
func findFunction() string {
	if d := os.Getenv("JOBSTORE_LEGACY_DIR"); d != "" {
		return filepath.Join(d, "fixtures", functionName)
	}
	var candidates []string
	if wd, err := os.Getwd(); err == nil {
		for dir := filepath.Dir(wd); ; dir = filepath.Dir(dir) {
			candidates = append(candidates, filepath.Join(dir, "shared", "legacy", "fixtures", functionName))
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	candidates = append(candidates, filepath.Join("/work/shared/legacy/fixtures", functionName))
	for _, c := range candidates {
		if _, err := os.Stat(c); err == nil {
			if rel, err := filepath.Rel(mustGetwd(), c); err == nil && !strings.HasPrefix(rel, "../../..") {
				return rel
			}
			return c
		}
	}
	return filepath.Join("..", "shared", "legacy", "fixtures", functionName)
}

func mustGetwd() string {
	wd, _ := os.Getwd()
	return wd
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

// newFlagSet declares the flags into c. Each usage text leaves the default
// to the flag package, which prints it once.
func newFlagSet(c *config, sections *string) *flag.FlagSet {
	fs := flag.NewFlagSet("jobstore-bench", flag.ContinueOnError)
	defURL := os.Getenv("REDIS_URL")
	if defURL == "" {
		defURL = "redis://127.0.0.1:6379/15"
	}
	fs.StringVar(&c.url, "redis", defURL, "Redis URL for the shared-server sections: on loopback, database not 0 ($REDIS_URL when set)")
	fs.BoolVar(&c.json, "json", false, "print one JSON object with every figure")
	fs.DurationVar(&c.duration, "duration", time.Second, "how long each contender runs in each round, at most")
	fs.IntVar(&c.rounds, "rounds", 3, "rounds; contenders take turns within each round")
	fs.IntVar(&c.workers, "workers", 8, "workers for the worker section's cycle")
	fs.IntVar(&c.batch, "batch", 100, "jobs per batch for the batch section")
	fs.IntVar(&c.records, "records", 100_000, "legacy jobs the backfill section seeds, copies and verifies")
	fs.StringVar(sections, "only", strings.Join(allSections, ","), "comma-separated sections to run")
	fs.StringVar(&c.function, "function", defaultFunction, "the legacy claim function's Lua file, for the claim section")
	fs.IntVar(&c.claimJobs, "claim-jobs", 10_000, "pending legacy jobs the claim section refills before each turn")
	fs.IntVar(&c.claimWorkers, "claim-workers", 10, "concurrent workers in the claim section")
	fs.IntVar(&c.claimCap, "claim-cap", 3000, "claims after which a claim-section turn ends, if --duration has not passed")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write the benchmark process's CPU profile to this file (go tool pprof)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: jobstore-bench [flags]\n\nMeasures jobstore against its anchors, side by side in one run.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	return fs
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var c config
	var sections string
	fs := newFlagSet(&c, &sections)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return 0
		}
		fmt.Fprintf(stderr, "jobstore-bench: %v; see --help\n", err)
		return 2
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "jobstore-bench: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return usage("unexpected argument %q; see --help", fs.Arg(0))
	}
	if c.duration <= 0 || c.rounds < 1 || c.workers < 1 || c.batch < 1 || c.records < 1 ||
		c.claimJobs < 1 || c.claimWorkers < 1 || c.claimCap < 1 {
		return usage("--duration, --rounds, --workers, --batch, --records, --claim-jobs, --claim-workers and --claim-cap must be positive")
	}
	if c.batch > 10_000 {
		return usage("--batch %d is more than SubmitJobs takes (10000)", c.batch)
	}
	for _, s := range strings.Split(sections, ",") {
		if !slices.Contains(allSections, s) {
			return usage("unknown section %q in --only; want some of %s", s, strings.Join(allSections, ","))
		}
		if !slices.Contains(c.sections, s) {
			c.sections = append(c.sections, s)
		}
	}
	opt, err := redis.ParseURL(c.url)
	if err != nil {
		return usage("--redis %q: %v; want redis://127.0.0.1:6379/15", c.url, err)
	}
	if opt.DB == 0 {
		return usage("--redis %q selects database 0; give the benchmark a database of its own, e.g. /15", c.url)
	}
	if !loopback(opt.Addr) {
		return usage("--redis %q is not on loopback; the benchmark only runs against a local server", c.url)
	}
	if slices.Contains(c.sections, "claim") {
		if _, err := os.Stat(c.function); err != nil {
			return usage("--function: %v; run from the repository root, or name the findMatchingJob Lua file", err)
		}
	}

	if c.cpuProfile != "" {
		f, err := os.Create(c.cpuProfile)
		if err != nil {
			return usage("--cpuprofile: %v", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return usage("--cpuprofile: %v", err)
		}
		defer pprof.StopCPUProfile()
	}
	b := &bench{cfg: c, out: stderr}
	if c.json {
		b.out = io.Discard
	}
	if slices.ContainsFunc(c.sections, func(s string) bool { return slices.Contains(sharedSections, s) }) {
		opt.PoolSize = 64
		b.rdb = redis.NewClient(opt)
		defer b.rdb.Close()
		if err := b.rdb.Ping(ctx).Err(); err != nil {
			fmt.Fprintf(stderr, "jobstore-bench: %s does not answer: %v; start redis-server or pass --redis\n", opt.Addr, err)
			return 1
		}
		if err := b.clean(ctx); err != nil {
			fmt.Fprintln(stderr, "jobstore-bench:", err)
			return 1
		}
	}
	rep, err := b.run(ctx)
	if err != nil {
		if b.rdb != nil {
			_ = b.clean(context.WithoutCancel(ctx))
		}
		fmt.Fprintln(stderr, "jobstore-bench:", err)
		return 1
	}
	if c.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(rep)
	} else {
		rep.print(stdout)
	}
	return 0
}

func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

type bench struct {
	cfg config
	rdb *redis.Client // the --redis server; nil when only the claim section runs
	out io.Writer     // progress lines; discarded with --json
}

func (b *bench) logf(format string, a ...any) { fmt.Fprintf(b.out, format+"\n", a...) }

// clean deletes every key under the benchmark's prefix on the --redis
// server, and, when the submit section runs, what its asynq contender
// left. Each pattern costs a SCAN of the whole database, so it runs once
// before the sections and once after each.
func (b *bench) clean(ctx context.Context) error {
	if err := unlinkMatching(ctx, b.rdb, keyPrefix+"*"); err != nil {
		return err
	}
	if slices.Contains(b.cfg.sections, "submit") {
		return b.cleanAsynq(ctx)
	}
	return nil
}

// unlinkMatching deletes every key matching pattern, in batches.
func unlinkMatching(ctx context.Context, rdb *redis.Client, pattern string) error {
	iter := rdb.Scan(ctx, 0, pattern, 5000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 1000 {
			if err := rdb.Unlink(ctx, keys...).Err(); err != nil {
				return err
			}
			keys = keys[:0]
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	if len(keys) > 0 {
		return rdb.Unlink(ctx, keys...).Err()
	}
	return nil
}

func (b *bench) run(ctx context.Context) (*report, error) {
	rep := &report{
		Started:  time.Now().UTC(),
		Go:       runtime.Version(),
		CPUs:     runtime.NumCPU(),
		Duration: b.cfg.duration.String(),
		Rounds:   b.cfg.rounds,
	}
	if b.rdb != nil {
		info, _ := b.rdb.Info(ctx, "server").Result()
		rep.Redis = b.rdb.Options().Addr
		rep.RedisVer = infoField(info, "redis_version")
	}
	for _, s := range b.cfg.sections {
		var err error
		switch s {
		case "submit":
			err = b.submit(ctx, rep)
		case "batch":
			err = b.batchSubmit(ctx, rep)
		case "worker":
			err = b.workerCycle(ctx, rep)
		case "memory":
			err = b.memory(ctx, rep)
		case "backfill":
			err = b.backfillVerify(ctx, rep)
		case "claim":
			err = b.claim(ctx, rep)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s, err)
		}
		if b.rdb != nil && slices.Contains(sharedSections, s) {
			if err := unlinkMatching(ctx, b.rdb, keyPrefix+"*"); err != nil {
				return nil, err
			}
		}
		if ctx.Err() != nil {
			return nil, errors.New("interrupted")
		}
	}
	return rep, nil
}

func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return ""
}
