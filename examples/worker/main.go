// Command worker is a worker binary on jobstore: it claims jobs of its
// services, holds each under a lease it keeps extending, completes or fails
// it, and recovers jobs of crashed workers in the background. On SIGINT or
// SIGTERM it stops claiming, finishes the jobs in hand and exits.
//
//	go run ./examples/worker -services comfyui -concurrency 4
//
// It uses the server REDIS_URL names, or an embedded miniredis when unset;
// then it submits a few demo jobs first and exits when they are done.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jobstep/jobstore"
	"github.com/jobstep/jobstore/examples/internal/demo"
)

type config struct {
	id          string
	services    []string
	concurrency int
	poll        time.Duration
	seed        int
	exitIdle    bool
	failRate    float64
}

func main() {
	host, _ := os.Hostname()
	var c config
	var services string
	flag.StringVar(&c.id, "id", fmt.Sprintf("worker-%s-%d", host, os.Getpid()), "worker id")
	flag.StringVar(&services, "services", "comfyui", "comma-separated services to claim; empty claims any")
	flag.IntVar(&c.concurrency, "concurrency", 2, "jobs worked on at once")
	flag.DurationVar(&c.poll, "poll", 500*time.Millisecond, "wait between claims when the queue is empty")
	flag.IntVar(&c.seed, "seed", -1, "demo jobs to submit first (default: 6 on embedded miniredis, else 0)")
	flag.BoolVar(&c.exitIdle, "exit-when-idle", false, "exit once no job is pending or held (default on embedded miniredis)")
	flag.Float64Var(&c.failRate, "fail-rate", 0.2, "share of demo jobs that fail, to show retries")
	flag.Parse()
	if services != "" {
		c.services = strings.Split(services, ",")
	}
	if c.concurrency < 1 {
		fmt.Fprintln(os.Stderr, "worker: -concurrency must be at least 1")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	conn, err := demo.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	store, err := jobstore.New(conn.Client, jobstore.WithLogger(log), jobstore.WithLeaseDuration(30*time.Second))
	if err != nil {
		return err
	}
	if conn.Embedded {
		c.exitIdle = true
		if c.seed < 0 {
			c.seed = 6
		}
	}
	for i := range max(c.seed, 0) {
		svc := "any"
		if len(c.services) > 0 {
			svc = c.services[i%len(c.services)]
		}
		id, err := store.SubmitJob(ctx, jobstore.Job{Service: svc, Priority: i * 10,
			Payload: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))})
		if err != nil {
			return err
		}
		log.Info("submitted demo job", "id", id, "service", svc)
	}
	log.Info("worker started", "id", c.id, "services", c.services, "redis", conn.Where, "dual_write", store.DualWrite())

	mctx, stopMaintain := context.WithCancel(ctx)
	defer stopMaintain()
	go func() { _ = store.Maintain(mctx, 10*time.Second) }()

	var wg sync.WaitGroup
	for n := range c.concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			loop(ctx, store, log, c, fmt.Sprintf("%s/%d", c.id, n))
		}()
	}
	wg.Wait()
	st := store.DualWriteStats()
	log.Info("worker stopped", "dual_write_attempted", st.Attempted, "dual_write_failed", st.Failed)
	return nil
}

// loop claims and works jobs until ctx is done (or, with exitIdle, until
// nothing is left). A job in hand is finished even after ctx is done.
func loop(ctx context.Context, store *jobstore.Store, log *slog.Logger, c config, worker string) {
	for ctx.Err() == nil {
		job, err := store.ClaimJob(ctx, worker, c.services...)
		if errors.Is(err, jobstore.ErrNoJob) {
			if c.exitIdle && idle(ctx, store) {
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(c.poll):
			}
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				log.Error("claim", "worker", worker, "error", err)
				time.Sleep(c.poll)
			}
			continue
		}
		work(context.WithoutCancel(ctx), store, log, c, worker, job)
	}
}

// idle reports whether no job is pending or held.
func idle(ctx context.Context, store *jobstore.Store) bool {
	n, err := store.QueueSizes(ctx)
	return err == nil && n.Pending == 0 && n.Active == 0
}

// work runs one job: it keeps the lease alive while "processing", then
// completes or fails it.
func work(ctx context.Context, store *jobstore.Store, log *slog.Logger, c config, worker string, job *jobstore.Job) {
	log.Info("claimed", "worker", worker, "id", job.ID, "service", job.Service, "retry", job.RetryCount)
	if err := store.StartJob(ctx, job.ID, worker); err != nil {
		log.Error("start", "id", job.ID, "error", err)
		return
	}
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(10 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if _, err := store.ExtendLease(ctx, job.ID, worker, 0); err != nil {
					log.Warn("extend lease", "id", job.ID, "error", err)
				}
			}
		}
	}()
	time.Sleep(time.Duration(50+rand.IntN(150)) * time.Millisecond) // the "work"
	close(done)

	if rand.Float64() < c.failRate {
		if err := store.FailJob(ctx, job.ID, worker, "demo failure"); err != nil {
			log.Error("fail", "id", job.ID, "error", err)
		} else {
			log.Info("failed", "id", job.ID)
		}
		return
	}
	if err := store.CompleteJob(ctx, job.ID, worker, json.RawMessage(`{"ok":true}`)); err != nil {
		log.Error("complete", "id", job.ID, "error", err)
		return
	}
	log.Info("completed", "id", job.ID)
}
