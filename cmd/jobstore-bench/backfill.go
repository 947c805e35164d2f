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
	// key into step:*, by hand, plus a COPY of each queue key: what Redis
	// does for a copy that checks nothing.
	RawPerSec      float64 `json:"raw_scan_copy_per_sec"`
	BackfillPerSec float64 `json:"backfill_per_sec"`
	// VerifyPerSec is jobs per second for a Verify of both namespaces,
	// both ways, records, sub-keys and every queue's entries.
	VerifyPerSec float64 `json:"verify_per_sec"`
	// Peak resident memory of this process (VmHWM, reset before each
	// phase), in MiB.
	BackfillPeakMiB float64 `json:"backfill_peak_rss_mib"`
	VerifyPeakMiB   float64 `json:"verify_peak_rss_mib"`
	VerifyDiffs     int64   `json:"verify_differences"`
}

func (r *backfillResult) print(w io.Writer) {
	fmt.Fprintf(w, "\nBackfill and verify, %d legacy jobs (80%% completed, 20%% pending; a progress hash each)\n", r.Records)
	fmt.Fprintf(w, "  raw SCAN + pipelined COPY      %10.0f jobs/s   (queue keys copied whole)\n", r.RawPerSec)
	fmt.Fprintf(w, "  Backfill                       %10.0f jobs/s   peak RSS %6.1f MiB\n", r.BackfillPerSec, r.BackfillPeakMiB)
	fmt.Fprintf(w, "  Verify, both ways              %10.0f jobs/s   peak RSS %6.1f MiB   %d differences\n", r.VerifyPerSec, r.VerifyPeakMiB, r.VerifyDiffs)
}

// backfillVerify seeds --records legacy jobs, then times, in turns, a raw
// SCAN + pipelined COPY and the Migrator's Backfill (emptying step:*
// before each), then a Verify of the result.
func (b *bench) backfillVerify(ctx context.Context, rep *report) error {
	const sub = "bf:"
	p := keyPrefix + sub
	n := b.cfg.records
	b.logf("backfill: seeding %d legacy jobs", n)
	if err := b.seedLegacy(ctx, p, n); err != nil {
		return err
	}
	m, err := jobstore.NewMigrator(b.rdb, jobstore.WithKeyPrefix(p), jobstore.WithStage(jobstore.StageDualWrite))
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
				continue
			}
			b.logf("backfill: round %d, Backfill", r+1)
			resetPeakRSS()
			t0 := time.Now()
			out, err := m.Backfill(ctx, jobstore.BackfillOptions{Restart: true})
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
	res.RawPerSec = float64(n*rounds) / raw.Seconds()
	res.BackfillPerSec = float64(n*rounds) / bf.Seconds()

	// Verify a Backfill's result: the raw copy, which may have run last,
	// is not what a migration leaves (it copies without looking).
	if err := b.emptySteps(ctx, p); err != nil {
		return err
	}
	if _, err := m.Backfill(ctx, jobstore.BackfillOptions{Restart: true}); err != nil {
		return err
	}
	b.logf("backfill: Verify")
	resetPeakRSS()
	t0 := time.Now()
	vr, err := m.Verify(ctx, jobstore.VerifyOptions{})
	if err != nil {
		return err
	}
	res.VerifyPerSec = float64(n) / time.Since(t0).Seconds()
	res.VerifyPeakMiB = peakRSSMiB()
	res.VerifyDiffs = vr.Differences
	rep.Backfill = res
	rep.ratio("backfill_over_raw_copy", res.BackfillPerSec, res.RawPerSec)
	v := rep.Ratios["backfill_over_raw_copy"]
	rep.target("backfill, Backfill/raw SCAN+COPY", v, ">= 0.6", v >= 0.6)
	rep.target("verify, jobs/s both ways", res.VerifyPerSec, ">= 50000", res.VerifyPerSec >= 50_000)
	if n >= 1_000_000 {
		peak := max(res.BackfillPeakMiB, res.VerifyPeakMiB)
		rep.target("peak RSS for 1M jobs, MiB", peak, "< 100", peak < 100)
	}
	if res.VerifyDiffs != 0 {
		return fmt.Errorf("verify found %d differences after the backfill", res.VerifyDiffs)
	}
	return nil
}

// seedLegacy writes n jobs as the legacy services leave them: the API's
// record and a progress hash each; 80% completed (status, completed_at,
// worker_id, an entry in the jobs:completed hash, whose whole key has a
// 24 h TTL), 20% pending in jobs:pending.
func (b *bench) seedLegacy(ctx context.Context, p string, n int) error {
	now := time.Now()
	stamp := now.UTC().Format("2006-01-02T15:04:05.000Z")
	for lo := 0; lo < n; lo += 1000 {
		pipe := b.rdb.Pipeline()
		for i := lo; i < min(lo+1000, n); i++ {
			j := typicalLegacy(fmt.Sprintf("%08d-%s", i, newID()[:12]), now)
			rec := p + "job:" + j.id
			pipe.HSet(ctx, rec+":progress", "progress", "100", "status", "in_progress", "message", "", "updated_at", stamp)
			if i%5 == 0 {
				pipe.HSet(ctx, rec, j.fields()...)
				pipe.ZAdd(ctx, p+"jobs:pending", redis.Z{Score: j.score(), Member: j.id})
				continue
			}
			f := append(j.fields(), "completed_at", stamp, "worker_id", "w1", "assigned_at", "1764457200.000001")
			f[15] = "completed" // the status value
			pipe.HSet(ctx, rec, f...)
			pipe.HSet(ctx, p+"jobs:completed", j.id, `{"success":true,"data":{"ok":true},"completed_at":"`+stamp+`"}`)
		}
		pipe.Expire(ctx, p+"jobs:completed", 24*time.Hour)
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	return nil
}

// rawCopy is the anchor: SCAN job:* (records and sub-keys) and COPY each
// key, in one pipeline per SCAN page, then COPY the queue keys whole. It
// checks nothing, so it is only safe with no writes running.
func (b *bench) rawCopy(ctx context.Context, p string) error {
	pipe := b.rdb.Pipeline()
	for _, q := range []string{"pending", "completed", "failed"} {
		pipe.Do(ctx, "COPY", p+"jobs:"+q, p+"steps:"+q, "REPLACE")
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
	return unlinkMatching(ctx, b.rdb, p+"step*")
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
