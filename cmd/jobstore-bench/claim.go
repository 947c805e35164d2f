package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jobstep/jobstore"
	"github.com/redis/go-redis/v9"
)

// The claim section: jobstore's ClaimJob against the legacy claim function
// findMatchingJob, on the same pending legacy jobs, and the worker cycle
// (claim + complete) against the legacy worker's.
//
// The data, identical before every turn: --claim-jobs pending jobs written
// as the legacy API writes them (HSET of its 20 fields, ZADD jobs:pending
// with priority*1e15 - floor(ms/1000)), and the same in step:* and
// steps:pending, as a backfilled dual-write stage holds them. The jobs are
// spread evenly over 5 services; a third carry requirements, one of nine
// templates (hardware minimums, models, custom capabilities). The fleet is
// two kinds of worker per service, a GPU box and a model box, each kind
// meeting some templates; every template is met by one kind, so no job
// stays in the window for good. Each kind matches 16-18% of the jobs: with
// a third of the jobs carrying requirements and 5 services, a worker of one
// service matches at least 2/3 * 1/5 = 13.3%, so a fleet matching 10%
// each would need another mix.

// claimServices are the services of the claim data.
var claimServices = []string{"comfyui", "a1111", "ollama", "openai", "simulation"}

// workerKind is one of the fleet's two kinds of worker.
type workerKind int

const (
	gpuBox   workerKind = iota // much hardware, one model
	modelBox                   // little hardware, many models and features
)

func (k workerKind) String() string { return [...]string{"gpu box", "model box"}[k] }

// reqTemplate is a requirements JSON and which kind of worker meets it.
type reqTemplate struct {
	name string
	json string
	met  [2]bool // by gpuBox, by modelBox
}

// reqTemplates are the requirements of the third of the jobs that have
// some, in the shapes findMatchingJob reads: top-level positive ones, or
// positive_requirements and negative_requirements.
var reqTemplates = []reqTemplate{
	{"hardware gpu>=16", `{"hardware":{"gpu_memory_gb":16}}`, [2]bool{true, false}},
	{"hardware gpu>=24 ram>=32", `{"hardware":{"gpu_memory_gb":24,"ram_gb":32}}`, [2]bool{true, false}},
	{"hardware gpu>=40 cpu>=8", `{"positive_requirements":{"hardware":{"gpu_memory_gb":40,"cpu_cores":8}}}`, [2]bool{true, false}},
	{"models flux", `{"models":["flux"]}`, [2]bool{false, true}},
	{"models sdxl+flux", `{"models":["sdxl","flux"]}`, [2]bool{false, true}},
	{"models llama3", `{"positive_requirements":{"models":["llama3"]}}`, [2]bool{false, true}},
	{"region eu", `{"region":"eu"}`, [2]bool{false, true}},
	{"feature lora, not region us", `{"positive_requirements":{"features":["lora"]},"negative_requirements":{"region":"us"}}`, [2]bool{false, true}},
	{"gpu nvidia x2", `{"gpu":{"vendor":"nvidia","count":2}}`, [2]bool{true, false}},
}

// fleetMember is one kind of worker for one service.
type fleetMember struct {
	service string
	kind    workerKind
}

func (m fleetMember) String() string { return m.service + " " + m.kind.String() }

// caps are the member's capabilities under a worker id, the same for
// ClaimJob and, as JSON, for findMatchingJob.
func (m fleetMember) caps(worker string) jobstore.Capabilities {
	c := jobstore.Capabilities{WorkerID: worker, Services: []string{m.service}, MachineID: "bench"}
	if m.kind == gpuBox {
		c.Hardware = &jobstore.Hardware{GPUMemoryGB: 48, CPUCores: 16, RAMGB: 64}
		c.Models = map[string][]string{m.service: {"sdxl"}}
		c.Extra = map[string]any{"region": "us", "features": []string{"upscale"},
			"gpu": map[string]any{"vendor": "nvidia", "count": 2}}
	} else {
		c.Hardware = &jobstore.Hardware{GPUMemoryGB: 12, CPUCores: 4, RAMGB: 16}
		c.Models = map[string][]string{m.service: {"sdxl", "flux", "llama3"}}
		c.Extra = map[string]any{"region": "eu", "features": []string{"lora", "upscale"},
			"gpu": map[string]any{"vendor": "nvidia", "count": 1}}
	}
	return c
}

