package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jobstep/jobstore"
	"github.com/redis/go-redis/v9"
)

// backfillResult holds the backfill and verify figures.
type backfillResult struct {
	Records int `json:"records"`
	// RawPerSec is the anchor: SCAN job:* and a pipelined COPY of each
	// key into step:*, by hand, plus a COPY of each queue key.
	RawPerSec      float64 `json:"raw_scan_copy_per_sec"`
	BackfillPerSec float64 `json:"backfill_per_sec"`
	// VerifyPerSec is records of the job namespace per second for a
	// Verify of both namespaces, both directions (job against step and
	// step against job) and the queues included.
	VerifyPerSec float64 `json:"verify_per_sec"`
	// Peak resident memory of this process (VmHWM, reset before each
	// phase), in MiB.
	BackfillPeakMiB float64 `json:"backfill_peak_rss_mib"`
	VerifyPeakMiB   float64 `json:"verify_peak_rss_mib"`
	VerifyDiffs     int64   `json:"verify_differences"`
}

func (r *backfillResult) print(w io.Writer) {
	fmt.Fprintf(w, "\nBackfill and verify, %d legacy records (80%% completed with a TTL, 20%% pending)\n", r.Records)
	fmt.Fprintf(w, "  raw SCAN + pipelined COPY      %10.0f records/s   (queue keys copied whole)\n", r.RawPerSec)
	fmt.Fprintf(w, "  Backfill                       %10.0f records/s   peak RSS %6.1f MiB\n", r.BackfillPerSec, r.BackfillPeakMiB)
	fmt.Fprintf(w, "  Verify, both ways              %10.0f records/s   peak RSS %6.1f MiB   %d differences\n", r.VerifyPerSec, r.VerifyPeakMiB, r.VerifyDiffs)
}

// backfillVerify seeds --records legacy records, then times, in turns, a
// raw SCAN + pipelined COPY and jobstore's Backfill (emptying step:* before
// each), then a Verify of the result.
func (b *bench) backfillVerify(ctx context.Context, rep *report) error {
	const sub = "bf:"
	p := keyPrefix + sub
	n := b.cfg.records
	b.logf("backfill: seeding %d legacy records", n)
	if err := b.seedLegacy(ctx, p, n); err != nil {
		return err
	}
	s, err := jobstore.New(b.rdb, jobstore.WithKeyPrefix(p), jobstore.WithStage(jobstore.StageDualWrite))
	if err != nil {
		return err
	}
	res := &backfillResult{Records: n}
	var raw, bf time.Duration
	rounds := min(b.cfg.rounds, 2)
	for r := range rounds {
		for k := range 2 {
			if err := b.emptySteps(ctx, p); err != nil {
				return err
			}
			if (k+r)%2 == 0 {
				b.logf("backfill: round %d, raw SCAN + COPY", r+1)
				t0 := time.Now()
				if err := b.rawCopy(ctx, p); err != nil {
					return err
				}
				raw += time.Since(t0)
			} else {
				b.logf("backfill: round %d, Backfill", r+1)
				resetPeakRSS()
				t0 := time.Now()
				out, err := s.Backfill(ctx, jobstore.BackfillOptions{Restart: true})
				if err != nil {
					return err
				}
				bf += time.Since(t0)
				res.BackfillPeakMiB = max(res.BackfillPeakMiB, peakRSSMiB())
				if out.Copied != int64(n) {
					return fmt.Errorf("backfill copied %d of %d records", out.Copied, n)
				}
			}
		}
	}
	res.RawPerSec = float64(n*rounds) / raw.Seconds()
	res.BackfillPerSec = float64(n*rounds) / bf.Seconds()

	// Verify a Backfill's result: the raw copy, which may have run last,
	// copies no queue entries.
	if err := b.emptySteps(ctx, p); err != nil {
		return err
	}
	if _, err := s.Backfill(ctx, jobstore.BackfillOptions{Restart: true}); err != nil {
		return err
	}
	b.logf("backfill: Verify")
	resetPeakRSS()
	t0 := time.Now()
	vr, err := s.Verify(ctx, jobstore.VerifyOptions{})
	if err != nil {
		return err
	}
	res.VerifyPerSec = float64(n) / time.Since(t0).Seconds()
	res.VerifyPeakMiB = peakRSSMiB()
	res.VerifyDiffs = vr.Differences()
	rep.Backfill = res
	rep.ratio("backfill_over_raw_copy", res.BackfillPerSec, res.RawPerSec)
	v := rep.Ratios["backfill_over_raw_copy"]
	rep.target("backfill, Backfill/raw SCAN+COPY", v, ">= 0.6", v >= 0.6)
	rep.target("verify, records/s both ways", res.VerifyPerSec, ">= 50000", res.VerifyPerSec >= 50_000)
	if n >= 1_000_000 {
		peak := max(res.BackfillPeakMiB, res.VerifyPeakMiB)
		rep.target("peak RSS for 1M records, MiB", peak, "< 100", peak < 100)
	}
	if res.VerifyDiffs != 0 {
		return fmt.Errorf("verify found %d differences after the backfill", res.VerifyDiffs)
	}
	return nil
}

