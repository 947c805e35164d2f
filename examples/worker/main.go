// Command worker is a worker process on jobstore. It registers and keeps
// its heartbeat alive (KeepAlive), follows the migration stage published
// in Redis (Sync, then FollowStage), recovers the jobs of workers that
// died (Maintain), and runs -concurrency claim loops that claim jobs
// matching its capabilities, start them, report progress and complete
// them (the work itself is simulated: it sleeps for -work).
//
//	go run ./examples/worker                      # embedded miniredis, with 6 demo jobs
//	go run ./examples/worker -fail-rate 0.5       # the same, failing half the attempts: see the retries
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/worker -services comfyui -gpu-memory 24 -concurrency 4
//
// Capabilities come from flags: -services (default comfyui, so that the
// demo runs with no flags; it must name at least one service), and
// optionally -gpu-memory, -cpu-cores and -ram (amounts, 0 or more: 0, the
// default, is none), -gpu-model, -models and -machine-id.
// A claim takes only jobs whose service_required and requirements they
// meet, as the legacy workers' claim function does.
//
// The claim loops share the worker's id: one worker may hold several jobs,
// and its claims may run concurrently. The heartbeat is the lease on all
// of them: if the process dies, its heartbeat lapses within 60 s and
// Maintain, in any worker, puts its jobs back in pending.
//
// On SIGINT or SIGTERM it stops claiming, finishes the jobs in hand
// (waiting up to -drain; a job not done by then is failed with a retry,
// so it goes back to pending at once), then stops its heartbeat and
// unregisters.
//
// -fail-rate fails that share of the attempts (a number from 0 to 1) on
// purpose, to show retries; it is 0 unless given. Each failure is logged with what FailJob
// did: outcome=retried (back to pending while retry_count+1 < max_retries)
// or outcome=failed (for good). On the embedded miniredis the worker
// submits -seed demo jobs first and exits once it has nothing left to
// claim (-exit-when-idle).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jobstep/jobstore"
	"github.com/jobstep/jobstore/examples/internal/demo"
)

// config is the worker's configuration, from its flags.
type config struct {
	caps        jobstore.Capabilities
	concurrency int
	poll        time.Duration // wait between claims while none matches
	work        time.Duration // simulated work per job
	failRate    float64       // share of attempts failed on purpose
	seed        int           // demo jobs to submit first; -1: 6 on embedded miniredis, else 0
	exitIdle    bool          // exit once nothing is left to claim
	drain       time.Duration // how long to finish the jobs in hand after a signal
	maintain    time.Duration // how often to recover jobs of dead workers
}

func main() {
	c, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker:", err)
		os.Exit(2)
	}
	os.Exit(mainErr(c))
}

func mainErr(c config) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	conn, err := demo.Connect(ctx)
	if err != nil {
		log.Error("worker: cannot start", "error", err)
		return 1
	}
	defer conn.Close()
	if conn.Embedded {
		c.exitIdle = true
		if c.seed < 0 {
			c.seed = 6
		}
	}
	log.Info("connected", "redis", conn.Where)
	if err := run(ctx, c, conn, log); err != nil {
		log.Error("worker stopped", "error", err)
		return 1
	}
	return 0
}