// claimFleet is every service's GPU box and model box.
var claimFleet = func() []fleetMember {
	var f []fleetMember
	for _, s := range claimServices {
		f = append(f, fleetMember{s, gpuBox}, fleetMember{s, modelBox})
	}
	return f
}()

// claimJob is one job of the claim data, with the template it carries
// (-1: no requirements).
type claimJob struct {
	legacyJob
	template int
}

// matchedBy tells whether a member of the fleet can run the job.
func (j claimJob) matchedBy(m fleetMember) bool {
	return j.service == m.service && (j.template < 0 || reqTemplates[j.template].met[m.kind])
}

// claimData makes n jobs, the same for the same n: services even, a third
// with requirements, priorities 25, 50 or 75, created over the last hour.
func claimData(n int, now time.Time) []claimJob {
	rng := rand.New(rand.NewPCG(1, uint64(n)))
	hexOf := func(k int) string {
		b := make([]byte, k)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return hex.EncodeToString(b)
	}
	jobs := make([]claimJob, n)
	for i := range jobs {
		h := hexOf(16)
		id := h[0:8] + "-" + h[8:12] + "-4" + h[13:16] + "-a" + h[17:20] + "-" + h[20:]
		j := claimJob{template: -1}
		j.id = id
		j.service = claimServices[rng.IntN(len(claimServices))]
		if rng.IntN(3) == 0 {
			j.template = rng.IntN(len(reqTemplates))
			j.requirements = reqTemplates[j.template].json
		}
		j.customer = "cust-" + strconv.Itoa(1+rng.IntN(20))
		switch p := rng.IntN(100); {
		case p < 15:
			j.priority = 75
		case p < 30:
			j.priority = 25
		default:
			j.priority = 50
		}
		j.created = now.Add(-time.Duration(rng.IntN(3600_000)) * time.Millisecond)
		j.traceID, j.spanID = hexOf(16), hexOf(8)
		jobs[i] = j
	}
	return jobs
}

// claimSetup is the claim section's private server and data.
type claimSetup struct {
	priv *privateRedis
	jobs []claimJob
	reg  *jobstore.Store // registers workers
}

// refill empties the private server's database and writes the jobs in
// both namespaces, then registers the workers (RegisterWorker: the hash,
// workers:active and the heartbeat that ClaimJob requires).
func (cs *claimSetup) refill(ctx context.Context, workers []jobstore.Capabilities) error {
	rdb := cs.priv.rdb
	if err := rdb.FlushDBAsync(ctx).Err(); err != nil {
		return err
	}
	for lo := 0; lo < len(cs.jobs); lo += 500 {
		pipe := rdb.Pipeline()
		for _, j := range cs.jobs[lo:min(lo+500, len(cs.jobs))] {
			f, z := j.fields(), redis.Z{Score: j.score(), Member: j.id}
			pipe.HSet(ctx, "job:"+j.id, f...)
			pipe.ZAdd(ctx, "jobs:pending", z)
			pipe.HSet(ctx, "step:"+j.id, f...)
			pipe.ZAdd(ctx, "steps:pending", z)
		}
		if _, err := pipe.Exec(ctx); err != nil {
			return err
		}
	}
	return parallel(ctx, len(workers), 8, func(ctx context.Context, i int) error {
		return cs.reg.RegisterWorker(ctx, workers[i])
	})
}

