package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
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
	// Misses counts calls that found nothing to do (a claim that matched
	// no job of its window); they are not in Ops, but their time is in
	// Seconds and their CPU in the per-op figures.
	Misses    int64 `json:"misses,omitempty"`
	lats      []time.Duration
	serverCPU time.Duration
	clientCPU time.Duration
}

// Sentinels an op returns instead of nil.
var (
	// errMiss: the call did nothing to count (a claim that found no job).
	errMiss = errors.New("miss")
	// errStop: the turn has done all it may (a claim section's cap); the
	// goroutine stops, and the call is not counted.
	errStop = errors.New("stop")
)

// contender is one way of doing the measured operation. op does one
// operation (one job, one batch or one cycle) for goroutine g.
type contender struct {
	name string
	// unit scales ops: a batch of 100 jobs counts as 100.
	unit int
	op   func(ctx context.Context, g int) error
	// setup, when set, runs before each turn, and after, when set, after
	// it with the turn's op count; neither is timed.
	setup func(ctx context.Context) error
	after func(ctx context.Context, ops int64) error
}

// runRounds runs the contenders at concurrency conc for at most d each,
// taking turns within each round (the first one changes every round, so
// that no contender always runs on a warmer or cooler server), and returns
// one result per contender in the given order. Server CPU is read from
// srv, the server the contenders use.
func runRounds(ctx context.Context, srv *redis.Client, cs []contender, conc, rounds int, d time.Duration) ([]result, error) {
	res := make([]result, len(cs))
	for i, c := range cs {
		res[i] = result{Name: c.name, Concurrency: conc}
	}
	for r := range rounds {
		for k := range cs {
			i := (k + r) % len(cs)
			c := cs[i]
			if c.setup != nil {
				if err := c.setup(ctx); err != nil {
					return nil, fmt.Errorf("%s: setup: %w", c.name, err)
				}
			}
			srv0, err := serverCPU(ctx, srv)
			if err != nil {
				return nil, err
			}
			cli0 := clientCPU()
			t, err := runFor(ctx, c.op, conc, d)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", c.name, err)
			}
			cli1 := clientCPU()
			srv1, err := serverCPU(ctx, srv)
			if err != nil {
				return nil, err
			}
			if c.after != nil {
				if err := c.after(ctx, t.ops); err != nil {
					return nil, fmt.Errorf("%s: %w", c.name, err)
				}
			}
			res[i].serverCPU += srv1 - srv0
			res[i].clientCPU += cli1 - cli0
			unit := max(c.unit, 1)
			res[i].Ops += t.ops * int64(unit)
			res[i].Misses += t.misses
			res[i].Seconds += t.elapsed.Seconds()
			res[i].lats = append(res[i].lats, t.lats...)
		}
	}
	for i := range res {
		res[i].PerSec = ratio(float64(res[i].Ops), res[i].Seconds)
		res[i].P50us = percentile(res[i].lats, 0.50)
		res[i].P99us = percentile(res[i].lats, 0.99)
		res[i].ServerCPUus = ratio(float64(res[i].serverCPU.Microseconds()), float64(res[i].Ops))
		res[i].ClientCPUus = ratio(float64(res[i].clientCPU.Microseconds()), float64(res[i].Ops))
	}
	return res, nil
}

// turn is what one runFor did.
type turn struct {
	ops, misses int64
	lats        []time.Duration // of the counted ops
	elapsed     time.Duration
}

// runFor runs op in conc goroutines until d has passed or op says stop,
// and returns what they did.
func runFor(ctx context.Context, op func(context.Context, int) error, conc int, d time.Duration) (turn, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	deadline := time.Now().Add(d)
	var mu sync.Mutex
	var t turn
	var firstErr error
	var wg sync.WaitGroup
	start := time.Now()
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lats := make([]time.Duration, 0, 4096)
			var misses int64
			for time.Now().Before(deadline) && ctx.Err() == nil {
				t0 := time.Now()
				err := op(ctx, g)
				if err == nil {
					lats = append(lats, time.Since(t0))
					continue
				}
				if errors.Is(err, errMiss) {
					misses++
					continue
				}
				if errors.Is(err, errStop) {
					break
				}
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				cancel()
				break
			}
			mu.Lock()
			t.lats = append(t.lats, lats...)
			t.misses += misses
			mu.Unlock()
		}()
	}
	wg.Wait()
	t.elapsed = time.Since(start)
	t.ops = int64(len(t.lats))
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return t, firstErr
}

func percentile(lats []time.Duration, p float64) float64 {
	if len(lats) == 0 {
		return 0
	}
	s := slices.Clone(lats)
	slices.Sort(s)
	return float64(s[int(p*float64(len(s)-1))].Nanoseconds()) / 1e3
}

// newID returns a random UUID (version 4), the form of legacy ids and of
// the ids SubmitJob makes.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// randomHex returns n random bytes in hex, as the trace ids the legacy API
// stores.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// serverCPU is the CPU time the Redis of rdb has used, user plus system.
func serverCPU(ctx context.Context, rdb *redis.Client) (time.Duration, error) {
	info, err := rdb.Info(ctx, "cpu").Result()
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