// parseFlags reads the command line.
func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("worker", flag.ContinueOnError)
	host, _ := os.Hostname()
	if host == "" {
		host = "unknown"
	}
	var c config
	var services, models string
	var gpuMem, cpus, ram float64
	var gpuModel string
	fs.StringVar(&c.caps.WorkerID, "id", fmt.Sprintf("worker-%s-%d", host, os.Getpid()), "worker id")
	fs.StringVar(&services, "services", "comfyui", "comma-separated services this worker runs")
	fs.StringVar(&c.caps.MachineID, "machine-id", host, "machine id stored with the registration")
	fs.Float64Var(&gpuMem, "gpu-memory", 0, "GPU memory in GB (jobs may require a minimum)")
	fs.Float64Var(&cpus, "cpu-cores", 0, "CPU cores (jobs may require a minimum)")
	fs.Float64Var(&ram, "ram", 0, "RAM in GB (jobs may require a minimum)")
	fs.StringVar(&gpuModel, "gpu-model", "", "GPU model, for jobs that require hardware.gpu_model")
	fs.StringVar(&models, "models", "", "models this worker has, as service:model,... (comfyui:sdxl,comfyui:flux)")
	fs.IntVar(&c.concurrency, "concurrency", 2, "jobs worked on at once")
	fs.DurationVar(&c.poll, "poll", 500*time.Millisecond, "wait between claims while no job matches")
	fs.DurationVar(&c.work, "work", 300*time.Millisecond, "simulated work per job")
	fs.Float64Var(&c.failRate, "fail-rate", 0, "share of attempts (0..1) to fail on purpose, to show retries")
	fs.IntVar(&c.seed, "seed", -1, "demo jobs to submit first (default: 6 on embedded miniredis, else 0)")
	fs.BoolVar(&c.exitIdle, "exit-when-idle", false, "exit once no job is left to claim (always on embedded miniredis)")
	fs.DurationVar(&c.drain, "drain", 30*time.Second, "on SIGINT/SIGTERM, how long to finish the jobs in hand")
	fs.DurationVar(&c.maintain, "maintain", 30*time.Second, "how often to recover the jobs of dead workers")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	for s := range strings.SplitSeq(services, ",") {
		if s = strings.TrimSpace(s); s != "" {
			c.caps.Services = append(c.caps.Services, s)
		}
	}
	switch {
	case len(c.caps.Services) == 0:
		return c, errors.New("-services: name at least one service")
	case c.concurrency < 1:
		return c, errors.New("-concurrency must be at least 1")
	case !(c.failRate >= 0 && c.failRate <= 1): // NaN too, which compares false
		return c, fmt.Errorf("-fail-rate %v: must be a share between 0 and 1", c.failRate)
	case c.poll <= 0 || c.maintain <= 0 || c.work < 0 || c.drain < 0:
		return c, errors.New("-poll and -maintain must be positive, -work and -drain not negative")
	}
	for _, h := range []struct {
		flag string
		v    float64
	}{{"-gpu-memory", gpuMem}, {"-cpu-cores", cpus}, {"-ram", ram}} {
		// A negative amount would never meet a requirement: refused
		// rather than read as none. NaN and infinities too.
		if !(h.v >= 0 && h.v <= math.MaxFloat64) {
			return c, fmt.Errorf("%s %v: must be a finite number, 0 or more (0: none)", h.flag, h.v)
		}
	}
	if gpuMem > 0 || cpus > 0 || ram > 0 || gpuModel != "" {
		c.caps.Hardware = &jobstore.Hardware{GPUMemoryGB: gpuMem, CPUCores: cpus, RAMGB: ram, GPUModel: gpuModel}
	}
	if models != "" {
		c.caps.Models = map[string][]string{}
		for m := range strings.SplitSeq(models, ",") {
			svc, model, ok := strings.Cut(strings.TrimSpace(m), ":")
			if !ok || svc == "" || model == "" {
				return c, fmt.Errorf("-models: %q is not service:model", m)
			}
			c.caps.Models[svc] = append(c.caps.Models[svc], model)
		}
	}
	return c, nil
}

// worker is the state the claim loops share.
type worker struct {
	c     config
	store *jobstore.Store
	log   *slog.Logger
	// ops is for the Redis calls of claims and of jobs in hand: it ends
	// only once every loop has returned, so that a claim or a completion
	// under way when a signal comes is not cut off.
	ops context.Context
	// drain ends -drain after the signal: jobs still working then are
	// given up (failed with a retry).
	drain context.Context
	// busy counts loops in a claim or holding a job; see loop.
	busy atomic.Int64

	completed, retried, failed atomic.Int64
}

// run runs the worker until ctx is done (a signal) or, with exitIdle,
// until nothing is left to claim.
func run(ctx context.Context, c config, conn *demo.Conn, log *slog.Logger) error {
	log = log.With("worker", c.caps.WorkerID)
	store, err := jobstore.New(conn.Client, jobstore.WithLogger(log))
	if err != nil {
		return err
	}
	// Take the published stage before anything else, then follow it.
	if err := store.Sync(ctx); err != nil {
		return fmt.Errorf("read the published stage: %w", err)
	}
	if err := seed(ctx, store, c, log); err != nil {
		return err
	}

	// The background work (heartbeat, stage, recovery) lasts until the
	// loops have finished their jobs, past the signal.
	bg, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBg()
	drain, stopDrain := context.WithCancel(bg)
	defer stopDrain()
	defer context.AfterFunc(ctx, func() {
		log.Info("stopping: no new claims; finishing the jobs in hand", "drain", c.drain.String())
		time.AfterFunc(c.drain, stopDrain)
	})()
	claiming, stopClaiming := context.WithCancel(ctx)
	defer stopClaiming()

	// Register first, so that the first claims find the worker alive and
	// a registration error stops the worker at once.
	if err := store.RegisterWorker(ctx, c.caps); err != nil {
		return fmt.Errorf("register the worker: %w", err)
	}
	var failure error // set by the KeepAlive goroutine, read after bgWG.Wait
	var bgWG sync.WaitGroup
	bgWG.Go(func() {
		// KeepAlive renews the heartbeat every 30 s (registering again
		// only if the registration vanished) and unregisters the worker
		// when bg ends. It returns early only when it cannot.
		err := store.KeepAlive(bg, c.caps, 0)
		if bg.Err() == nil {
			failure = fmt.Errorf("register the worker: %w", err)
			stopClaiming()
		}
	})
	bgWG.Go(func() { _ = store.FollowStage(bg, 5*time.Second) })
	bgWG.Go(func() { _ = store.Maintain(bg, c.maintain) })

	if c.failRate > 0 {
		log.Warn("failing a share of the attempts on purpose (-fail-rate)", "fail_rate", c.failRate)
	}
	log.Info("worker started", "services", c.caps.Services, "concurrency", c.concurrency,
		"stage", store.Stage().String())
	w := &worker{c: c, store: store, log: log, ops: bg, drain: drain}
	var loops sync.WaitGroup
	for range c.concurrency {
		loops.Go(func() { w.loop(claiming) })
	}
	loops.Wait()
	stopBg() // unregister, check out of the fleet, stop recovering
	bgWG.Wait()
	log.Info("worker stopped", "completed", w.completed.Load(), "retried", w.retried.Load(), "failed", w.failed.Load())
	return failure
}

