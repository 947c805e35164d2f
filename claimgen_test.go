package jobstore

// The generator of TestClaimDifferential (claimdiff_test.go): random
// Redis states and worker capabilities, drawn so that every rule of the
// legacy claim function findMatchingJob gets exercised, including its
// quirks and the inputs on which it raises a Lua error.
//
// A case is plain data (claimCase) that serializes to JSON, so that a
// failing case can be printed, minimized and kept under testdata/claimdiff
// as a regression case.

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"
)

// claimCase is one differential case: the state both databases are
// seeded with, and the worker that claims.
type claimCase struct {
	Name string `json:"name,omitempty"`
	// Why says what the case exercises (regression cases) or, for a
	// generated case, its scenario.
	Why  string   `json:"why,omitempty"`
	Caps capsSpec `json:"caps"`
	// Pending is jobs:pending; Keys are the other keys (records first).
	Pending []pendingEntry `json:"pending"`
	Keys    []seedKey      `json:"keys"`
}

// capsSpec is Capabilities as data: Extra's values are JSON values
// (string, float64, bool, nil, []any, map[string]any), so that a case
// read back from JSON is the case that was written.
type capsSpec struct {
	WorkerID       string              `json:"worker_id"`
	Services       []string            `json:"services"`
	Hardware       *Hardware           `json:"hardware,omitempty"`
	Models         map[string][]string `json:"models,omitempty"`
	CustomerAccess *CustomerAccess     `json:"customer_access,omitempty"`
	WorkflowID     string              `json:"workflow_id,omitempty"`
	Extra          map[string]any      `json:"extra,omitempty"`
}

func (c capsSpec) capabilities() Capabilities {
	return Capabilities{
		WorkerID: c.WorkerID, Services: slices.Clone(c.Services), Hardware: c.Hardware,
		Models: c.Models, CustomerAccess: c.CustomerAccess, WorkflowID: c.WorkflowID, Extra: c.Extra,
	}
}

type pendingEntry struct {
	ID    string  `json:"id"`
	Score float64 `json:"score"`
}

// seedKey is one key of the seeded state: a hash (fields in the order
// they are written), a string, or a stream.
type seedKey struct {
	Key    string        `json:"key"`
	Hash   [][2]string   `json:"hash,omitempty"`
	String *string       `json:"string,omitempty"`
	Stream []streamEntry `json:"stream,omitempty"`
}

type streamEntry struct {
	ID     string      `json:"id"`
	Fields [][2]string `json:"fields"`
}

func (c *claimCase) key(name string) *seedKey {
	for i := range c.Keys {
		if c.Keys[i].Key == name {
			return &c.Keys[i]
		}
	}
	return nil
}

// keyIndex maps each key name to its seedKey.
func (c *claimCase) keyIndex() map[string]*seedKey {
	m := make(map[string]*seedKey, len(c.Keys))
	for i := range c.Keys {
		m[c.Keys[i].Key] = &c.Keys[i]
	}
	return m
}

func (c *claimCase) clone() claimCase {
	b, err := json.Marshal(c)
	if err != nil {
		panic(err)
	}
	return decodeClaimCase(b)
}

func decodeClaimCase(b []byte) claimCase {
	var out claimCase
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&out); err != nil {
		panic(fmt.Sprintf("claim case: %v", err))
	}
	return out
}

// ---------------------------------------------------------------- JSON

// jobj is a JSON object whose keys keep their order: the order decides
// the order cjson inserts them into a Lua table, hence the order in which
// pairs() visits them, and with it which of two failing requirements
// findMatchingJob meets first.
type jobj []jkv

type jkv struct {
	K string
	V any
}

// jraw is JSON text written as it is (also text that is not JSON).
type jraw string

func encodeJSON(v any) string {
	var b strings.Builder
	writeJSON(&b, v)
	return b.String()
}

func writeJSON(b *strings.Builder, v any) {
	switch x := v.(type) {
	case jobj:
		b.WriteByte('{')
		for i, kv := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSON(b, kv.K)
			b.WriteByte(':')
			writeJSON(b, kv.V)
		}
		b.WriteByte('}')
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteByte(',')
			}
			writeJSON(b, e)
		}
		b.WriteByte(']')
	case map[string]any:
		keys := slices.Sorted(func(yield func(string) bool) {
			for k := range x {
				if !yield(k) {
					return
				}
			}
		})
		o := make(jobj, 0, len(keys))
		for _, k := range keys {
			o = append(o, jkv{k, x[k]})
		}
		writeJSON(b, o)
	case jraw:
		b.WriteString(string(x))
	default:
		j, err := json.Marshal(x)
		if err != nil {
			panic(err)
		}
		b.Write(j)
	}
}

