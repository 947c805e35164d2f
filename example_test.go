package jobstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/alicebob/miniredis/v2"
	"github.com/jobstep/jobstore"
	"github.com/redis/go-redis/v9"
)

func Example() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	store, err := jobstore.New(rdb, jobstore.WithDualWrite(true))
	if err != nil {
		panic(err)
	}
	id, err := store.SubmitJob(ctx, jobstore.Job{
		ID: "abc123", Service: "comfyui", Priority: 60,
		Payload: json.RawMessage(`{"prompt":"a red fox"}`),
	})
	if err != nil {
		panic(err)
	}
	keys := rdb.Keys(ctx, "*").Val()
	slices.Sort(keys)
	fmt.Println("submitted", id, "to", keys)

	caps := jobstore.Capabilities{WorkerID: "worker-1", Services: []string{"comfyui"}}
	if err := store.RegisterWorker(ctx, caps); err != nil {
		panic(err)
	}
	job, err := store.ClaimJob(ctx, caps)
	if err != nil {
		panic(err)
	}
	fmt.Println("claimed", job.ID, job.Status, "by", job.WorkerID)
	fmt.Println("jobs:active:worker-1 holds", rdb.HKeys(ctx, "jobs:active:worker-1").Val())

	if err := store.CompleteJob(ctx, job.ID, "worker-1", json.RawMessage(`{"image":"fox.png"}`)); err != nil {
		panic(err)
	}
	fmt.Println("job:abc123 status:", rdb.HGet(ctx, "job:abc123", "status").Val())
	fmt.Println("step:abc123 status:", rdb.HGet(ctx, "step:abc123", "status").Val())
	fmt.Println("steps:completed:", rdb.HGet(ctx, "steps:completed", "abc123").Val() != "")
	done, err := store.GetJob(ctx, "abc123")
	if err != nil {
		panic(err)
	}
	fmt.Println("result:", string(done.Result))
	fmt.Printf("mirror success rate: %.0f%%\n", 100*store.DualWriteStats().SuccessRate())

	_, err = store.ClaimJob(ctx, caps)
	fmt.Println(errors.Is(err, jobstore.ErrNoJob))
	// Output:
	// submitted abc123 to [job:abc123 jobs:pending step:abc123 steps:pending]
	// claimed abc123 assigned by worker-1
	// jobs:active:worker-1 holds [abc123]
	// job:abc123 status: completed
	// step:abc123 status: completed
	// steps:completed: true
	// result: {"image":"fox.png"}
	// mirror success rate: 100%
	// true
}

// A claim matches the worker's capabilities against each job's
// requirements, as the legacy claim function does: this worker has 24 GB
// of GPU memory, so the 80 GB job waits for another.
func ExampleStore_ClaimJob() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()
	store, err := jobstore.New(rdb, jobstore.WithDualWrite(false))
	if err != nil {
		panic(err)
	}
	for _, j := range []jobstore.Job{
		{ID: "big", Service: "comfyui", Priority: 90, Requirements: json.RawMessage(`{"hardware":{"gpu_memory_gb":80}}`)},
		{ID: "small", Service: "comfyui", Priority: 10, Requirements: json.RawMessage(`{"hardware":{"gpu_memory_gb":16}}`)},
	} {
		if _, err := store.SubmitJob(ctx, j); err != nil {
			panic(err)
		}
	}
	caps := jobstore.Capabilities{WorkerID: "w24", Services: []string{"comfyui"},
		Hardware: &jobstore.Hardware{GPUMemoryGB: 24}}
	if err := store.RegisterWorker(ctx, caps); err != nil {
		panic(err)
	}
	job, err := store.ClaimJob(ctx, caps)
	if err != nil {
		panic(err)
	}
	fmt.Println(job.ID)
	// Output: small
}
