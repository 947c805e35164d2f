package jobstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Backfill copies what one namespace has and the other lacks: the jobs
// written before dual-write started, and those that writers which do not
// mirror (the legacy services) keep writing.

// BackfillOptions configures Backfill. The zero value copies job:* to
// step:* in batches of DefaultBatchSize, as fast as Redis answers, and
// resumes an interrupted run from its checkpoint.
type BackfillOptions struct {
	// Reverse copies step:* to job:*, to roll back. The default copies
	// job:* to step:*.
	Reverse bool
	// BatchSize is how many keys, members or fields each scan asks for
	// and each script handles. 0 means DefaultBatchSize; at most
	// MaxBatchSize.
	BatchSize int
	// Rate limits the run to this many items (keys, members and fields)
	// looked at per second, at least one a day. 0, the default, means no
	// limit.
	Rate float64
	// DryRun decides what would be copied and writes nothing, not even a
	// checkpoint. It starts from the beginning, whatever checkpoint exists.
	DryRun bool
	// Restart discards the checkpoint of an interrupted run and starts
	// anew, deciding again what a run decides at its start. The default
	// resumes from the checkpoint.
	Restart bool
	// Progress, when set, is called after every batch on the goroutine
	// running Backfill. Cancelling Backfill's context from it stops the
	// run with the checkpoint saved.
	Progress func(BackfillProgress)
}

// BackfillResult counts what Backfill did, or would do on a dry run. A
// resumed run's counts include those of the runs it continues. Counts of
// keys looked at count a key twice when the scan returns it twice (SCAN
// may, when the keyspace is resized during the walk): the second time it
// is found unchanged, or again newer, gone or in conflict, and a dry run
// counts it again as to be copied.
type BackfillResult struct {
	From string `json:"from"` // "job" or "step"
	To   string `json:"to"`
	// Authoritative is the decision the run took at its start and keeps
	// when resumed: whether the source was the primary namespace of the
	// fleet's stage. When it was, the entries of jobs in sync get the
	// source's state (added, changed or removed) and the whole-key TTLs
	// follow; when not, the destination is the live side, and Backfill
	// only adds there what it lacks.
	Authoritative bool `json:"authoritative"`

	// Records counts the source's records looked at; each ends in one of
	// the next six counts.
	Records int64 `json:"records"`
	// Copied: the destination was missing or strictly older, and got the
	// source's record whole (COPY ... REPLACE: fields and TTL).
	Copied int64 `json:"copied"`
	// Unchanged: the destination had the same fields.
	Unchanged int64 `json:"unchanged"`
	// Newer: the destination was fresher, and was left alone with its
	// entries; NewerIDs names the first few. Where the source is the
	// primary, that is a mirror write that failed in a later stage (then
	// rolled back), or a record the legacy orphan recovery moved back
	// (in_progress to pending, with no retry counted): the data cannot
	// tell them apart, so Backfill keeps both sides, and Verify lists the
	// job as a blocking difference for the operator (Repair settles it
	// in the authoritative side's favour). The follower mirrors the orphan
	// recovery's writes as they happen.
	Newer    int64    `json:"newer"`
	NewerIDs []string `json:"newer_ids,omitempty"`
	// Conflicts: the destination was as fresh but different; left for
	// Verify with Repair. ConflictIDs names the first few.
	Conflicts   int64    `json:"conflicts"`
	ConflictIDs []string `json:"conflict_ids,omitempty"`
	// Gone: records deleted between the scan and their copy; not copied.
	Gone int64 `json:"gone"`
	// WrongType: records, or the active hashes they name, that are not
	// hashes on one side (nothing of that job was copied), and active
	// hashes that are not hashes (their entries were left).
	// WrongTypeKeys names the first few: the job's source record, or the
	// active hash.
	WrongType     int64    `json:"wrong_type"`
	WrongTypeKeys []string `json:"wrong_type_keys,omitempty"`

	// SubKeys counts the source's sub-keys looked at, SubKeysCopied those
	// copied whole (type, content and TTL).
	SubKeys       int64 `json:"sub_keys"`
	SubKeysCopied int64 `json:"sub_keys_copied"`
	// Entries counts queue entries (pending members, active, completed
	// and failed fields) found different on the two sides by the queue
	// phases; EntriesSynced counts the entries written, there and along
	// with their records; EntriesSkipped those left because their job's
	// records were not in sync (the destination newer, or in conflict).
	// A dry run counts the same as the run would, but for keys SCAN
	// returns twice (when Redis resizes its table during the scan), which
	// it counts at each visit, having copied nothing the first time.
	Entries        int64 `json:"entries"`
	EntriesSynced  int64 `json:"entries_synced"`
	EntriesSkipped int64 `json:"entries_skipped"`
	// Foreign counts keys that matched the scans but belong to no job
	// (job:<invalid id>, ...); never copied.
	Foreign int64 `json:"foreign"`

	DryRun bool `json:"dry_run"`
	// Resumed: the run continued an interrupted one, which stopped Paused
	// before. Like any pass, a resumed run covers the records that existed
	// unchanged throughout, its pause included; what was written behind
	// its position meanwhile reaches the destination through dual-write
	// and the follower, and Verify checks it. After a long pause with no
	// follower running while legacy services wrote, start over (Restart).
	Resumed bool          `json:"resumed"`
	Paused  time.Duration `json:"paused_ns,omitempty"`
	Elapsed time.Duration `json:"elapsed_ns"`
}

// BackfillProgress is what Backfill reports after each batch.
type BackfillProgress struct {
	// Phase is "records", "subkeys", "pending", "active", "completed" or
	// "failed", in that order.
	Phase string
	// Scanned counts the items this run (not the runs it continues) has
	// looked at.
	Scanned int64
	BackfillResult
}

