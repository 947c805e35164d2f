package jobstore

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Verify compares the two namespaces, content and all, what key counts
// cannot show, and re-checks what differs so that writes in flight are not
// reported.

// Defaults of VerifyOptions.
const (
	DefaultVerifyRounds = 3
	DefaultVerifyDelay  = 200 * time.Millisecond
	DefaultTTLTolerance = 2 * time.Second
	DefaultMaxReported  = 100
	DefaultMaxSuspects  = 50_000
	// DefaultInFlightRounds × Delay is the default InFlightWait.
	DefaultInFlightRounds = 10
	// maxInFlightWait bounds Delay and InFlightWait.
	maxInFlightWait = 10 * time.Minute
	// maxInFlightListed bounds VerifyResult.InFlightItems.
	maxInFlightListed = 10
)

// VerifyOptions configures Verify. The zero value uses the defaults.
type VerifyOptions struct {
	// BatchSize is how many keys, members or fields each scan asks for and
	// each pipeline or MULTI reads. 0 means DefaultBatchSize; at most
	// MaxBatchSize.
	BatchSize int
	// Rounds is how many times a difference is re-checked, Delay apart,
	// before it is reported: one that goes away in a round was a write in
	// flight. One whose authoritative side keeps changing is re-checked
	// longer (InFlightWait). 0 means DefaultVerifyRounds (3).
	Rounds int
	// Delay is the pause before each round. 0 means DefaultVerifyDelay
	// (200 ms).
	Delay time.Duration
	// InFlightWait bounds how long, past Rounds, an item whose
	// authoritative side keeps changing is watched, to see whether the
	// other side follows it (see Verify): one still changing and followed
	// then is counted as in flight (VerifyResult.InFlight), not as a
	// difference. 0 means DefaultInFlightRounds × Delay; at most 10
	// minutes.
	InFlightWait time.Duration
	// TTLTolerance is how far apart two TTLs may be. 0 means
	// DefaultTTLTolerance (2 s).
	TTLTolerance time.Duration
	// MaxReported bounds VerifyResult.Diffs and BlockingDiffs. 0 means
	// DefaultMaxReported (100).
	MaxReported int
	// MaxSuspects bounds the differences held for the rounds, so that
	// memory stays flat: when the first pass has found this many, they
	// go through their rounds before it goes on. 0 means
	// DefaultMaxSuspects (50,000).
	MaxSuspects int
	// Repair rewrites each difference that remains after the rounds from
	// the authoritative namespace, per job and atomically: a record or
	// sub-key is copied whole or deleted, an entry set or removed, a
	// whole-key TTL copied.
	Repair bool
	// OnDiff, when set, is called with every difference reported, on the
	// goroutine running Verify: the complete list, where Diffs is bounded.
	OnDiff func(Diff)
	// Progress, when set, is called after every batch and round, on the
	// goroutine running Verify.
	Progress func(VerifyProgress)
}

// DiffKind says how the two namespaces differ on one item.
type DiffKind string

// The kinds of difference.
const (
	// DiffMissing: Diff.Key lacks the item; Diff.Other has it.
	DiffMissing DiffKind = "missing"
	// DiffDifferent: both have it, with other content (fields, type,
	// value, score).
	DiffDifferent DiffKind = "different"
	// DiffTTL: the content is the same but one side expires and the other
	// does not, or (records and sub-keys) their TTLs are further apart
	// than the tolerance.
	DiffTTL DiffKind = "ttl"
)

// The items of a job that Verify compares, as Diff.Item names them.
const (
	ItemRecord    = "record"    // job:<id>
	ItemSubKey    = "sub-key"   // job:<id>:<suffix>
	ItemPending   = "pending"   // its member of jobs:pending
	ItemActive    = "active"    // its field of jobs:active:<worker>
	ItemCompleted = "completed" // its field of jobs:completed, or that hash's TTL
	ItemFailed    = "failed"    // its field of jobs:failed, or that hash's TTL
)

// Diff is one difference that stayed through the rounds.
type Diff struct {
	Kind DiffKind `json:"kind"`
	Item string   `json:"item"` // one of the Item constants
	// ID is the job, or "" for the whole-key TTL of completed or failed.
	ID string `json:"id,omitempty"`
	// Key is the key that lacks the item (DiffMissing), or the
	// non-authoritative copy; Other is its counterpart in the other
	// namespace.
	Key   string `json:"key"`
	Other string `json:"other"`
	// Detail says what differs: the fields, scores, values or TTLs, and
	// which record is fresher.
	Detail string `json:"detail,omitempty"`
	// Blocking is set when deleting the non-authoritative namespace would
	// lose what differs: a record or entry only it has, or a copy in it
	// that is not older than the authoritative one. Cleanup refuses while
	// there is one.
	Blocking bool `json:"blocking"`
}

// String reads the difference in one line, as
// "step:X missing; job:X has it".
func (d Diff) String() string {
	var s string
	entry := d.Item != ItemRecord && d.Item != ItemSubKey && d.ID != ""
	switch {
	case d.Kind == DiffMissing && entry:
		s = fmt.Sprintf("%s lacks %s; %s has it", d.Key, d.ID, d.Other)
	case d.Kind == DiffMissing:
		s = fmt.Sprintf("%s missing; %s has it", d.Key, d.Other)
	case d.Kind == DiffTTL:
		s = fmt.Sprintf("%s differs from %s in TTL", d.Key, d.Other)
	case entry:
		s = fmt.Sprintf("%s differs from %s for %s", d.Key, d.Other, d.ID)
	default:
		s = fmt.Sprintf("%s differs from %s", d.Key, d.Other)
	}
	if d.Detail != "" {
		if d.Kind == DiffMissing {
			s += " (" + d.Detail + ")"
		} else {
			s += ": " + d.Detail
		}
	}
	if d.Blocking {
		s += " [blocks cleanup]"
	}
	return s
}

// VerifyResult is what Verify found.
type VerifyResult struct {
	// Authoritative is the namespace compared from ("job" or "step"), the
	// primary of the fleet's stage; Other is the other one.
	Authoritative string `json:"authoritative"`
	Other         string `json:"other"`
	// Checked counts the records, sub-keys and entries compared.
	Checked int64 `json:"checked"`
	// Differences counts those that stayed through the rounds, by kind
	// (Missing, Different, TTL) and by item (ByItem).
	Differences int64            `json:"differences"`
	Missing     int64            `json:"missing"`
	Different   int64            `json:"different"`
	TTL         int64            `json:"ttl"`
	ByItem      map[string]int64 `json:"by_item"`
	// Blocking counts the differences that block a cleanup of Other (see
	// Diff.Blocking).
	Blocking int64 `json:"blocking"`
	// Diffs lists the first MaxReported differences, BlockingDiffs the
	// first MaxReported blocking ones. OnDiff gets them all.
	Diffs         []Diff `json:"diffs"`
	BlockingDiffs []Diff `json:"blocking_diffs"`
	// InFlight counts the items that still differed when the rounds
	// ended but whose authoritative side changed in every round while the
	// other side followed: writes in flight (a job the legacy services
	// keep writing, mirrored by the follower a little later each time).
	// They are not differences and block nothing: a cleanup deletes the
	// other side, which loses nothing of an item the authoritative side
	// keeps rewriting. InFlightItems lists the first few as last seen.
	InFlight      int64  `json:"in_flight"`
	InFlightItems []Diff `json:"in_flight_items"`
	// Rounds is how many re-check rounds ran.
	Rounds int `json:"rounds"`
	// Repaired counts the differences rewritten (Repair).
	Repaired int64         `json:"repaired"`
	Elapsed  time.Duration `json:"elapsed_ns"`
}

