package jobstore

import (
	"context"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Verify compares the two namespaces, content and all, as rule 6 of the
// design asks: what the report's key counts cannot show.

// Defaults of VerifyOptions.
const (
	DefaultVerifyRounds     = 3
	DefaultVerifyDelay      = 200 * time.Millisecond
	DefaultTTLTolerance     = 2 * time.Second
	DefaultMaxReported      = 20
	DefaultVerifyRecheckCap = 10000
)

// VerifyOptions configures Verify. The zero value uses the defaults.
type VerifyOptions struct {
	// BatchSize is how many keys or members each SCAN asks for and each
	// pipeline reads. 0 means DefaultBatchSize.
	BatchSize int
	// Rounds is how many times a difference found by the first pass is
	// re-checked, Delay apart, before it is reported; one that goes away
	// was a write in flight. 0 means DefaultVerifyRounds (3).
	Rounds int
	// Delay is the pause before each round. 0 means DefaultVerifyDelay.
	Delay time.Duration
	// TTLTolerance is how far apart the TTLs of a record and its copy may
	// be. 0 means DefaultTTLTolerance (2s).
	TTLTolerance time.Duration
	// MaxReported is how many differences Diffs lists. 0 means
	// DefaultMaxReported (20).
	MaxReported int
	// RecheckCap bounds how many differences are held for the rounds, so
	// memory stays flat. Differences beyond it are re-checked once, at
	// once, and then counted (and repaired) without waiting. 0 means
	// DefaultVerifyRecheckCap (10,000).
	RecheckCap int
	// Repair rewrites each difference that remains after the rounds from
	// the authoritative namespace (the Store's stage's Primary), atomically
	// per id: the record copied whole or deleted, and the id's entries in
	// the four queues synced, as the mirror does.
	Repair bool
	// Progress, when set, is called after every batch and round, on the
	// goroutine running Verify.
	Progress func(VerifyProgress)
}

// DiffKind says how a record or queue entry differs between the
// authoritative namespace (primary) and the other one (mirror).
type DiffKind string

// The kinds of difference Verify reports.
const (
	DiffMissing        DiffKind = "missing"         // the mirror lacks the primary's record
	DiffExtra          DiffKind = "extra"           // the mirror has a record the primary lacks
	DiffDifferent      DiffKind = "different"       // the record's fields, TTL or type differ
	DiffMissingEntry   DiffKind = "missing_entry"   // the mirror's queue lacks the primary's entry
	DiffExtraEntry     DiffKind = "extra_entry"     // the mirror's queue has an entry the primary's lacks
	DiffDifferentScore DiffKind = "different_score" // the entry's score differs
)

// Diff is one difference that Verify confirmed.
type Diff struct {
	Kind DiffKind `json:"kind"`
	// Key is the primary's key (the record, or the queue of an entry);
	// Other is the mirror's.
	Key   string `json:"key"`
	Other string `json:"other"`
	// ID is the record's id, or the entry's member.
	ID     string `json:"id"`
	Detail string `json:"detail,omitempty"`
	// Unsafe is set when deleting the mirror namespace would lose what
	// differs: see VerifyResult.Unsafe.
	Unsafe bool `json:"unsafe"`

	q Queue // the entry's queue; empty for a record
}

// String describes the difference in one line.
func (d Diff) String() string {
	s := fmt.Sprintf("%s %s (%s)", d.Kind, d.Key, d.Other)
	if d.q != "" {
		s = fmt.Sprintf("%s %s in %s (%s)", d.Kind, d.ID, d.Key, d.Other)
	}
	if d.Detail != "" {
		s += ": " + d.Detail
	}
	return s
}

// VerifyResult is what Verify found.
type VerifyResult struct {
	// Primary is the authoritative namespace compared from ("job" or
	// "step"), Mirror the other one.
	Primary string `json:"primary"`
	Mirror  string `json:"mirror"`
	// JobRecords and StepRecords count the record keys of each namespace.
	JobRecords  int64 `json:"job_records"`
	StepRecords int64 `json:"step_records"`
	// Entries counts the queue entries looked at, in both namespaces.
	Entries int64 `json:"entries"`

	// Differences that remained after the rounds, by kind.
	Missing          int64 `json:"missing"`
	Extra            int64 `json:"extra"`
	Different        int64 `json:"different"`
	MissingEntries   int64 `json:"missing_entries"`
	ExtraEntries     int64 `json:"extra_entries"`
	DifferentEntries int64 `json:"different_entries"`
	// Unsafe counts the differences that deleting the mirror namespace
	// would lose. Safe are: what the mirror lacks; a record whose fields
	// are equal (only the TTL differs); a mirror record or entry whose id
	// has a strictly fresher primary record (a stale copy, expected once
	// the mirror is no longer written); an entry whose id has a record on
	// neither side. Everything else is unsafe. Cleanup requires zero.
	Unsafe int64 `json:"unsafe"`
	// Overflowed counts differences beyond RecheckCap, which were
	// re-checked once instead of over the rounds.
	Overflowed int64 `json:"overflowed"`
	// Rounds is how many re-check rounds ran.
	Rounds int `json:"rounds"`
	// Diffs lists the first MaxReported differences.
	Diffs []Diff `json:"diffs"`
	// Repaired counts the ids rewritten from the primary (Repair).
	Repaired int64         `json:"repaired"`
	Elapsed  time.Duration `json:"elapsed_ns"`
}

// Differences is the number of differences of all kinds.
func (r VerifyResult) Differences() int64 {
	return r.Missing + r.Extra + r.Different + r.MissingEntries + r.ExtraEntries + r.DifferentEntries
}

// VerifyProgress is what Verify reports as it goes.
type VerifyProgress struct {
	// Phase is "records <ns>" for the record pass over one namespace,
	// "<queue>" for a queue, or "round <n>" for a re-check round.
	Phase string
	// Fraction estimates how much of the current record pass is done,
	// from the SCAN cursor; 0 when unknown.
	Fraction float64
	// Checked counts records and entries compared so far.
	Checked int64
	// Suspects counts differences waiting for the rounds.
	Suspects int
}

// Verify compares the namespaces in both directions: every record field
// by field, its TTL (present on both or neither, within TTLTolerance),
// and every queue's members and scores. The primary is the Store's
// stage's Primary. Pass one reads each primary record with its copy,
// pass two looks for mirror records the primary lacks, then each queue is
// compared both ways; all with SCAN/ZSCAN and pipelines of BatchSize
// HGETALL/PTTL or ZMSCORE, so memory stays flat.
//
// Like redis-full-check, differences are then re-checked over Rounds
// rounds, Delay apart, each read in one MULTI/EXEC so that an atomic
// dual-write cannot fall between a record and its copy; only those that
// remain are reported. With Repair they are then rewritten from the
// primary. Verify never writes otherwise.
func (s *Store) Verify(ctx context.Context, opts VerifyOptions) (VerifyResult, error) {
	v := newVerifier(s, s.Stage().Primary(), opts)
	err := v.run(ctx)
	v.res.Elapsed = time.Since(v.start)
	return v.res, err
}

// suspect names something that differed once: a record when q is empty,
// else the entry id of queue q.
type suspect struct {
	q  Queue
	id string
}

type verifier struct {
	s        *Store
	opts     VerifyOptions
	p, m     keyspace
	res      VerifyResult
	start    time.Time
	checked  int64
	suspects map[suspect]bool
	overflow []suspect
}

func newVerifier(s *Store, primary Namespace, opts VerifyOptions) *verifier {
	if opts.BatchSize <= 0 {
		opts.BatchSize = DefaultBatchSize
	}
	if opts.Rounds <= 0 {
		opts.Rounds = DefaultVerifyRounds
	}
	if opts.Delay <= 0 {
		opts.Delay = DefaultVerifyDelay
	}
	if opts.TTLTolerance <= 0 {
		opts.TTLTolerance = DefaultTTLTolerance
	}
	if opts.MaxReported <= 0 {
		opts.MaxReported = DefaultMaxReported
	}
	if opts.RecheckCap <= 0 {
		opts.RecheckCap = DefaultVerifyRecheckCap
	}
	p, m := s.space(primary), s.space(other(primary))
	return &verifier{
		s: s, opts: opts, p: p, m: m, start: time.Now(), suspects: map[suspect]bool{},
		res: VerifyResult{Primary: primary.String(), Mirror: other(primary).String(), Diffs: []Diff{}},
	}
}

func (v *verifier) run(ctx context.Context) error {
	if err := v.recordPass(ctx); err != nil {
		return err
	}
	for _, q := range Queues {
		if err := v.queuePass(ctx, q); err != nil {
			return err
		}
	}
	if err := v.flushOverflow(ctx); err != nil {
		return err
	}

	pending := slices.Collect(maps.Keys(v.suspects))
	v.suspects = nil
	var diffs []Diff
	for round := 1; round <= v.opts.Rounds && len(pending) > 0; round++ {
		if err := sleepCtx(ctx, v.opts.Delay); err != nil {
			return err
		}
		v.res.Rounds = round
		diffs = diffs[:0]
		var still []suspect
		for c := range slices.Chunk(pending, v.opts.BatchSize) {
			d, err := v.check(ctx, c)
			if err != nil {
				return err
			}
			for _, x := range d {
				diffs = append(diffs, x)
				still = append(still, suspect{q: x.q, id: x.ID})
			}
		}
		pending = still
		v.progress(fmt.Sprint("round ", round), 0, len(pending))
	}
	for _, d := range diffs {
		v.count(d)
	}
	if v.opts.Repair {
		return v.repair(ctx, pending)
	}
	return nil
}

func (v *verifier) progress(phase string, fraction float64, suspects int) {
	if v.opts.Progress != nil {
		v.opts.Progress(VerifyProgress{Phase: phase, Fraction: fraction, Checked: v.checked, Suspects: suspects})
	}
}

// count adds a confirmed difference to the result.
func (v *verifier) count(d Diff) {
	switch d.Kind {
	case DiffMissing:
		v.res.Missing++
	case DiffExtra:
		v.res.Extra++
	case DiffDifferent:
		v.res.Different++
	case DiffMissingEntry:
		v.res.MissingEntries++
	case DiffExtraEntry:
		v.res.ExtraEntries++
	case DiffDifferentScore:
		v.res.DifferentEntries++
	}
	if d.Unsafe {
		v.res.Unsafe++
	}
	if len(v.res.Diffs) < v.opts.MaxReported {
		v.res.Diffs = append(v.res.Diffs, d)
	}
}

// suspect notes a difference for the rounds, or, past the cap, for an
// immediate re-check.
func (v *verifier) suspect(ctx context.Context, x suspect) error {
	if v.suspects[x] {
		return nil
	}
	if len(v.suspects) < v.opts.RecheckCap {
		v.suspects[x] = true
		return nil
	}
	v.overflow = append(v.overflow, x)
	if len(v.overflow) >= v.opts.BatchSize {
		return v.flushOverflow(ctx)
	}
	return nil
}

func (v *verifier) flushOverflow(ctx context.Context) error {
	if len(v.overflow) == 0 {
		return nil
	}
	diffs, err := v.check(ctx, v.overflow)
	if err != nil {
		return err
	}
	v.overflow = v.overflow[:0]
	var ids []suspect
	for _, d := range diffs {
		v.res.Overflowed++
		v.count(d)
		ids = append(ids, suspect{q: d.q, id: d.ID})
	}
	if v.opts.Repair {
		return v.repair(ctx, ids)
	}
	return nil
}

// verifyWorkers is how many batches a pass has in flight: while the
// client compares one batch, Redis serves the next.
const verifyWorkers = 3

// pageResult is what a worker found in one page of a pass.
type pageResult struct {
	page []string
	n    int // records or entries looked at
	sus  []suspect
	err  error
}

// pass runs one scan of the namespaces: next returns each page in turn
// (nil at the end), work reads and compares a page, and the results are
// applied on this goroutine, so that the verifier's state and the Progress
// callback stay single-threaded. Up to verifyWorkers pages are read at
// once.
//
// A page holds per strings per record or entry looked at; count adds
// what a page held to the result.
func (v *verifier) pass(ctx context.Context, phase string, per int, next func(ctx context.Context) ([]string, float64, error),
	work func(ctx context.Context, page []string) ([]suspect, error), count func(page []string)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pages := make(chan []string)
	results := make(chan pageResult, verifyWorkers)
	var wg sync.WaitGroup
	for range verifyWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for page := range pages {
				sus, err := work(ctx, page)
				results <- pageResult{page: page, n: len(page) / per, sus: sus, err: err}
			}
		}()
	}
	var scanErr error
	var fraction atomicFloat
	go func() {
		defer close(pages)
		for ctx.Err() == nil {
			page, f, err := next(ctx)
			if err != nil {
				scanErr = err
				cancel()
				return
			}
			if page == nil {
				return
			}
			fraction.store(f)
			select {
			case pages <- page:
			case <-ctx.Done():
				return
			}
		}
	}()
	go func() {
		wg.Wait()
		close(results)
	}()
	var firstErr error
	for r := range results {
		if firstErr != nil {
			continue // drain
		}
		if r.err != nil {
			firstErr = r.err
			cancel()
			continue
		}
		count(r.page)
		for _, x := range r.sus {
			if err := v.suspect(ctx, x); err != nil {
				firstErr = err
				cancel()
				break
			}
		}
		v.checked += int64(r.n)
		v.progress(phase, fraction.load(), len(v.suspects))
	}
	if firstErr != nil {
		return firstErr
	}
	return scanErr
}