// parallel runs f(0..n-1) in conc goroutines and returns the first error.
func parallel(ctx context.Context, n, conc int, f func(ctx context.Context, i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, conc)
	for g := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(ctx, i); err != nil {
					errs[g] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// claimReport describes the claim section's data and method, with its
// figures.
type claimReport struct {
	Server        string   `json:"server"`
	RedisVersion  string   `json:"redis_version"`
	ServerNote    string   `json:"server_note"`
	Function      string   `json:"function"`
	Jobs          int      `json:"jobs"`
	Services      []string `json:"services"`
	WithReqs      float64  `json:"share_with_requirements"`
	Templates     []string `json:"requirement_templates"`
	Fleet         []fleet  `json:"fleet"`
	Window        int      `json:"window"`
	Workers       int      `json:"workers"`
	CapPerTurn    int      `json:"claims_per_turn_at_most"`
	Method        string   `json:"method"`
	Claim         []result `json:"claim"`
	Cycle         []result `json:"cycle"`
	LegacyCommand string   `json:"legacy_cycle_commands"`
	// Commands is, per contender, INFO commandstats over its turns, per
	// claim or cycle: where Redis spent its time.
	Commands map[string]map[string]cmdStat `json:"commandstats_per_op"`
	Profile  *claimProfile                 `json:"profile"`
}

// claimProfile splits the Redis time of a claim into a fixed part and a
// part per job looked at, from claims that match nothing (a worker of a
// service no job has) with windows of 1 and 100, made one at a time, as
// INFO commandstats times the FCALL or EVALSHA (wall time in Redis).
type claimProfile struct {
	Calls             int     `json:"calls_per_window"`
	FunctionFixedUs   float64 `json:"function_fixed_us"`
	FunctionFixedWarn float64 `json:"function_fixed_us_loglevel_warning"`
	FunctionPerJobUs  float64 `json:"function_per_job_us"`
	FunctionReadUs    float64 `json:"function_hgetall_us_per_job"`
	ScriptFixedUs     float64 `json:"claimjob_fixed_us"`
	ScriptPerJobUs    float64 `json:"claimjob_per_job_us"`
	ScriptReadUs      float64 `json:"claimjob_hmget_us_per_job"`
}

type fleet struct {
	Worker string  `json:"worker"`
	Share  float64 `json:"share_matched"`
}

// cmdStat is one command's calls and time per operation.
type cmdStat struct {
	Calls float64 `json:"calls"`
	Usec  float64 `json:"usec"`
}

// claim runs the claim section on a private redis-server.
func (b *bench) claim(ctx context.Context, rep *report) error {
	code, err := os.ReadFile(b.cfg.function)
	if err != nil {
		return err
	}
	priv, err := startPrivateRedis(ctx)
	if err != nil {
		return err
	}
	defer func() {
		priv.Stop()
		b.logf("claim: private redis-server on %s killed", priv.Addr)
	}()
	b.logf("claim: private redis-server %s on %s, started for this section (--save \"\" --appendonly no, loglevel notice)", priv.Version, priv.Addr)
	rdb := priv.rdb
	if err := rdb.FunctionLoad(ctx, string(code)).Err(); err != nil {
		return fmt.Errorf("FUNCTION LOAD %s: %w", b.cfg.function, err)
	}
	n, conc, capN := b.cfg.claimJobs, b.cfg.claimWorkers, b.cfg.claimCap
	reg, err := jobstore.New(rdb, jobstore.WithStage(jobstore.StageLegacy))
	if err != nil {
		return err
	}
	cs := &claimSetup{priv: priv, jobs: claimData(n, time.Now()), reg: reg}
	cr := &claimReport{
		Server: priv.Addr, RedisVersion: priv.Version, Function: b.cfg.function, Jobs: n,
		ServerNote: "a redis-server started by the benchmark for this section on a free loopback port " +
			"(--save \"\" --appendonly no, default loglevel notice, log to a temporary file) and killed at its end",
		Services: claimServices, Window: jobstore.DefaultClaimWindow, Workers: conc, CapPerTurn: capN,
		Method: "contenders take turns within each round; before each turn the database is emptied and refilled " +
			"with the same jobs and workers; a turn ends after --duration or --claim-cap claims; " +
			"claims/s counts matching claims (misses are listed apart)",
		LegacyCommand: "FCALL findMatchingJob 0 <caps> 100; PUBLISH worker_status (busy); HMSET job:<id> status completed_at; " +
			"HDEL jobs:active:<w>; HSET jobs:completed; EXPIRE jobs:completed 86400; PUBLISH complete_job; " +
			"HMSET worker:<w> idle; PUBLISH worker_status",
		Commands: map[string]map[string]cmdStat{},
	}
	withReqs := 0
	for _, j := range cs.jobs {
		if j.template >= 0 {
			withReqs++
		}
	}
	cr.WithReqs = float64(withReqs) / float64(n)
	for _, t := range reqTemplates {
		cr.Templates = append(cr.Templates, t.json)
	}
	for _, m := range claimFleet {
		k := 0
		for _, j := range cs.jobs {
			if j.matchedBy(m) {
				k++
			}
		}
		cr.Fleet = append(cr.Fleet, fleet{Worker: m.String(), Share: float64(k) / float64(n)})
	}

	off, err := jobstore.New(rdb, jobstore.WithStage(jobstore.StageLegacy))
	if err != nil {
		return err
	}
	on, err := jobstore.New(rdb, jobstore.WithStage(jobstore.StageDualWrite))
	if err != nil {
		return err
	}

	// Claims alone: each claim by a worker that holds nothing, as
	// workers claim, so a new registered worker id per claim; claim k is
	// made by the kind claimFleet[k % 10].
	pool := make([]jobstore.Capabilities, capN)
	for k := range pool {
		pool[k] = claimFleet[k%len(claimFleet)].caps("w-" + strconv.Itoa(k))
	}
	var seq atomic.Int64
	next := func() (int, error) {
		k := int(seq.Add(1) - 1)
		if k >= capN {
			return 0, errStop
		}
		return k, nil
	}
	// turnHooks refill the data and register workers before each turn,
	// and after it check the queue and add up the turn's commandstats.
	turnHooks := func(name string, workers []jobstore.Capabilities) (func(context.Context) error, func(context.Context, int64) error) {
		var before, sum map[string]cmdStat
		var ops int64
		return func(ctx context.Context) error {
				if err := cs.refill(ctx, workers); err != nil {
					return err
				}
				seq.Store(0)
				var err error
				before, err = commandStats(ctx, rdb)
				return err
			}, func(ctx context.Context, turnOps int64) error {
				after, err := commandStats(ctx, rdb)
				if err != nil {
					return err
				}
				sum = addStats(sum, before, after)
				ops += turnOps
				cr.Commands[name] = perOp(sum, ops)
				return checkPending(ctx, rdb, n, turnOps)
			}
	}
	claimContender := func(name string, op func(ctx context.Context, c jobstore.Capabilities) error) contender {
		setup, after := turnHooks(name, pool)
		return contender{name: name, setup: setup, after: after, op: func(ctx context.Context, _ int) error {
			k, err := next()
			if err != nil {
				return err
			}
			return op(ctx, pool[k])
		}}
	}
	jobstoreClaim := func(s *jobstore.Store) func(ctx context.Context, c jobstore.Capabilities) error {
		return func(ctx context.Context, c jobstore.Capabilities) error {
			_, err := s.ClaimJob(ctx, c)
			if errors.Is(err, jobstore.ErrNoJob) {
				return errMiss
			}
			return err
		}
	}
	// The function as a server with loglevel warning runs it: without
	// the four NOTICE lines it logs per call.
	quiet := claimContender("findMatchingJob (FCALL), loglevel warning", func(ctx context.Context, c jobstore.Capabilities) error {
		_, err := fcallClaim(ctx, rdb, c)
		return err
	})
	setup, after := quiet.setup, quiet.after
	quiet.setup = func(ctx context.Context) error {
		if err := setup(ctx); err != nil {
			return err
		}
		return rdb.ConfigSet(ctx, "loglevel", "warning").Err()
	}
	quiet.after = func(ctx context.Context, ops int64) error {
		if err := rdb.ConfigSet(ctx, "loglevel", "notice").Err(); err != nil {
			return err
		}
		return after(ctx, ops)
	}
	claimers := []contender{
		claimContender("findMatchingJob (FCALL)", func(ctx context.Context, c jobstore.Capabilities) error {
			_, err := fcallClaim(ctx, rdb, c)
			return err
		}),
		claimContender("ClaimJob, dual-write off", jobstoreClaim(off)),
		claimContender("ClaimJob, dual-write on", jobstoreClaim(on)),
		quiet,
	}
	b.logf("claim: %d jobs, %d workers, claims alone, %d rounds of %v or %d claims", n, conc, b.cfg.rounds, b.cfg.duration, capN)
	res, err := runRounds(ctx, rdb, claimers, conc, b.cfg.rounds, b.cfg.duration)
	if err != nil {
		return err
	}
	cr.Claim = res
	rep.ratio("claim_claimjob_off_over_function", res[1].PerSec, res[0].PerSec)
	rep.ratio("claim_claimjob_on_over_function", res[2].PerSec, res[0].PerSec)
	rep.ratio("claim_claimjob_off_over_function_loglevel_warning", res[1].PerSec, res[3].PerSec)

	// The cycle: one worker per goroutine, holding at most one job; cycle
	// k is made with the capabilities of the kind claimFleet[k % 10], so
	// that every kind claims as often whatever --claim-workers is.
	cyc := make([]jobstore.Capabilities, conc)
	cycKinds := make([][]jobstore.Capabilities, conc)
	for g := range cyc {
		w := "cw-" + strconv.Itoa(g)
		cyc[g] = claimFleet[g%len(claimFleet)].caps(w)
		for _, m := range claimFleet {
			cycKinds[g] = append(cycKinds[g], m.caps(w))
		}
	}
	result := json.RawMessage(`{"ok":true}`)
	cycleContender := func(name string, op func(ctx context.Context, c jobstore.Capabilities) error) contender {
		setup, after := turnHooks(name, cyc)
		return contender{name: name, setup: setup, after: after, op: func(ctx context.Context, g int) error {
			k, err := next()
			if err != nil {
				return err
			}
			return op(ctx, cycKinds[g][k%len(claimFleet)])
		}}
	}
	jobstoreCycle := func(s *jobstore.Store) func(ctx context.Context, c jobstore.Capabilities) error {
		return func(ctx context.Context, c jobstore.Capabilities) error {
			j, err := s.ClaimJob(ctx, c)
			if errors.Is(err, jobstore.ErrNoJob) {
				return errMiss
			}
			if err != nil {
				return err
			}
			return s.CompleteJob(ctx, j.ID, c.WorkerID, result)
		}
	}
	cyclers := []contender{
		cycleContender("legacy worker: FCALL + its commands", func(ctx context.Context, c jobstore.Capabilities) error {
			return legacyCycle(ctx, rdb, c, result, false)
		}),
		cycleContender("legacy, its commands pipelined", func(ctx context.Context, c jobstore.Capabilities) error {
			return legacyCycle(ctx, rdb, c, result, true)
		}),
		cycleContender("ClaimJob+CompleteJob, dual-write off", jobstoreCycle(off)),
		cycleContender("ClaimJob+CompleteJob, dual-write on", jobstoreCycle(on)),
	}
	b.logf("claim: the worker cycle, %d workers, %d rounds of %v or %d cycles", conc, b.cfg.rounds, b.cfg.duration, capN)
	res, err = runRounds(ctx, rdb, cyclers, conc, b.cfg.rounds, b.cfg.duration)
	if err != nil {
		return err
	}
	cr.Cycle = res
	if st := on.DualWriteStats(); st.Failed > 0 {
		return fmt.Errorf("%d dual-writes failed: %v", st.Failed, st.FailedByOp)
	}
	rep.ratio("cycle_dualwrite_over_legacy", res[3].PerSec, res[0].PerSec)
	rep.ratio("cycle_dualwrite_over_legacy_pipelined", res[3].PerSec, res[1].PerSec)
	rep.ratio("cycle_off_over_legacy", res[2].PerSec, res[0].PerSec)
	b.logf("claim: profile, claims that match nothing with windows of 1 and 100")
	if cr.Profile, err = profileClaim(ctx, cs, 200); err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	rep.Claim = cr

	v := rep.Ratios["claim_claimjob_off_over_function"]
	rep.target("matching claims/s, ClaimJob dual-write off / findMatchingJob", v, ">= 3", v >= 3)
	v = rep.Ratios["claim_claimjob_on_over_function"]
	rep.target("matching claims/s, ClaimJob dual-write on / findMatchingJob", v, ">= 3", v >= 3)
	v = rep.Ratios["cycle_dualwrite_over_legacy"]
	rep.target("worker cycle/s, dual-written ClaimJob+CompleteJob / legacy", v, ">= 1.5", v >= 1.5)
	return nil
}

// fcallClaim claims as the legacy worker does (workerRequestJob): its
// capabilities as JSON, FCALL findMatchingJob 0 <caps> 100, and the reply
// parsed. It returns the job's id, or errMiss.
func fcallClaim(ctx context.Context, rdb *redis.Client, c jobstore.Capabilities) (string, error) {
	js, err := json.Marshal(c)
	if err != nil {
		return "", err
	}
	v, err := rdb.FCall(ctx, "findMatchingJob", nil, string(js), "100").Text()
	if errors.Is(err, redis.Nil) {
		return "", errMiss
	}
	if err != nil {
		return "", err
	}
	var r struct {
		JobID string            `json:"jobId"`
		Job   map[string]string `json:"job"`
	}
	if err := json.Unmarshal([]byte(v), &r); err != nil || r.JobID == "" || r.Job == nil {
		return "", fmt.Errorf("findMatchingJob returned %.200q (%v)", v, err)
	}
	return r.JobID, nil
}

// legacyCycle is the legacy worker's cycle: the claim (FCALL, then PUBLISH
// worker_status busy, as workerRequestJob does) and the completion
// commands of workerCompleteJob and workerUpdateStatus, each its own
// round trip as the worker awaits them, or, with pipelined, the completion
// in one pipeline (a best case the legacy worker does not reach).
func legacyCycle(ctx context.Context, rdb *redis.Client, c jobstore.Capabilities, result json.RawMessage, pipelined bool) error {
	w := c.WorkerID
	id, err := fcallClaim(ctx, rdb, c)
	if err != nil {
		return err
	}
	now := time.Now()
	iso, ms := now.UTC().Format("2006-01-02T15:04:05.000Z"), now.UnixMilli()
	busy := fmt.Sprintf(`{"worker_id":%q,"old_status":"idle","new_status":"busy","current_job_id":%q,"timestamp":%d}`, w, id, ms)
	completed := fmt.Sprintf(`{"success":true,"data":%s,"completed_at":%q}`, result, iso)
	msg := fmt.Sprintf(`{"job_id":%q,"worker_id":%q,"status":"completed","result":%s,"timestamp":%d}`, id, w, result, ms)
	idle := fmt.Sprintf(`{"worker_id":%q,"new_status":"idle","timestamp":%d}`, w, ms)
	cmds := func(ctx context.Context, r redis.Cmdable) []redis.Cmder {
		return []redis.Cmder{
			r.Publish(ctx, "worker_status", busy),
			r.HMSet(ctx, "job:"+id, "status", "completed", "completed_at", iso),
			r.HDel(ctx, "jobs:active:"+w, id),
			r.HSet(ctx, "jobs:completed", id, completed),
			r.Expire(ctx, "jobs:completed", 24*time.Hour),
			r.Publish(ctx, "complete_job", msg),
			r.HMSet(ctx, "worker:"+w, "status", "idle", "last_status_change", iso, "current_job_id", ""),
			r.Publish(ctx, "worker_status", idle),
		}
	}
	if pipelined {
		_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error { cmds(ctx, p); return nil })
		return err
	}
	return errors.Join(cmdErrs(cmds(ctx, rdb))...) // each command sent when made
}

func cmdErrs(cs []redis.Cmder) []error {
	var errs []error
	for _, c := range cs {
		if err := c.Err(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", c.Name(), err))
		}
	}
	return errs
}

// checkPending makes sure a turn claimed what it says: n jobs less the
// turn's claims are left pending.
func checkPending(ctx context.Context, rdb *redis.Client, n int, claimed int64) error {
	left, err := rdb.ZCard(ctx, "jobs:pending").Result()
	if err != nil {
		return err
	}
	if left != int64(n)-claimed {
		return fmt.Errorf("%d jobs pending after %d claims of %d", left, claimed, n)
	}
	return nil
}

// commandStats reads INFO commandstats: command → calls and usec.
func commandStats(ctx context.Context, rdb *redis.Client) (map[string]cmdStat, error) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return nil, err
	}
	m := map[string]cmdStat{}
	for _, line := range strings.Split(info, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":")
		name, found := strings.CutPrefix(name, "cmdstat_")
		if !ok || !found {
			continue
		}
		var s cmdStat
		for _, kv := range strings.Split(rest, ",") {
			k, v, _ := strings.Cut(kv, "=")
			f, _ := strconv.ParseFloat(v, 64)
			switch k {
			case "calls":
				s.Calls = f
			case "usec":
				s.Usec = f
			}
		}
		m[name] = s
	}
	return m, nil
}

