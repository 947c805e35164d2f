package jobstore

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"
)

// benchRecords is how many records the migration benchmarks seed:
// JOBSTORE_BENCH_RECORDS, default 5000.
func benchRecords(b *testing.B) int {
	if v := os.Getenv("JOBSTORE_BENCH_RECORDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			b.Fatalf("JOBSTORE_BENCH_RECORDS=%q: want a positive number", v)
		}
		return n
	}
	return 5000
}

// seedRecords writes n legacy records of a realistic size, queued in
// jobs:pending, with pipelines of 1000.
func seedRecords(b *testing.B, be *backend, n int) {
	b.Helper()
	created := formatTime(be.clock.Now())
	for start := 0; start < n; start += 1000 {
		pipe := be.rdb.Pipeline()
		for i := start; i < min(n, start+1000); i++ {
			id := fmt.Sprintf("bench-%08d", i)
			pipe.HSet(ctx, be.key("job:"+id), "id", id, "service_required", "comfyui", "priority", "50",
				"payload", string(benchPayload), "customer_id", "c1", "created_at", created, "status", "pending",
				"retry_count", "0", "max_retries", "3", "trace_id", "0af7651916cd43dd8448eb211c80319c")
			pipe.ZAdd(ctx, be.key("jobs:pending"), redisZ(score(50, be.clock.Now()), id))
		}
		if _, err := pipe.Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkBackfill measures a full backfill of job:* into an empty
// step:*, in records per second.
func BenchmarkBackfill(b *testing.B) {
	be := benchBackend(b)
	n := benchRecords(b)
	seedRecords(b, be, n)
	s := newStore(b, be, WithStage(StageLegacy))
	var total time.Duration
	for b.Loop() {
		b.StopTimer()
		if _, err := s.Cleanup(ctx, StepNamespace, CleanupOptions{Force: true}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := time.Now()
		res, err := s.Backfill(ctx, BackfillOptions{BatchSize: benchBatch()})
		total += time.Since(start)
		if err != nil || res.Copied != int64(n) {
			b.Fatalf("copied %d of %d: %v", res.Copied, n, err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/total.Seconds(), "records/s")
}

// BenchmarkVerify measures a verify of two identical namespaces, in
// records (of both namespaces) per second.
func BenchmarkVerify(b *testing.B) {
	be := benchBackend(b)
	n := benchRecords(b)
	seedRecords(b, be, n)
	s := newStore(b, be, WithStage(StageDualWrite))
	if _, err := s.Backfill(ctx, BackfillOptions{}); err != nil {
		b.Fatal(err)
	}
	var total time.Duration
	for b.Loop() {
		start := time.Now()
		res, err := s.Verify(ctx, VerifyOptions{BatchSize: benchBatch()})
		total += time.Since(start)
		if err != nil || res.Differences() != 0 || res.JobRecords != int64(n) {
			b.Fatalf("%+v: %v", res, err)
		}
	}
	b.ReportMetric(2*float64(n)*float64(b.N)/total.Seconds(), "records/s")
}

// benchBatch is the batch size the migration benchmarks use:
// JOBSTORE_BENCH_BATCH, default (0) DefaultBatchSize.
func benchBatch() int {
	n, _ := strconv.Atoi(os.Getenv("JOBSTORE_BENCH_BATCH"))
	return n
}
