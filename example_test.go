package jobstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

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
		ID: "abc123", Service: "comfyui", Priority: 50,
		Payload: json.RawMessage(`{"prompt":"a red fox"}`),
	})
	if err != nil {
		panic(err)
	}
	fmt.Println("submitted", id, "to", rdb.Keys(ctx, "*").Val())

	job, err := store.ClaimJob(ctx, "worker-1", "comfyui")
	if err != nil {
		panic(err)
	}
	fmt.Println("claimed", job.ID, job.Status, "by", job.WorkerID)

	if err := store.CompleteJob(ctx, job.ID, "worker-1", json.RawMessage(`{"image":"fox.png"}`)); err != nil {
		panic(err)
	}
	fmt.Println("job:abc123 status:", rdb.HGet(ctx, "job:abc123", "status").Val())
	fmt.Println("step:abc123 status:", rdb.HGet(ctx, "step:abc123", "status").Val())
	fmt.Println("steps:completed:", rdb.ZRange(ctx, "steps:completed", 0, -1).Val())
	fmt.Printf("mirror success rate: %.0f%%\n", 100*store.DualWriteStats().SuccessRate())

	_, err = store.ClaimJob(ctx, "worker-1")
	fmt.Println(errors.Is(err, jobstore.ErrNoJob))
	// Output:
	// submitted abc123 to [job:abc123 jobs:pending step:abc123 steps:pending]
	// claimed abc123 assigned by worker-1
	// job:abc123 status: completed
	// step:abc123 status: completed
	// steps:completed: [abc123]
	// mirror success rate: 100%
	// true
}

func ExampleStore_GetJob_notFound() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()

	store, _ := jobstore.New(rdb, jobstore.WithDualWrite(false))
	_, err := store.GetJob(context.Background(), "nope")
	fmt.Println(err)
	fmt.Println(errors.Is(err, jobstore.ErrJobNotFound))
	// Output:
	// jobstore: job not found: id="nope"
	// true
}

func ExampleParseFlag() {
	for _, v := range []string{"ON", "0", "maybe"} {
		on, err := jobstore.ParseFlag(v)
		fmt.Println(on, err)
	}
	// Output:
	// true <nil>
	// false <nil>
	// false "maybe" is not a boolean (want true/false, 1/0, yes/no or on/off)
}