// ---------------------------------------------------------------- generator

// claimGen draws one case from its own random source, so that a case
// depends only on the run's seed and its index.
type claimGen struct {
	r        *rand.Rand
	services []string       // the case's services, 3 to 6
	caps     capsSpec       // the worker
	capsMap  map[string]any // the worker's capabilities as findMatchingJob decodes them
	keys     []string       // customKeys, once per case
	base     time.Time
	ids      map[string]bool
}

var (
	genServices  = []string{"comfyui", "openai", "a1111", "simulation", "ollama", "flux", "whisper", "sdxl", "svc/ü"}
	genCustomers = []string{"cust-a", "cust-b", "cust-c", "cust-d"}
	genWorkflows = []string{"wf-1", "wf-2", "wf-3"}
	genModels    = []string{"sdxl-base", "sd15", "flux-dev", "llama3", "whisper-large", "gpt-4o", "controlnet"}
	genPayloads  = []string{
		`{}`,
		`{"prompt":"a cat / a dog","steps":20}`,
		`{"prompt":"naïve \"quoted\" back\\slash","n":1}`,
		`{"list":[1,2.5,"x",true,null],"nested":{"k":null,"e":{}}}`,
		`{"emoji":"🙂","ctl":"\u0001\t","url":"https://example.com/a?b=c&d=<e>"}`,
		// Long enough (over 64 bytes) that Redis keeps the record in a hash table
		// rather than a listpack, whose field order HGETALL returns differently.
		`{"prompt":"` + strings.Repeat("a long prompt, ", 8) + `","seed":42,"cfg":7.5,"sampler":"euler_a"}`,
		`{"workflow":{"1":{"class_type":"KSampler","inputs":{"seed":1234567890123,"steps":30,"cfg":6.5}},"2":{"class_type":"SaveImage"}}}`,
	}
)

// genClaimCase draws case i of the run with the given seed. errorCase
// asks for jobs on which findMatchingJob raises a Lua error.
func genClaimCase(seed uint64, i int) claimCase {
	r := rand.New(rand.NewPCG(seed, uint64(i)))
	g := &claimGen{r: r, base: time.Date(2025, 9, 30, 12, 0, 0, 0, time.UTC), ids: map[string]bool{}}
	errorCase := r.IntN(10) == 0
	return g.gen(errorCase)
}

func (g *claimGen) chance(p float64) bool { return g.r.Float64() < p }

func pick[T any](g *claimGen, xs []T) T { return xs[g.r.IntN(len(xs))] }

// subset returns each element of xs with probability p, in order.
func subset[T any](g *claimGen, xs []T, p float64) []T {
	var out []T
	for _, x := range xs {
		if g.chance(p) {
			out = append(out, x)
		}
	}
	return out
}

func (g *claimGen) hex(n int) string {
	const digits = "0123456789abcdef"
	b := make([]byte, n)
	for i := range b {
		b[i] = digits[g.r.IntN(16)]
	}
	return string(b)
}