// atomicFloat is a float64 shared between the scanning goroutine and the
// one applying results.
type atomicFloat struct{ bits atomic.Uint64 }

func (f *atomicFloat) store(x float64) { f.bits.Store(math.Float64bits(x)) }
func (f *atomicFloat) load() float64   { return math.Float64frombits(f.bits.Load()) }

// bothPattern matches the record keys of both namespaces, job:<id> and
// step:<id>, so that one SCAN walks the keyspace once for both; what else
// it matches (steps:pending, say) is filtered out by idFromRecordKey.
func bothPattern(prefix string) string { return prefix + "[js][ot][be][:p]*" }

// recordPass scans the records of both namespaces in one walk. A primary
// record is compared with its copy; a mirror record is only checked for a
// primary one, since the primary's side compared the rest.
func (v *verifier) recordPass(ctx context.Context) error {
	cursor, done := uint64(0), false
	// A page is "p" or "m" and an id, for each record found.
	next := func(ctx context.Context) ([]string, float64, error) {
		for !done {
			keys, nc, err := v.s.rdb.Scan(ctx, cursor, bothPattern(v.s.prefix), int64(v.opts.BatchSize)).Result()
			if err != nil {
				return nil, 0, redisError("verify: scan", "", err)
			}
			cursor, done = nc, nc == 0
			page := make([]string, 0, 2*len(keys))
			for _, k := range slices.Compact(keys) {
				if id, ok := v.p.idFromRecordKey(k); ok {
					page = append(page, "p", id)
				} else if id, ok := v.m.idFromRecordKey(k); ok {
					page = append(page, "m", id)
				}
			}
			if len(page) > 0 {
				return page, scanFraction(nc), nil
			}
		}
		return nil, 1, nil
	}
	work := func(ctx context.Context, page []string) ([]suspect, error) {
		var ps, ms []string
		for i := 0; i < len(page); i += 2 {
			if page[i] == "p" {
				ps = append(ps, page[i+1])
			} else {
				ms = append(ms, page[i+1])
			}
		}
		sus, err := v.compareRecords(ctx, ps, ms)
		if err != nil {
			return nil, err
		}
		return sus, nil
	}
	count := func(page []string) {
		for i := 0; i < len(page); i += 2 {
			if (page[i] == "p") == (v.p.ns == JobNamespace) {
				v.res.JobRecords++
			} else {
				v.res.StepRecords++
			}
		}
	}
	return v.pass(ctx, "records", 2, next, work, count)
}