// backfillPhases are a run's phases, in order: records first, so that the
// sub-keys and entries that follow find their records in sync.
var backfillPhases = []string{"records", "subkeys", "pending", "active", "completed", "failed"}

// Backfill copies one namespace's jobs to the other: job:* to step:*, or
// the reverse with opts.Reverse. It never overwrites newer data, and is
// safe to run while services write, in any stage, and to run again:
//
//  1. records: each record is copied whole (COPY ... REPLACE) only where
//     the destination is missing or strictly older by the freshness rule
//     (freshness.go); a newer destination is left alone, an equally fresh
//     but different one is a conflict, left for Verify with Repair. A
//     record deleted since the scan saw it is not brought back. In the
//     same script, atomically, a job whose records are now in sync (copied
//     or found equal) gets its entries synced: its pending member, its
//     completed and failed fields (with the hashes' whole-key TTL), and
//     its field in the active hashes of the workers its two records name.
//  2. subkeys: a sub-key is copied whole where the destination lacks it,
//     or where the job's records are in sync and the copies differ.
//  3. pending, active (every worker's hash), completed, failed: each
//     entry that differs between the sides is synced, atomically with a
//     check that its job's records are in sync (or absent on both sides),
//     and the whole-key TTL of the completed and failed hashes copied.
//
// What the run decides at its start (the direction, whether the source is
// authoritative: see BackfillResult.Authoritative, the phases) is saved
// in a checkpoint in Redis with its position, after every batch; an
// interrupted run (context cancelled, crash) resumes from it with the
// same decisions, and a finished one deletes it. Memory stays flat: keys,
// members and fields are streamed with SCAN, ZSCAN and HSCAN. Scans
// return what exists for the whole run at least once, so a resumed or
// concurrent run may look at an item twice, which copies nothing twice.
//
// On an error (a context error included) it returns the counts so far.
func (m *Migrator) Backfill(ctx context.Context, opts BackfillOptions) (BackfillResult, error) {
	b, err := m.newBackfill(ctx, opts)
	if err != nil {
		return b.res, err
	}
	err = b.run(ctx)
	b.res.Elapsed = time.Since(b.start)
	return b.res, err
}

// backfillCheckpoint is what Backfill saves after each batch: the run's
// decisions, its position and its counts. Done lists the items of the
// page at Cursor already handled, so that a resumed run fetches that page
// again and skips them.
type backfillCheckpoint struct {
	Version int            `json:"version"`
	Plan    backfillPlan   `json:"plan"`
	Pos     backfillPos    `json:"pos"`
	Counts  BackfillResult `json:"counts"`
	SavedAt time.Time      `json:"saved_at"`
}

// backfillPlan holds every decision a run takes at its start.
type backfillPlan struct {
	From          string   `json:"from"`
	To            string   `json:"to"`
	Authoritative bool     `json:"authoritative"`
	Phases        []string `json:"phases"`
}

// backfillPos is where a run is: a phase, the side of a phase that scans
// both sides (0 the source, 1 the destination), a cursor, and the items
// of the cursor's page already handled.
type backfillPos struct {
	Phase  int      `json:"phase"`
	Side   int      `json:"side"`
	Cursor uint64   `json:"cursor"`
	Done   []string `json:"done,omitempty"`
}

const checkpointVersion = 2

type backfill struct {
	m        *Migrator
	opts     BackfillOptions
	src, dst keyspace
	ckey     string
	batch    int
	plan     backfillPlan
	pos      backfillPos
	res      BackfillResult
	start    time.Time
	scanned  int64
	// leftByRecords holds, in a dry run, the ids whose records the
	// records phase left for a key of the wrong type: the later phases
	// predict nothing for them. Such ids are few.
	leftByRecords map[string]bool
}

// newBackfill checks the options, then loads the checkpoint or decides
// the plan.
func (m *Migrator) newBackfill(ctx context.Context, opts BackfillOptions) (*backfill, error) {
	from, to := JobNamespace, StepNamespace
	if opts.Reverse {
		from, to = to, from
	}
	s := m.s
	b := &backfill{m: m, opts: opts, src: s.space(from), dst: s.space(to),
		ckey: checkpointKey(s.prefix, from, to), start: time.Now()}
	b.res = BackfillResult{From: from.String(), To: to.String(), DryRun: opts.DryRun}
	var err error
	if b.batch, err = batchSize(opts.BatchSize); err != nil {
		return b, err
	}
	if opts.Rate < 0 || math.IsNaN(opts.Rate) || math.IsInf(opts.Rate, 0) {
		return b, fmt.Errorf("%w: rate %v must be finite and not negative", ErrInvalidArgument, opts.Rate)
	}
	if opts.Rate > 0 && opts.Rate < minBackfillRate {
		return b, fmt.Errorf("%w: rate %v is below %v items a second (one a day); 0 means no limit", ErrInvalidArgument, opts.Rate, minBackfillRate)
	}
	if !opts.DryRun {
		found, err := b.resume(ctx)
		if err != nil || found {
			return b, err
		}
	}
	st, err := m.effectiveStage(ctx)
	if err != nil {
		return b, err
	}
	b.plan = backfillPlan{From: b.res.From, To: b.res.To, Authoritative: st.Primary() == from,
		Phases: backfillPhases}
	b.res.Authoritative = b.plan.Authoritative
	return b, nil
}