func (g *claimGen) gen(errorCase bool) claimCase {
	r := g.r
	all := slices.Clone(genServices)
	r.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
	g.services = all[:3+r.IntN(4)]
	g.caps = g.genCaps()
	capsJSON, err := json.Marshal(g.caps.capabilities())
	if err != nil {
		panic(err)
	}
	if err := json.Unmarshal(capsJSON, &g.capsMap); err != nil {
		panic(err)
	}

	c := claimCase{Caps: g.caps}
	// Queue length: empty, short, under the window, or past it.
	var n int
	switch x := r.IntN(20); {
	case x == 0:
		n = 0
	case x < 6:
		n = 1 + r.IntN(20)
	case x < 12:
		n = 21 + r.IntN(79)
	default:
		n = 100 + r.IntN(51)
	}
	// How often a job is for one of the worker's services, and how often
	// its requirements are drawn to fit the worker: spread over cases, so
	// that the first match lies anywhere from the top to past the window.
	pService := pick(g, []float64{0.05, 0.15, 0.4, 0.8})
	pFit := pick(g, []float64{0.1, 0.3, 0.6, 0.9})
	// "deep": the window holds nothing the worker runs; only jobs below
	// it do (the worker starves at window 100).
	deep := n > 100 && len(g.caps.Services) < len(g.services) && g.chance(0.15)
	c.Why = fmt.Sprintf("n=%d pService=%.2f pFit=%.2f deep=%v errors=%v", n, pService, pFit, deep, errorCase)

	type job struct {
		id     string
		score  float64
		key    seedKey
		record bool
	}
	jobs := make([]job, 0, n)
	for k := 0; k < n; k++ {
		id := g.newID()
		fields, score := g.genRecord(id, pService, pFit)
		jobs = append(jobs, job{id: id, score: score, key: seedKey{Key: "job:" + id, Hash: fields}, record: true})
	}
	// Order by claim order (score, then member, both descending), as
	// ZREVRANGE does, to place jobs by position.
	slices.SortFunc(jobs, func(a, b job) int {
		if a.score != b.score {
			if a.score > b.score {
				return -1
			}
			return 1
		}
		return -strings.Compare(a.id, b.id)
	})
	if deep {
		for k := 0; k < 100 && k < len(jobs); k++ {
			setField(&jobs[k].key, "service_required", pick(g, g.othersServices()))
		}
	} else if n > 0 && len(g.othersServices()) > 0 && g.chance(0.3) {
		// The first job of the worker's services anywhere, often deep in
		// the window or just past it.
		target := g.r.IntN(min(n, 120))
		for k := 0; k < target; k++ {
			setField(&jobs[k].key, "service_required", pick(g, g.othersServices()))
		}
		setField(&jobs[target].key, "service_required", pick(g, g.caps.Services))
		c.Why += fmt.Sprintf(" target=%d", target)
	}
	if errorCase && len(jobs) > 0 {
		for range 1 + g.r.IntN(3) {
			// Mostly near the top, where the scan meets them before a match.
			k := g.r.IntN(min(len(jobs), 100))
			if g.chance(0.6) {
				k = g.r.IntN(min(len(jobs), 4))
			}
			jobs[k].key = g.errorRecord(jobs[k].id, jobs[k].key)
		}
	}
	for k := range jobs {
		// A few ids in pending have no record: findMatchingJob passes
		// over them.
		if g.chance(0.03) {
			jobs[k].record = false
		}
	}
	for _, j := range jobs {
		c.Pending = append(c.Pending, pendingEntry{ID: j.id, Score: j.score})
		if j.record {
			c.Keys = append(c.Keys, j.key)
		}
	}
	g.genOtherKeys(&c, capsJSON)
	return c
}

// othersServices are the case's services the worker does not run.
func (g *claimGen) othersServices() []string {
	return slices.DeleteFunc(slices.Clone(g.services), func(s string) bool { return slices.Contains(g.caps.Services, s) })
}

func (g *claimGen) newID() string {
	for {
		var id string
		if g.chance(0.5) {
			id = g.hex(8) + "-" + g.hex(4) + "-4" + g.hex(3) + "-a" + g.hex(3) + "-" + g.hex(12)
		} else {
			id = "job-" + strconv.Itoa(g.r.IntN(100000))
		}
		if !g.ids[id] {
			g.ids[id] = true
			return id
		}
	}
}

func setField(k *seedKey, name, value string) {
	for i := range k.Hash {
		if k.Hash[i][0] == name {
			k.Hash[i][1] = value
			return
		}
	}
	k.Hash = append(k.Hash, [2]string{name, value})
}