// recordPair is a record and its copy as read at one moment.
type recordPair struct {
	p, m       map[string]string
	pErr, mErr error // WRONGTYPE, when a key is not a hash
	pTTL, mTTL time.Duration
}

// readPairs queues the reads of the records of ids on both sides.
func (v *verifier) readPairs(ctx context.Context, pipe redis.Pipeliner, ids []string) func() ([]recordPair, error) {
	type cmds struct {
		p, m       *redis.MapStringStringCmd
		pTTL, mTTL *redis.DurationCmd
	}
	cs := make([]cmds, len(ids))
	for i, id := range ids {
		cs[i] = cmds{
			pipe.HGetAll(ctx, v.p.record(id)), pipe.HGetAll(ctx, v.m.record(id)),
			pipe.PTTL(ctx, v.p.record(id)), pipe.PTTL(ctx, v.m.record(id)),
		}
	}
	return func() ([]recordPair, error) {
		out := make([]recordPair, len(ids))
		for i, c := range cs {
			var err error
			r := &out[i]
			if r.p, r.pErr = c.p.Result(); r.pErr != nil && !isWrongType(r.pErr) {
				return nil, redisError("verify: read", ids[i], r.pErr)
			}
			if r.m, r.mErr = c.m.Result(); r.mErr != nil && !isWrongType(r.mErr) {
				return nil, redisError("verify: read", ids[i], r.mErr)
			}
			if r.pTTL, err = c.pTTL.Result(); err != nil {
				return nil, redisError("verify: read", ids[i], err)
			}
			if r.mTTL, err = c.mTTL.Result(); err != nil {
				return nil, redisError("verify: read", ids[i], err)
			}
		}
		return out, nil
	}
}

