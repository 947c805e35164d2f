package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jobstep/jobstore"
	"github.com/redis/go-redis/v9"
)

// asynqQueue is the queue the asynq contender enqueues into: asynq keeps
// it under asynq:{jobstore-bench}:* and lists it in asynq:queues.
const asynqQueue = "jobstore-bench"

// cleanAsynq deletes what the asynq contender wrote.
func (b *bench) cleanAsynq(ctx context.Context) error {
	if err := unlinkMatching(ctx, b.rdb, "asynq:{"+asynqQueue+"}:*"); err != nil {
		return err
	}
	return b.rdb.SRem(ctx, "asynq:queues", asynqQueue).Err()
}

var payload = json.RawMessage(`{"prompt":"a photo of a red fox in the snow, golden hour","steps":30,"cfg":7.5,"seed":42}`)

const typicalRequirements = `{"hardware":{"gpu_memory_gb":24}}`

// typicalJob is the job every submit contender writes. An empty id lets
// SubmitJob generate one, as API services do.
func typicalJob(id string) jobstore.Job {
	return jobstore.Job{
		ID: id, Service: "comfyui", Priority: 50, Payload: payload,
		Requirements: json.RawMessage(typicalRequirements), CustomerID: "cust-42", WorkflowID: "wf-7",
	}
}

// newStore returns a Store on the --redis server under the benchmark's
// prefix plus sub.
func (b *bench) newStore(sub string, st jobstore.Stage) (*jobstore.Store, error) {
	return jobstore.New(b.rdb, jobstore.WithKeyPrefix(keyPrefix+sub), jobstore.WithStage(st))
}

// submit measures one job submitted at a time, at concurrency 1 and 16:
// (a) the legacy single write, (b) the report's dual-write with a second
// round trip, (c) SubmitJob with dual-write off, (d) with it on.
func (b *bench) submit(ctx context.Context, rep *report) error {
	off, err := b.newStore("c:", jobstore.StageLegacy)
	if err != nil {
		return err
	}
	on, err := b.newStore("d:", jobstore.StageDualWrite)
	if err != nil {
		return err
	}
	// The client shares b.rdb, so it is not closed; cleanAsynq removes
	// what it wrote.
	aq := asynq.NewClientFromRedisClient(b.rdb)
	defer func() { _ = b.cleanAsynq(context.WithoutCancel(ctx)) }()
	legacyWrite := func(ctx context.Context, p, rec, queue string, j legacyJob) error {
		tx := b.rdb.TxPipeline()
		tx.HSet(ctx, p+rec+j.id, j.fields()...)
		tx.ZAdd(ctx, p+queue, redis.Z{Score: j.score(), Member: j.id})
		_, err := tx.Exec(ctx)
		return err
	}
	cs := []contender{
		{name: "a legacy HSET+ZADD in MULTI", op: func(ctx context.Context, _ int) error {
			return legacyWrite(ctx, keyPrefix+"a:", "job:", "jobs:pending", typicalLegacy(newID(), time.Now()))
		}},
		{name: "b report dual-write, 2 round trips", op: func(ctx context.Context, _ int) error {
			j := typicalLegacy(newID(), time.Now())
			if err := legacyWrite(ctx, keyPrefix+"b:", "job:", "jobs:pending", j); err != nil {
				return err
			}
			return legacyWrite(ctx, keyPrefix+"b:", "step:", "steps:pending", j)
		}},
		{name: "c SubmitJob, dual-write off", op: func(ctx context.Context, _ int) error {
			_, err := off.SubmitJob(ctx, typicalJob(""))
			return err
		}},
		{name: "d SubmitJob, dual-write on", op: func(ctx context.Context, _ int) error {
			_, err := on.SubmitJob(ctx, typicalJob(""))
			return err
		}},
		// A caller-chosen id may exist already, so it takes the checking
		// script instead of MULTI.
		{name: "e SubmitJob, caller's id, dual-write on", op: func(ctx context.Context, _ int) error {
			_, err := on.SubmitJob(ctx, typicalJob(newID()))
			return err
		}},
		// Another Go queue's enqueue, for scale: one script that writes
		// a task hash and pushes its id, on the same client.
		{name: "f asynq Client.Enqueue", op: func(ctx context.Context, _ int) error {
			_, err := aq.EnqueueContext(ctx, asynq.NewTask("comfyui", payload), asynq.Queue(asynqQueue))
			return err
		}},
	}
	for _, conc := range []int{1, 16} {
		b.logf("submit: 6 contenders at concurrency %d, %d rounds of %v each", conc, b.cfg.rounds, b.cfg.duration)
		res, err := runRounds(ctx, b.rdb, cs, conc, b.cfg.rounds, b.cfg.duration)
		if err != nil {
			return err
		}
		rep.Submit = append(rep.Submit, res...)
		a, bb, c, d, e, f := res[0], res[1], res[2], res[3], res[4], res[5]
		k := "c" + strconv.Itoa(conc)
		rep.ratio(k+"_p50_latency_d_over_c", d.P50us, c.P50us)
		rep.ratio(k+"_throughput_d_over_c", d.PerSec, c.PerSec)
		rep.ratio(k+"_throughput_d_over_b", d.PerSec, bb.PerSec)
		rep.ratio(k+"_throughput_d_over_a", d.PerSec, a.PerSec)
		rep.ratio(k+"_throughput_e_over_b", e.PerSec, bb.PerSec)
		rep.ratio(k+"_throughput_d_over_asynq", d.PerSec, f.PerSec)
		if st := on.DualWriteStats(); st.Failed > 0 {
			return fmt.Errorf("%d dual-writes failed", st.Failed)
		}
	}
	rep.target("dual-write p50 latency at concurrency 1, d/c", rep.Ratios["c1_p50_latency_d_over_c"], "<= 1.3", rep.Ratios["c1_p50_latency_d_over_c"] <= 1.3)
	rep.target("dual-write throughput at concurrency 16, d/c", rep.Ratios["c16_throughput_d_over_c"], ">= 0.8", rep.Ratios["c16_throughput_d_over_c"] >= 0.8)
	rep.target("dual-write throughput at concurrency 16, d/b", rep.Ratios["c16_throughput_d_over_b"], ">= 1.5", rep.Ratios["c16_throughput_d_over_b"] >= 1.5)
	return nil
}