// genCaps draws a worker.
func (g *claimGen) genCaps() capsSpec {
	c := capsSpec{WorkerID: pick(g, []string{"w1", "worker-7", "gpu-box-01.a", "w-" + g.hex(6), "wörker-ü", "<w&1>"})}
	c.Services = subset(g, g.services, 0.5)
	if len(c.Services) == 0 || g.chance(0.1) {
		c.Services = append(c.Services, pick(g, g.services))
	}
	if g.chance(0.1) {
		c.Services = append(c.Services, "not-a-service-of-this-queue")
	}
	if g.chance(0.7) {
		hw := &Hardware{
			GPUMemoryGB: pick(g, []float64{0, 8, 16, 24, 24, 48, 80, 12.5}),
			CPUCores:    pick(g, []float64{0, 4, 8, 16, 32}),
			RAMGB:       pick(g, []float64{0, 16, 32, 64, 128}),
		}
		if g.chance(0.5) {
			hw.GPUModel = pick(g, []string{"rtx4090", "a100", "h100"})
		}
		c.Hardware = hw
	}
	if g.chance(0.6) {
		c.Models = map[string][]string{}
		for _, s := range subset(g, g.services, 0.6) {
			switch {
			case g.chance(0.1):
				c.Models[s] = nil // JSON null: findMatchingJob then refuses model requirements
			case g.chance(0.1):
				c.Models[s] = []string{}
			default:
				c.Models[s] = subset(g, genModels, 0.4)
			}
		}
	}
	if g.chance(0.5) {
		ca := &CustomerAccess{Isolation: pick(g, []string{"", "strict", "strict", "none", "loose"})}
		if g.chance(0.5) {
			ca.AllowedCustomers = subset(g, genCustomers, 0.5)
		}
		if g.chance(0.4) {
			ca.DeniedCustomers = subset(g, genCustomers, 0.3)
		}
		c.CustomerAccess = ca
	}
	if g.chance(0.15) {
		c.WorkflowID = pick(g, genWorkflows)
	}
	// Custom capabilities.
	extra := map[string]any{}
	cands := []func(){
		func() { extra["region"] = pick(g, []string{"eu", "us", "ap"}) },
		func() { extra["has_cuda"] = g.chance(0.5) },
		func() { extra["vram"] = pick(g, []float64{8, 12, 16, 24, 48, 0.5, -1}) },
		func() {
			extra["features"] = anyStrings(subset(g, []string{"upscale", "inpaint", "video", "lora"}, 0.6))
		},
		func() {
			extra["gpu"] = map[string]any{"vendor": pick(g, []string{"nvidia", "amd"}), "count": pick(g, []float64{1, 2, 4}),
				"arch": pick(g, []string{"ampere", "hopper"}), "flags": anyStrings(subset(g, []string{"fp8", "nvlink"}, 0.5))}
		},
		func() {
			extra["a"] = map[string]any{"b": pick(g, []string{"c", "d"}), "n": pick(g, []float64{1, 3, 5})}
		},
		func() { extra["tags"] = []any{1.0, 2.0, 3.0} },
		func() { extra["tier"] = pick(g, []string{"gold", "silver"}) },
		func() { extra["version"] = pick(g, []float64{2.5, 3}) },
		func() { extra["nulled"] = nil },
		func() { extra["empty_obj"] = map[string]any{} },
		func() { extra["empty_list"] = []any{} },
		func() { extra["1"] = "x" },
		func() { extra["hardware.gpu_model"] = "a dotted name no lookup reaches" },
		// The quirk: a job whose requirements are only negative ones is
		// matched by its top-level keys, so it needs a worker with a
		// negative_requirements capability.
		func() {
			extra["negative_requirements"] = pick(g, []any{
				map[string]any{"region": "cn"}, map[string]any{}, "none",
				map[string]any{"hardware": map[string]any{"gpu_memory_gb": 1.0}},
			})
		},
		func() { extra["positive_requirements"] = map[string]any{"tier": "gold"} },
	}
	for _, f := range cands {
		if g.chance(0.3) {
			f()
		}
	}
	if len(extra) > 0 {
		c.Extra = extra
	}
	return c
}

func anyStrings(xs []string) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

// genRecord draws a record as the legacy API's submitJob writes it: 20
// string fields, empty for absent ones, and its score in jobs:pending.
func (g *claimGen) genRecord(id string, pService, pFit float64) ([][2]string, float64) {
	service := pick(g, g.caps.Services)
	if !g.chance(pService) {
		if others := g.othersServices(); len(others) > 0 {
			service = pick(g, others)
		}
	}
	priority := pick(g, []int{10, 25, 50, 50, 50, 75, 90, 100})
	created := g.base.Add(time.Duration(g.r.IntN(3600*24)) * time.Second).Add(time.Duration(g.r.IntN(1000)) * time.Millisecond)
	if g.chance(0.3) {
		created = g.base // many jobs in one second: ties in score
	}
	customer := ""
	if g.chance(0.5) {
		customer = pick(g, genCustomers)
	}
	var wf, wfPri, wfDT, step, total, wfTrace, wfSpan string
	effPri, effMs := priority, created.UnixMilli()
	if g.chance(0.3) || (g.caps.WorkflowID != "" && g.chance(0.5)) {
		wf = pick(g, genWorkflows)
		if g.caps.WorkflowID != "" && g.chance(0.5) {
			wf = g.caps.WorkflowID
		}
		p := pick(g, []int{20, 50, 80})
		wfPri = strconv.Itoa(p)
		ms := g.base.Add(-time.Duration(g.r.IntN(600)) * time.Second).UnixMilli()
		wfDT = strconv.FormatInt(ms, 10)
		effPri, effMs = p, ms
		total = strconv.Itoa(1 + g.r.IntN(5))
		step = strconv.Itoa(1 + g.r.IntN(5))
		wfTrace, wfSpan = g.hex(32), g.hex(16)
	}
	fit := g.chance(pFit)
	req := g.genRequirements(fit, service, customer)
	ctx := ""
	if g.chance(0.2) {
		ctx = `{"workflow_context":{"retry_attempt":0},"storage":{"bucket":"b/1"}}`
	}
	status := "pending"
	if g.chance(0.02) {
		status = pick(g, []string{"assigned", "in_progress", ""})
	}
	fields := [][2]string{
		{"id", id},
		{"service_required", service},
		{"priority", strconv.Itoa(priority)},
		{"payload", pick(g, genPayloads)},
		{"requirements", req},
		{"customer_id", customer},
		{"created_at", created.Format("2006-01-02T15:04:05.000Z")},
		{"status", status},
		{"retry_count", pick(g, []string{"0", "0", "1"})},
		{"max_retries", "3"},
		{"workflow_id", wf},
		{"workflow_priority", wfPri},
		{"workflow_datetime", wfDT},
		{"current_step", step},
		{"total_steps", total},
		{"job_trace_id", g.hex(32)},
		{"job_span_id", g.hex(16)},
		{"workflow_trace_id", wfTrace},
		{"workflow_span_id", wfSpan},
		{"ctx", ctx},
	}
	// Rarely, records the API would not write: without service_required
	// (findMatchingJob then skips the service check), or without the
	// matching fields at all.
	if g.chance(0.02) {
		fields = slices.DeleteFunc(fields, func(f [2]string) bool { return f[0] == "service_required" })
	}
	if g.chance(0.01) {
		fields = slices.DeleteFunc(fields, func(f [2]string) bool {
			return f[0] == "service_required" || f[0] == "requirements" || f[0] == "workflow_id" || f[0] == "customer_id"
		})
	}
	score := float64(effPri)*1e15 - math.Floor(float64(effMs)/1000)
	return fields, score
}

