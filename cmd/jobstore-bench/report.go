package main

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"
)

type report struct {
	Started time.Time `json:"started"`
	// Redis and RedisVer are the --redis server's, when a section used it.
	Redis    string `json:"redis,omitempty"`
	RedisVer string `json:"redis_version,omitempty"`
	Go       string `json:"go"`
	CPUs     int    `json:"cpus"`
	Duration string `json:"duration_per_round"`
	Rounds   int    `json:"rounds"`

	Submit   []result           `json:"submit,omitempty"`
	Batch    []result           `json:"batch,omitempty"`
	Worker   []result           `json:"worker,omitempty"`
	Memory   *memoryResult      `json:"memory,omitempty"`
	Backfill *backfillResult    `json:"backfill,omitempty"`
	Claim    *claimReport       `json:"claim,omitempty"`
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
	server := ""
	if r.Redis != "" {
		server = fmt.Sprintf("redis %s at %s, ", r.RedisVer, r.Redis)
	}
	fmt.Fprintf(w, "jobstore-bench %s: %s%s, %d CPUs, %d rounds of at most %s per contender\n",
		r.Started.Format(time.RFC3339), server, r.Go, r.CPUs, r.Rounds, r.Duration)
	table := func(title, unit string, rs []result) {
		if len(rs) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s\n  %-44s %5s %12s %10s %10s %10s %10s\n", title, "contender", "conc", unit+"/s", "p50 us", "p99 us", "srv cpu", "cli cpu")
		for _, x := range rs {
			miss := ""
			if x.Misses > 0 {
				miss = fmt.Sprintf("  (%d misses)", x.Misses)
			}
			fmt.Fprintf(w, "  %-44s %5d %12.0f %10.1f %10.1f %10.1f %10.1f%s\n", x.Name, x.Concurrency, x.PerSec, x.P50us, x.P99us, x.ServerCPUus, x.ClientCPUus, miss)
		}
	}
	table("Submit, one job at a time", "jobs", r.Submit)
	table("Batch submit (latency is per batch)", "jobs", r.Batch)
	table("Worker cycle: claim + complete", "cycles", r.Worker)
	if m := r.Memory; m != nil {
		fmt.Fprintf(w, "\nMemory (INFO used_memory, %d jobs)\n  one namespace  %8.0f bytes/job\n  both           %8.0f bytes/job (+%.0f%%)\n",
			m.Jobs, m.BytesPerJobOne, m.BytesPerJobBoth, 100*m.Increase)
	}
	if b := r.Backfill; b != nil {
		b.print(w)
	}
	if c := r.Claim; c != nil {
		fmt.Fprintf(w, "\nClaim section, on a private redis-server %s at %s, started for it and killed at its end (--save \"\" --appendonly no, loglevel notice)\n", c.RedisVersion, c.Server)
		fmt.Fprintf(w, "  %d pending legacy jobs, services %s, %.0f%% with requirements; window %d; at most %d claims a turn\n",
			c.Jobs, strings.Join(c.Services, ","), 100*c.WithReqs, c.Window, c.CapPerTurn)
		fmt.Fprintf(w, "  fleet, share of the jobs each kind matches:")
		for i, f := range c.Fleet {
			if i%5 == 0 {
				fmt.Fprintf(w, "\n   ")
			}
			fmt.Fprintf(w, " %s %.1f%%", f.Worker, 100*f.Share)
		}
		fmt.Fprintln(w)
		table("Claims alone (a new idle worker per claim)", "claims", c.Claim)
		table("Worker cycle: claim + complete", "cycles", c.Cycle)
		fmt.Fprintf(w, "\n  Redis time per claim or cycle, by command (INFO commandstats; a script's time includes its commands')\n")
		for _, x := range append(slices.Clone(c.Claim), c.Cycle...) {
			st := c.Commands[x.Name]
			names := slices.SortedFunc(maps.Keys(st), func(a, b string) int { return cmp.Compare(st[b].Usec, st[a].Usec) })
			var parts []string
			for _, n := range names[:min(len(names), 6)] {
				parts = append(parts, fmt.Sprintf("%s %.1fx %.1fus", n, st[n].Calls, st[n].Usec))
			}
			fmt.Fprintf(w, "  %-44s %s\n", x.Name, strings.Join(parts, ", "))
		}
		if p := c.Profile; p != nil {
			fmt.Fprintf(w, "\n  Profile: Redis time of a claim = fixed + per job looked at (claims matching nothing, windows 1 and 100, %d calls each)\n", p.Calls)
			fmt.Fprintf(w, "  findMatchingJob  %6.1f us + %5.2f us/job (HGETALL %4.2f of it); fixed %6.1f us with loglevel warning\n",
				p.FunctionFixedUs, p.FunctionPerJobUs, p.FunctionReadUs, p.FunctionFixedWarn)
			fmt.Fprintf(w, "  ClaimJob script  %6.1f us + %5.2f us/job (HMGET %4.2f of it)\n", p.ScriptFixedUs, p.ScriptPerJobUs, p.ScriptReadUs)
		}
	}
	if len(r.Ratios) > 0 {
		fmt.Fprintf(w, "\nRatios\n")
		for _, k := range slices.Sorted(maps.Keys(r.Ratios)) {
			fmt.Fprintf(w, "  %-50s %6.2f\n", k, r.Ratios[k])
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
