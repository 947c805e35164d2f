package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// result is what one contender did at one concurrency, over all rounds.
type result struct {
	Name        string  `json:"name"`
	Concurrency int     `json:"concurrency"`
	Ops         int64   `json:"ops"`
	Seconds     float64 `json:"seconds"`
	PerSec      float64 `json:"per_sec"`
	P50us       float64 `json:"p50_us"`
	P99us       float64 `json:"p99_us"`
	// CPU time per operation: Redis's (INFO cpu) and this process's
	// (getrusage), in microseconds. With every core busy, throughput is
	// about cores / (server + client CPU per operation).
	ServerCPUus float64 `json:"server_cpu_us_per_op"`
	ClientCPUus float64 `json:"client_cpu_us_per_op"`
	lats        []time.Duration
	serverCPU   time.Duration
	clientCPU   time.Duration
}

// contender is one way of doing the measured operation. op does one
// operation (one job, one batch or one cycle) for goroutine g.
type contender struct {
	name string
	// unit scales ops: a batch of 100 jobs counts as 100.
	unit int
	op   func(ctx context.Context, g int) error
}

// runRounds runs the contenders at concurrency conc for d each, taking
// turns within each round (the first one changes every round, so that no
// contender always runs on a warmer or cooler server), and returns one
// result per contender in the given order.
func (b *bench) runRounds(ctx context.Context, cs []contender, conc, rounds int, d time.Duration) ([]result, error) {
	res := make([]result, len(cs))
	for i, c := range cs {
		res[i] = result{Name: c.name, Concurrency: conc}
	}
	for r := range rounds {
		for k := range cs {
			i := (k + r) % len(cs)
			srv0, err := b.serverCPU(ctx)
			if err != nil {
				return nil, err
			}
			cli0 := clientCPU()
			ops, lats, elapsed, err := runFor(ctx, cs[i].op, conc, d)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", cs[i].name, err)
			}
			cli1 := clientCPU()
			srv1, err := b.serverCPU(ctx)
			if err != nil {
				return nil, err
			}
			res[i].serverCPU += srv1 - srv0
			res[i].clientCPU += cli1 - cli0
			unit := max(cs[i].unit, 1)
			res[i].Ops += ops * int64(unit)
			res[i].Seconds += elapsed.Seconds()
			res[i].lats = append(res[i].lats, lats...)
		}
	}
	for i := range res {
		res[i].PerSec = float64(res[i].Ops) / res[i].Seconds
		res[i].P50us = percentile(res[i].lats, 0.50)
		res[i].P99us = percentile(res[i].lats, 0.99)
		res[i].ServerCPUus = float64(res[i].serverCPU.Microseconds()) / float64(res[i].Ops)
		res[i].ClientCPUus = float64(res[i].clientCPU.Microseconds()) / float64(res[i].Ops)
	}
	return res, nil
}

// runFor runs op in conc goroutines until d has passed, and returns how
// many operations completed, each one's latency, and the elapsed time.
func runFor(ctx context.Context, op func(context.Context, int) error, conc int, d time.Duration) (int64, []time.Duration, time.Duration, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deadline := time.Now().Add(d)
	var mu sync.Mutex
	var all []time.Duration
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lats := make([]time.Duration, 0, 4096)
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				if err := op(ctx, g); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
					break
				}
				lats = append(lats, time.Since(t0))
			}
			mu.Lock()
			all = append(all, lats...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return int64(len(all)), all, elapsed, firstErr
}

func percentile(lats []time.Duration, p float64) float64 {
	if len(lats) == 0 {
		return 0
	}
	s := slices.Clone(lats)
	slices.Sort(s)
	return float64(s[int(p*float64(len(s)-1))].Nanoseconds()) / 1e3
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// serverCPU is the CPU time Redis has used, user plus system.
func (b *bench) serverCPU(ctx context.Context) (time.Duration, error) {
	info, err := b.rdb.Info(ctx, "cpu").Result()
	if err != nil {
		return 0, err
	}
	var total float64
	for _, f := range []string{"used_cpu_user", "used_cpu_sys"} {
		v, err := strconv.ParseFloat(infoField(info, f), 64)
		if err != nil {
			return 0, fmt.Errorf("INFO cpu %s: %w", f, err)
		}
		total += v
	}
	return time.Duration(total * float64(time.Second)), nil
}

// clientCPU is the CPU time this process has used, user plus system.
func clientCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