func execPipe(ctx context.Context, pipe redis.Pipeliner) error {
	if _, err := pipe.Exec(ctx); err != nil && !isWrongType(err) && err != redis.Nil {
		return redisError("verify", "", err)
	}
	return nil
}

// compareRecords reads the primary records ps and their copies, and
// looks up the primary records of the mirror records ms, in one pipeline,
// and returns the ids that differ or that only the mirror has. It touches
// no verifier state but the options.
func (v *verifier) compareRecords(ctx context.Context, ps, ms []string) ([]suspect, error) {
	pipe := v.s.rdb.Pipeline()
	read := v.readPairs(ctx, pipe, ps)
	exists := make([]*redis.IntCmd, len(ms))
	for i, id := range ms {
		exists[i] = pipe.Exists(ctx, v.p.record(id))
	}
	if err := execPipe(ctx, pipe); err != nil {
		return nil, err
	}
	pairs, err := read()
	if err != nil {
		return nil, err
	}
	var sus []suspect
	for i, r := range pairs {
		if len(r.p) == 0 && r.pErr == nil {
			continue // deleted since SCAN saw it; a leftover copy is seen on its own
		}
		if _, differs := v.recordDiff(ps[i], r); differs {
			sus = append(sus, suspect{id: ps[i]})
		}
	}
	for i, c := range exists {
		if c.Val() == 0 {
			sus = append(sus, suspect{id: ms[i]})
		}
	}
	return sus, nil
}