// VerifyProgress is what Verify reports as it goes.
type VerifyProgress struct {
	// Phase is "records <ns>", "pending", "active", "completed" or
	// "failed" for a pass, "rounds" when the differences found are about
	// to be re-checked, and "round <n>" after each round.
	Phase string
	// Checked counts the items compared so far; Suspects those that
	// differed once and wait for the rounds.
	Checked  int64
	Suspects int
}

// Verify compares the namespaces both ways: every record field by field
// with its TTL, every sub-key (type, content, TTL), every pending member
// and score, every field of every worker's active hash and of completed
// and failed; the whole-key TTL of completed and failed counts only when
// one side carries one and the other none. The authoritative namespace is
// the primary of the fleet's stage (the published one, else the
// Migrator's).
//
// A first pass walks each namespace with SCAN, ZSCAN and HSCAN, which
// return every element present for the whole walk, so concurrent writes
// cannot hide a difference; memory stays flat. What differs is then
// re-checked over Rounds rounds, Delay apart, each reading both sides of
// each job in one MULTI, so that a write in flight (dual-writes are
// atomic) is not reported. It is safe to run while services write, and
// writes nothing, except with Repair, which runs after the rounds.
//
// A write the follower mirrors a little later (a legacy service writing a
// job's progress every few milliseconds) differs at every read, so each
// read also keeps a digest of each side of the item (a record's fields
// and TTL, a sub-key's type, content and TTL, an entry's value). An item
// that still differs at round Rounds is reported, unless job:* is
// authoritative (a stage in which the follower runs), the verification
// is not a cleanup's, and its authoritative side changed since the round
// before. Such an item is watched for up to InFlightWait (10 × Delay),
// both sides read every 2 ms: it is counted as in flight
// (VerifyResult.InFlight), not as a difference, only if the other side
// caught up with it at least twice, the last time within the last two
// Delays, where catching up means moving to a state the authoritative
// side was seen in, as the follower's whole copies do; and it is settled
// only if it is equal at the last read. A copy that is
// partial or wrong never matches, and a follower that stopped stops
// catching up: those are reported, as is a difference that stops
// changing.
//
// A queue key of the wrong type on either side (pending not a sorted set;
// an active hash, completed or failed not a hash: the follower and the
// backfill pass such keys over) is one blocking difference, "not a hash",
// whose entries are not compared and which Repair leaves alone; the rest
// is compared as usual.
func (m *Migrator) Verify(ctx context.Context, opts VerifyOptions) (VerifyResult, error) {
	st, err := m.effectiveStage(ctx)
	if err != nil {
		return VerifyResult{}, err
	}
	v, err := m.newVerifier(st.Primary(), opts)
	if err != nil {
		return v.res, err
	}
	err = v.run(ctx, []verifySide{{v.a, v.o, true}, {v.o, v.a, false}})
	v.res.Elapsed = time.Since(v.start)
	return v.res, err
}

// verifySide is one pass: the namespace scanned and its counterpart.
// full compares each item with its counterpart; otherwise the pass only
// looks for items the counterpart lacks, the full pass over the
// counterpart having compared the rest.
type verifySide struct {
	s, c keyspace
	full bool
}

// vitem is one item of a job: what (an Item constant), the job, and the
// sub-key's suffix or the active hash's worker. A completed or failed
// item without id is the hash's whole-key TTL.
type vitem struct {
	what, id, sub string
	// ttl marks the item of a hash's whole-key TTL, which has no id. (An
	// id "" is an entry named "": a member or field may be.)
	ttl bool
	// keyType marks the item of a queue key's type (pending, an active
	// hash, completed, failed), which has no id: a key of the wrong type
	// on either side is one difference, and its entries are not compared.
	keyType bool
}

// vtypes are the types of a sub-key's two sides as last read.
type vtypes struct{ a, o string }

type verifier struct {
	m     *Migrator
	rdb   redis.UniversalClient
	opts  VerifyOptions
	batch int
	a, o  keyspace
	res   VerifyResult
	sus   map[vitem]vtypes
	start time.Time
	// forCleanup: the verification before a cleanup, which counts no
	// write in flight (see inFlightOK).
	forCleanup bool
	seed       maphash.Seed // of the digests
}

func (m *Migrator) newVerifier(authoritative Namespace, opts VerifyOptions) (*verifier, error) {
	v := &verifier{m: m, rdb: m.s.rdb, a: m.s.space(authoritative), o: m.s.space(authoritative.other()),
		sus: map[vitem]vtypes{}, start: time.Now()}
	v.res = VerifyResult{Authoritative: authoritative.String(), Other: authoritative.other().String(),
		ByItem: map[string]int64{}, Diffs: []Diff{}, BlockingDiffs: []Diff{}, InFlightItems: []Diff{}}
	v.seed = maphash.MakeSeed()
	var err error
	if v.batch, err = batchSize(opts.BatchSize); err != nil {
		return v, err
	}
	if opts.Rounds < 0 || opts.Delay < 0 || opts.InFlightWait < 0 || opts.TTLTolerance < 0 || opts.MaxReported < 0 || opts.MaxSuspects < 0 {
		return v, fmt.Errorf("%w: verify options must not be negative", ErrInvalidArgument)
	}
	opts.Rounds = cmpOr(opts.Rounds, DefaultVerifyRounds)
	opts.Delay = cmpOr(opts.Delay, DefaultVerifyDelay)
	if opts.Delay > maxInFlightWait || opts.InFlightWait > maxInFlightWait {
		return v, fmt.Errorf("%w: verify delay %v and in-flight wait %v must be at most %v", ErrInvalidArgument, opts.Delay, opts.InFlightWait, maxInFlightWait)
	}
	opts.InFlightWait = cmpOr(opts.InFlightWait, min(DefaultInFlightRounds*opts.Delay, maxInFlightWait))
	opts.TTLTolerance = cmpOr(opts.TTLTolerance, DefaultTTLTolerance)
	opts.MaxReported = cmpOr(opts.MaxReported, DefaultMaxReported)
	opts.MaxSuspects = cmpOr(opts.MaxSuspects, DefaultMaxSuspects)
	v.opts = opts
	return v, nil
}

// cmpOr returns x, or def when x is zero.
func cmpOr[T comparable](x, def T) T {
	var zero T
	if x == zero {
		return def
	}
	return x
}

// run makes the passes, then settles what they found.
func (v *verifier) run(ctx context.Context, sides []verifySide) error {
	for _, sd := range sides {
		passes := []func(context.Context, verifySide) error{v.recordPass, v.pendingPass, v.activePass,
			v.hashPass(ItemCompleted), v.hashPass(ItemFailed)}
		for _, pass := range passes {
			if err := pass(ctx, sd); err != nil {
				return err
			}
		}
	}
	return v.settle(ctx)
}

func (v *verifier) progress(phase string) {
	if v.opts.Progress != nil {
		v.opts.Progress(VerifyProgress{Phase: phase, Checked: v.res.Checked, Suspects: len(v.sus)})
	}
}