// workerValue returns what findMatchingJob's get_nested_value finds at a
// dotted path of the worker's capabilities, and whether it finds any.
func (g *claimGen) workerValue(path string) (any, bool) {
	var v any = g.capsMap
	for _, part := range strings.Split(path, ".") {
		if part == "" {
			continue
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false // a list: t["1"] is nil in Lua, as keys of arrays are numbers
		}
		x, ok := m[part]
		if !ok {
			return nil, false
		}
		v = x
	}
	return v, true
}

// customKeys are the names custom requirements use: the worker's own
// capabilities, dotted paths into them, names it lacks, and odd ones.
func (g *claimGen) customKeys() []string {
	if g.keys != nil {
		return g.keys
	}
	keys := []string{"zone", "nope.deep", "a.b.c", "", ".", "a..b", "worker_id", "workflow_id",
		"job_service_required_map", "hardware.gpu_model", "hardware.gpu_memory_gb", "hardware.cpu_cores",
		"customer_access.isolation", "customer_access.allowed_customers", "gpu.vendor", "gpu.count", "gpu.flags",
		"a.b", "a.n", "1", "models", "hardware"}
	for k := range g.capsMap {
		keys = append(keys, k)
	}
	for _, s := range g.services {
		keys = append(keys, "models."+s)
	}
	slices.Sort(keys)
	g.keys = slices.Compact(keys)
	return g.keys
}

// need draws a required value for a capability whose worker value is
// have (absent when !ok): fitting it when fit, else anything.
func (g *claimGen) need(have any, ok, fit bool) any {
	if !ok {
		return g.anyValue()
	}
	switch h := have.(type) {
	case string:
		switch {
		case fit || g.chance(0.3):
			return h
		case g.chance(0.3):
			return []any{h}
		case g.chance(0.3):
			return 1.0
		}
		return h + "-other"
	case bool:
		if fit || g.chance(0.3) {
			return h
		}
		return !h
	case float64:
		if fit {
			return pick(g, []float64{h, h - 1, h / 2, math.Floor(h)})
		}
		return pick(g, []any{h + 1, h * 2, strconv.FormatFloat(h, 'f', -1, 64), h, []any{h}})
	case []any:
		switch {
		case len(h) == 0 || (!fit && g.chance(0.2)):
			if g.chance(0.5) {
				return []any{}
			}
			return []any{"zzz"}
		case fit && g.chance(0.4):
			return pick(g, h) // a single value, contained in the worker's list
		case fit:
			return subsetAny(g, h)
		}
		return append(subsetAny(g, h), pick(g, []any{"zzz", 9.0, true}))
	case map[string]any:
		if len(h) == 0 {
			return pick(g, []any{jobj{}, []any{}, jobj{{"k", "v"}}})
		}
		o := jobj{}
		for _, k := range slices.Sorted(mapKeys(h)) {
			if g.chance(0.6) {
				sub := h[k]
				if _, nested := sub.(map[string]any); nested && g.chance(0.7) {
					continue // a nested object compares by identity: never equal
				}
				o = append(o, jkv{k, g.need(sub, true, fit)})
			}
		}
		if !fit && g.chance(0.5) {
			o = append(o, jkv{"missing_" + g.hex(2), "x"})
		}
		g.r.Shuffle(len(o), func(i, j int) { o[i], o[j] = o[j], o[i] })
		return o
	case nil:
		if fit || g.chance(0.5) {
			return nil
		}
		return "x"
	}
	return g.anyValue()
}