// resume loads the checkpoint, unless Restart discards it.
func (b *backfill) resume(ctx context.Context) (bool, error) {
	rdb := b.m.s.rdb
	if b.opts.Restart {
		if err := rdb.Del(ctx, b.ckey).Err(); err != nil {
			return false, redisError("backfill: discard checkpoint "+b.ckey, "", err)
		}
		return false, nil
	}
	raw, err := rdb.Get(ctx, b.ckey).Bytes()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, redisError("backfill: read checkpoint "+b.ckey, "", err)
	}
	var cp backfillCheckpoint
	if err := json.Unmarshal(raw, &cp); err != nil || !cp.valid(b.res.From, b.res.To) {
		return false, fmt.Errorf("%w: backfill checkpoint %s cannot be read; start over with Restart", ErrCorruptRecord, b.ckey)
	}
	b.plan, b.pos, b.res = cp.Plan, cp.Pos, cp.Counts
	b.res.Resumed, b.res.DryRun, b.res.Elapsed = true, false, 0
	if !cp.SavedAt.IsZero() {
		b.res.Paused = max(0, time.Since(cp.SavedAt))
	}
	return true, nil
}

func (cp *backfillCheckpoint) valid(from, to string) bool {
	known := func(p string) bool { return slices.Contains(backfillPhases, p) }
	return cp.Version == checkpointVersion && cp.Plan.From == from && cp.Plan.To == to &&
		cp.Counts.From == from && cp.Counts.To == to && len(cp.Plan.Phases) > 0 &&
		!slices.ContainsFunc(cp.Plan.Phases, func(p string) bool { return !known(p) }) &&
		cp.Pos.Phase >= 0 && cp.Pos.Phase <= len(cp.Plan.Phases) && (cp.Pos.Side == 0 || cp.Pos.Side == 1)
}

// save writes the checkpoint; a dry run keeps none.
func (b *backfill) save(ctx context.Context) error {
	if b.opts.DryRun {
		return nil
	}
	raw, err := json.Marshal(backfillCheckpoint{Version: checkpointVersion, Plan: b.plan, Pos: b.pos, Counts: b.res,
		SavedAt: time.Now()})
	if err != nil {
		return fmt.Errorf("jobstore: backfill: checkpoint: %w", err)
	}
	if err := b.m.s.rdb.Set(ctx, b.ckey, raw, 0).Err(); err != nil {
		return redisError("backfill: save checkpoint "+b.ckey, "", err)
	}
	return nil
}

// run walks the plan's phases from the position on, then deletes the
// checkpoint.
func (b *backfill) run(ctx context.Context) error {
	for b.pos.Phase < len(b.plan.Phases) {
		if err := b.phase(ctx, b.plan.Phases[b.pos.Phase]); err != nil {
			return err
		}
		b.pos = backfillPos{Phase: b.pos.Phase + 1}
		if err := b.save(ctx); err != nil {
			return err
		}
	}
	if b.opts.DryRun {
		return nil
	}
	if err := b.m.s.rdb.Del(ctx, b.ckey).Err(); err != nil {
		return redisError("backfill: delete checkpoint "+b.ckey, "", err)
	}
	return nil
}

func (b *backfill) phase(ctx context.Context, name string) error {
	rdb, n := b.m.s.rdb, int64(b.batch)
	switch name {
	case "records":
		return b.pages(ctx, name, keyScanner(rdb, b.src.recordPattern(), n), b.batch, b.records)
	case "subkeys":
		return b.pages(ctx, name, keyScanner(rdb, b.src.subKeyPattern(), n), b.batch, b.subKeys)
	case "pending":
		return b.queue(ctx, name, kindZset, b.src.pending(), b.dst.pending())
	case "completed":
		return b.queue(ctx, name, kindHash, b.src.completed(), b.dst.completed())
	case "failed":
		return b.queue(ctx, name, kindHash, b.src.failed(), b.dst.failed())
	case "active":
		return b.active(ctx)
	}
	return fmt.Errorf("jobstore: backfill: unknown phase %q", name)
}

// pages walks a scan from the saved position: it fetches each page,
// leaves out what the position says is done, and hands the rest to
// handle in chunks of at most size items, saving the position after each.
func (b *backfill) pages(ctx context.Context, phase string, scan scanner, size int,
	handle func(ctx context.Context, items []scanItem) error) error {
	for {
		page, next, err := scan(ctx, b.pos.Cursor)
		if err != nil {
			return err
		}
		page = notDone(page, b.pos.Done)
		for len(page) > 0 {
			chunk := page[:min(size, len(page))]
			if err := ctx.Err(); err != nil {
				return err
			}
			b.m.beforeBatch(phase, itemNames(chunk))
			if err := handle(ctx, chunk); err != nil {
				return err
			}
			// The position after the chunk: within the page, or, at its
			// end, the next page's cursor. The last page has none: its
			// chunks stay listed as done until the phase ends, or a run
			// stopped while it paces would do the page again.
			if page = page[len(chunk):]; len(page) > 0 || next == 0 {
				b.pos.Done = append(b.pos.Done, itemNames(chunk)...)
			} else {
				b.pos.Cursor, b.pos.Done = next, nil
			}
			if err := b.step(ctx, phase, len(chunk)); err != nil {
				return err
			}
		}
		if next == 0 {
			return nil
		}
		if b.pos.Cursor != next {
			b.pos.Cursor, b.pos.Done = next, nil
			if err := b.save(ctx); err != nil {
				return err
			}
		}
	}
}

// step ends a batch of n items: checkpoint, progress, pacing.
func (b *backfill) step(ctx context.Context, phase string, n int) error {
	if err := b.save(ctx); err != nil {
		return err
	}
	b.scanned += int64(n)
	if b.opts.Progress != nil {
		b.opts.Progress(BackfillProgress{Phase: phase, Scanned: b.scanned, BackfillResult: b.res})
	}
	return b.pace(ctx)
}