// seed submits the demo jobs, spread over the worker's services.
func seed(ctx context.Context, store *jobstore.Store, c config, log *slog.Logger) error {
	for i := range max(c.seed, 0) {
		svc := c.caps.Services[i%len(c.caps.Services)]
		id, err := store.SubmitJob(ctx, jobstore.Job{Service: svc, Priority: 50 + i,
			Payload: json.RawMessage(fmt.Sprintf(`{"n":%d}`, i))})
		if err != nil {
			return fmt.Errorf("submit demo job: %w", err)
		}
		log.Info("submitted demo job", "id", id, "service", svc)
	}
	return nil
}

// loop claims and works jobs until claiming ends, or, with exitIdle,
// until a claim finds nothing after every loop was idle. A job in hand
// is finished even after claiming has ended.
func (w *worker) loop(claiming context.Context) {
	wasIdle := false
	for claiming.Err() == nil {
		w.busy.Add(1)
		// The claim itself runs on w.ops: cut off midway, it could take a
		// job without our hearing of it.
		job, err := w.store.ClaimJob(w.ops, w.c.caps)
		if err == nil {
			wasIdle = false
			w.work(job)
			w.busy.Add(-1)
			continue
		}
		w.busy.Add(-1)
		switch {
		case errors.Is(err, jobstore.ErrNoJob):
			if w.c.exitIdle {
				// Exit when a claim made after every loop was idle (so
				// after their last retries went back to pending) finds
				// nothing.
				if wasIdle {
					return
				}
				if wasIdle = w.busy.Load() == 0; wasIdle {
					continue
				}
			}
		case errors.Is(err, jobstore.ErrNotRegistered):
			// The heartbeat lapsed (Redis was away for a minute);
			// KeepAlive renews it.
			w.log.Debug("claim: not registered yet", "error", err)
			time.Sleep(min(w.c.poll, 20*time.Millisecond))
			continue
		default:
			w.log.Error("claim", "error", err)
		}
		select {
		case <-claiming.Done():
		case <-time.After(w.c.poll):
		}
	}
}

// work runs one claimed job: start, progress, then complete or fail.
func (w *worker) work(job *jobstore.Job) {
	ctx, id, me := w.ops, job.ID, w.c.caps.WorkerID
	log := w.log.With("id", id, "service", job.Service, "attempt", job.RetryCount+1, "max_retries", job.MaxRetries)
	log.Info("claimed")
	if err := w.store.StartJob(ctx, id, me); err != nil {
		w.dropped(log, "start", err)
		return
	}
	const steps = 4
	for i := 1; i <= steps; i++ {
		select {
		case <-time.After(w.c.work / steps): // the "work"
		case <-w.drain.Done():
			w.fail(log, job, "worker shut down before finishing the job", true)
			return
		}
		if i < steps {
			if err := w.store.ReportProgress(ctx, id, me, float64(100*i/steps), fmt.Sprintf("step %d of %d", i, steps)); err != nil {
				w.dropped(log, "report progress", err)
				return
			}
		}
	}
	if w.c.failRate > 0 && rand.Float64() < w.c.failRate {
		w.fail(log, job, "demo failure (-fail-rate)", true)
		return
	}
	result, _ := json.Marshal(map[string]any{"worker": me, "payload_bytes": len(job.Payload)})
	if err := w.store.CompleteJob(ctx, id, me, result); err != nil {
		w.dropped(log, "complete", err)
		return
	}
	w.completed.Add(1)
	log.Info("completed")
}

// fail fails the job and logs what FailJob did with it.
func (w *worker) fail(log *slog.Logger, job *jobstore.Job, reason string, retry bool) {
	outcome, err := w.store.FailJob(w.ops, job.ID, w.c.caps.WorkerID, reason, retry)
	if err != nil {
		w.dropped(log, "fail", err)
		return
	}
	switch outcome {
	case jobstore.Retried:
		w.retried.Add(1)
		log.Warn("job failed; back to pending for another attempt", "outcome", outcome, "reason", reason)
	default:
		w.failed.Add(1)
		log.Error("job failed for good", "outcome", outcome, "reason", reason)
	}
}

// dropped logs a job given up because a call on it failed. ErrNotHeld
// means the job is no longer ours: cancelled, or taken back by recovery
// after our heartbeat lapsed. Any other error (Redis away) leaves it held
// by this worker until the worker stops and its jobs are recovered.
func (w *worker) dropped(log *slog.Logger, op string, err error) {
	if errors.Is(err, jobstore.ErrNotHeld) {
		log.Warn("job is no longer ours (cancelled or recovered); dropped it", "op", op, "error", err)
		return
	}
	log.Error("job call failed; dropped it", "op", op, "error", err)
}