func mapKeys(m map[string]any) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func subsetAny(g *claimGen, xs []any) []any {
	out := subset(g, xs, 0.6)
	if out == nil {
		out = []any{}
	}
	g.r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	return out
}

func (g *claimGen) anyValue() any {
	return pick(g, []any{"eu", "x", 1.0, 0.0, 16.0, true, false, nil, []any{"a"}, []any{}, jobj{}, jobj{{"vendor", "nvidia"}}})
}

// hwNeed draws a hardware minimum for a worker amount: 'all', a number
// at or under it (fit), or over it, or the worker's amount missing.
func (g *claimGen) hwNeed(name string, fit bool) any {
	if g.chance(0.15) {
		return "all"
	}
	have, ok := g.workerValue("hardware." + name)
	h, _ := have.(float64)
	switch {
	case !ok && fit:
		return pick(g, []any{"all", 0.0}) // 0 still needs the worker to state an amount
	case !ok:
		return pick(g, []float64{1, 8, 16})
	case fit:
		return pick(g, []float64{h, h / 2, 1})
	}
	return pick(g, []float64{h + 1, h * 2, 1000})
}

// genRequirements draws a job's requirements JSON (empty for none).
func (g *claimGen) genRequirements(fit bool, service, customer string) string {
	switch x := g.r.IntN(100); {
	case x < 15:
		return ""
	case x < 25:
		return pick(g, []string{
			"{", `{"hardware":`, "not json", "{'a':1}", "[1,2,", "   ", // invalid: no requirements
			"{}", "[]", `{"positive_requirements":{}}`, `{"negative_requirements":[]}`, `{"positive_requirements":[]}`,
			`{"hardware":{}}`, `{"models":[]}`, `{"models":{}}`, `{"hardware":"x"}`, `{"hardware":[1,2]}`,
			`{"positive_requirements":false}`, `{"customer_isolation":false}`, `{"models":"sdxl-base"}`,
			`[1,2]`, `["region"]`, `["x"]`, `{"service_type":"other","hardware":{"gpu_memory_gb":"all"}}`,
			`{"positive_requirements":{"hardware":{"cpu_cores":"all","ram_gb":"all"}},"negative_requirements":{}}`,
			`{"":"x"}`, `{".":{"worker_id":"w1"}}`, `{"hardware.gpu_model":"a100"}`,
		})
	case x < 60:
		o := jobj{}
		if g.chance(0.85) {
			o = append(o, jkv{"positive_requirements", g.positives(fit, service, customer)})
		}
		if g.chance(0.6) {
			o = append(o, jkv{"negative_requirements", g.negatives(fit)})
		}
		if g.chance(0.3) {
			g.r.Shuffle(len(o), func(i, j int) { o[i], o[j] = o[j], o[i] })
		}
		return encodeJSON(o)
	case x < 92:
		return encodeJSON(g.positives(fit, service, customer))
	default:
		// The quirk: only negative requirements, which findMatchingJob
		// also reads as a positive one named negative_requirements.
		if have, ok := g.workerValue("negative_requirements"); ok && fit {
			// What the worker's negative_requirements capability satisfies.
			return encodeJSON(jobj{{"negative_requirements", g.need(have, true, true)}})
		}
		return encodeJSON(jobj{{"negative_requirements", g.negatives(fit)}})
	}
}

func (g *claimGen) positives(fit bool, service, customer string) jobj {
	var o jobj
	if g.chance(0.35) {
		hw := jobj{}
		for _, name := range []string{"gpu_memory_gb", "cpu_cores", "ram_gb"} {
			if g.chance(0.5) {
				hw = append(hw, jkv{name, g.hwNeed(name, fit || g.chance(0.5))})
			}
		}
		o = append(o, jkv{"hardware", hw})
	}
	if g.chance(0.25) {
		iso := pick(g, []any{"strict", "strict", "none", "loose", true})
		if fit {
			ca, _ := g.workerValue("customer_access")
			if m, _ := ca.(map[string]any); m == nil || m["isolation"] != "strict" {
				iso = "none"
			}
		}
		o = append(o, jkv{"customer_isolation", iso})
	}
	if g.chance(0.3) {
		var models any
		have, _ := g.workerValue("models." + service)
		hl, _ := have.([]any)
		switch {
		case g.chance(0.2):
			models = "all"
		case fit && len(hl) > 0:
			models = subsetAny(g, hl)
		case fit:
			models = pick(g, []any{"all", []any{}, jobj{{"x", 1.0}}, 3.0})
		default:
			models = append(subsetAny(g, hl), pick(g, anyStrings(genModels)))
		}
		o = append(o, jkv{"models", models})
	}
	if g.chance(0.05) {
		o = append(o, jkv{"service_type", pick(g, []any{"other", 5.0, jobj{}})})
	}
	keys := g.customKeys()
	var own []string // the names the worker has a value for
	for _, k := range keys {
		if _, ok := g.workerValue(k); ok && k != "" && k != "." {
			own = append(own, k)
		}
	}
	for range g.r.IntN(4) {
		k := pick(g, keys)
		if fit && len(own) > 0 && g.chance(0.8) {
			k = pick(g, own)
		}
		if k == "hardware" || k == "models" || k == "customer_isolation" || k == "service_type" || k == "positive_requirements" || k == "negative_requirements" {
			continue
		}
		have, ok := g.workerValue(k)
		if k == "" || k == "." {
			have, ok = g.capsMap, true
		}
		f := fit || g.chance(0.3)
		o = append(o, jkv{k, g.need(have, ok, f)})
	}
	if o == nil {
		o = jobj{}
	}
	return o
}

