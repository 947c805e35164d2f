// Command quickstart shows jobstore end to end with dual-write on: an API
// side submits a job, a worker claims and completes it, and the program
// prints what was written under job:* and step:*.
//
//	go run ./examples/quickstart                                  # embedded miniredis
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/quickstart
//
// On a real server it works under the key prefix "jobstore-quickstart:",
// so it never claims a real job, and deletes its keys at the end unless
// -keep is given.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"slices"

	"github.com/jobstep/jobstore"
	"github.com/jobstep/jobstore/examples/internal/demo"
)

func main() {
	keep := flag.Bool("keep", false, "on a real server, keep the keys written")
	flag.Parse()
	if err := run(context.Background(), *keep); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, keep bool) error {
	conn, err := demo.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	prefix := ""
	if !conn.Embedded {
		prefix = "jobstore-quickstart:"
	}
	fmt.Printf("Redis: %s\n\n", conn.Where)

	// Debug level shows every mirrored key, as the report's log lines do.
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		Level: slog.LevelDebug,
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	store, err := jobstore.New(conn.Client,
		jobstore.WithDualWrite(true), jobstore.WithLogger(logger), jobstore.WithKeyPrefix(prefix))
	if err != nil {
		return err
	}

	fmt.Println("== API service: SubmitJob")
	id, err := store.SubmitJob(ctx, jobstore.Job{
		Service:    "comfyui",
		Priority:   50,
		Payload:    json.RawMessage(`{"prompt":"a red fox in the snow","steps":30}`),
		CustomerID: "cust-42",
		Extra:      map[string]string{"trace_id": "4bf92f3577b34da6"},
	})
	if err != nil {
		return err
	}
	fmt.Println("submitted", id)

	fmt.Println("\n== worker: ClaimJob, StartJob, CompleteJob")
	job, err := store.ClaimJob(ctx, "worker-1", "comfyui")
	if err != nil {
		return err
	}
	fmt.Printf("claimed %s (%s, priority %d)\n", job.ID, job.Service, job.Priority)
	if err := store.StartJob(ctx, job.ID, "worker-1"); err != nil {
		return err
	}
	if err := store.CompleteJob(ctx, job.ID, "worker-1", json.RawMessage(`{"image":"fox.png"}`)); err != nil {
		return err
	}

	fmt.Println("\n== what is in Redis")
	rdb := conn.Client
	for _, key := range []string{prefix + jobstore.JobKey(id), prefix + jobstore.StepKey(id)} {
		h, err := rdb.HGetAll(ctx, key).Result()
		if err != nil {
			return err
		}
		fmt.Printf("%s (hash, TTL %v):\n", key, rdb.TTL(ctx, key).Val())
		for _, f := range slices.Sorted(maps.Keys(h)) {
			fmt.Printf("  %-18s %s\n", f, h[f])
		}
	}
	for _, q := range jobstore.Queues {
		for _, key := range []string{prefix + jobstore.JobsQueueKey(q), prefix + jobstore.StepsQueueKey(q)} {
			members, err := rdb.ZRangeWithScores(ctx, key, 0, -1).Result()
			if err != nil {
				return err
			}
			fmt.Printf("%-16s %d member(s)", key, len(members))
			for _, m := range members {
				fmt.Printf("  %v@%.0f", m.Member, m.Score)
			}
			fmt.Println()
		}
	}
	st := store.DualWriteStats()
	fmt.Printf("\ndual-write: %d attempted, %d failed, success rate %.1f%%\n", st.Attempted, st.Failed, 100*st.SuccessRate())

	if !conn.Embedded && !keep {
		keys := []string{prefix + jobstore.JobKey(id), prefix + jobstore.StepKey(id)}
		for _, q := range jobstore.Queues {
			keys = append(keys, prefix+jobstore.JobsQueueKey(q), prefix+jobstore.StepsQueueKey(q))
		}
		if err := rdb.Unlink(ctx, keys...).Err(); err != nil {
			return err
		}
		fmt.Println("deleted the quickstart's keys (-keep keeps them)")
	}
	return nil
}
