package jobstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The one write path. Every operation that writes a namespace builds a
// write: one script, its keys in the authoritative namespace, the keys
// shared by every stage (worker:<id> and the like), and, when the stage
// mirrors, its keys in the other namespace. exec sends it, through the
// pipeliner below, and settle reads the reply and counts its mirror part.
// Nothing else writes a namespace, apart from the operator's tools
// (Backfill, Verify's repair, Cleanup), which copy between them.

// The operations, as logs, DualWriteStats and metrics name them.
const (
	opSubmit   = "submit"
	opClaim    = "claim"
	opStart    = "start"
	opProgress = "progress"
	opComplete = "complete"
	opFail     = "fail"
	opCancel   = "cancel"
	opRecover  = "recover"
)

var writeOps = []string{opSubmit, opClaim, opStart, opProgress, opComplete, opFail, opCancel, opRecover}

// write is one script run, prepared for a stage.
type write struct {
	op, id string
	st     Stage
	script *redis.Script
	keys   []string
	argv   []any // the flags and the stage, then the script's own
	mirror bool
	debug  bool // the script returns a log of what it mirrored

	// deadline is the caller's, zero when its context has none.
	deadline time.Time

	res  []any
	err  error
	done chan struct{}
}

// keysIn builds an operation's namespaced keys in one namespace.
type keysIn func(k keyspace) []string

// spec describes a write independently of the stage: its script, its keys
// in a namespace, the keys outside the namespaces it touches, and its own
// arguments.
type spec struct {
	op, id string
	script *redis.Script
	keys   keysIn   // the namespaced keys, in the authoritative namespace
	shared []string // keys outside both namespaces (worker:<id>, ...)
	// mirror, when set, builds the mirror keys instead of keys: for
	// writes whose mirror needs fewer keys than their primary part.
	mirror keysIn
	args   []any
}

// prepare builds the write of sp in stage st: KEYS are keys in the
// authoritative namespace, then shared, then, when the stage mirrors, the
// mirror keys, then the shared stage hash; ARGV the mirror and log flags,
// the stage, then sp's arguments. A failure to build the mirror keys, even
// a panic, is recovered and counted, and the write then goes without its
// mirror: the primary write still happens.
func (s *Store) prepare(ctx context.Context, st Stage, sp spec) *write {
	w := &write{op: sp.op, id: sp.id, st: st, script: sp.script}
	w.keys = append(sp.keys(s.space(st.Primary())), sp.shared...)
	if mns, ok := st.Mirror(); ok {
		mk := sp.mirror
		if mk == nil {
			mk = sp.keys
		}
		w.mirror = s.mirrorKeys(ctx, sp.op, sp.id, func() []string { return mk(s.space(mns)) }, &w.keys)
	}
	w.keys = append(w.keys, stageKey(s.prefix))
	w.debug = w.mirror && s.log.Enabled(ctx, slog.LevelDebug)
	w.argv = make([]any, 0, 3+len(sp.args))
	w.argv = append(w.argv, flagArg(w.mirror), flagArg(w.debug), st.String())
	w.argv = append(w.argv, sp.args...)
	return w
}

// maxStageRetries bounds how often a write is built again for a stage
// published meanwhile.
const maxStageRetries = 3

// run runs the write that build describes for the Store's stage. When the
// script finds another stage published (STAGE), the Store adopts it and
// the write is built and run again under it, so that it lands under the
// published stage; build must therefore be safe to call more than once.
func (s *Store) run(ctx context.Context, build func(st Stage) spec) (reply, error) {
	for attempt := 0; ; attempt++ {
		st, end := s.begin()
		r, err := s.exec(ctx, s.prepare(ctx, st, build(st)))
		end()
		if err != nil || r.status != "STAGE" {
			return r, err
		}
		if attempt == maxStageRetries {
			return r, fmt.Errorf("jobstore: the published stage keeps changing (now %s); try again", r.str(0))
		}
		s.adopt(ctx, r.str(0))
	}
}

// adopt moves the Store to a stage a script found published.
func (s *Store) adopt(ctx context.Context, name string) {
	st, err := ParseStage(name)
	if err != nil {
		return
	}
	if from := s.Stage(); from != st {
		s.log.LogAttrs(ctx, slog.LevelInfo, "jobstore: adopting the published stage",
			slog.String("from", from.String()), slog.String("to", st.String()))
		_ = s.forceStage(st)
	}
}