func (g *claimGen) negatives(fit bool) jobj {
	var o jobj
	if g.chance(0.35) {
		hw := jobj{}
		for _, name := range []string{"gpu_memory_gb", "cpu_cores", "ram_gb", "gpu_model"} {
			if !g.chance(0.4) {
				continue
			}
			have, ok := g.workerValue("hardware." + name)
			// A negative requirement refuses a worker that has it: to fit,
			// ask for what the worker lacks.
			v := g.need(have, ok, !fit && g.chance(0.7))
			if fit {
				if f, isNum := have.(float64); isNum {
					v = f + 1
				} else if ok {
					v = pick(g, []any{"other-gpu", 1e9})
				}
			}
			hw = append(hw, jkv{name, v})
		}
		o = append(o, jkv{"hardware", hw})
	}
	keys := g.customKeys()
	for range g.r.IntN(3) {
		k := pick(g, keys)
		if k == "hardware" {
			continue
		}
		have, ok := g.workerValue(k)
		var v any
		if fit {
			if ok {
				v = g.need(have, ok, false)
			} else {
				v = g.anyValue()
			}
		} else {
			v = g.need(have, ok, true)
		}
		o = append(o, jkv{k, v})
	}
	if g.chance(0.1) {
		o = append(o, jkv{"customer_isolation", "strict"}, jkv{"models", []any{"sd15"}})
	}
	if o == nil {
		o = jobj{}
	}
	return o
}

// errorRecord turns a record into one on which findMatchingJob raises a
// Lua error (and so fails the whole claim), for a worker that reaches it:
// the service and workflow are set so that the checks before the
// requirements pass.
func (g *claimGen) errorRecord(id string, k seedKey) seedKey {
	if g.chance(0.15) {
		s := "not a hash" // HGETALL on a string: WRONGTYPE
		return seedKey{Key: k.Key, String: &s}
	}
	setField(&k, "service_required", pick(g, g.caps.Services))
	if g.caps.WorkflowID != "" {
		setField(&k, "workflow_id", g.caps.WorkflowID)
	}
	reqs := []string{
		"5", "-1.5", `"gpu"`, "true", "false", "null", // indexing a number, boolean or null; pairs() on a string
		`{"positive_requirements":7}`, `{"positive_requirements":"abc"}`, `{"positive_requirements":true}`,
		`{"positive_requirements":{},"negative_requirements":"x"}`, `{"positive_requirements":{},"negative_requirements":5}`,
		`{"hardware":5}`, `{"hardware":true}`,
	}
	if hw, ok := g.workerValue("hardware"); ok {
		// A minimum of another type than the worker's amount.
		m := hw.(map[string]any)
		for _, name := range []string{"gpu_memory_gb", "cpu_cores", "ram_gb"} {
			if _, has := m[name]; has {
				reqs = append(reqs,
					encodeJSON(jobj{{"hardware", jobj{{name, "16"}}}}),
					encodeJSON(jobj{{"hardware", jobj{{name, jobj{{"min", 4.0}}}}}}),
					encodeJSON(jobj{{"positive_requirements", jobj{{"hardware", jobj{{name, true}}}}}}))
			}
		}
		// pairs() over a negative hardware requirement that is no table.
		reqs = append(reqs, `{"positive_requirements":{},"negative_requirements":{"hardware":3}}`)
	}
	if svc := fieldOf(k, "service_required"); svc != "" {
		if m, ok := g.workerValue("models." + svc); !ok || m != nil {
			// The log line of a model mismatch concatenates the model.
			reqs = append(reqs, `{"models":[true]}`, `{"models":[{}]}`, `{"positive_requirements":{"models":[null]}}`)
		}
	}
	setField(&k, "requirements", pick(g, reqs))
	return k
}

