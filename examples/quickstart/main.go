// Command quickstart shows jobstore end to end, with dual-write on, and
// prints what each step leaves in Redis, so that you see the legacy
// layout the library writes and its step:* mirror:
//
//  1. An API service submits a job (SubmitJob): the record job:<id> and
//     its entry in jobs:pending.
//  2. A worker registers (RegisterWorker; long-running workers use
//     KeepAlive), claims the job with its Capabilities (ClaimJob), starts
//     it (StartJob) and reports progress (ReportProgress): the job in
//     jobs:active:<worker>, the progress in job:<id>:progress.
//  3. The worker completes it (CompleteJob): the result in the
//     jobs:completed hash, whose whole key expires after 24 hours.
//
// Each job:*/jobs:* key is shown with its step:*/steps:* counterpart,
// which the same atomic script wrote; the "Dual-write: ..." lines are the
// library's debug log of what it mirrored.
//
// Run it with nothing but Go, on an embedded miniredis:
//
//	go run ./examples/quickstart
//
// or on a real server, given as REDIS_URL:
//
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/quickstart
//
// On a real server every key it writes is under the prefix
// "jobstore-quickstart:" (so it never touches, or claims, a real job),
// and it owns that prefix: it deletes what earlier runs left under it
// when it starts, and its own keys when it ends, also when interrupted
// with Ctrl-C (SIGINT) or SIGTERM. -keep keeps them at the end, for a
// look with redis-cli; the next run deletes them.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jobstep/jobstore"
	"github.com/jobstep/jobstore/examples/internal/demo"
	"github.com/redis/go-redis/v9"
)

// keyPrefix is where the quickstart works on a real server. It owns
// every key under it.
const keyPrefix = "jobstore-quickstart:"

func main() {
	keep := flag.Bool("keep", false, "on a real server, keep the keys at the end (the next run deletes them)")
	flag.Parse()
	os.Exit(mainErr(*keep))
}

func mainErr(keep bool) int {
	// On SIGINT or SIGTERM the context is cancelled: run stops at its
	// next Redis call and deletes its keys on the way out.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	conn, err := demo.Connect(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		if ctx.Err() != nil {
			return 130
		}
		return 1
	}
	defer conn.Close()
	prefix := ""
	if !conn.Embedded {
		prefix = keyPrefix
	}
	fmt.Printf("Redis: %s\n", conn.Where)
	if err := run(ctx, os.Stdout, conn.Client, prefix, keep); err != nil {
		if ctx.Err() != nil {
			fmt.Fprintln(os.Stderr, "quickstart: interrupted")
			return 130
		}
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		return 1
	}
	return 0
}

