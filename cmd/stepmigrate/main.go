// Command stepmigrate is the operator's tool for moving a Redis job queue
// from job:<id> / jobs:* to step:<id> / steps:* with the jobstore
// library, without downtime: status, backfill, verify, follow, cleanup,
// rollback and the shared stage.
//
// Build it and run the binary, so that scripts see its exit status:
//
//	go install ./cmd/stepmigrate      # or: go build -o stepmigrate ./cmd/stepmigrate
//	stepmigrate --redis redis://127.0.0.1:6379/0 status
//
// (go run reports every non-zero status of the program as 1.) Run it
// without arguments for the usage. Exit status: 0 success; 1 when verify
// finds differences, a command is refused, or an operation fails; 2 on
// bad usage; 130 when a signal (Ctrl-C, SIGTERM) interrupts backfill,
// verify, cleanup, rollback or stage set --wait. follow runs until a
// signal and then exits 0.
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
	"strings"
	"syscall"
	"time"

	"github.com/jobstep/jobstore"
	"github.com/redis/go-redis/v9"
)

const (
	exitOK          = 0
	exitFail        = 1
	exitUsage       = 2
	exitInterrupted = 130 // 128 + SIGINT, as shells report it
)

const usage = `usage: stepmigrate [--redis URL] [--prefix P] [--json] <command> [flags]

Moves job:<id> / jobs:* to step:<id> / steps:* and back; see the README's runbook.

commands:
  status          stages, fleet, legacy processes, followers, namespaces, memory,
                  dual-write success rate, and what to do next in this stage
  backfill [--reverse] [--rate N] [--dry-run] [--batch N] [--restart]
                  copy job:* to step:* (--reverse: step:* to job:*); resumes an
                  interrupted run unless --restart
  verify [--repair] [--rounds N] [--batch N] [--blocking] [--limit N]
                  compare both namespaces; --repair rewrites differences from the
                  authoritative one; --blocking lists only what blocks a cleanup;
                  --limit: differences listed (default 100)
  follow [--configure] [--sweep D|off] [--debounce D] [--recheck D] [--every D]
                  mirror to step:* what legacy processes write to job:*, until
                  Ctrl-C or SIGTERM; --configure turns on keyspace notifications;
                  --every: how often to print the counters (default 5s)
  cleanup [--dry-run] [--force] [--strict] [--batch N] [--limit N]
                  delete job:* (only in step-only, after a verification)
  rollback [--dry-run] [--force] [--strict] [--batch N] [--limit N]
                  delete step:* (only in legacy, after a verification)
  stage [get]     show the published stage
  stage set NAME [--force] [--wait[=DURATION]]
                  publish a stage: legacy, dual-write, dual-read, step-primary or
                  step-only; --force allows a jump and overrides the legacy gate;
                  --wait waits (2m, or DURATION) until every process reports it

global flags (before or after the command):
  --redis URL    redis:// or rediss:// URL (default: $REDIS_URL)
  --prefix P     key prefix the services use (WithKeyPrefix), default none
  --json         print the result as JSON (follow: one JSON object a line)

exit status: 0 success; 1 differences found, refused or failed; 2 bad usage;
130 interrupted by a signal (run the command again: backfill resumes);
follow runs until a signal, then exits 0.
Run the built binary (go install ./cmd/stepmigrate): go run turns every
non-zero status into 1.
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

	rdb *redis.Client
	m   *jobstore.Migrator
	// envStage is the stage the environment selects (REDIS_DUAL_WRITE_STEPS,
	// REDIS_STEP_MIGRATION_STAGE); shared is the published one, if any.
	// The Migrator runs in the published stage when there is one.
	envStage  jobstore.Stage
	shared    jobstore.Stage
	published bool
	// forceStage is set for stage set --force, which overwrites a shared
	// stage that cannot be read instead of refusing it; badStage is then
	// the value it overwrites, when it was one that names no stage.
	forceStage bool
	badStage   *string
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

func failf(format string, args ...any) error {
	return exitError{exitFail, fmt.Sprintf(format, args...)}
}

// discardLogger silences go-redis, which otherwise prints its pool's
// dial errors before the command can say what is wrong.
type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

// run is the whole command, for main and for tests.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	redis.SetLogger(discardLogger{})
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
	fs.BoolVar(&a.json, "json", a.json, "print JSON")
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

const commandList = "status, backfill, verify, follow, cleanup, rollback or stage"

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
		"status": a.status, "backfill": a.backfill, "verify": a.verify, "follow": a.follow,
		"cleanup": a.cleanup, "rollback": a.rollback, "stage": a.stage,
	}
	if cmd == "help" {
		fmt.Fprint(a.stdout, usage)
		return nil
	}
	f, ok := commands[cmd]
	if !ok {
		return usagef("unknown command %q (want %s)", cmd, commandList)
	}
	return f(ctx, rest)
}

// connect checks the options, opens the connection and the Migrator. The
// Migrator runs in the published stage when there is one, else in the
// environment's.
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
	// The options first: they need no connection.
	m, err := jobstore.NewMigrator(a.rdb, jobstore.WithKeyPrefix(a.prefix))
	if errors.Is(err, jobstore.ErrInvalidConfig) {
		return usagef("%v; fix or unset it", err)
	}
	if err != nil {
		return err
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.rdb.Ping(pctx).Err(); err != nil {
		return connectError(opt, err)
	}
	a.m, a.envStage = m, m.Stage()
	a.shared, a.published, err = m.SharedStage(ctx)
	if err != nil {
		return a.unreadableStage(ctx, err)
	}
	if a.published && a.shared != a.envStage {
		a.m, err = jobstore.NewMigrator(a.rdb, jobstore.WithKeyPrefix(a.prefix), jobstore.WithStage(a.shared))
	}
	return err
}

// connectError says why the first command failed: a database index the
// server does not have, credentials it refuses, another error it sent, or
// no answer at all.
func connectError(opt *redis.Options, err error) error {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		return fmt.Errorf("cannot reach Redis at %s: %v; check the URL, the network and the password", opt.Addr, err)
	}
	msg := rerr.Error()
	switch {
	case strings.Contains(msg, "DB index is out of range") || strings.Contains(msg, "invalid DB index"):
		return usagef("Redis at %s has no database %d (%s): the URL's database index must be below the server's `databases` setting (16 by default)",
			opt.Addr, opt.DB, msg)
	case redis.HasErrorPrefix(err, "WRONGPASS") || redis.HasErrorPrefix(err, "NOAUTH") || strings.Contains(msg, "invalid password"):
		return fmt.Errorf("Redis at %s refused the credentials (%s): check the user and password in the URL", opt.Addr, msg)
	}
	return fmt.Errorf("Redis at %s answered PING with an error: %s", opt.Addr, msg)
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

func noArgs(name string, pos []string) error {
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

// progress returns the progress display: on stdout when it is a terminal
// (and the result is text), as plain lines on stderr otherwise, so that
// stdout holds only the result.
func (a *app) progress() *progress {
	if a.tty && !a.json {
		return newProgress(a.stdout, true)
	}
	return newProgress(a.stderr, false)
}

// stageNow is the stage the fleet runs: the published one, else the
// environment's.
func (a *app) stageNow() jobstore.Stage { return a.m.Stage() }

func (a *app) stageSource() string {
	if a.published {
		return "published"
	}
	return "environment"
}

// interrupted reports whether err comes from the command's context being
// cancelled: a signal.
func interrupted(ctx context.Context, err error) bool {
	return err != nil && ctx.Err() != nil
}