// batchSubmit measures dual-written batch submit: SubmitJobs against a
// pipeline of the same commands sent by hand (HSET and ZADD into both
// namespaces per job), in jobs per second.
func (b *bench) batchSubmit(ctx context.Context, rep *report) error {
	on, err := b.newStore("bd:", jobstore.StageDualWrite)
	if err != nil {
		return err
	}
	n := b.cfg.batch
	cs := []contender{
		{name: "raw pipeline HSET+ZADD into job and step", unit: n, op: func(ctx context.Context, _ int) error {
			pipe := b.rdb.Pipeline()
			now := time.Now()
			p := keyPrefix + "br:"
			for range n {
				j := typicalLegacy(newID(), now)
				f, z := j.fields(), redis.Z{Score: j.score(), Member: j.id}
				pipe.HSet(ctx, p+"job:"+j.id, f...)
				pipe.ZAdd(ctx, p+"jobs:pending", z)
				pipe.HSet(ctx, p+"step:"+j.id, f...)
				pipe.ZAdd(ctx, p+"steps:pending", z)
			}
			_, err := pipe.Exec(ctx)
			return err
		}},
		{name: "SubmitJobs, dual-write on", unit: n, op: func(ctx context.Context, _ int) error {
			jobs := make([]jobstore.Job, n)
			for i := range jobs {
				jobs[i] = typicalJob("")
			}
			_, err := on.SubmitJobs(ctx, jobs)
			return err
		}},
	}
	for _, conc := range []int{1, 4} {
		b.logf("batch: batches of %d at concurrency %d", n, conc)
		res, err := runRounds(ctx, b.rdb, cs, conc, b.cfg.rounds, b.cfg.duration)
		if err != nil {
			return err
		}
		rep.Batch = append(rep.Batch, res...)
		rep.ratio(fmt.Sprintf("batch_c%d_submitjobs_over_raw", conc), res[1].PerSec, res[0].PerSec)
	}
	v := rep.Ratios["batch_c1_submitjobs_over_raw"]
	rep.target("batch submit, dual-written, SubmitJobs/raw pipeline", v, ">= 0.7", v >= 0.7)
	return nil
}