// addStats adds after-before to sum, leaving out the INFO calls that
// measure.
func addStats(sum, before, after map[string]cmdStat) map[string]cmdStat {
	if sum == nil {
		sum = map[string]cmdStat{}
	}
	for k, a := range after {
		if k == "info" {
			continue
		}
		d := cmdStat{Calls: a.Calls - before[k].Calls, Usec: a.Usec - before[k].Usec}
		if d.Calls > 0 {
			s := sum[k]
			sum[k] = cmdStat{Calls: s.Calls + d.Calls, Usec: s.Usec + d.Usec}
		}
	}
	return sum
}

// perOp divides the stats by the op count.
func perOp(sum map[string]cmdStat, ops int64) map[string]cmdStat {
	out := make(map[string]cmdStat, len(sum))
	for k, s := range sum {
		out[k] = cmdStat{Calls: ratio(s.Calls, float64(ops)), Usec: ratio(s.Usec, float64(ops))}
	}
	return out
}

// profileClaim fills a claimProfile with calls claims per window and kind.
func profileClaim(ctx context.Context, cs *claimSetup, calls int) (*claimProfile, error) {
	rdb := cs.priv.rdb
	nobody := jobstore.Capabilities{WorkerID: "nobody", Services: []string{"no-such-service"}}
	if err := cs.refill(ctx, []jobstore.Capabilities{nobody}); err != nil {
		return nil, err
	}
	js, err := json.Marshal(nobody)
	if err != nil {
		return nil, err
	}
	// timed runs f calls times and returns the usec per call of cmd and
	// of read, the command that reads each job.
	timed := func(cmd, read string, f func() error) (float64, float64, error) {
		before, err := commandStats(ctx, rdb)
		if err != nil {
			return 0, 0, err
		}
		for range calls {
			if err := f(); err != nil {
				return 0, 0, err
			}
		}
		after, err := commandStats(ctx, rdb)
		if err != nil {
			return 0, 0, err
		}
		st := perOp(addStats(nil, before, after), int64(calls))
		return st[cmd].Usec, st[read].Usec, nil
	}
	fcall := func(window int) func() error {
		return func() error {
			err := rdb.FCall(ctx, "findMatchingJob", nil, string(js), strconv.Itoa(window)).Err()
			if errors.Is(err, redis.Nil) {
				return nil
			}
			if err == nil {
				err = errors.New("findMatchingJob claimed a job for a service no job has")
			}
			return err
		}
	}
	claim := func(window int) (func() error, error) {
		s, err := jobstore.New(rdb, jobstore.WithStage(jobstore.StageLegacy), jobstore.WithClaimWindow(window))
		if err != nil {
			return nil, err
		}
		return func() error {
			_, err := s.ClaimJob(ctx, nobody)
			if errors.Is(err, jobstore.ErrNoJob) {
				return nil
			}
			if err == nil {
				err = errors.New("ClaimJob claimed a job for a service no job has")
			}
			return err
		}, nil
	}
	p := &claimProfile{Calls: calls}
	var f1, f100, r1, r100 float64
	if f1, r1, err = timed("fcall", "hgetall", fcall(1)); err != nil {
		return nil, err
	}
	if f100, r100, err = timed("fcall", "hgetall", fcall(100)); err != nil {
		return nil, err
	}
	p.FunctionFixedUs, p.FunctionPerJobUs, p.FunctionReadUs = f1-(f100-f1)/99, (f100-f1)/99, (r100-r1)/99
	if err := rdb.ConfigSet(ctx, "loglevel", "warning").Err(); err != nil {
		return nil, err
	}
	w1, _, err := timed("fcall", "hgetall", fcall(1))
	if err != nil {
		return nil, err
	}
	if err := rdb.ConfigSet(ctx, "loglevel", "notice").Err(); err != nil {
		return nil, err
	}
	p.FunctionFixedWarn = w1 - p.FunctionPerJobUs
	c1, err := claim(1)
	if err != nil {
		return nil, err
	}
	c100, err := claim(100)
	if err != nil {
		return nil, err
	}
	if f1, r1, err = timed("evalsha", "hmget", c1); err != nil {
		return nil, err
	}
	if f100, r100, err = timed("evalsha", "hmget", c100); err != nil {
		return nil, err
	}
	p.ScriptFixedUs, p.ScriptPerJobUs, p.ScriptReadUs = f1-(f100-f1)/99, (f100-f1)/99, (r100-r1)/99
	return p, nil
}