func fieldOf(k seedKey, name string) string {
	for _, f := range k.Hash {
		if f[0] == name {
			return f[1]
		}
	}
	return ""
}

// genOtherKeys adds the keys around the queue: the worker's hash as a
// legacy worker registers it, jobs it already holds, another worker's
// active jobs, and a progress stream that already has an entry.
func (g *claimGen) genOtherKeys(c *claimCase, capsJSON []byte) {
	w := g.caps.WorkerID
	if g.chance(0.6) {
		now := g.base.Add(-time.Minute).Format("2006-01-02T15:04:05.000Z")
		c.Keys = append(c.Keys, seedKey{Key: "worker:" + w, Hash: [][2]string{
			{"worker_id", w}, {"machine_id", "machine-" + g.hex(4)}, {"capabilities", string(capsJSON)},
			{"status", "idle"}, {"connected_at", now}, {"last_heartbeat", now},
			{"total_jobs_completed", "3"}, {"total_jobs_failed", "0"}, {"current_job_id", ""},
		}})
	}
	if g.chance(0.2) {
		c.Keys = append(c.Keys, seedKey{Key: "jobs:active:" + w, Hash: [][2]string{
			{"old-job", `{"id":"old-job","status":"in_progress"}`},
		}})
	}
	if g.chance(0.2) {
		c.Keys = append(c.Keys, seedKey{Key: "jobs:active:other-worker", Hash: [][2]string{{"x1", `{"id":"x1"}`}}})
	}
	if len(c.Pending) > 0 && g.chance(0.2) {
		id := c.Pending[g.r.IntN(len(c.Pending))].ID
		c.Keys = append(c.Keys, seedKey{Key: "progress:" + id, Stream: []streamEntry{
			{ID: "1700000000000-0", Fields: [][2]string{{"job_id", id}, {"status", "pending"}}},
		}})
	}
}

// requirementTags names the rules of findMatchingJob a record's
// requirements exercise, for the coverage summary of the random run.
func requirementTags(req string, present bool) []string {
	if !present || req == "" {
		return []string{"no requirements"}
	}
	v, err := parseOrdered(req)
	if err != nil {
		return []string{"invalid JSON (no requirements)"}
	}
	o, ok := v.(jobj)
	if !ok {
		return []string{"requirements not an object"}
	}
	var pos, neg any
	var hasPos, hasNeg bool
	for _, kv := range o {
		switch kv.K {
		case "positive_requirements":
			pos, hasPos = kv.V, true
		case "negative_requirements":
			neg, hasNeg = kv.V, true
		}
	}
	var tags []string
	switch {
	case len(o) == 0:
		tags = append(tags, "empty object")
	case hasPos:
		tags = append(tags, "positive_requirements form")
	case hasNeg && len(o) == 1:
		tags = append(tags, "only negative_requirements (quirk)")
	default:
		tags = append(tags, "top-level positives")
	}
	if !hasPos {
		pos = o
	}
	if p, ok := pos.(jobj); ok {
		for _, kv := range p {
			switch kv.K {
			case "hardware":
				tags = append(tags, "hardware minimums")
				if h, ok := kv.V.(jobj); ok && slices.ContainsFunc(h, func(x jkv) bool { return x.V == "all" }) {
					tags = append(tags, "hardware 'all'")
				}
			case "customer_isolation":
				if kv.V == "strict" {
					tags = append(tags, "customer_isolation strict")
				} else {
					tags = append(tags, "customer_isolation other")
				}
			case "models":
				if kv.V == "all" {
					tags = append(tags, "models 'all'")
				} else {
					tags = append(tags, "models")
				}
			case "service_type":
				tags = append(tags, "service_type (ignored)")
			case "positive_requirements", "negative_requirements":
			default:
				tags = append(tags, "custom "+jsonKind(kv.V))
				if strings.Contains(kv.K, ".") {
					tags = append(tags, "custom dotted name")
				}
			}
		}
	} else if hasPos {
		tags = append(tags, "positive_requirements not an object")
	}
	if n, ok := neg.(jobj); ok {
		for _, kv := range n {
			if kv.K == "hardware" {
				tags = append(tags, "negative hardware")
			} else {
				tags = append(tags, "negative "+jsonKind(kv.V))
			}
		}
	}
	slices.Sort(tags)
	return slices.Compact(tags)
}

func jsonKind(v any) string {
	switch x := v.(type) {
	case jobj:
		return "object"
	case []any:
		if len(x) == 0 {
			return "empty array"
		}
		return "array"
	case jraw:
		return "number"
	case string:
		return "string"
	case bool:
		return "boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}
