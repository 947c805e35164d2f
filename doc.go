// Package jobstore stores the jobs of a Redis job queue in the key layout
// of its legacy TypeScript services (job:<id> hashes, jobs:pending,
// jobs:active:<worker>, jobs:completed, jobs:failed), side by side with
// those services, and moves them to step:<id> / steps:* without downtime
// by mirroring every write, atomically, while the migration asks for it.
//
// Connect with go-redis and create a Store. The Store never closes the
// client; the caller owns it:
//
//	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
//	defer rdb.Close()
//	store, err := jobstore.New(rdb, jobstore.WithLogger(slog.Default()))
//	go store.FollowStage(ctx, 5*time.Second) // reads follow the published stage
//
// API services submit and read jobs:
//
//	id, err := store.SubmitJob(ctx, jobstore.Job{Service: "comfyui", Priority: 60, Payload: payload})
//	job, err := store.GetJob(ctx, id) // job.Result once a worker completed it
//
// Workers announce themselves, keep their heartbeat (the lease on every
// job they hold), claim the first job their capabilities match, and finish
// it; one of them (or any process) runs the recovery of dead workers' jobs:
//
//	caps := jobstore.Capabilities{WorkerID: "w1", Services: []string{"comfyui"}}
//	go store.KeepAlive(ctx, caps, 0)
//	go store.Maintain(ctx, 30*time.Second)
//	job, err := store.ClaimJob(ctx, caps) // errors.Is(err, jobstore.ErrNoJob) when idle
//	err = store.CompleteJob(ctx, job.ID, "w1", result)
//
// # The stages
//
// A migration moves through five stages (see Stage): legacy, dual-write,
// dual-read, step-primary and step-only. A process starts in the stage of
// its environment (REDIS_DUAL_WRITE_STEPS, REDIS_STEP_MIGRATION_STAGE) or
// WithStage; once an operator publishes a stage (Migrator.PublishStage, or
// the stepmigrate command), every write of every Store runs under it: each
// script checks the published stage first. Writes go to the authoritative
// namespace and, in the stages that write both, are mirrored to the other
// in the same script: each record touched is copied whole, each queue
// entry touched gets its primary value. A mirror failure is logged and
// counted (DualWriteStats), never returned.
//
// The operator's side is the Migrator: Backfill, Verify and Cleanup of
// the namespaces, the follower that mirrors the writes of legacy services
// (Follow), the published stage, and the fleet of processes following it.
//
// # Errors
//
// Every error for a known condition wraps one of the sentinel errors, such
// as ErrJobNotFound or ErrInvalidID; test for them with errors.Is. Values
// in Redis that cannot be read never fail a read: they get documented
// defaults and are listed in Job.Unreadable.
package jobstore