// minBackfillRate is the smallest rate a backfill takes: one item a day.
// Far below it, the pause between items overflows a time.Duration.
const minBackfillRate = 1.0 / 86400

// pace sleeps as long as the run is ahead of opts.Rate.
func (b *backfill) pace(ctx context.Context) error {
	if b.opts.Rate <= 0 {
		return ctx.Err()
	}
	due := time.Duration(math.MaxInt64)
	if f := float64(b.scanned) / b.opts.Rate * float64(time.Second); f < float64(math.MaxInt64) {
		due = time.Duration(f)
	}
	return sleepCtx(ctx, due-time.Since(b.start))
}

// notDone returns page without duplicates and without the items in done.
func notDone(page []scanItem, done []string) []scanItem {
	seen := make(map[string]bool, len(done)+len(page))
	for _, d := range done {
		seen[d] = true
	}
	out := page[:0:0]
	for _, it := range page {
		if !seen[it.name] {
			seen[it.name] = true
			out = append(out, it)
		}
	}
	return out
}

func itemNames(items []scanItem) []string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = it.name
	}
	return out
}

// flags are the two leading ARGV of the scripts' convention (see lua.go):
// these scripts queue no mirror and keep no log.
func flags() []any { return []any{"0", "0"} }

// records runs backfillRecordsScript on the records of a page.
func (b *backfill) records(ctx context.Context, items []scanItem) error {
	var ids []string
	for _, it := range items {
		switch id, suffix, ok := b.src.parseRecordKey(it.name); {
		case !ok:
			b.res.Foreign++
		case suffix == "":
			ids = append(ids, id)
		}
	}
	if len(ids) == 0 {
		return nil
	}
	keys := []string{b.src.pending(), b.src.completed(), b.src.failed(), b.dst.pending(), b.dst.completed(), b.dst.failed()}
	args := append(flags(), flagArg(b.opts.DryRun), flagArg(!b.plan.Authoritative), b.src.activePrefix(), b.dst.activePrefix())
	for _, id := range ids {
		keys = append(keys, b.src.record(id), b.dst.record(id))
		args = append(args, id)
	}
	r, err := runMigrateScript(ctx, b.m.s.rdb, "backfill records", backfillRecordsScript, keys, args)
	if err != nil {
		return err
	}
	b.res.EntriesSynced += r.int(0)
	for i, o := range r.list(1) {
		b.recordOutcome(ids[i], fmt.Sprint(o))
	}
	return nil
}

func (b *backfill) recordOutcome(id, o string) {
	b.res.Records++
	if b.opts.DryRun && o == "wrongtype" {
		if b.leftByRecords == nil {
			b.leftByRecords = map[string]bool{}
		}
		b.leftByRecords[id] = true
	}
	switch o {
	case "copied":
		b.res.Copied++
	case "unchanged":
		b.res.Unchanged++
	case "newer":
		b.res.Newer++
		b.res.NewerIDs = addExample(b.res.NewerIDs, id)
	case "conflict":
		b.res.Conflicts++
		b.res.ConflictIDs = addExample(b.res.ConflictIDs, id)
	case "gone":
		b.res.Gone++
	default:
		b.res.WrongType++
		b.res.WrongTypeKeys = addExample(b.res.WrongTypeKeys, b.src.record(id))
	}
}

// maxExamples is how many ids or keys a result lists for each kind of
// thing it counts.
const maxExamples = 10

func addExample(list []string, s string) []string {
	if len(list) < maxExamples {
		list = append(list, s)
	}
	return list
}

// subKeys runs backfillSubKeysScript on the sub-keys of a page.
func (b *backfill) subKeys(ctx context.Context, items []scanItem) error {
	var keys []string
	args := append(flags(), flagArg(b.opts.DryRun), flagArg(!b.plan.Authoritative))
	for _, it := range items {
		// What belongs to no job was counted by the records phase, whose
		// pattern matches every key this one does.
		if id, suffix, ok := b.src.parseRecordKey(it.name); ok && suffix != "" {
			keys = append(keys, b.src.record(id), b.dst.record(id), b.src.sub(id, suffix), b.dst.sub(id, suffix))
			args = append(args, flagArg(!b.leftByRecords[id]))
		}
	}
	if len(keys) == 0 {
		return nil
	}
	r, err := runMigrateScript(ctx, b.m.s.rdb, "backfill sub-keys", backfillSubKeysScript, keys, args)
	if err != nil {
		return err
	}
	for _, o := range r.list(0) {
		b.res.SubKeys++
		if o == "copied" {
			b.res.SubKeysCopied++
		}
	}
	return nil
}

// runMigrateScript runs one of the migration scripts, which answer in the
// convention's shape (see lua.go) with status OK or WRONGTYPE and detail.
func runMigrateScript(ctx context.Context, rdb redis.UniversalClient, op string, sc *redis.Script, keys []string, args []any) (reply, error) {
	res, err := sc.Run(ctx, rdb, keys, args...).Slice()
	if err != nil {
		return reply{}, redisError(op, "", err)
	}
	if len(res) < 4 {
		return reply{}, fmt.Errorf("jobstore: %s: unexpected script reply %v", op, res)
	}
	r := reply{data: res[4:]}
	r.status, _ = res[0].(string)
	switch r.status {
	case "OK":
		if errs, _ := res[1].([]any); len(errs) > 0 {
			return r, fmt.Errorf("jobstore: %s: %v", op, errs)
		}
		return r, nil
	case "WRONGTYPE":
		return r, fmt.Errorf("%w: %s: %s; fix or remove that key, then run again", ErrCorruptRecord, op, r.str(0))
	}
	return r, unexpected(op, "", r)
}

// entryKind is the type of a queue key: the pending zset, or a hash of
// fields (active, completed, failed).
type entryKind string