// walk runs handle on a scan's pages in chunks of at most the batch size.
// The next page is fetched while the current one is handled, so that
// Redis answers the scan while Go compares.
func (v *verifier) walk(ctx context.Context, phase string, scan scanner, handle func(ctx context.Context, items []scanItem) error) error {
	pending := prefetch(ctx, scan, 0)
	for {
		p := <-pending
		if p.err != nil {
			return p.err
		}
		if p.next != 0 {
			pending = prefetch(ctx, scan, p.next)
		} else {
			pending = nil
		}
		for chunk := range slices.Chunk(p.items, v.batch) {
			err := ctx.Err()
			if err == nil {
				err = handle(ctx, chunk)
			}
			if err != nil {
				if pending != nil {
					<-pending // leave no scan running behind
				}
				return err
			}
			v.progress(phase)
		}
		if pending == nil {
			return nil
		}
	}
}

// scanPage is one page of a scan, or its error.
type scanPage struct {
	items []scanItem
	next  uint64
	err   error
}

// prefetch starts fetching the page at cursor and returns where it will
// arrive. The channel is buffered: the fetch never waits for its reader.
func prefetch(ctx context.Context, scan scanner, cursor uint64) chan scanPage {
	ch := make(chan scanPage, 1)
	go func() {
		items, next, err := scan(ctx, cursor)
		ch <- scanPage{items, next, err}
	}()
	return ch
}

// suspect notes an item for the rounds; when MaxSuspects are held, they
// are settled first.
func (v *verifier) suspect(ctx context.Context, it vitem, t vtypes) error {
	if _, ok := v.sus[it]; !ok && len(v.sus) >= v.opts.MaxSuspects {
		if err := v.settle(ctx); err != nil {
			return err
		}
	}
	v.sus[it] = t
	return nil
}

// recordPass compares the records and sub-keys the scanned side has.
func (v *verifier) recordPass(ctx context.Context, sd verifySide) error {
	scan := keyScanner(v.rdb, sd.s.recordPattern(), int64(v.batch))
	return v.walk(ctx, "records "+sd.s.ns.String(), scan, func(ctx context.Context, items []scanItem) error {
		var recs []string
		var subs [][2]string
		for _, it := range items {
			switch id, suffix, ok := sd.s.parseRecordKey(it.name); {
			case !ok:
			case suffix == "":
				recs = append(recs, id)
			default:
				subs = append(subs, [2]string{id, suffix})
			}
		}
		v.res.Checked += int64(len(recs) + len(subs))
		if !sd.full {
			return v.lookForMissing(ctx, sd, recs, subs)
		}
		if err := v.compareRecords(ctx, recs); err != nil {
			return err
		}
		return v.compareSubKeys(ctx, subs)
	})
}

// lookForMissing notes the records and sub-keys the counterpart lacks.
func (v *verifier) lookForMissing(ctx context.Context, sd verifySide, recs []string, subs [][2]string) error {
	pipe := v.rdb.Pipeline()
	var its []vitem
	var cmds []*redis.IntCmd
	for _, id := range recs {
		its = append(its, vitem{what: ItemRecord, id: id})
		cmds = append(cmds, pipe.Exists(ctx, sd.c.record(id)))
	}
	for _, s := range subs {
		its = append(its, vitem{what: ItemSubKey, id: s[0], sub: s[1]})
		cmds = append(cmds, pipe.Exists(ctx, sd.c.sub(s[0], s[1])))
	}
	if len(cmds) == 0 {
		return nil
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return redisError("verify: read", "", err)
	}
	for i, c := range cmds {
		if c.Val() == 0 {
			if err := v.suspect(ctx, its[i], vtypes{}); err != nil {
				return err
			}
		}
	}
	return nil
}

// compareRecords reads records of both sides in a pipeline and notes
// those that differ.
func (v *verifier) compareRecords(ctx context.Context, ids []string) error {
	keyPairs := make([][2]string, len(ids))
	for i, id := range ids {
		keyPairs[i] = [2]string{v.a.record(id), v.o.record(id)}
	}
	maybe, err := v.screen(ctx, keyPairs, false)
	if err != nil {
		return err
	}
	if ids = pickAt(ids, maybe); len(ids) == 0 {
		return nil
	}
	pipe := v.rdb.Pipeline()
	read := v.readRecords(ctx, pipe, ids)
	if err := execReads(ctx, pipe); err != nil {
		return err
	}
	pairs, err := read()
	if err != nil {
		return err
	}
	for i, p := range pairs {
		if v.recordDiff(ids[i], p) != nil {
			if err := v.suspect(ctx, vitem{what: ItemRecord, id: ids[i]}, vtypes{}); err != nil {
				return err
			}
		}
	}
	return nil
}

// recPair is a job's two records, as read at one moment.
type recPair struct {
	a, o       map[string]string
	aErr, oErr error // set when the key is not a hash
	aTTL, oTTL time.Duration
	// aFinished: the authoritative side's completed or failed hash has
	// the job, whose record may be gone, removed by the retention TTL;
	// finishedAt is the time its entry gives (completed_at, failed_at),
	// noTime when it gives none.
	aFinished  bool
	finishedAt int64
}

func (p recPair) aHas() bool { return len(p.a) > 0 || p.aErr != nil }
func (p recPair) oHas() bool { return len(p.o) > 0 || p.oErr != nil }

// staleInOther reports whether the authoritative record is strictly
// fresher than the other one (or the other one is gone): what the other
// side holds of the job is then an old copy.
//
// A job finished on the authoritative side whose record is gone (the
// retention TTL removed it) counts as fresher than any copy: the other
// side's is what it held before the switch, or a straggler's late write to
// a job that is over.
func (p recPair) staleInOther() bool {
	if len(p.a) == 0 && p.aErr == nil && p.aFinished {
		// Unless the other copy was written after the job finished: a
		// straggler's write, or a new job under a reused id.
		return p.oErr == nil && (len(p.o) == 0 || recordFreshness(p.o).latest <= p.finishedAt)
	}
	if len(p.a) == 0 || p.aErr != nil || p.oErr != nil {
		return false
	}
	return len(p.o) == 0 || recordFreshness(p.a).compare(recordFreshness(p.o)) > 0
}

// readRecords queues the reads of both records of each id; the returned
// function decodes them once the pipeline ran.
func (v *verifier) readRecords(ctx context.Context, pipe redis.Pipeliner, ids []string) func() ([]recPair, error) {
	type cmds struct {
		a, o       *redis.MapStringStringCmd
		aTTL, oTTL *redis.DurationCmd
		done, fail *redis.StringCmd
	}
	cs := make([]cmds, len(ids))
	for i, id := range ids {
		cs[i] = cmds{pipe.HGetAll(ctx, v.a.record(id)), pipe.HGetAll(ctx, v.o.record(id)),
			pipe.PTTL(ctx, v.a.record(id)), pipe.PTTL(ctx, v.o.record(id)),
			pipe.HGet(ctx, v.a.completed(), id), pipe.HGet(ctx, v.a.failed(), id)}
	}
	return func() ([]recPair, error) {
		out := make([]recPair, len(ids))
		for i, c := range cs {
			p := &out[i]
			p.a, p.aErr = c.a.Result()
			p.o, p.oErr = c.o.Result()
			for _, err := range []error{p.aErr, p.oErr, c.aTTL.Err(), c.oTTL.Err()} {
				if err != nil && !hasErrorPrefix(err, "WRONGTYPE") {
					return nil, redisError("verify: read", ids[i], err)
				}
			}
			p.aTTL, p.oTTL = c.aTTL.Val(), c.oTTL.Val()
			// A completed or failed hash of the wrong type reads as none.
			p.finishedAt = noTime
			for _, e := range []*redis.StringCmd{c.done, c.fail} {
				if e.Err() != nil {
					continue
				}
				p.aFinished = true
				var entry struct {
					CompletedAt string `json:"completed_at"`
					FailedAt    string `json:"failed_at"`
				}
				if json.Unmarshal([]byte(e.Val()), &entry) == nil {
					for _, at := range []string{entry.CompletedAt, entry.FailedAt} {
						if ms, ok := parseTimeMs(at); ok && ms > p.finishedAt {
							p.finishedAt = ms
						}
					}
				}
			}
		}
		return out, nil
	}
}