// seedLegacy writes n records as the existing services do: an 11-field
// hash; 80% completed, with a 24h TTL and an entry in jobs:completed,
// and 20% pending in jobs:pending.
func (b *bench) seedLegacy(ctx context.Context, p string, n int) error {
	now := time.Now()
	for lo := 0; lo < n; lo += 1000 {
		pipe := b.rdb.Pipeline()
		for i := lo; i < min(lo+1000, n); i++ {
			id := fmt.Sprintf("%08d-%s", i, newID()[:12])
			f := legacyFields(id, now)
			if i%5 == 0 {
				pipe.HSet(ctx, p+"job:"+id, f...)
				pipe.ZAdd(ctx, p+"jobs:pending", redis.Z{Score: legacyScore(now), Member: id})
				continue
			}
			f[15] = "completed" // the status value
			pipe.HSet(ctx, p+"job:"+id, append(f, "completed_at", now.UTC().Format("2006-01-02T15:04:05.000Z"), "worker_id", "w1")...)
			pipe.PExpire(ctx, p+"job:"+id, 24*time.Hour)
			pipe.ZAdd(ctx, p+"jobs:completed", redis.Z{Score: float64(now.UnixMilli()), Member: id})
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

// rawCopy is the anchor: SCAN the record keys and COPY each one, in one
// pipeline per SCAN page, then COPY the four queue keys whole. It checks
// nothing, so it is only safe with no writes running.
func (b *bench) rawCopy(ctx context.Context, p string) error {
	pipe := b.rdb.Pipeline()
	for _, q := range jobstore.Queues {
		pipe.Do(ctx, "COPY", p+jobstore.JobsQueueKey(q), p+jobstore.StepsQueueKey(q), "REPLACE")
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return err
	}
	var cursor uint64
	for {
		keys, next, err := b.rdb.Scan(ctx, cursor, p+"job:*", 1000).Result()
		if err != nil {
			return err
		}
		pipe := b.rdb.Pipeline()
		for _, k := range keys {
			pipe.Do(ctx, "COPY", k, p+"step:"+strings.TrimPrefix(k, p+"job:"))
		}
		if len(keys) > 0 {
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// emptySteps deletes the step namespace under the prefix.
func (b *bench) emptySteps(ctx context.Context, p string) error {
	var cursor uint64
	for {
		keys, next, err := b.rdb.Scan(ctx, cursor, p+"step*", 2000).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			if err := b.rdb.Unlink(ctx, keys...).Err(); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// resetPeakRSS resets the kernel's peak resident size of this process
// (Linux: writing 5 to clear_refs), so that VmHWM measures one phase.
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSSMiB reads VmHWM, the peak resident size, in MiB (0 off Linux).
func peakRSSMiB() float64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err == nil {
				return kb / 1024
			}
		}
	}
	return 0
}