const (
	kindZset entryKind = "zset"
	kindHash entryKind = "hash"
)

// queue syncs one queue: the entries of the source that the destination
// lacks or holds otherwise, then, when the source is authoritative, those
// only the destination holds. A hash's whole-key TTL follows at the end.
func (b *backfill) queue(ctx context.Context, phase string, kind entryKind, src, dst string) error {
	for ; b.pos.Side < 2; b.nextSide() {
		if b.pos.Side == 1 && !b.plan.Authoritative {
			continue
		}
		scanned, other := src, dst
		if b.pos.Side == 1 {
			scanned, other = dst, src
		}
		handle := func(ctx context.Context, items []scanItem) error {
			return b.syncEntries(ctx, kind, src, dst, items, other, b.pos.Side == 1)
		}
		if err := b.pages(ctx, phase, entryScanner(b.m.s.rdb, kind, scanned, int64(b.batch)), b.batch, handle); err != nil {
			return err
		}
	}
	if kind == kindHash {
		return b.syncEntries(ctx, kind, src, dst, nil, dst, false)
	}
	return nil
}

// nextSide moves the position to the start of the phase's other side.
func (b *backfill) nextSide() { b.pos = backfillPos{Phase: b.pos.Phase, Side: b.pos.Side + 1} }

// active syncs every worker's active hash: first those the source has
// (both sides of each), then those only the destination has. The position
// moves one worker at a time.
func (b *backfill) active(ctx context.Context) error {
	rdb := b.m.s.rdb
	for ; b.pos.Side < 2; b.nextSide() {
		if b.pos.Side == 1 && !b.plan.Authoritative {
			continue
		}
		scanned := b.src
		if b.pos.Side == 1 {
			scanned = b.dst
		}
		side := b.pos.Side
		handle := func(ctx context.Context, items []scanItem) error {
			w, ok := scanned.workerFromActive(items[0].name)
			if !ok {
				return nil
			}
			return b.worker(ctx, side, w)
		}
		if err := b.pages(ctx, "active", keyScanner(rdb, scanned.activePattern(), int64(b.batch)), 1, handle); err != nil {
			return err
		}
	}
	return nil
}

// worker syncs one worker's active hash. Found from the destination
// (side 1), it is left to side 0 when the source has it too.
func (b *backfill) worker(ctx context.Context, side int, w string) error {
	src, dst := b.src.active(w), b.dst.active(w)
	types, err := keyTypes(ctx, b.m.s.rdb, src, dst)
	switch {
	case err != nil:
		return err
	case side == 1 && types[0] != "none":
		return nil
	}
	for i, t := range types {
		if t != "none" && t != "hash" {
			b.res.WrongType++
			b.res.WrongTypeKeys = addExample(b.res.WrongTypeKeys, []string{src, dst}[i])
			return nil
		}
	}
	if side == 0 {
		if err := b.sweepHash(ctx, src, dst, false); err != nil {
			return err
		}
	}
	if !b.plan.Authoritative {
		return nil
	}
	return b.sweepHash(ctx, src, dst, true)
}