// execReads runs a pipeline of reads; errors of single commands (a key
// of another type, a member missing) are left to their decoders.
func execReads(ctx context.Context, pipe redis.Pipeliner) error {
	cmds, err := pipe.Exec(ctx)
	if err == nil {
		return nil
	}
	for _, c := range cmds {
		if e := c.Err(); e != nil && !errors.Is(e, redis.Nil) && !hasErrorPrefix(e, "WRONGTYPE") {
			return redisError("verify: read", "", e)
		}
	}
	return nil
}

// recordDiff compares a job's records.
func (v *verifier) recordDiff(id string, p recPair) *Diff {
	d := v.diff(ItemRecord, id, v.a.record(id), v.o.record(id))
	switch {
	case !p.aHas() && !p.oHas():
		return nil
	case !p.oHas():
		d.Kind = DiffMissing
	case !p.aHas():
		d.Kind, d.Key, d.Other, d.Blocking = DiffMissing, d.Other, d.Key, !p.staleInOther()
	case p.aErr != nil || p.oErr != nil:
		d.Kind, d.Detail, d.Blocking = DiffDifferent, "not a hash", true
	case !maps.Equal(p.a, p.o):
		d.Kind, d.Detail, d.Blocking = DiffDifferent, v.fieldsDetail(id, p), !p.staleInOther()
	case v.ttlDiffers(p.aTTL, p.oTTL, false):
		d.Kind, d.Detail = DiffTTL, ttlDetail(p.oTTL, p.aTTL)
	default:
		return nil
	}
	return &d
}

// diff starts a Diff whose Key is the other side's key.
func (v *verifier) diff(what, id, aKey, oKey string) Diff {
	return Diff{Item: what, ID: id, Key: oKey, Other: aKey}
}