// mirrorKeys appends the mirror keys to keys. It reports false, leaving
// keys as they were, if building them panicked.
func (s *Store) mirrorKeys(ctx context.Context, op, id string, build func() []string, keys *[]string) (ok bool) {
	n := len(*keys)
	defer func() {
		if p := recover(); p != nil {
			*keys = (*keys)[:n]
			s.stats.attempt(op)
			s.mirrorPanic(ctx, op, id, p)
			ok = false
		}
	}()
	if s.mirrorHook != nil {
		s.mirrorHook(op)
	}
	*keys = append(*keys, build()...)
	return true
}

// reply is a script reply without its mirror part.
type reply struct {
	status string
	data   []any
}

func (r reply) str(i int) string {
	if i < len(r.data) {
		if s, ok := r.data[i].(string); ok {
			return s
		}
	}
	return ""
}

func (r reply) int(i int) int64 {
	if i < len(r.data) {
		if n, ok := r.data[i].(int64); ok {
			return n
		}
	}
	return 0
}

func (r reply) list(i int) []any {
	if i < len(r.data) {
		if l, ok := r.data[i].([]any); ok {
			return l
		}
	}
	return nil
}

// exec runs w and returns its reply; the write's stage counts it as
// running until its reply is in (see AwaitStage), even if ctx ends first.
func (s *Store) exec(ctx context.Context, w *write) (reply, error) {
	start := time.Now()
	res, err := s.send(ctx, w)
	r, err := s.settle(ctx, w, res, err)
	if s.observe != nil {
		s.observe(w.op, outcomeOf(r, err), time.Since(start))
	}
	return r, err
}

// settle turns a script's result into a reply, and counts and logs its
// mirror part; accounting never fails the call.
func (s *Store) settle(ctx context.Context, w *write, res []any, err error) (reply, error) {
	if err != nil {
		return reply{}, redisError(w.op, w.id, err)
	}
	if len(res) < 4 {
		return reply{}, fmt.Errorf("jobstore: %s id=%q: unexpected script reply %v", w.op, w.id, res)
	}
	status, _ := res[0].(string)
	if w.mirror {
		s.accountMirror(ctx, w, res)
	}
	return reply{status: status, data: res[4:]}, nil
}

// Writes are pipelined: a call that finds fewer than maxInflight batches
// in flight sends its write at once; writes that arrive meanwhile queue,
// and the next batch takes them all in one pipeline. Under load that
// spreads a round trip, and Redis's reading and answering it, over many
// writes; alone, a call waits for nothing. Each write is still its own
// atomic script.

// pipeliner holds the writes waiting for the next batch.
type pipeliner struct {
	mu       sync.Mutex
	queue    []*write
	inflight int
}

// maxInflight is how many batches may be in flight at once: one more
// keeps Redis busy while the last one's reply travels.
const maxInflight = 2

// maxBatch bounds one pipeline, maxMerge the submits of one script run
// (which holds Redis for about 15 µs each).
const (
	maxBatch = 500
	maxMerge = 100
)

// send runs w, alone or with whatever other writes are waiting. If ctx
// ends first it returns ctx's error; the write may still be applied, as
// after any lost reply.
func (s *Store) send(ctx context.Context, w *write) ([]any, error) {
	if err := ctx.Err(); err != nil {
		return nil, err // not sent: certainly not applied
	}
	s.enqueue(ctx, w)
	return wait(ctx, w)
}