// run is the quickstart. With a prefix, it first deletes every key under
// it, and, unless keep, deletes them again when it returns, however it
// returns (an error, or ctx cancelled by a signal).
func run(ctx context.Context, out io.Writer, rdb redis.UniversalClient, prefix string, keep bool) (err error) {
	if prefix != "" {
		n, err := deleteUnder(ctx, rdb, prefix)
		if err != nil {
			return fmt.Errorf("delete the keys of earlier runs: %w", err)
		}
		fmt.Fprintf(out, "Keys under %q: %d left by earlier runs, deleted.\n", prefix, n)
		defer func() {
			if keep && err == nil {
				fmt.Fprintf(out, "\nKept the keys under %q (-keep); the next run deletes them.\n", prefix)
				return
			}
			// ctx may be cancelled by now: clean up on a context of our own.
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			defer cancel()
			n, cerr := deleteUnder(cctx, rdb, prefix)
			if cerr != nil {
				err = errors.Join(err, fmt.Errorf("delete the quickstart's keys under %q: %w", prefix, cerr))
				return
			}
			fmt.Fprintf(out, "\nDeleted the quickstart's %d keys under %q.\n", n, prefix)
		}()
	}

	// At level Debug the Store logs every key it mirrors:
	// "Dual-write: copied job:<id> → step:<id>".
	logger := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == slog.LevelKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	store, err := jobstore.New(rdb,
		jobstore.WithDualWrite(true), // or REDIS_DUAL_WRITE_STEPS=true in the environment
		jobstore.WithLogger(logger),
		jobstore.WithKeyPrefix(prefix))
	if err != nil {
		return err
	}
	k := layout{prefix: prefix}
	show := &shower{ctx: ctx, out: out, rdb: rdb, layout: k}
	fmt.Fprintf(out, "Stage: %s: every write to job:*/jobs:* is mirrored to step:*/steps:* in the same script.\n", store.Stage())

	fmt.Fprintln(out, "\n== 1. The API service submits a job (SubmitJob)")
	id, err := store.SubmitJob(ctx, jobstore.Job{
		Service:      "comfyui",
		Payload:      json.RawMessage(`{"prompt":"a red fox in the snow","steps":30}`),
		Requirements: json.RawMessage(`{"hardware":{"gpu_memory_gb":16}}`),
		CustomerID:   "cust-42",
		// No Priority: the record gets 50, the legacy API's default.
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "submitted %s\n", id)
	if err := show.pairs(k.record(id), k.pending()); err != nil {
		return err
	}

	fmt.Fprintln(out, "\n== 2. A worker registers, claims it, starts it and reports progress")
	const worker = "quickstart-worker"
	caps := jobstore.Capabilities{
		WorkerID: worker,
		Services: []string{"comfyui"},
		Hardware: &jobstore.Hardware{GPUMemoryGB: 24}, // meets the job's 16 GB
	}
	if err := store.RegisterWorker(ctx, caps); err != nil {
		return err
	}
	job, err := store.ClaimJob(ctx, caps)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "claimed %s (service %s, priority %d)\n", job.ID, job.Service, job.Priority)
	if err := store.StartJob(ctx, job.ID, worker); err != nil {
		return err
	}
	if err := store.ReportProgress(ctx, job.ID, worker, 40, "sampling, step 12 of 30"); err != nil {
		return err
	}
	if err := show.pairs(k.record(id), k.progress(id), k.pending(), k.active(worker)); err != nil {
		return err
	}
	fmt.Fprintln(out, "\n  Shared by both namespaces (never migrated):")
	for _, key := range []string{prefix + "worker:" + worker, prefix + "worker:" + worker + ":heartbeat",
		prefix + "workers:active", prefix + "progress:" + id} {
		if err := show.key(key, "    "); err != nil {
			return err
		}
	}

	fmt.Fprintln(out, "\n== 3. The worker completes it (CompleteJob)")
	if err := store.CompleteJob(ctx, job.ID, worker, json.RawMessage(`{"image":"fox.png","seconds":7.5}`)); err != nil {
		return err
	}
	if err := show.pairs(k.record(id), k.active(worker), k.completed()); err != nil {
		return err
	}
	got, err := store.GetJob(ctx, id)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nGetJob(%s): status %s, result %s\n", id, got.Status, got.Result)
	if err := store.UnregisterWorker(ctx, worker); err != nil {
		return err
	}

	fmt.Fprintln(out, "\n(jobstore_op is the library's own field: the tokens of its last calls on the record, so that\n"+
		"a call go-redis sends again after a lost reply is not applied twice. Legacy code ignores it.)")
	st := store.DualWriteStats()
	fmt.Fprintf(out, "\nDual-write: %d writes mirrored, %d failed: success rate %.1f%%.\n",
		st.Attempted, st.Failed, 100*st.SuccessRate())
	return nil
}

// layout names the keys of the job namespace, as the legacy services
// spell them (see keys.go in the library); the step namespace is the same
// with step: and steps:.
type layout struct{ prefix string }

func (l layout) record(id string) string     { return l.prefix + "job:" + id }
func (l layout) progress(id string) string   { return l.record(id) + ":progress" }
func (l layout) pending() string             { return l.prefix + "jobs:pending" }
func (l layout) active(worker string) string { return l.prefix + "jobs:active:" + worker }
func (l layout) completed() string           { return l.prefix + "jobs:completed" }

// step returns the step:*/steps:* counterpart of a job:*/jobs:* key.
func (l layout) step(key string) string {
	rest := strings.TrimPrefix(key, l.prefix)
	if r, ok := strings.CutPrefix(rest, "jobs:"); ok {
		return l.prefix + "steps:" + r
	}
	if r, ok := strings.CutPrefix(rest, "job:"); ok {
		return l.prefix + "step:" + r
	}
	return key
}

// shower prints keys: their type, TTL and contents. A key it showed
// before is shown by what changed since.
type shower struct {
	ctx context.Context
	out io.Writer
	rdb redis.UniversalClient
	layout
	shown map[string][]string // key → the lines last printed
}

// pairs shows each job:*/jobs:* key, then its step:*/steps:* counterpart,
// as "a copy" when it is one.
func (s *shower) pairs(keys ...string) error {
	for _, key := range keys {
		if err := s.key(key, "  "); err != nil {
			return err
		}
	}
	for _, key := range keys {
		step := s.step(key)
		a, err := s.describe(key)
		if err != nil {
			return err
		}
		b, err := s.describe(step)
		if err != nil {
			return err
		}
		switch {
		case a.kind == "absent" && b.kind == "absent":
			fmt.Fprintf(s.out, "  %s  (absent)\n", step)
		case a.kind == b.kind && a.ttl == b.ttl && slices.Equal(a.lines, b.lines):
			fmt.Fprintf(s.out, "  %s  (%s, %s, a copy of %s)\n", step, b.kind, b.ttl, key)
		default:
			if err := s.key(step, "  "); err != nil {
				return err
			}
		}
	}
	return nil
}

