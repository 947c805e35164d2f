package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"time"
)

type report struct {
	Started  time.Time `json:"started"`
	Redis    string    `json:"redis"`
	RedisVer string    `json:"redis_version"`
	Go       string    `json:"go"`
	CPUs     int       `json:"cpus"`
	Duration string    `json:"duration_per_round"`
	Rounds   int       `json:"rounds"`

	Submit   []result           `json:"submit,omitempty"`
	Batch    []result           `json:"batch,omitempty"`
	Worker   []result           `json:"worker,omitempty"`
	Memory   *memoryResult      `json:"memory,omitempty"`
	Backfill *backfillResult    `json:"backfill,omitempty"`
	Ratios   map[string]float64 `json:"ratios"`
	Targets  []target           `json:"targets"`
}

type memoryResult struct {
	Jobs            int     `json:"jobs"`
	BytesPerJobOne  float64 `json:"bytes_per_job_one_namespace"`
	BytesPerJobBoth float64 `json:"bytes_per_job_both_namespaces"`
	Increase        float64 `json:"increase"` // both/one - 1
}

type target struct {
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Want  string  `json:"want"`
	Met   bool    `json:"met"`
}

func (r *report) ratio(name string, a, b float64) {
	if r.Ratios == nil {
		r.Ratios = map[string]float64{}
	}
	r.Ratios[name] = ratio(a, b)
}

func (r *report) target(name string, v float64, want string, met bool) {
	r.Targets = append(r.Targets, target{Name: name, Value: v, Want: want, Met: met})
}

func (r *report) print(w io.Writer) {
	fmt.Fprintf(w, "jobstore-bench %s: redis %s at %s, %s, %d CPUs, %d rounds of %s per contender\n",
		r.Started.Format(time.RFC3339), r.RedisVer, r.Redis, r.Go, r.CPUs, r.Rounds, r.Duration)
	table := func(title, unit string, rs []result) {
		if len(rs) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s\n  %-44s %5s %12s %10s %10s %10s %10s\n", title, "contender", "conc", unit+"/s", "p50 us", "p99 us", "srv cpu", "cli cpu")
		for _, x := range rs {
			fmt.Fprintf(w, "  %-44s %5d %12.0f %10.1f %10.1f %10.1f %10.1f\n", x.Name, x.Concurrency, x.PerSec, x.P50us, x.P99us, x.ServerCPUus, x.ClientCPUus)
		}
	}
	table("Submit, one job at a time", "jobs", r.Submit)
	table("Batch submit (latency is per batch)", "jobs", r.Batch)
	table("Worker cycle: claim + complete", "cycles", r.Worker)
	if m := r.Memory; m != nil {
		fmt.Fprintf(w, "\nMemory (INFO used_memory, %d jobs)\n  one namespace  %8.0f bytes/job\n  both           %8.0f bytes/job (+%.0f%%)\n",
			m.Jobs, m.BytesPerJobOne, m.BytesPerJobBoth, 100*m.Increase)
	}
	if bf := r.Backfill; bf != nil {
		bf.print(w)
	}
	if len(r.Ratios) > 0 {
		fmt.Fprintf(w, "\nRatios\n")
		for _, k := range slices.Sorted(maps.Keys(r.Ratios)) {
			fmt.Fprintf(w, "  %-44s %6.2f\n", k, r.Ratios[k])
		}
	}
	if len(r.Targets) > 0 {
		fmt.Fprintf(w, "\nTargets\n")
		for _, t := range r.Targets {
			mark := "MISSED"
			if t.Met {
				mark = "met"
			}
			fmt.Fprintf(w, "  %-58s %8.2f  want %-8s %s\n", t.Name, t.Value, t.Want, mark)
		}
	}
}