// enqueue queues writes and, when fewer than maxInflight batches are in
// flight, sends the queue. A single write alone in the queue runs inline
// when the caller's context can never end; otherwise, as a batch does, it
// runs apart, so that one caller's context ending does not fail the
// others, and so that each caller returns by its deadline even if Redis
// is slow to answer (go-redis itself keeps to context deadlines only with
// ContextTimeoutEnabled, and otherwise waits up to its ReadTimeout).
func (s *Store) enqueue(ctx context.Context, ws ...*write) {
	for _, w := range ws {
		w.done = make(chan struct{})
		w.deadline, _ = ctx.Deadline()
		s.running[w.st].Add(1)
	}
	p := &s.pipe
	p.mu.Lock()
	p.queue = append(p.queue, ws...)
	var batch []*write
	if p.inflight < maxInflight {
		p.inflight++
		batch, p.queue = p.queue, nil
	}
	p.mu.Unlock()
	switch {
	case len(batch) == 1 && ctx.Done() == nil:
		s.runBatch(ctx, batch)
		if s.release() {
			go s.flushLoop(context.WithoutCancel(ctx))
		}
	case len(batch) > 0:
		go func() {
			wctx := context.WithoutCancel(ctx)
			s.runAll(wctx, batch)
			if s.release() {
				s.flushLoop(wctx)
			}
		}()
	}
}

// wait returns w's result once it is in, or ctx's error first. A result
// already in wins over a context that has ended: a known outcome is worth
// more than an unknown one.
func wait(ctx context.Context, w *write) ([]any, error) {
	select {
	case <-w.done:
		return w.res, w.err
	default:
	}
	select {
	case <-w.done:
		return w.res, w.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w (the write may have been applied)", ctx.Err())
	}
}

// execAll runs many writes, pipelined, and decodes each reply; errs[i] is
// the error of the write built from specs[i]. Writes that find another
// stage published are built again under it and run again.
func (s *Store) execAll(ctx context.Context, build func(i int, st Stage) spec, n int, decode func(i int, r reply) error) []error {
	errs := make([]error, n)
	todo := make([]int, n)
	for i := range todo {
		todo[i] = i
	}
	for attempt := 0; len(todo) > 0; attempt++ {
		if err := ctx.Err(); err != nil {
			for _, i := range todo {
				errs[i] = err // not sent: certainly not applied
			}
			break
		}
		st, end := s.begin()
		ws := make([]*write, len(todo))
		for k, i := range todo {
			ws[k] = s.prepare(ctx, st, build(i, st))
		}
		start := time.Now()
		s.enqueue(ctx, ws...)
		var again []int
		for k, w := range ws {
			i := todo[k]
			res, err := wait(ctx, w)
			r, err := s.settle(ctx, w, res, err)
			if s.observe != nil {
				s.observe(w.op, outcomeOf(r, err), time.Since(start))
			}
			if err == nil && r.status == "STAGE" && attempt < maxStageRetries {
				s.adopt(ctx, r.str(0))
				again = append(again, i)
				continue
			}
			if err == nil {
				err = decode(i, r)
			}
			errs[i] = err
		}
		end()
		todo = again
	}
	return errs
}

func outcomeOf(r reply, err error) string {
	switch {
	case err != nil:
		return "error"
	case r.status != "OK":
		return strings.ToLower(r.status)
	}
	return "ok"
}

// release ends a batch: it reports whether writes queued meanwhile, in
// which case the caller must go on sending them; else the batch is over.
func (s *Store) release() bool {
	p := &s.pipe
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.queue) > 0 {
		return true
	}
	p.inflight--
	return false
}

// flushLoop sends queued writes until none is left.
func (s *Store) flushLoop(ctx context.Context) {
	for {
		p := &s.pipe
		p.mu.Lock()
		batch := p.queue
		p.queue = nil
		p.mu.Unlock()
		s.runAll(ctx, batch)
		if !s.release() {
			return
		}
	}
}

// runAll runs writes in batches of at most maxBatch.
func (s *Store) runAll(ctx context.Context, ws []*write) {
	for len(ws) > 0 {
		n := min(len(ws), maxBatch)
		s.runBatch(ctx, ws[:n])
		ws = ws[n:]
	}
}

