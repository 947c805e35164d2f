// Command jobstore-bench measures jobstore against its anchors, side by
// side in one run on the same Redis, and prints the figures and their
// ratios (as a table, or one JSON object with --json).
//
//	go run ./cmd/jobstore-bench --redis redis://127.0.0.1:6379/15
//
// It only talks to a server on loopback, refuses database 0, keeps every
// key under the prefix "jobstore-bench:" (deleted before and after), and
// stops by itself: each contender runs --duration per round.
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
	"runtime"
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
	records  int
	workers  int
	batch    int
	sections []string
}

var allSections = []string{"submit", "batch", "worker", "memory", "backfill"}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("jobstore-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c config
	var sections string
	defURL := os.Getenv("REDIS_URL")
	if defURL == "" {
		defURL = "redis://127.0.0.1:6379/15"
	}
	fs.StringVar(&c.url, "redis", defURL, "Redis URL, on loopback, database not 0 (default $REDIS_URL or redis://127.0.0.1:6379/15)")
	fs.BoolVar(&c.json, "json", false, "print one JSON object with every figure")
	fs.DurationVar(&c.duration, "duration", time.Second, "how long each contender runs in each round")
	fs.IntVar(&c.rounds, "rounds", 3, "rounds; contenders take turns within each round")
	fs.IntVar(&c.records, "records", 200_000, "legacy records for the backfill and verify figures")
	fs.IntVar(&c.workers, "workers", 8, "workers for the worker-cycle figure")
	fs.IntVar(&c.batch, "batch", 100, "jobs per batch for the batch-submit figure")
	fs.StringVar(&sections, "only", strings.Join(allSections, ","), "sections to run, comma-separated: "+strings.Join(allSections, ","))
	if err := fs.Parse(args); err != nil {
		return 2
	}
	usage := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "jobstore-bench: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return usage("unexpected argument %q; see -h", fs.Arg(0))
	}
	if c.duration <= 0 || c.rounds < 1 || c.records < 1 || c.workers < 1 || c.batch < 1 {
		return usage("--duration, --rounds, --records, --workers and --batch must be positive")
	}
	for _, s := range strings.Split(sections, ",") {
		if !slices.Contains(allSections, s) {
			return usage("unknown section %q in --only; want some of %s", s, strings.Join(allSections, ","))
		}
		c.sections = append(c.sections, s)
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
	opt.PoolSize = 64
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	if err := rdb.Ping(ctx).Err(); err != nil {
		fmt.Fprintf(stderr, "jobstore-bench: %s does not answer: %v; start redis-server or pass --redis\n", opt.Addr, err)
		return 1
	}

	b := &bench{cfg: c, rdb: rdb, out: stderr}
	if c.json {
		b.out = io.Discard
	}
	if err := b.clean(ctx); err != nil {
		fmt.Fprintln(stderr, "jobstore-bench:", err)
		return 1
	}
	defer func() { _ = b.clean(context.WithoutCancel(ctx)) }()
	rep, err := b.run(ctx)
	if err != nil {
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
	rdb *redis.Client
	out io.Writer // progress lines; discarded with --json
}

func (b *bench) logf(format string, a ...any) { fmt.Fprintf(b.out, format+"\n", a...) }

// clean deletes every key under the benchmark's prefix, and what the
// asynq contender left.
func (b *bench) clean(ctx context.Context) error {
	if err := b.unlinkMatching(ctx, keyPrefix+"*"); err != nil {
		return err
	}
	return b.cleanAsynq(ctx)
}

// unlinkMatching deletes every key matching pattern, in batches.
func (b *bench) unlinkMatching(ctx context.Context, pattern string) error {
	iter := b.rdb.Scan(ctx, 0, pattern, 5000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
		if len(keys) == 1000 {
			if err := b.rdb.Unlink(ctx, keys...).Err(); err != nil {
				return err
			}
			keys = keys[:0]
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	if len(keys) > 0 {
		return b.rdb.Unlink(ctx, keys...).Err()
	}
	return nil
}

func (b *bench) run(ctx context.Context) (*report, error) {
	info, _ := b.rdb.Info(ctx, "server").Result()
	rep := &report{
		Started:  time.Now().UTC(),
		Redis:    b.rdb.Options().Addr,
		RedisVer: infoField(info, "redis_version"),
		Go:       runtime.Version(),
		CPUs:     runtime.NumCPU(),
		Duration: b.cfg.duration.String(),
		Rounds:   b.cfg.rounds,
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
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s, err)
		}
		if err := b.clean(ctx); err != nil {
			return nil, err
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