// fieldsDetail names the fields that differ and the fresher record.
func (v *verifier) fieldsDetail(id string, p recPair) string {
	var names []string
	for k, x := range p.a {
		if y, ok := p.o[k]; !ok || x != y {
			names = append(names, k)
		}
	}
	for k := range p.o {
		if _, ok := p.a[k]; !ok {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	if len(names) > 6 {
		names = append(names[:6], fmt.Sprintf("and %d more", len(names)-6))
	}
	fresh := "neither is fresher"
	switch recordFreshness(p.a).compare(recordFreshness(p.o)) {
	case 1:
		fresh = v.a.record(id) + " is fresher"
	case -1:
		fresh = v.o.record(id) + " is fresher"
	}
	return "fields " + strings.Join(names, ", ") + "; " + fresh
}

// ttlDiffers compares two PTTLs (-1: none). With presenceOnly, only one
// side having a TTL counts; otherwise also TTLs further apart than the
// tolerance.
func (v *verifier) ttlDiffers(a, b time.Duration, presenceOnly bool) bool {
	if (a > 0) != (b > 0) {
		return true
	}
	return !presenceOnly && a > 0 && (a-b > v.opts.TTLTolerance || b-a > v.opts.TTLTolerance)
}

func ttlDetail(key, other time.Duration) string {
	return ttlText(key) + " vs " + ttlText(other)
}

func ttlText(d time.Duration) string {
	if d < 0 {
		return "none"
	}
	return d.Round(time.Second).String()
}

// compareSubKeys reads sub-keys of both sides (types and TTLs, then
// contents) and notes those that differ.
func (v *verifier) compareSubKeys(ctx context.Context, subs [][2]string) error {
	pairs := make([][2]string, len(subs))
	for i, s := range subs {
		pairs[i] = [2]string{v.a.sub(s[0], s[1]), v.o.sub(s[0], s[1])}
	}
	maybe, err := v.screen(ctx, pairs, true)
	if err != nil {
		return err
	}
	if subs = pickAt(subs, maybe); len(subs) == 0 {
		return nil
	}
	its := make([]vitem, len(subs))
	for i, s := range subs {
		its[i] = vitem{what: ItemSubKey, id: s[0], sub: s[1]}
	}
	pipe := v.rdb.Pipeline()
	types := make([][2]*redis.StatusCmd, len(its))
	for i, it := range its {
		types[i] = [2]*redis.StatusCmd{pipe.Type(ctx, v.a.sub(it.id, it.sub)), pipe.Type(ctx, v.o.sub(it.id, it.sub))}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return redisError("verify: read sub-keys", "", err)
	}
	pipe = v.rdb.Pipeline()
	reads := make([]func() subPair, len(its))
	for i, it := range its {
		reads[i] = v.readSubKey(ctx, pipe, it, vtypes{types[i][0].Val(), types[i][1].Val()})
	}
	if err := execReads(ctx, pipe); err != nil {
		return err
	}
	for i, it := range its {
		if p := reads[i](); v.subKeyDiff(it, p, recPair{}) != nil {
			if err := v.suspect(ctx, it, vtypes{p.aType, p.oType}); err != nil {
				return err
			}
		}
	}
	return nil
}

// subPair is a sub-key's two sides as read at one moment.
type subPair struct {
	aType, oType string // as read with the content; "" when not read
	a, o         any
	aTTL, oTTL   time.Duration
	// changed is set when the types read with the content are not those
	// the content was read for.
	changed bool
}

// readSubKey queues the reads of a sub-key's two sides, each content read
// by the type it had when last seen.
func (v *verifier) readSubKey(ctx context.Context, pipe redis.Pipeliner, it vitem, seen vtypes) func() subPair {
	ak, ok := v.a.sub(it.id, it.sub), v.o.sub(it.id, it.sub)
	at, ot := pipe.Type(ctx, ak), pipe.Type(ctx, ok)
	attl, ottl := pipe.PTTL(ctx, ak), pipe.PTTL(ctx, ok)
	ac, oc := readContent(ctx, pipe, ak, seen.a), readContent(ctx, pipe, ok, seen.o)
	return func() subPair {
		p := subPair{aType: at.Val(), oType: ot.Val(), aTTL: attl.Val(), oTTL: ottl.Val()}
		p.changed = p.aType != seen.a || p.oType != seen.o
		p.a, p.o = ac(), oc()
		return p
	}
}

// readContent queues the read of a key's content by its type and returns
// a comparable form of it once the pipeline ran: a map for a hash, a
// sorted list for a set, the elements of a list, zset or stream, the
// value of a string, a DUMP for other types.
func readContent(ctx context.Context, pipe redis.Pipeliner, key, typ string) func() any {
	var c redis.Cmder
	switch typ {
	case "none", "":
		return func() any { return nil }
	case "hash":
		c = pipe.HGetAll(ctx, key)
	case "string":
		c = pipe.Get(ctx, key)
	case "list":
		c = pipe.LRange(ctx, key, 0, -1)
	case "set":
		c = pipe.SMembers(ctx, key)
	case "zset":
		c = pipe.ZRangeWithScores(ctx, key, 0, -1)
	case "stream":
		c = pipe.XRange(ctx, key, "-", "+")
	default:
		c = pipe.Do(ctx, "DUMP", key)
	}
	return func() any {
		if c.Err() != nil {
			return c.Err().Error()
		}
		switch x := c.(type) {
		case *redis.StringSliceCmd:
			l := x.Val()
			if typ == "set" {
				slices.Sort(l)
			}
			return l
		case *redis.MapStringStringCmd:
			return x.Val()
		case *redis.StringCmd:
			return x.Val()
		case *redis.ZSliceCmd:
			return x.Val()
		case *redis.XMessageSliceCmd:
			return x.Val()
		case *redis.Cmd:
			return x.Val()
		}
		return nil
	}
}

// subKeyDiff compares a sub-key's two sides; r, the job's records, tells
// whether the other side's copy is stale (r.a empty when not read).
func (v *verifier) subKeyDiff(it vitem, p subPair, r recPair) *Diff {
	d := v.diff(ItemSubKey, it.id, v.a.sub(it.id, it.sub), v.o.sub(it.id, it.sub))
	aHas, oHas := p.aType != "none", p.oType != "none"
	switch {
	case !aHas && !oHas:
		return nil
	case !oHas:
		d.Kind = DiffMissing
	case !aHas:
		d.Kind, d.Key, d.Other, d.Blocking = DiffMissing, d.Other, d.Key, !r.staleInOther()
	case p.aType != p.oType:
		d.Kind, d.Detail, d.Blocking = DiffDifferent, "type "+p.oType+" vs "+p.aType, !r.staleInOther()
	case p.changed:
		d.Kind, d.Detail, d.Blocking = DiffDifferent, "its type changed while it was read", !r.staleInOther()
	case !reflect.DeepEqual(p.a, p.o):
		d.Kind, d.Detail, d.Blocking = DiffDifferent, "content", !r.staleInOther()
	case v.ttlDiffers(p.aTTL, p.oTTL, false):
		d.Kind, d.Detail = DiffTTL, ttlDetail(p.oTTL, p.aTTL)
	default:
		return nil
	}
	return &d
}

// pendingPass compares the pending members the scanned side has.
func (v *verifier) pendingPass(ctx context.Context, sd verifySide) error {
	return v.entryPass(ctx, sd, ItemPending, kindZset, sd.s.pending(), sd.c.pending(), "")
}

// hashPass returns the pass over completed or failed.
func (v *verifier) hashPass(what string) func(context.Context, verifySide) error {
	return func(ctx context.Context, sd verifySide) error {
		s, c := sd.s.completed(), sd.c.completed()
		if what == ItemFailed {
			s, c = sd.s.failed(), sd.c.failed()
		}
		if sd.full {
			if err := v.compareHashTTL(ctx, what, s, c); err != nil {
				return err
			}
		}
		return v.entryPass(ctx, sd, what, kindHash, s, c, "")
	}
}

// activePass compares the active hash of every worker the scanned side
// has.
func (v *verifier) activePass(ctx context.Context, sd verifySide) error {
	scan := keyScanner(v.rdb, sd.s.activePattern(), int64(v.batch))
	for cursor := uint64(0); ; {
		page, next, err := scan(ctx, cursor)
		if err != nil {
			return err
		}
		for _, it := range notDone(page, nil) {
			if w, ok := sd.s.workerFromActive(it.name); ok {
				if err := v.entryPass(ctx, sd, ItemActive, kindHash, sd.s.active(w), sd.c.active(w), w); err != nil {
					return err
				}
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// entryPass scans one queue key and notes the entries its counterpart
// lacks or (full) holds otherwise. When either key is of the wrong type
// (the follower and the backfill pass such keys over), that is noted as
// one difference, the key's, and its entries are not compared: the rest
// of the namespace still is.
func (v *verifier) entryPass(ctx context.Context, sd verifySide, what string, kind entryKind, key, other, worker string) error {
	keyItem := vitem{what: what, sub: worker, keyType: true}
	ok, err := v.queueTypesOK(ctx, kind, key, other)
	if err != nil {
		return err
	}
	if !ok {
		return v.suspect(ctx, keyItem, vtypes{})
	}
	// A key that turns into another type during the walk fails its scan
	// or read with WRONGTYPE: the key is noted for the rounds instead.
	wrongType := false
	noteWrongType := func(err error) error {
		if errors.Is(err, ErrCorruptRecord) {
			wrongType = true
		}
		return err
	}
	scanAll := entryScanner(v.rdb, kind, key, int64(v.batch))
	scan := func(ctx context.Context, cursor uint64) ([]scanItem, uint64, error) {
		items, next, err := scanAll(ctx, cursor)
		return items, next, noteWrongType(err)
	}
	err = v.walk(ctx, what, scan, func(ctx context.Context, items []scanItem) error {
		v.res.Checked += int64(len(items))
		differ, err := differing(ctx, v.rdb, kind, other, items, !sd.full)
		if err != nil {
			return noteWrongType(err)
		}
		for _, id := range differ {
			if err := v.suspect(ctx, vitem{what: what, id: id, sub: worker}, vtypes{}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil && wrongType {
		return v.suspect(ctx, keyItem, vtypes{})
	}
	return err
}

// queueType is the type a queue key of the kind must have.
func queueType(kind entryKind) string {
	if kind == kindZset {
		return "zset"
	}
	return "hash"
}

// queueTypesOK reports whether a queue key and its counterpart are each
// missing or of the kind's type.
func (v *verifier) queueTypesOK(ctx context.Context, kind entryKind, key, other string) (bool, error) {
	pipe := v.rdb.Pipeline()
	kt, ot := pipe.Type(ctx, key), pipe.Type(ctx, other)
	if _, err := pipe.Exec(ctx); err != nil {
		return false, redisError("verify: read the type of "+key, "", err)
	}
	want := queueType(kind)
	return (kt.Val() == "none" || kt.Val() == want) && (ot.Val() == "none" || ot.Val() == want), nil
}

// keyTypeDiff compares the types of a queue key's two sides: either of
// another type than the queue's is a difference, which blocks a cleanup
// (what the key holds cannot be compared) and which Repair leaves alone.
func (v *verifier) keyTypeDiff(it vitem, at, ot string) *Diff {
	want := queueType(entryKindOf(it))
	var bad []string
	for _, side := range []struct{ ns, typ string }{{v.a.ns.String(), at}, {v.o.ns.String(), ot}} {
		if side.typ != "none" && side.typ != want {
			bad = append(bad, fmt.Sprintf("the %s:* key is a %s", side.ns, side.typ))
		}
	}
	if len(bad) == 0 {
		return nil
	}
	ak, ok := v.entryKeys(it)
	d := v.diff(it.what, "", ak, ok)
	d.Kind, d.Detail, d.Blocking = DiffDifferent, "not a "+want+": "+strings.Join(bad, ", "), true
	return &d
}

// entryKindOf is the kind of the queue an entry item is in.
func entryKindOf(it vitem) entryKind {
	if it.what == ItemPending {
		return kindZset
	}
	return kindHash
}

// compareHashTTL notes the whole-key TTL of completed or failed when one
// side carries one and the other none.
func (v *verifier) compareHashTTL(ctx context.Context, what, s, c string) error {
	pipe := v.rdb.Pipeline()
	st, ct := pipe.PTTL(ctx, s), pipe.PTTL(ctx, c)
	if _, err := pipe.Exec(ctx); err != nil {
		return redisError("verify: read TTL of "+s, "", err)
	}
	if st.Val() != -2 && ct.Val() != -2 && v.ttlDiffers(st.Val(), ct.Val(), true) {
		return v.suspect(ctx, vitem{what: what, ttl: true}, vtypes{})
	}
	return nil
}

// entryKeys returns the authoritative and other key of an entry item.
func (v *verifier) entryKeys(it vitem) (a, o string) {
	switch it.what {
	case ItemPending:
		return v.a.pending(), v.o.pending()
	case ItemActive:
		return v.a.active(it.sub), v.o.active(it.sub)
	case ItemCompleted:
		return v.a.completed(), v.o.completed()
	}
	return v.a.failed(), v.o.failed()
}

// settle re-checks the suspects over the rounds, reports those that stay,
// and repairs them if asked. The suspects are then forgotten.
//
// Each read of an item keeps a digest of both sides (see vdigest); a read
// right after the pass gives the first. An item that still differs in
// round Rounds or later is reported once its authoritative side stayed
// unchanged since the read before, or once its other side was never seen
// to change (nothing follows the writes). Otherwise it is a write in
// flight, re-checked while InFlightWait lasts, and counted as in flight
// if it is still changing then.
func (v *verifier) settle(ctx context.Context) error {
	items := slices.Collect(maps.Keys(v.sus))
	slices.SortFunc(items, compareItems)
	var confirmed []checked
	if len(items) > 0 {
		v.progress("rounds")
		// The first digests, and a first re-check.
		found, err := v.checkAll(ctx, items)
		if err != nil {
			return err
		}
		last := make(map[vitem]checked, len(found))
		items = items[:0]
		for _, c := range found {
			last[c.it] = c
			items = append(items, c.it)
		}
		// The rounds: what still differs at round Rounds is reported, but
		// for items whose authoritative side changed since the round
		// before (a write in flight), which may be followed (see follows).
		var moving []vitem
		for round := 1; round <= v.opts.Rounds && len(items) > 0; round++ {
			if err := sleepCtx(ctx, v.opts.Delay); err != nil {
				return err
			}
			v.res.Rounds = max(v.res.Rounds, round)
			if found, err = v.checkAll(ctx, items); err != nil {
				return err
			}
			items = items[:0]
			for _, c := range found {
				prev := last[c.it]
				last[c.it] = c
				switch {
				case round < v.opts.Rounds:
					items = append(items, c.it)
				case v.inFlightOK() && !v.sameDigest(prev.a, c.a):
					moving = append(moving, c.it)
				default:
					confirmed = append(confirmed, c)
				}
			}
			v.progress(fmt.Sprint("round ", round))
		}
		if len(moving) > 0 {
			inflight, still, err := v.follows(ctx, moving, last)
			if err != nil {
				return err
			}
			confirmed = append(confirmed, still...)
			for _, c := range inflight {
				v.inFlight(c.d)
			}
		}
		slices.SortFunc(confirmed, func(x, y checked) int { return compareItems(x.it, y.it) })
	}
	clear(v.sus)
	for _, c := range confirmed {
		v.report(c.d)
	}
	if v.opts.Repair {
		// A queue key of the wrong type is not rewritten: what it holds
		// is not the queue's, and a person must look at it.
		return v.repair(ctx, slices.DeleteFunc(confirmed, func(c checked) bool { return c.it.keyType }))
	}
	return nil
}

// inFlightOK tells whether differences may be counted as writes in
// flight at all: only where job:* is authoritative (the stages in which
// the follower mirrors the legacy services' writes a little later), and
// never in the verification before a cleanup, which must refuse while the
// namespace it deletes still changes.
func (v *verifier) inFlightOK() bool { return v.a.ns == JobNamespace && !v.forCleanup }

// followPoll is how often follows reads the items it watches: often
// enough to see most states of an item written every few milliseconds.
const followPoll = 2 * time.Millisecond

// follows watches items whose authoritative side is changing, for up to
// InFlightWait, reading both sides every followPoll and keeping the
// digests the authoritative side had. An item is followed when the other
// side catches up with it: moves to a state the authoritative side was
// seen in (a whole copy of it, as the follower makes). One equal at the
// last read is settled. One still differing at the end is in flight if it
// was caught up with at least twice, the last time within the last two
// Delays; any other is reported: a copy that is partial or wrong never
// matches, and one that stopped following stops catching up.
func (v *verifier) follows(ctx context.Context, items []vitem, last map[vitem]checked) (inflight, still []checked, err error) {
	type watch struct {
		seen    map[vdigest]bool
		catches int
		caught  time.Time
		equal   bool // at the last read
	}
	key := func(d vdigest) vdigest { return vdigest{known: d.known, sum: d.sum, expires: d.expires} }
	w := make(map[vitem]*watch, len(items))
	for _, it := range items {
		w[it] = &watch{seen: map[vdigest]bool{key(last[it].a): true}}
	}
	// An item found equal at one read is watched on, to the end: with
	// reads this often, a side that never moves (a follower that is down)
	// can equal the other by chance for a moment, as a progress hash going
	// from 0 to 100 passes the value its stale copy holds. It is settled
	// if it is equal at the last read.
	end := time.Now().Add(v.opts.InFlightWait)
	for time.Now().Before(end) {
		if err := sleepCtx(ctx, followPoll); err != nil {
			return nil, nil, err
		}
		found, err := v.checkAll(ctx, items)
		if err != nil {
			return nil, nil, err
		}
		for _, x := range w {
			x.equal = true
		}
		for _, c := range found {
			x, prev := w[c.it], last[c.it]
			x.equal = false
			last[c.it] = c
			if len(x.seen) < 100_000 {
				x.seen[key(c.a)] = true
			}
			if !v.sameDigest(prev.o, c.o) && x.seen[key(c.o)] {
				x.catches++
				x.caught = time.Now()
			}
		}
	}
	for _, it := range items {
		x, c := w[it], last[it]
		if x.equal {
			continue
		}
		if x.catches >= 2 && time.Since(x.caught) <= 2*v.opts.Delay+followPoll {
			inflight = append(inflight, c)
		} else {
			still = append(still, c)
		}
	}
	return inflight, still, nil
}

// inFlight counts an item whose authoritative side kept changing through
// the rounds while the other side followed, and lists it while there is
// room. It blocks nothing.
func (v *verifier) inFlight(d Diff) {
	v.res.InFlight++
	if len(v.res.InFlightItems) < min(maxInFlightListed, v.opts.MaxReported) {
		d.Blocking = false
		v.res.InFlightItems = append(v.res.InFlightItems, d)
	}
}

// vdigest is one side of an item as read at one moment, to tell whether
// it changed between two reads: a hash of its content (a record's fields,
// a sub-key's type and content, an entry's value, a queue key's type) and
// when it expires, if it does. The zero value, unknown, counts as
// unchanged.
type vdigest struct {
	known    bool
	sum      uint64
	expires  bool
	deadline time.Time
}

// digest makes the digest of content (compared by its printed form, in
// which maps are sorted) and a PTTL, as read at at.
func (v *verifier) digest(at time.Time, content any, ttl time.Duration) vdigest {
	d := vdigest{known: true, sum: maphash.String(v.seed, fmt.Sprintf("%T %v", content, content))}
	if ttl > 0 {
		d.expires, d.deadline = true, at.Add(ttl)
	}
	return d
}

// sameDigest reports whether two reads of a side found the same content
// and expiry (deadlines within the TTL tolerance: a TTL counting down is
// no change). An unknown digest is the same as any.
func (v *verifier) sameDigest(x, y vdigest) bool {
	if !x.known || !y.known {
		return true
	}
	if x.sum != y.sum || x.expires != y.expires {
		return false
	}
	gap := x.deadline.Sub(y.deadline)
	return !x.expires || (gap <= v.opts.TTLTolerance && -gap <= v.opts.TTLTolerance)
}

// itemOrder puts a job's record first, then its sub-keys and entries.
var itemOrder = map[string]int{ItemRecord: 0, ItemSubKey: 1, ItemPending: 2, ItemActive: 3, ItemCompleted: 4, ItemFailed: 5}

// compareItems orders items by job, then as itemOrder, then by sub-key or
// worker: the order differences are reported in.
func compareItems(x, y vitem) int {
	return cmp.Or(strings.Compare(x.id, y.id), cmp.Compare(itemOrder[x.what], itemOrder[y.what]), strings.Compare(x.sub, y.sub),
		compareBool(x.ttl, y.ttl), compareBool(x.keyType, y.keyType))
}

func compareBool(x, y bool) int {
	switch {
	case x == y:
		return 0
	case x:
		return 1
	}
	return -1
}

// checked is a difference found by a round, with its item and the
// digests of its two sides.
type checked struct {
	it   vitem
	d    Diff
	a, o vdigest
}

// checkAll re-reads items in batches; a job's items stay in one batch
// when they fit, as the items come sorted by job.
func (v *verifier) checkAll(ctx context.Context, items []vitem) ([]checked, error) {
	var out []checked
	for _, batch := range byJob(items, v.batch) {
		found, err := v.check(ctx, batch)
		if err != nil {
			return nil, err
		}
		out = append(out, found...)
	}
	return out, nil
}

// byJob cuts items sorted by job into batches of at most n, without
// splitting a job's items unless they alone are more than n.
func byJob(items []vitem, n int) [][]vitem {
	var out [][]vitem
	for len(items) > 0 {
		end := min(n, len(items))
		for end < len(items) && end > 1 && items[end].id == items[end-1].id {
			end--
		}
		if end == 1 && len(items) > 1 && items[0].id == items[1].id {
			end = min(n, len(items))
		}
		out = append(out, items[:end])
		items = items[end:]
	}
	return out
}

// check reads the items of a batch and both records of their jobs in one
// MULTI, and returns those that still differ.
func (v *verifier) check(ctx context.Context, items []vitem) ([]checked, error) {
	pipe := v.rdb.TxPipeline()
	var ids []string
	idx := map[string]int{}
	for _, it := range items {
		if _, ok := idx[it.id]; !ok && validateID(it.id) == nil {
			idx[it.id] = len(ids)
			ids = append(ids, it.id)
		}
	}
	recs := v.readRecords(ctx, pipe, ids)
	reads := make([]func(r recPair, at time.Time) (*Diff, vdigest, vdigest), len(items))
	for i, it := range items {
		reads[i] = v.readItem(ctx, pipe, it)
	}
	if err := execReads(ctx, pipe); err != nil {
		return nil, err
	}
	at := time.Now()
	pairs, err := recs()
	if err != nil {
		return nil, err
	}
	var out []checked
	for i, it := range items {
		var r recPair
		if k, ok := idx[it.id]; ok {
			r = pairs[k]
		}
		if d, a, o := reads[i](r, at); d != nil {
			out = append(out, checked{it, *d, a, o})
		}
	}
	return out, nil
}

// readItem queues the reads of one item; the returned function compares
// them, given the job's records and when they were read, and returns the
// digests of the two sides.
func (v *verifier) readItem(ctx context.Context, pipe redis.Pipeliner, it vitem) func(r recPair, at time.Time) (*Diff, vdigest, vdigest) {
	switch {
	case it.what == ItemRecord:
		return func(r recPair, at time.Time) (*Diff, vdigest, vdigest) {
			return v.recordDiff(it.id, r), v.digest(at, recordContent(r.a, r.aErr), r.aTTL), v.digest(at, recordContent(r.o, r.oErr), r.oTTL)
		}
	case it.what == ItemSubKey:
		read := v.readSubKey(ctx, pipe, it, v.sus[it])
		return func(r recPair, at time.Time) (*Diff, vdigest, vdigest) {
			p := read()
			if p.changed {
				v.sus[it] = vtypes{p.aType, p.oType}
			}
			return v.subKeyDiff(it, p, r), v.digest(at, [2]any{p.aType, p.a}, p.aTTL), v.digest(at, [2]any{p.oType, p.o}, p.oTTL)
		}
	case it.keyType:
		a, o := v.entryKeys(it)
		at, ot := pipe.Type(ctx, a), pipe.Type(ctx, o)
		return func(_ recPair, now time.Time) (*Diff, vdigest, vdigest) {
			return v.keyTypeDiff(it, at.Val(), ot.Val()), v.digest(now, at.Val(), 0), v.digest(now, ot.Val(), 0)
		}
	case it.ttl:
		a, o := v.entryKeys(it)
		at, ot := pipe.PTTL(ctx, a), pipe.PTTL(ctx, o)
		return func(_ recPair, now time.Time) (*Diff, vdigest, vdigest) {
			return v.hashTTLDiff(it, at.Val(), ot.Val()), v.digest(now, nil, at.Val()), v.digest(now, nil, ot.Val())
		}
	}
	a, o := v.entryKeys(it)
	kind := entryKindOf(it)
	ac, oc := readEntry(ctx, pipe, kind, a, it.id), readEntry(ctx, pipe, kind, o, it.id)
	return func(r recPair, now time.Time) (*Diff, vdigest, vdigest) {
		av, ov := ac(), oc()
		return v.entryDiff(it, kind, av, ov, r), v.digest(now, av, 0), v.digest(now, ov, 0)
	}
}

// recordContent is what a record's digest covers: its fields, or that it
// is not a hash.
func recordContent(fields map[string]string, err error) any {
	if err != nil {
		return "not a hash"
	}
	return fields
}

// readEntry queues the read of one entry: a score or a field's value.
func readEntry(ctx context.Context, pipe redis.Pipeliner, kind entryKind, key, name string) func() optString {
	var c *redis.StringCmd
	if kind == kindZset {
		c = redis.NewStringCmd(ctx, "ZSCORE", key, name)
		_ = pipe.Process(ctx, c)
	} else {
		c = pipe.HGet(ctx, key, name)
	}
	return func() optString {
		s, err := c.Result()
		return optString{s, err == nil}
	}
}

// entryDiff compares an entry's two sides.
func (v *verifier) entryDiff(it vitem, kind entryKind, a, o optString, r recPair) *Diff {
	ak, ok := v.entryKeys(it)
	d := v.diff(it.what, it.id, ak, ok)
	switch {
	case !a.ok && !o.ok:
		return nil
	case !o.ok:
		d.Kind, d.Detail = DiffMissing, entryText(kind, a.v)
	case !a.ok:
		d.Kind, d.Key, d.Other, d.Detail, d.Blocking = DiffMissing, d.Other, d.Key, entryText(kind, o.v), !r.staleInOther()
	case sameEntry(kind, a.v, o.v):
		return nil
	default:
		d.Kind, d.Detail, d.Blocking = DiffDifferent, entryText(kind, o.v)+" vs "+entryText(kind, a.v), !r.staleInOther()
	}
	return &d
}

// entryText shows an entry's score, or its value cut short.
func entryText(kind entryKind, v string) string {
	if kind == kindZset {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			return "score " + strconv.FormatFloat(f, 'f', -1, 64)
		}
		return "score " + v
	}
	return "value " + truncate(v, 60)
}

// hashTTLDiff compares the whole-key TTLs of completed or failed: it
// counts only when one side carries one and the other none.
func (v *verifier) hashTTLDiff(it vitem, a, o time.Duration) *Diff {
	if a == -2 || o == -2 || !v.ttlDiffers(a, o, true) {
		return nil
	}
	ak, ok := v.entryKeys(it)
	d := v.diff(it.what, "", ak, ok)
	d.Kind, d.Detail = DiffTTL, ttlDetail(o, a)
	return &d
}

// report counts a confirmed difference, and lists it while there is room.
func (v *verifier) report(d Diff) {
	r := &v.res
	r.Differences++
	r.ByItem[d.Item]++
	switch d.Kind {
	case DiffMissing:
		r.Missing++
	case DiffDifferent:
		r.Different++
	default:
		r.TTL++
	}
	if len(r.Diffs) < v.opts.MaxReported {
		r.Diffs = append(r.Diffs, d)
	}
	if d.Blocking {
		r.Blocking++
		if len(r.BlockingDiffs) < v.opts.MaxReported {
			r.BlockingDiffs = append(r.BlockingDiffs, d)
		}
	}
	if v.opts.OnDiff != nil {
		v.opts.OnDiff(d)
	}
}

// repairScript rewrites items of the other namespace from the
// authoritative one, one operation per item, all in one atomic step:
// "key" copies a record or sub-key whole (or deletes the copy when the
// original is gone), "member" sets or removes a pending member, "field"
// sets or removes a hash field and copies the hash's whole-key TTL,
// "ttl" copies the whole-key TTL only; "record" is "key" for a record,
// which is copied only if it is a hash (the follower and Backfill pass
// over junk there too). A failing operation (a key of the wrong type) is
// reported and the others still apply.
//
// It first checks the published stage: when one is published whose
// primary is not the namespace Verify took as authoritative (a stage
// change during the verification), it writes nothing, or it would copy
// the side no longer authoritative over the one that now is; nor when
// the stage key holds no stage it can read (junk, or a key of another
// type): an operator's tool that overwrites a namespace does not guess.
//
//	KEYS[2i-1], KEYS[2i] -> authoritative key, other key of operation i
//	KEYS[#KEYS] -> jobstore:stage
//	ARGV[3] -> the stages whose primary is the authoritative namespace, space-separated
//	ARGV[2i+2], ARGV[2i+3] -> kind of operation i, its member or field ('' for key and ttl)
//	Reply: OK {errors} {} repaired | STAGE published
var repairScript = redis.NewScript(migrateLua(luaStages + `
local allowed = {}
for name in string.gmatch(ARGV[3], '%S+') do allowed[name] = true end
local raw = redis.pcall('HGET', KEYS[#KEYS], 'stage')
local pub = stage_name(raw)
if raw and not pub then return {'STAGE', 'unreadable'} end
if pub and not allowed[pub] then return {'STAGE', pub} end
local n = 0
for i = 4, #ARGV, 2 do
  local a, o, kind, arg = KEYS[i - 3], KEYS[i - 2], ARGV[i], ARGV[i + 1]
  local ok, e = pcall(function()
    if kind == 'record' and redis.call('EXISTS', a) == 1 and redis.call('TYPE', a)['ok'] ~= 'hash' then
      error(a .. ' is a ' .. redis.call('TYPE', a)['ok'] .. ', not a hash: not copied')
    end
    if kind == 'key' or kind == 'record' then
      if redis.call('EXISTS', a) == 1 then copy_key(a, o) else redis.call('DEL', o) end
    elseif kind == 'member' then
      set_member(a, o, arg, false, false)
    elseif kind == 'field' then
      set_field(a, o, arg, false, false)
      copy_ttl(a, o, false, false)
    else
      copy_ttl(a, o, false, false)
    end
  end)
  if ok then n = n + 1 else merr[#merr + 1] = o .. ': ' .. errtext(e) end
end
return done('OK', n)
`))

// repair rewrites the differences found from the authoritative side,
// a batch of jobs per script.
func (v *verifier) repair(ctx context.Context, found []checked) error {
	items := make([]vitem, len(found))
	for i, c := range found {
		items[i] = c.it
	}
	var allowed []string
	for st := StageLegacy; st <= StageStepOnly; st++ {
		if st.Primary() == v.a.ns {
			allowed = append(allowed, st.String())
		}
	}
	var errs []error
	for _, batch := range byJob(items, v.batch) {
		keys := make([]string, 0, 2*len(batch)+1)
		args := append(flags(), strings.Join(allowed, " "))
		for _, it := range batch {
			a, o, kind, arg := v.repairOp(it)
			keys = append(keys, a, o)
			args = append(args, kind, arg)
		}
		keys = append(keys, stageKey(v.m.s.prefix))
		res, err := repairScript.Run(ctx, v.rdb, keys, args...).Slice()
		if err != nil {
			return redisError("verify: repair", "", err)
		}
		if len(res) == 2 && res[0] == "STAGE" && res[1] == "unreadable" {
			errs = append(errs, fmt.Errorf("%w: verify: the published stage became unreadable (%s holds no stage); repair stopped (%d repaired before); fix the stage key, then run verify again",
				ErrNamespaceInUse, stageKey(v.m.s.prefix), v.res.Repaired))
			return errors.Join(errs...)
		}
		if len(res) == 2 && res[0] == "STAGE" {
			errs = append(errs, fmt.Errorf("%w: verify: the published stage is now %v, in which %s:* is no longer authoritative; "+
				"repair stopped (%d repaired before); run verify again", ErrNamespaceInUse, res[1], v.a.ns, v.res.Repaired))
			return errors.Join(errs...)
		}
		if len(res) > 4 {
			n, _ := res[4].(int64)
			v.res.Repaired += n
		}
		if e, _ := res[1].([]any); len(e) > 0 {
			errs = append(errs, fmt.Errorf("%w: repair: %v", ErrCorruptRecord, e))
		}
	}
	return errors.Join(errs...)
}

// repairOp is the repair script's operation for an item.
func (v *verifier) repairOp(it vitem) (a, o, kind, arg string) {
	switch {
	case it.what == ItemRecord:
		return v.a.record(it.id), v.o.record(it.id), "record", ""
	case it.what == ItemSubKey:
		return v.a.sub(it.id, it.sub), v.o.sub(it.id, it.sub), "key", ""
	case it.ttl:
		a, o = v.entryKeys(it)
		return a, o, "ttl", ""
	case it.what == ItemPending:
		return v.a.pending(), v.o.pending(), "member", it.id
	}
	a, o = v.entryKeys(it)
	return a, o, "field", it.id
}