// recordDiff compares a record with its copy. Unsafe is left for check.
func (v *verifier) recordDiff(id string, r recordPair) (Diff, bool) {
	d := Diff{Key: v.p.record(id), Other: v.m.record(id), ID: id}
	pHas, mHas := len(r.p) > 0 || r.pErr != nil, len(r.m) > 0 || r.mErr != nil
	switch {
	case !pHas && !mHas:
		return d, false
	case !mHas:
		d.Kind = DiffMissing
	case !pHas:
		d.Kind = DiffExtra
	case r.pErr != nil || r.mErr != nil:
		d.Kind, d.Detail = DiffDifferent, "not a hash"
	case !maps.Equal(r.p, r.m):
		f := fieldDiff(r.p, r.m)
		slices.Sort(f)
		d.Kind, d.Detail = DiffDifferent, "fields differ: "+strings.Join(f, ", ")
	case (r.pTTL > 0) != (r.mTTL > 0):
		d.Kind, d.Detail = DiffDifferent, fmt.Sprintf("TTL %s vs %s", ttlText(r.pTTL), ttlText(r.mTTL))
	case r.pTTL > 0 && (r.pTTL-r.mTTL > v.opts.TTLTolerance || r.mTTL-r.pTTL > v.opts.TTLTolerance):
		d.Kind, d.Detail = DiffDifferent, fmt.Sprintf("TTL %s vs %s", ttlText(r.pTTL), ttlText(r.mTTL))
	default:
		return d, false
	}
	return d, true
}

func ttlText(d time.Duration) string {
	if d < 0 {
		return "none"
	}
	return d.Round(time.Millisecond).String()
}

// queueWindow is how many entries of each side queuePass reads at once.
const queueWindow = 2000