// sweepHash syncs the entries of one hash that differ between the sides,
// scanning the source (or, fromDst, the destination) with HSCAN.
func (b *backfill) sweepHash(ctx context.Context, src, dst string, fromDst bool) error {
	scanned, other := src, dst
	if fromDst {
		scanned, other = dst, src
	}
	scan := entryScanner(b.m.s.rdb, kindHash, scanned, int64(b.batch))
	for cursor := uint64(0); ; {
		page, next, err := scan(ctx, cursor)
		if err != nil {
			return err
		}
		for chunk := range slices.Chunk(page, b.batch) {
			if err := b.syncEntries(ctx, kindHash, src, dst, chunk, other, fromDst); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// keyTypes returns the TYPE of each key.
func keyTypes(ctx context.Context, rdb redis.UniversalClient, keys ...string) ([]string, error) {
	pipe := rdb.Pipeline()
	cmds := make([]*redis.StatusCmd, len(keys))
	for i, k := range keys {
		cmds[i] = pipe.Type(ctx, k)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, redisError("type of "+strings.Join(keys, ", "), "", err)
	}
	types := make([]string, len(keys))
	for i, c := range cmds {
		types[i] = c.Val()
	}
	return types, nil
}

// syncEntries compares a chunk of entries scanned from one side with the
// other side, and sends those that differ to backfillEntriesScript, which
// syncs each whose job's records are in sync. Scanned from the
// destination (fromDst), only entries the source lacks are sent. With no
// items it copies the hash's whole-key TTL only.
func (b *backfill) syncEntries(ctx context.Context, kind entryKind, src, dst string, items []scanItem, other string, fromDst bool) error {
	differ, err := differing(ctx, b.m.s.rdb, kind, other, items, fromDst)
	if err != nil {
		return err
	}
	if len(differ) == 0 && (len(items) > 0 || kind != kindHash) {
		return nil
	}
	keys := []string{src, dst}
	worker, ok := b.src.workerFromActive(src)
	if !ok {
		worker = ""
	}
	args := append(flags(), string(kind), flagArg(b.opts.DryRun), flagArg(!b.plan.Authoritative), worker)
	for _, id := range differ {
		has := validateID(id) == nil
		if has {
			keys = append(keys, b.src.record(id), b.dst.record(id))
		}
		flag := flagArg(has)
		if has && b.leftByRecords[id] {
			flag = "2"
		}
		args = append(args, id, flag)
	}
	r, err := runMigrateScript(ctx, b.m.s.rdb, "backfill "+dst, backfillEntriesScript, keys, args)
	if err != nil {
		return err
	}
	b.res.Entries += int64(len(differ)) - r.int(2)
	b.res.EntriesSynced += r.int(0)
	b.res.EntriesSkipped += r.int(1)
	return nil
}

// differing returns the names of the scanned entries that the other side
// holds otherwise: missing or with another value (or score). With
// onlyMissing, those it lacks.
func differing(ctx context.Context, rdb redis.UniversalClient, kind entryKind, other string, items []scanItem, onlyMissing bool) ([]string, error) {
	if len(items) == 0 {
		return nil, nil
	}
	have, err := readEntries(ctx, rdb, kind, other, itemNames(items))
	if err != nil {
		return nil, err
	}
	var out []string
	for i, it := range items {
		if !have[i].ok || (!onlyMissing && !sameEntry(kind, it.val, have[i].v)) {
			out = append(out, it.name)
		}
	}
	return out, nil
}

// sameEntry compares two entries' values: scores as numbers, fields as
// text.
func sameEntry(kind entryKind, a, b string) bool {
	if kind == kindHash {
		return a == b
	}
	x, err1 := strconv.ParseFloat(a, 64)
	y, err2 := strconv.ParseFloat(b, 64)
	return err1 == nil && err2 == nil && x == y
}

// optString is a value, or none (ok false) where a key lacks the entry.
type optString struct {
	v  string
	ok bool
}

// readEntries reads entries of one queue key: scores (ZMSCORE, as text)
// or field values (HMGET).
func readEntries(ctx context.Context, rdb redis.UniversalClient, kind entryKind, key string, names []string) ([]optString, error) {
	cmd := "HMGET"
	if kind == kindZset {
		cmd = "ZMSCORE"
	}
	args := make([]any, 0, 2+len(names))
	args = append(args, cmd, key)
	for _, n := range names {
		args = append(args, n)
	}
	raw, err := rdb.Do(ctx, args...).Slice()
	if err != nil {
		return nil, redisError("read "+key, "", err)
	}
	out := make([]optString, len(names))
	for i := range out {
		if i < len(raw) {
			out[i] = toOptString(raw[i])
		}
	}
	return out, nil
}

// toOptString reads a reply element: nil, text, or a RESP3 double.
func toOptString(x any) optString {
	switch v := x.(type) {
	case string:
		return optString{v, true}
	case float64:
		return optString{strconv.FormatFloat(v, 'g', 17, 64), true}
	case int64:
		return optString{strconv.FormatInt(v, 10), true}
	}
	return optString{}
}

// scanItem is one element a cursor scan returned: a key (SCAN), a member
// and its score (ZSCAN), or a field and its value (HSCAN).
type scanItem struct{ name, val string }

// scanner fetches the page of a cursor scan at cursor, and the next
// cursor (0 at the end).
type scanner func(ctx context.Context, cursor uint64) ([]scanItem, uint64, error)

// keyScanner scans the keys matching pattern.
func keyScanner(rdb redis.UniversalClient, pattern string, count int64) scanner {
	return func(ctx context.Context, cursor uint64) ([]scanItem, uint64, error) {
		keys, next, err := rdb.Scan(ctx, cursor, pattern, count).Result()
		if err != nil {
			return nil, 0, redisError("scan "+pattern, "", err)
		}
		items := make([]scanItem, len(keys))
		for i, k := range keys {
			items[i] = scanItem{name: k}
		}
		return items, next, nil
	}
}

// entryScanner scans the entries of a zset (ZSCAN) or hash (HSCAN).
func entryScanner(rdb redis.UniversalClient, kind entryKind, key string, count int64) scanner {
	return func(ctx context.Context, cursor uint64) ([]scanItem, uint64, error) {
		var pairs []string
		var next uint64
		var err error
		if kind == kindZset {
			pairs, next, err = rdb.ZScan(ctx, key, cursor, "", count).Result()
		} else {
			pairs, next, err = rdb.HScan(ctx, key, cursor, "", count).Result()
		}
		if err != nil {
			return nil, 0, redisError("scan "+key, "", err)
		}
		items := make([]scanItem, 0, len(pairs)/2)
		for i := 0; i+1 < len(pairs); i += 2 {
			items = append(items, scanItem{name: pairs[i], val: pairs[i+1]})
		}
		return items, next, nil
	}
}

// luaMigrate is what the migration scripts share, on top of luaCore,
// scoreLua, luaStatus and freshnessLua. Each helper takes dry (decide,
// write nothing) and only_add (the destination is the live side: only add
// what it lacks, never change or remove) where it writes.
//
//	copy_key(src, dst)                 dst becomes src whole: type, content, TTL
//	set_member(src, dst, m, oa, dry)   dst's member m gets src's score, or goes
//	set_field(src, dst, f, oa, dry)    dst's field f gets src's value, or goes
//	copy_ttl(src, dst, oa, dry)        the hash dst gets src's whole-key TTL
//	in_sync(a, b)                      two records are equal, or both absent
//	same_key(a, b)                     same type, content and TTL (within 2 s)
//
// set_member and set_field return 1 when they changed dst (or would).
const luaMigrate = `
local function copy_key(src, dst)
  redis.call('COPY', src, dst, 'REPLACE')
  -- COPY ... REPLACE drops dst's TTL on Redis; an emulator may keep it.
  if redis.call('PTTL', src) == -1 then redis.call('PERSIST', dst) end
end

local function change(s, d, only_add)
  if s == d then return false end
  if only_add then return s and not d end
  return true
end

local function set_member(src, dst, m, only_add, dry)
  local s, d = redis.call('ZSCORE', src, m), redis.call('ZSCORE', dst, m)
  if s and d and tonumber(s) == tonumber(d) then return 0 end
  if not change(s, d, only_add) then return 0 end
  if dry then return 1 end
  if s then redis.call('ZADD', dst, s, m) else redis.call('ZREM', dst, m) end
  return 1
end

local function set_field(src, dst, f, only_add, dry)
  local s, d = redis.call('HGET', src, f), redis.call('HGET', dst, f)
  if not change(s, d, only_add) then return 0 end
  if dry then return 1 end
  if s then redis.call('HSET', dst, f, s) else redis.call('HDEL', dst, f) end
  return 1
end

local function copy_ttl(src, dst, only_add, dry)
  local s, d = redis.call('PTTL', src), redis.call('PTTL', dst)
  if dry or s == -2 or d == -2 then return end
  if s > 0 and (d == -1 or (not only_add and math.abs(s - d) > 1000)) then
    redis.call('PEXPIRE', dst, s)
  elseif s == -1 and d > 0 and not only_add then
    redis.call('PERSIST', dst)
  end
end

local function in_sync(a, b)
  local x, y = redis.call('EXISTS', a), redis.call('EXISTS', b)
  if x ~= y then return false end
  if x == 0 then return true end
  if wrongtype(a, 'hash') or wrongtype(b, 'hash') then return false end
  return same_hash(a, b)
end

-- records_sync tells whether the records phase copies the source record
-- over the destination's, or finds them equal: in both cases it syncs the
-- job's entries with the record, and afterwards the records are in sync.
-- (It does neither for a record naming a worker whose active hash is not
-- a hash; Go tells the scripts of those.) A dry run, which copies
-- nothing, predicts with it what the later phases of the run would find.
local function records_sync(src, dst)
  if redis.call('TYPE', src)['ok'] ~= 'hash' then return false end
  local t = redis.call('TYPE', dst)['ok']
  if t == 'none' then return true end
  return t == 'hash' and (same_hash(src, dst) or fresher(src, dst) > 0)
end

local function same_key(a, b)
  local ta, tb = redis.call('TYPE', a)['ok'], redis.call('TYPE', b)['ok']
  if ta ~= tb then return false end
  local pa, pb = redis.call('PTTL', a), redis.call('PTTL', b)
  if (pa > 0) ~= (pb > 0) or math.abs(pa - pb) > 2000 then return false end
  if ta == 'hash' then return same_hash(a, b) end
  if ta == 'string' then return redis.call('GET', a) == redis.call('GET', b) end
  local da, db = redis.pcall('DUMP', a), redis.pcall('DUMP', b)
  if type(da) ~= 'string' or type(db) ~= 'string' then return false end
  return da == db
end
`

// migrateLua assembles a migration script: the shared parts, then body.
func migrateLua(body string) string {
	return newToolScriptText(luaCore, scoreLua, luaStatus, freshnessLua, luaMigrate, body)
}

// backfillRecordsScript decides and copies a batch of records, each with
// its entries, atomically. For each id: a record that is not a hash on
// either side, or that names a worker whose active hash is not a hash,
// is left ("wrongtype"); a source record that is gone is not copied
// ("gone"); one whose destination is missing or strictly older is copied
// whole ("copied"); an equal one is "unchanged", a fresher destination
// "newer", an equally fresh but different one "conflict". For "copied"
// and "unchanged", the id's pending member, completed and failed fields,
// and its field in the active hash of the worker each record names (read
// before the copy) get the source's state; the hashes changed get their
// source's whole-key TTL.
//
//	KEYS[1] -> jobs:pending    KEYS[4] -> steps:pending   (the destination's)
//	KEYS[2] -> jobs:completed  KEYS[5] -> steps:completed
//	KEYS[3] -> jobs:failed     KEYS[6] -> steps:failed
//	KEYS[5+2i], KEYS[6+2i] -> job:<id i>, step:<id i>   (i = 1..n)
//	ARGV[3] -> dry run ("1"/"0"), ARGV[4] -> only add ("1"/"0")
//	ARGV[5] -> source active prefix (jobs:active:), ARGV[6] -> destination's
//	ARGV[6+i] -> id i
//	Reply: OK entries_synced {outcome...} | WRONGTYPE detail
var backfillRecordsScript = redis.NewScript(migrateLua(`
local dry, only_add, sa, da = ARGV[3] == '1', ARGV[4] == '1', ARGV[5], ARGV[6]
for i, want in ipairs({'zset', 'hash', 'hash', 'zset', 'hash', 'hash'}) do
  local bad = wrongtype(KEYS[i], want)
  if bad then return done('WRONGTYPE', bad) end
end

-- bad_worker caches, per worker, whether one of its active hashes is not
-- a hash.
local bad_worker = {}
local function workers(src, dst)
  local ws = {}
  for _, k in ipairs({src, dst}) do
    local w = redis.call('HGET', k, 'worker_id')
    if w and w ~= '' then
      if bad_worker[w] == nil then
        bad_worker[w] = (wrongtype(sa .. w, 'hash') or wrongtype(da .. w, 'hash')) and true or false
      end
      if bad_worker[w] then return nil end
      ws[w] = true
    end
  end
  return ws
end

-- hlen is the number of fields of the hash key: 0 when it does not
-- exist, nil when it is not a hash.
local function hlen(key)
  local r = redis.pcall('HLEN', key)
  if type(r) == 'table' then return nil end
  return r
end

-- decide is the rule records_sync states (copied or unchanged), with
-- the outcome named and each comparison made once.
local function decide(src, dst, sl, dl)
  if sl == 0 then return 'gone' end
  if dl == 0 then return 'copied' end
  if same_hash(src, dst) then return 'unchanged' end
  local c = fresher(src, dst)
  if c > 0 then return 'copied' elseif c < 0 then return 'newer' end
  return 'conflict'
end

local touched, synced = {}, 0
local function sync(src, dst, setter, id)
  local n = setter(src, dst, id, only_add, dry)
  if n > 0 and setter == set_field then touched[dst] = src end
  synced = synced + n
end

local out = {}
for i = 7, #ARGV do
  local id, src, dst = ARGV[i], KEYS[2 * i - 7], KEYS[2 * i - 6]
  local o, ws = 'wrongtype', nil
  local sl, dl = hlen(src), hlen(dst)
  if sl and dl then ws = workers(src, dst) end
  if ws then
    o = decide(src, dst, sl, dl)
    if o == 'copied' and not dry then copy_key(src, dst) end
    if o == 'copied' or o == 'unchanged' then
      sync(KEYS[1], KEYS[4], set_member, id)
      sync(KEYS[2], KEYS[5], set_field, id)
      sync(KEYS[3], KEYS[6], set_field, id)
      for w in pairs(ws) do sync(sa .. w, da .. w, set_field, id) end
    end
  end
  out[#out + 1] = o
end
for dst, src in pairs(touched) do copy_ttl(src, dst, only_add, dry) end
return done('OK', synced, out)
`))

// backfillSubKeysScript copies sub-keys. For each: a source sub-key that
// is gone is left ("gone"); one the destination lacks is copied whole
// ("copied"); one the destination has is copied over it only when the
// job's records are in sync (equal, or absent on both sides), the copies
// differ and the destination is not the live side ("copied"), else left
// ("unchanged" when equal, "kept" otherwise).
//
//	KEYS[4i-3..4i] -> job:<id>, step:<id>, job:<id>:<suffix>, step:<id>:<suffix>
//	ARGV[3] -> dry run ("1"/"0"), ARGV[4] -> only add ("1"/"0")
//	ARGV[4+i] -> "0" when the records phase left the records of item i
//	             (a dry run predicts nothing for it), else "1"
//	Reply: OK {outcome...}
var backfillSubKeysScript = redis.NewScript(migrateLua(`
local dry, only_add = ARGV[3] == '1', ARGV[4] == '1'
local out = {}
for i = 1, #KEYS, 4 do
  local rs, rd, ss, sd = KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3]
  -- A dry run copied no record: what the run finds in sync, it predicts.
  local synced = in_sync(rs, rd) or (dry and ARGV[5 + (i - 1) / 4] == '1' and records_sync(rs, rd))
  local o
  if redis.call('EXISTS', ss) == 0 then o = 'gone'
  elseif redis.call('EXISTS', sd) == 0 then o = 'copied'
  elseif same_key(ss, sd) then o = 'unchanged'
  elseif only_add or not synced then o = 'kept'
  else o = 'copied' end
  if o == 'copied' and not dry then copy_key(ss, sd) end
  out[#out + 1] = o
end
return done('OK', out)
`))

// backfillEntriesScript syncs entries of one queue key whose jobs'
// records are in sync (equal, or absent on both sides; an id that is not
// valid has no record), then, for a hash, copies its whole-key TTL.
//
// A dry run writes nothing, so the queue phases find still different the
// entries that the records phase counted as synced with their records
// (backfillRecordsScript: a record it would copy, or one in sync, and the
// entries of its id in pending, completed, failed and the active hash of
// each worker its records name). Those are counted apart ("predicted"),
// so that a dry run counts what the run would do.
//
//	KEYS[1] -> source queue key (jobs:pending, jobs:active:<w>, ...)
//	KEYS[2] -> destination queue key
//	KEYS[3..] -> job:<id>, step:<id> of each valid id, in order
//	ARGV[3] -> "zset" or "hash", ARGV[4] -> dry run, ARGV[5] -> only add
//	ARGV[6] -> the worker of an active hash, else ''
//	ARGV[7..] -> id, "1" if it is valid (has record keys) else "0", ...;
//	             "2": valid, but the records phase left its records
//	             (a dry run predicts nothing for it)
//	Reply: OK synced skipped predicted | WRONGTYPE detail
var backfillEntriesScript = redis.NewScript(migrateLua(`
local kind, dry, only_add, worker = ARGV[3], ARGV[4] == '1', ARGV[5] == '1', ARGV[6]
local bad = wrongtype(KEYS[1], kind) or wrongtype(KEYS[2], kind)
if bad then return done('WRONGTYPE', bad) end
local set = set_field
if kind == 'zset' then set = set_member end

-- counted_with_record: in a dry run, whether the records phase counted
-- the entry (see above): it syncs the entry with the record, and would
-- change it (in a run that only adds, it leaves a value the destination
-- has).
local function counted_with_record(rs, rd, id)
  if not records_sync(rs, rd) then return false end
  if worker ~= '' and redis.call('HGET', rs, 'worker_id') ~= worker
    and redis.call('HGET', rd, 'worker_id') ~= worker then return false end
  return set(KEYS[1], KEYS[2], id, only_add, true) == 1
end

local synced, skipped, predicted, k = 0, 0, 0, 3
for i = 7, #ARGV, 2 do
  local ok = true
  if ARGV[i + 1] ~= '0' then
    if dry and ARGV[i + 1] == '1' and counted_with_record(KEYS[k], KEYS[k + 1], ARGV[i]) then ok = nil end
    if ok then ok = in_sync(KEYS[k], KEYS[k + 1]) end
    k = k + 2
  end
  if ok == nil then predicted = predicted + 1
  elseif ok then synced = synced + set(KEYS[1], KEYS[2], ARGV[i], only_add, dry)
  else skipped = skipped + 1 end
end
if kind == 'hash' then copy_ttl(KEYS[1], KEYS[2], only_add, dry) end
return done('OK', synced, skipped, predicted)
`))
