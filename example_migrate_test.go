package jobstore_test

import (
	"context"
	"errors"
	"fmt"

	"github.com/alicebob/miniredis/v2"
	"github.com/jobstep/jobstore"
	"github.com/redis/go-redis/v9"
)

// Phase 4.3.2 and the checks around it: records written before
// dual-write are copied, compared, and job:* is deleted only once step-only.
func ExampleStore_Backfill() {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		panic(err)
	}
	defer mr.Close()
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	ctx := context.Background()

	legacy, _ := jobstore.New(rdb, jobstore.WithStage(jobstore.StageLegacy))
	for _, id := range []string{"a", "b", "c"} {
		if _, err := legacy.SubmitJob(ctx, jobstore.Job{ID: id, Service: "comfyui"}); err != nil {
			panic(err)
		}
	}
	rdb.Set(ctx, "job:a:progress", "50%", 0) // not a record

	store, _ := jobstore.New(rdb, jobstore.WithStage(jobstore.StageDualWrite))
	res, err := store.Backfill(ctx, jobstore.BackfillOptions{})
	if err != nil {
		panic(err)
	}
	fmt.Println("copied", res.Copied, "skipped", res.SkippedKeys)

	vr, err := store.Verify(ctx, jobstore.VerifyOptions{})
	if err != nil {
		panic(err)
	}
	fmt.Println("job records", vr.JobRecords, "step records", vr.StepRecords, "differences", vr.Differences())

	_, err = store.Cleanup(ctx, jobstore.JobNamespace, jobstore.CleanupOptions{})
	fmt.Println(errors.Is(err, jobstore.ErrNamespaceInUse))
	// Output:
	// copied 3 skipped [job:a:progress]
	// job records 3 step records 3 differences 0
	// true
}