// runBatch runs writes, one alone or several in one pipeline, and
// completes each. Submits next to each other in the batch go in one run of
// the submit script (see mergeSubmits). go-redis sends a script again, by
// SHA, when its reply is lost; every script recognises its own earlier run
// (see fOpToken).
//
// The batch runs under no caller's cancellation (one caller giving up must
// not fail the others), but under the latest of their deadlines when every
// one has a deadline: nobody waits for it past that, and with go-redis's
// ContextTimeoutEnabled a lost reply then frees its pipeline slot at that
// deadline instead of after the client's ReadTimeout.
func (s *Store) runBatch(ctx context.Context, batch []*write) {
	ctx = context.WithoutCancel(ctx)
	var latest time.Time
	for _, w := range batch {
		if w.deadline.IsZero() {
			latest = time.Time{}
			break
		}
		if w.deadline.After(latest) {
			latest = w.deadline
		}
	}
	if !latest.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, latest)
		defer cancel()
	}
	defer func() {
		for _, w := range batch {
			s.running[w.st].Add(-1)
			close(w.done)
		}
	}()
	// Runs: a write alone, or submits merged; each run ends with the
	// writes it stands for.
	type run struct {
		w     *write
		parts []*write
	}
	var runs []run
	for i := 0; i < len(batch); {
		j := i + 1
		for j < len(batch) && j-i < maxMerge && mergeable(batch[i], batch[j]) {
			j++
		}
		if j-i > 1 {
			runs = append(runs, run{mergeSubmits(batch[i:j]), batch[i:j]})
		} else {
			runs = append(runs, run{batch[i], batch[i:j]})
		}
		i = j
	}
	ws := make([]*write, len(runs))
	for i, r := range runs {
		ws[i] = r.w
	}
	s.execRuns(ctx, ws)
	for _, r := range runs {
		if r.w.script != submitScript {
			continue
		}
		if r.w.err != nil {
			for _, p := range r.parts {
				p.err = r.w.err
			}
			continue
		}
		for k, res := range splitSubmit(r.w.res, r.parts) {
			r.parts[k].res = res
		}
	}
}

// execRuns sends scripts, one alone or several in one pipeline.
func (s *Store) execRuns(ctx context.Context, batch []*write) {
	if len(batch) == 1 {
		w := batch[0]
		w.res, w.err = w.script.Run(ctx, s.rdb, w.keys, w.argv...).Slice()
		return
	}
	cmds := s.pipeline(ctx, batch)
	var retry []*write
	for i, w := range batch {
		if isNoScript(cmds[i].Err()) {
			retry = append(retry, w)
			continue
		}
		w.res, w.err = cmds[i].Slice()
	}
	if len(retry) == 0 {
		return
	}
	// Redis lost the scripts (SCRIPT FLUSH, a restart): send those writes
	// again with their scripts' text (EVAL), which no flush can race.
	pipe := s.rdb.Pipeline()
	again := make([]*redis.Cmd, len(retry))
	for i, w := range retry {
		again[i] = w.script.Eval(ctx, pipe, w.keys, w.argv...)
	}
	_, _ = pipe.Exec(ctx)
	for i, w := range retry {
		w.res, w.err = again[i].Slice()
	}
}

// pipeline sends each write's script by SHA in one pipeline. Every
// command keeps its own error, a connection failure included.
func (s *Store) pipeline(ctx context.Context, batch []*write) []*redis.Cmd {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.Cmd, len(batch))
	for i, w := range batch {
		cmds[i] = w.script.EvalSha(ctx, pipe, w.keys, w.argv...)
	}
	_, _ = pipe.Exec(ctx)
	return cmds
}

// DualWriteStats counts mirror writes since the Store was created. The
// report's "dual-write success rate" is SuccessRate.
type DualWriteStats struct {
	// Attempted counts write operations that mirrored something.
	Attempted uint64 `json:"attempted"`
	// Failed counts those whose mirror failed in whole or part, including
	// Panics. The primary write succeeded in every one of them.
	Failed uint64 `json:"failed"`
	// Panics counts mirror code panics that were recovered.
	Panics uint64 `json:"panics"`
	// AttemptedByOp and FailedByOp split Attempted and Failed by
	// operation (submit, claim, ...).
	AttemptedByOp map[string]uint64 `json:"attempted_by_op,omitempty"`
	FailedByOp    map[string]uint64 `json:"failed_by_op,omitempty"`
}

// SuccessRate is (Attempted-Failed)/Attempted, or 1 when nothing was
// attempted.
func (d DualWriteStats) SuccessRate() float64 {
	if d.Attempted == 0 {
		return 1
	}
	return float64(d.Attempted-d.Failed) / float64(d.Attempted)
}

