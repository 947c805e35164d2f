// Package jobstore stores jobs of a Redis job queue, job:<id> hashes and
// jobs:* sorted sets, and migrates them to step:<id> / steps:* with zero
// downtime by dual-writing every change.
//
// Connect with go-redis and create a Store. The Store never closes the
// client; the caller owns it:
//
//	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
//	defer rdb.Close()
//	store, err := jobstore.New(rdb, jobstore.WithLogger(slog.Default()))
//
// API services submit and read jobs:
//
//	id, err := store.SubmitJob(ctx, jobstore.Job{Service: "comfyui", Priority: 50, Payload: payload})
//	job, err := store.GetJob(ctx, id)
//
// Workers claim, then complete or fail, and run the maintenance loop that
// recovers jobs of crashed workers:
//
//	go store.Maintain(ctx, 30*time.Second)
//	job, err := store.ClaimJob(ctx, "worker-1", "comfyui")
//	err = store.CompleteJob(ctx, job.ID, "worker-1", result)
//
// # Dual-write
//
// With REDIS_DUAL_WRITE_STEPS=true in the environment (or WithDualWrite),
// every write to job:* and jobs:* is mirrored to step:* and steps:* in the
// same atomic script: the record is copied whole after the write, and each
// queue entry the write touched is copied with its score. A mirror failure
// is logged and counted (DualWriteStats) and never fails the write. Reads
// stay on job:*. SetDualWrite flips the flag at run time.
//
// # Migration
//
// The later phases are stages (see Stage): dual-read, step-primary and
// step-only move reads, then writes, to step:*. Store.FollowStage makes a
// process follow the stage published with Store.PublishStage. The phase
// 4.3.2 copy is Store.Backfill, the content check Store.Verify, and the
// final deletion (or a rollback's) Store.Cleanup. The stepmigrate command
// drives them; the README has the runbook.
//
// # Migration stages
//
// After dual-write come dual-read, step-primary and step-only (see Stage).
// A process takes its stage from REDIS_STEP_MIGRATION_STAGE or WithStage,
// and FollowStage makes it follow the stage an operator publishes with
// cmd/stepmigrate. Backfill, Verify and Cleanup are the operator's tools.
//
// Every error for a known condition wraps one of the sentinel errors, such
// as ErrJobNotFound or ErrInvalidID; test for them with errors.Is.
package jobstore