// queuePass compares queue q on both sides, window by window: the same
// ranks of both, read in one MULTI, compared element by element. Equal
// queues need nothing more, and a walk by rank costs Redis far less than
// a ZSCAN and a ZMSCORE per entry. A window that differs (a real
// difference shifts every later window too) is checked member by member:
// each primary entry against the mirror (missing, or scored differently)
// and each mirror entry against the primary (extra). The rounds confirm.
func (v *verifier) queuePass(ctx context.Context, q Queue) error {
	pk, mk := v.p.queue(q), v.m.queue(q)
	for start := int64(0); ; start += queueWindow {
		if err := ctx.Err(); err != nil {
			return err
		}
		tx := v.s.rdb.TxPipeline()
		pa := tx.ZRangeWithScores(ctx, pk, start, start+queueWindow-1)
		ma := tx.ZRangeWithScores(ctx, mk, start, start+queueWindow-1)
		if _, err := tx.Exec(ctx); err != nil {
			return redisError("verify: read "+pk, "", err)
		}
		ps, ms := pa.Val(), ma.Val()
		if len(ps) == 0 && len(ms) == 0 {
			return nil
		}
		v.res.Entries += int64(len(ps))
		v.checked += int64(len(ps))
		if !slices.Equal(ps, ms) {
			if err := v.windowDiffs(ctx, q, ps, ms); err != nil {
				return err
			}
		}
		v.progress(string(q), 0, len(v.suspects))
	}
}