type dualWriteCounters struct {
	attempted, failed, panics atomic.Uint64
	attemptedBy, failedBy     sync.Map // op → *atomic.Uint64
}

func countOp(m *sync.Map, op string) {
	v, ok := m.Load(op)
	if !ok {
		v, _ = m.LoadOrStore(op, new(atomic.Uint64))
	}
	v.(*atomic.Uint64).Add(1)
}

func (c *dualWriteCounters) attempt(op string) {
	c.attempted.Add(1)
	countOp(&c.attemptedBy, op)
}

func (c *dualWriteCounters) fail(op string) {
	c.failed.Add(1)
	countOp(&c.failedBy, op)
}

func opCounts(m *sync.Map) map[string]uint64 {
	var out map[string]uint64
	m.Range(func(k, v any) bool {
		if n := v.(*atomic.Uint64).Load(); n > 0 {
			if out == nil {
				out = map[string]uint64{}
			}
			out[k.(string)] = n
		}
		return true
	})
	return out
}

// DualWriteStats returns the mirror counters. It is safe for concurrent use.
func (s *Store) DualWriteStats() DualWriteStats {
	return DualWriteStats{
		Attempted:     s.stats.attempted.Load(),
		Failed:        s.stats.failed.Load(),
		Panics:        s.stats.panics.Load(),
		AttemptedByOp: opCounts(&s.stats.attemptedBy),
		FailedByOp:    opCounts(&s.stats.failedBy),
	}
}

// accountMirror counts and logs the mirror part of a script reply.
func (s *Store) accountMirror(ctx context.Context, w *write, res []any) {
	counted := false
	defer func() {
		if p := recover(); p != nil {
			if !counted {
				s.stats.attempt(w.op)
			}
			s.mirrorPanic(ctx, w.op, w.id, p)
		}
	}()
	if s.mirrorHook != nil {
		s.mirrorHook(w.op + ".reply")
	}
	errs, _ := res[1].([]any)
	logs, _ := res[2].([]any)
	n, _ := res[3].(int64)
	if n == 0 && len(errs) == 0 {
		return
	}
	s.stats.attempt(w.op)
	counted = true
	if len(errs) > 0 {
		s.stats.fail(w.op)
		msgs := make([]string, 0, len(errs))
		for _, e := range errs {
			msgs = append(msgs, fmt.Sprint(e))
		}
		s.log.LogAttrs(ctx, slog.LevelError, "Dual-write failed; the primary write succeeded",
			slog.String("op", w.op), slog.String("id", w.id), slog.String("stage", w.st.String()),
			slog.String("errors", strings.Join(msgs, "; ")))
	}
	for _, l := range logs {
		s.log.LogAttrs(ctx, slog.LevelDebug, fmt.Sprintf("Dual-write: %v", l), slog.String("op", w.op))
	}
}

func (s *Store) mirrorPanic(ctx context.Context, op, id string, p any) {
	s.stats.fail(op)
	s.stats.panics.Add(1)
	s.log.LogAttrs(ctx, slog.LevelError, "Dual-write panicked; recovered, the primary write is unaffected",
		slog.String("op", op), slog.String("id", id), slog.String("panic", fmt.Sprint(p)))
}

func flagArg(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// redisError wraps an error from Redis for the caller: WRONGTYPE becomes
// ErrCorruptRecord; anything else (network, context, OOM) is wrapped as is.
func redisError(op, id string, err error) error {
	where := op
	if id != "" {
		where = fmt.Sprintf("%s id=%q", op, id)
	}
	if hasErrorPrefix(err, "WRONGTYPE") {
		return fmt.Errorf("%w: %s: %v", ErrCorruptRecord, where, err)
	}
	return fmt.Errorf("jobstore: %s: %w", where, err)
}

// hasErrorPrefix reports whether err is an error reply from Redis that
// starts with prefix (an error code such as WRONGTYPE or NOSCRIPT).
func hasErrorPrefix(err error, prefix string) bool {
	var rerr redis.Error
	return errors.As(err, &rerr) && strings.HasPrefix(rerr.Error(), prefix)
}

func isNoScript(err error) bool { return hasErrorPrefix(err, "NOSCRIPT") }

// token returns a random token for one call (see fOpToken).
func token() string { return randomHex(8) }