// workerCycle measures claim plus complete with --workers workers, all
// jobs of one service and without requirements, dual-write on against
// off. (The claim section measures the cycle against the legacy worker's.)
func (b *bench) workerCycle(ctx context.Context, rep *report) error {
	var cs []contender
	var stores []*jobstore.Store
	for _, st := range []jobstore.Stage{jobstore.StageLegacy, jobstore.StageDualWrite} {
		s, err := b.newStore("w"+st.String()+":", st)
		if err != nil {
			return err
		}
		// Enough jobs that the queue never runs dry: a generous guess of
		// 20,000 cycles a second.
		want := int(20_000 * b.cfg.duration.Seconds() * float64(b.cfg.rounds))
		b.logf("worker: filling the queue with %d jobs (%s)", want, st)
		for lo := 0; lo < want; lo += 1000 {
			jobs := make([]jobstore.Job, min(1000, want-lo))
			for i := range jobs {
				jobs[i] = typicalJob("")
				jobs[i].Requirements = nil
			}
			if _, err := s.SubmitJobs(ctx, jobs); err != nil {
				return err
			}
		}
		caps := make([]jobstore.Capabilities, b.cfg.workers)
		for g := range caps {
			caps[g] = jobstore.Capabilities{WorkerID: "worker-" + strconv.Itoa(g), Services: []string{"comfyui"}}
			if err := s.RegisterWorker(ctx, caps[g]); err != nil {
				return err
			}
		}
		name := "ClaimJob+CompleteJob, dual-write off"
		if st.DualWrites() {
			name = "ClaimJob+CompleteJob, dual-write on"
		}
		cs = append(cs, contender{name: name, op: func(ctx context.Context, g int) error {
			j, err := s.ClaimJob(ctx, caps[g])
			if errors.Is(err, jobstore.ErrNoJob) {
				return fmt.Errorf("the queue ran dry; lower --duration")
			}
			if err != nil {
				return err
			}
			return s.CompleteJob(ctx, j.ID, caps[g].WorkerID, json.RawMessage(`{"ok":true}`))
		}})
		stores = append(stores, s)
	}
	b.logf("worker: %d workers, %d rounds of %v", b.cfg.workers, b.cfg.rounds, b.cfg.duration)
	res, err := runRounds(ctx, b.rdb, cs, b.cfg.workers, b.cfg.rounds, b.cfg.duration)
	if err != nil {
		return err
	}
	if st := stores[1].DualWriteStats(); st.Failed > 0 {
		return fmt.Errorf("%d dual-writes failed", st.Failed)
	}
	rep.Worker = res
	rep.ratio("worker_dualwrite_over_legacy", res[1].PerSec, res[0].PerSec)
	return nil
}

// memory measures the bytes per job in Redis (INFO used_memory) for jobs
// in one namespace and dual-written into both.
func (b *bench) memory(ctx context.Context, rep *report) error {
	const n = 20_000
	m := &memoryResult{Jobs: n}
	var mu sync.Mutex
	for i, st := range []jobstore.Stage{jobstore.StageLegacy, jobstore.StageDualWrite} {
		s, err := b.newStore(fmt.Sprintf("m%d:", i), st)
		if err != nil {
			return err
		}
		before, err := b.usedMemory(ctx)
		if err != nil {
			return err
		}
		for lo := 0; lo < n; lo += 1000 {
			jobs := make([]jobstore.Job, 1000)
			for k := range jobs {
				jobs[k] = typicalJob("")
			}
			if _, err := s.SubmitJobs(ctx, jobs); err != nil {
				return err
			}
		}
		after, err := b.usedMemory(ctx)
		if err != nil {
			return err
		}
		mu.Lock()
		if st.DualWrites() {
			m.BytesPerJobBoth = float64(after-before) / n
		} else {
			m.BytesPerJobOne = float64(after-before) / n
		}
		mu.Unlock()
		b.logf("memory: %d jobs, %s: %.0f bytes each", n, st, float64(after-before)/n)
	}
	m.Increase = ratio(m.BytesPerJobBoth, m.BytesPerJobOne) - 1
	rep.Memory = m
	return nil
}

func (b *bench) usedMemory(ctx context.Context) (int64, error) {
	info, err := b.rdb.Info(ctx, "memory").Result()
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(infoField(info, "used_memory"), 10, 64)
}