// key prints one key, indented: in full the first time, then the lines
// that changed.
func (s *shower) key(key, indent string) error {
	d, err := s.describe(key)
	if err != nil {
		return err
	}
	if d.kind == "absent" {
		fmt.Fprintf(s.out, "%s%s  (absent)\n", indent, key)
		delete(s.shown, key)
		return nil
	}
	prev, seen := s.shown[key]
	if s.shown == nil {
		s.shown = map[string][]string{}
	}
	s.shown[key] = d.lines
	lines, note := d.lines, ""
	if seen && d.kind == "hash" {
		lines = nil
		for _, l := range d.lines {
			if !slices.Contains(prev, l) {
				lines = append(lines, l)
			}
		}
		note = fmt.Sprintf(", %d fields; new or changed:", len(d.lines))
	}
	fmt.Fprintf(s.out, "%s%s  (%s, %s%s)\n", indent, key, d.kind, d.ttl, note)
	for _, l := range lines {
		fmt.Fprintf(s.out, "%s    %s\n", indent, l)
	}
	return nil
}

type description struct {
	kind, ttl string
	lines     []string
}

// describe reads a key: its type, its TTL and its contents, one line a
// field, member or entry, values shortened.
func (s *shower) describe(key string) (description, error) {
	ctx, rdb := s.ctx, s.rdb
	kind, err := rdb.Type(ctx, key).Result()
	if err != nil {
		return description{}, err
	}
	d := description{kind: kind}
	if kind == "none" {
		d.kind = "absent"
		return d, nil
	}
	switch ttl, err := rdb.TTL(ctx, key).Result(); {
	case err != nil:
		return d, err
	case ttl < 0:
		d.ttl = "no TTL"
	default:
		d.ttl = "TTL " + ttl.String()
	}
	switch kind {
	case "hash":
		h, err := rdb.HGetAll(ctx, key).Result()
		if err != nil {
			return d, err
		}
		for _, f := range slices.Sorted(maps.Keys(h)) {
			d.lines = append(d.lines, fmt.Sprintf("%-20s %s", f, shorten(h[f])))
		}
	case "zset":
		zs, err := rdb.ZRevRangeWithScores(ctx, key, 0, -1).Result()
		if err != nil {
			return d, err
		}
		for _, z := range zs {
			d.lines = append(d.lines, fmt.Sprintf("%v  score %.0f", z.Member, z.Score))
		}
		if len(zs) == 0 {
			d.lines = append(d.lines, "(empty)")
		}
	case "set":
		ms, err := rdb.SMembers(ctx, key).Result()
		if err != nil {
			return d, err
		}
		slices.Sort(ms)
		d.lines = append(d.lines, strings.Join(ms, " "))
	case "string":
		v, err := rdb.Get(ctx, key).Result()
		if err != nil {
			return d, err
		}
		d.lines = append(d.lines, shorten(v))
	case "stream":
		xs, err := rdb.XRange(ctx, key, "-", "+").Result()
		if err != nil {
			return d, err
		}
		for _, x := range xs {
			d.lines = append(d.lines, fmt.Sprintf("%s status=%v progress=%v message=%q",
				x.ID, x.Values["status"], x.Values["progress"], x.Values["message"]))
		}
	}
	return d, nil
}

func shorten(v string) string {
	const max = 72
	if len(v) <= max {
		return v
	}
	return v[:max] + fmt.Sprintf("... (%d bytes)", len(v))
}

// deleteUnder deletes every key under prefix and returns how many it
// deleted. It scans, so it does not block the server.
func deleteUnder(ctx context.Context, rdb redis.UniversalClient, prefix string) (int, error) {
	if prefix == "" || strings.ContainsAny(prefix, `*?[]\`) {
		return 0, fmt.Errorf("refusing to delete under the prefix %q", prefix)
	}
	n := 0
	iter := rdb.Scan(ctx, 0, prefix+"*", 500).Iterator()
	var batch []string
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		d, err := rdb.Unlink(ctx, batch...).Result()
		n += int(d)
		batch = batch[:0]
		return err
	}
	for iter.Next(ctx) {
		if batch = append(batch, iter.Val()); len(batch) == 500 {
			if err := flush(); err != nil {
				return n, err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return n, err
	}
	return n, flush()
}