// windowDiffs checks, member by member, a window of queue q whose two
// sides differ, and notes the entries that may differ.
func (v *verifier) windowDiffs(ctx context.Context, q Queue, ps, ms []redis.Z) error {
	members := func(zs []redis.Z) []any {
		out := make([]any, len(zs))
		for i, z := range zs {
			out[i] = z.Member
		}
		return out
	}
	if len(ps) > 0 {
		in, err := zmscore(ctx, v.s.rdb, v.m.queue(q), members(ps))
		if err != nil {
			return err
		}
		for i, z := range ps {
			if !in[i].ok || in[i].v != z.Score {
				if err := v.suspect(ctx, suspect{q: q, id: fmt.Sprint(z.Member)}); err != nil {
					return err
				}
			}
		}
	}
	if len(ms) > 0 {
		in, err := zmscore(ctx, v.s.rdb, v.p.queue(q), members(ms))
		if err != nil {
			return err
		}
		for i, z := range ms {
			if !in[i].ok {
				if err := v.suspect(ctx, suspect{q: q, id: fmt.Sprint(z.Member)}); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// optScore is a score, or none (ok false) for a member a set lacks.
type optScore struct {
	v  float64
	ok bool
}

// toScore reads a score from a RESP2 (string) or RESP3 (double) reply.
func toScore(raw any) optScore {
	switch x := raw.(type) {
	case float64:
		return optScore{x, true}
	case int64:
		return optScore{float64(x), true}
	case string:
		f, err := strconv.ParseFloat(x, 64)
		return optScore{f, err == nil}
	}
	return optScore{}
}

// zmscore returns the score of each member in key. (go-redis's ZMScore
// turns a member the set lacks into score 0, so it cannot tell.)
func zmscore(ctx context.Context, rdb redis.UniversalClient, key string, members []any) ([]optScore, error) {
	args := append([]any{"ZMSCORE", key}, members...)
	raw, err := rdb.Do(ctx, args...).Slice()
	if err != nil {
		return nil, redisError("verify: read "+key, "", err)
	}
	out := make([]optScore, len(members))
	for i := range out {
		if i < len(raw) {
			out[i] = toScore(raw[i])
		}
	}
	return out, nil
}

func scoreText(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// check reads each suspect afresh, its record pair and, for an entry, its
// score on both sides, all in one MULTI/EXEC, and returns the differences
// that remain, with Unsafe decided.
func (v *verifier) check(ctx context.Context, sus []suspect) ([]Diff, error) {
	pipe := v.s.rdb.TxPipeline()
	var ids []string
	idx := make([]int, len(sus)) // index into ids, or -1 for an invalid id
	for i, x := range sus {
		idx[i] = -1
		if validateID(x.id) == nil {
			idx[i] = len(ids)
			ids = append(ids, x.id)
		}
	}
	read := v.readPairs(ctx, pipe, ids)
	scores := make([][2]*redis.Cmd, len(sus))
	for i, x := range sus {
		if x.q != "" {
			scores[i] = [2]*redis.Cmd{
				pipe.Do(ctx, "ZSCORE", v.p.queue(x.q), x.id),
				pipe.Do(ctx, "ZSCORE", v.m.queue(x.q), x.id),
			}
		}
	}
	if err := execPipe(ctx, pipe); err != nil {
		return nil, err
	}
	pairs, err := read()
	if err != nil {
		return nil, err
	}
	var out []Diff
	for i, x := range sus {
		var r recordPair
		if idx[i] >= 0 {
			r = pairs[idx[i]]
		}
		if x.q == "" {
			d, differs := v.recordDiff(x.id, r)
			if differs {
				d.Unsafe = recordUnsafe(d.Kind, r)
				out = append(out, d)
			}
			continue
		}
		var sc [2]optScore
		for k, c := range scores[i] {
			if err := c.Err(); err != nil && err != redis.Nil {
				return nil, redisError("verify: read "+string(x.q), x.id, err)
			}
			sc[k] = toScore(c.Val())
		}
		ps, ms := sc[0], sc[1]
		d := Diff{Key: v.p.queue(x.q), Other: v.m.queue(x.q), ID: x.id, q: x.q}
		switch {
		case !ps.ok && !ms.ok:
			continue
		case !ms.ok:
			d.Kind = DiffMissingEntry
		case !ps.ok:
			d.Kind = DiffExtraEntry
		case ps.v != ms.v:
			d.Kind, d.Detail = DiffDifferentScore, fmt.Sprintf("score %s vs %s", scoreText(ps.v), scoreText(ms.v))
		default:
			continue
		}
		d.Unsafe = entryUnsafe(d.Kind, r)
		out = append(out, d)
	}
	return out, nil
}

// recordUnsafe tells whether deleting the mirror loses what differs.
func recordUnsafe(k DiffKind, r recordPair) bool {
	switch {
	case k == DiffMissing:
		return false
	case k == DiffExtra || r.pErr != nil || r.mErr != nil:
		return true
	case maps.Equal(r.p, r.m):
		return false // only the TTL differs
	}
	return recordFreshness(r.p).compare(recordFreshness(r.m)) <= 0
}

func entryUnsafe(k DiffKind, r recordPair) bool {
	if k == DiffMissingEntry {
		return false
	}
	pHas, mHas := len(r.p) > 0, len(r.m) > 0
	if r.pErr != nil || r.mErr != nil {
		return true
	}
	if !pHas && !mHas {
		return false // an index entry of a record that is gone everywhere
	}
	return !pHas || !mHas || recordFreshness(r.p).compare(recordFreshness(r.m)) <= 0
}

// repairScript makes the mirror of each id what the primary is: the
// record copied whole (or deleted when the primary has none) and the id's
// entry in each of the four queues copied with its score (or removed). It
// has no primary part: it is the prelude's mirror, run on demand.
//
//	KEYS: the 4 primary queues (Queues order), the primary record of each
//	      valid id, then the same keys in the mirror namespace
//	ARGV: "1", "0", number of valid ids, valid id..., other member...
//	      (members that are not valid ids have no record; only their
//	      entries are synced)
//	Reply: {"OK", mirror_errors, log, synced}
var repairScript = redis.NewScript(prelude + `
local nvalid = tonumber(ARGV[3])
local recs, mems = {}, {}
for j = 4, #ARGV do
  local id = ARGV[j]
  if j - 3 <= nvalid then recs[#recs + 1] = 4 + j - 3 end
  for q = 1, 4 do mems[#mems + 1] = {q, id} end
end
return done('OK', recs, mems)
`)

// repair rewrites the mirror of each suspect's id from the primary.
func (v *verifier) repair(ctx context.Context, sus []suspect) error {
	seen := map[string]bool{}
	var ids []string
	for _, x := range sus {
		if !seen[x.id] {
			seen[x.id] = true
			ids = append(ids, x.id)
		}
	}
	for c := range slices.Chunk(ids, v.opts.BatchSize) {
		valid := slices.DeleteFunc(slices.Clone(c), func(id string) bool { return validateID(id) != nil })
		invalid := slices.DeleteFunc(slices.Clone(c), func(id string) bool { return validateID(id) == nil })
		keys := queueAndRecordKeys(v.p, v.m, valid)
		args := []any{"1", "0", len(valid)}
		for _, id := range append(valid, invalid...) {
			args = append(args, id)
		}
		res, err := repairScript.Run(ctx, v.s.rdb, keys, args...).Slice()
		if err != nil {
			return redisError("repair", "", err)
		}
		if len(res) >= 2 {
			if errs, _ := res[1].([]any); len(errs) > 0 {
				return fmt.Errorf("%w: repair: %v; fix or remove the keys named, then verify again", ErrCorruptRecord, errs)
			}
		}
		v.res.Repaired += int64(len(c))
	}
	return nil
}
