package jobstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/bits"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// Backfill is phase 4.3.2: it copies the records and queue entries that
// dual-write has not copied yet, while services keep dual-writing.

// DefaultBatchSize is how many keys Backfill, Verify and Cleanup ask SCAN
// for at a time and handle per script or pipeline, unless told otherwise.
const DefaultBatchSize = 500

// maxExamples is how many key names a result lists for each kind of
// thing it reports.
const maxExamples = 10

// BackfillOptions configures Backfill. The zero value copies job:* to
// step:* in batches of DefaultBatchSize as fast as Redis answers, and
// resumes an interrupted run from its checkpoint.
type BackfillOptions struct {
	// Reverse copies step:* to job:* instead, to roll back after
	// step-only. The default is job:* to step:*.
	Reverse bool
	// BatchSize is how many keys each SCAN asks for and each script
	// copies at most. 0 means DefaultBatchSize.
	BatchSize int
	// Rate limits the run to this many keys looked at per second. 0, the
	// default, means no limit.
	Rate float64
	// DryRun decides what would be copied and writes nothing, not even a
	// checkpoint. It starts from the beginning, whatever checkpoint exists.
	DryRun bool
	// Restart discards the checkpoint of an interrupted run and starts
	// from the beginning. The default resumes from it.
	Restart bool
	// Progress, when set, is called after every batch, on the goroutine
	// running Backfill. Cancelling Backfill's context from it stops the
	// run after that batch, with the checkpoint saved.
	Progress func(BackfillProgress)
	// QueueCopyLimit is the largest queue copied whole. When the source
	// namespace is authoritative (the primary of the Store's stage and of
	// the shared stage, if one is published), its queues are the truth,
	// so once the records are copied Backfill makes each destination
	// queue an exact copy of its source with one COPY ... REPLACE, in one
	// atomic step; dual-writes keep them equal from then on. That is far
	// cheaper than entry by entry, but one COPY keeps Redis busy about 1µs
	// an entry, so queues larger than this are synced entry by entry. 0
	// means DefaultQueueCopyLimit; a negative value always syncs entry by
	// entry.
	QueueCopyLimit int
}

// DefaultQueueCopyLimit is the default BackfillOptions.QueueCopyLimit:
// Redis copies a queue this large in about a quarter of a second.
const DefaultQueueCopyLimit = 250_000

// BackfillResult counts what Backfill did. A resumed run's counts include
// those of the runs it continues.
type BackfillResult struct {
	From string `json:"from"` // "job" or "step"
	To   string `json:"to"`

	// Records counts record keys looked at. Each ends up in exactly one of
	// the next six counts.
	Records int64 `json:"records"`
	// Copied records: the destination was missing or older. The id's
	// entries in the four queues were synced with the copy.
	Copied int64 `json:"copied"`
	// Unchanged records: the destination was identical.
	Unchanged int64 `json:"unchanged"`
	// Newer records: the destination was fresher, so it was kept.
	Newer int64 `json:"newer"`
	// Conflicts: the destination was as fresh but different. They are
	// left for Verify with Repair; ConflictKeys names the first few.
	Conflicts    int64    `json:"conflicts"`
	ConflictKeys []string `json:"conflict_keys,omitempty"`
	// Gone: records deleted between SCAN and their copy. Not copied.
	Gone int64 `json:"gone"`
	// WrongType: a source or destination record key that is not a hash.
	// Not copied; WrongTypeKeys names the first few.
	WrongType     int64    `json:"wrong_type"`
	WrongTypeKeys []string `json:"wrong_type_keys,omitempty"`

	// Skipped counts keys under the source's record prefix that are not
	// records, such as job:<id>:progress. They are never copied.
	Skipped     int64    `json:"skipped"`
	SkippedKeys []string `json:"skipped_keys,omitempty"`

	// Entries counts queue entries the destination lacked whose record
	// the source does not have (entries of records follow their record),
	// and EntriesCopied those copied.
	Entries       int64 `json:"entries"`
	EntriesCopied int64 `json:"entries_copied"`
	// QueuesCopied names the destination queues made exact copies of
	// their source at the start of the run (see QueueCopyLimit).
	QueuesCopied []string `json:"queues_copied,omitempty"`

	DryRun  bool          `json:"dry_run"`
	Resumed bool          `json:"resumed"` // continued an interrupted run
	Elapsed time.Duration `json:"elapsed_ns"`
}

// BackfillProgress is what Backfill reports after each batch.
type BackfillProgress struct {
	// Phase is "records", then the queue whose entries are copied:
	// "pending", "active", "completed" or "failed".
	Phase string
	// Fraction estimates how much of the record phase is done, from the
	// SCAN cursor (0 when the server does not tell, 1 after the records).
	Fraction float64
	// Scanned counts the keys and queue members this run has looked at,
	// including entries whose record the source has.
	Scanned int64
	BackfillResult
}

// Backfill copies every record and queue entry of one namespace to the
// other: job:* to step:*, or the reverse with opts.Reverse. It is safe to
// run while services write, in any stage:
//
//   - Each batch is one script that checks and copies atomically. A record
//     is copied whole (COPY ... REPLACE: unknown fields and TTL included)
//     only when the destination is missing or strictly older by the
//     freshness rule (see freshness.go); a newer destination is kept, and
//     an equally fresh but different one is reported as a conflict. A
//     record deleted since SCAN saw it is not brought back.
//   - When a record is copied, its id's entries in the four queues are
//     synced with it, as the mirror does. Entries whose record the source
//     does not have are copied afterwards if the destination lacks them
//     and the source still has them at that moment.
//   - Keys under the record prefix that are not records (job:<id>:progress)
//     are counted and never copied.
//
// Memory stays flat: keys are streamed with SCAN and ZSCAN, a batch at a
// time. After each batch a checkpoint (the cursor, what is done of the
// current page, and the counts) is saved in Redis; a run that is
// interrupted (context cancelled, crash) resumes from it, and a finished
// run deletes it. Running it again copies nothing that is up to date. The
// counts of a run interrupted between a batch and its checkpoint count
// that batch's copies as Unchanged when resumed.
//
// On a context error it returns the counts so far and the error.
func (s *Store) Backfill(ctx context.Context, opts BackfillOptions) (BackfillResult, error) {
	from, to := JobNamespace, StepNamespace
	if opts.Reverse {
		from, to = to, from
	}
	if opts.BatchSize < 0 || opts.Rate < 0 || math.IsNaN(opts.Rate) || math.IsInf(opts.Rate, 0) {
		return BackfillResult{}, fmt.Errorf("%w: batch size %d and rate %v must be finite and not negative", ErrInvalidArgument, opts.BatchSize, opts.Rate)
	}
	b := &backfill{
		s: s, opts: opts, src: s.space(from), dst: s.space(to),
		ckey: checkpointKey(s.prefix, from, to), batch: opts.BatchSize, start: time.Now(),
	}
	if b.batch == 0 {
		b.batch = DefaultBatchSize
	}
	b.res = BackfillResult{From: from.String(), To: to.String()}
	var cp backfillCheckpoint
	if !opts.DryRun {
		if opts.Restart {
			if err := s.rdb.Del(ctx, b.ckey).Err(); err != nil {
				return b.res, redisError("backfill: discard checkpoint", "", err)
			}
		} else {
			found, err := b.load(ctx, &cp)
			if err != nil {
				return b.res, err
			}
			if found {
				b.res = cp.Counts
				b.res.Resumed = true
			}
		}
	}
	b.res.DryRun = opts.DryRun
	if err := b.chooseWhole(ctx); err != nil {
		return b.res, err
	}
	err := b.run(ctx, cp)
	b.res.Elapsed = time.Since(b.start)
	return b.res, err
}

// backfillCheckpoint is what Backfill saves after each batch. Cursor is
// the SCAN (or ZSCAN) cursor that returned the page in progress, and Done
// the keys or members of that page already handled, so that a resumed run
// fetches the page again and skips them.
type backfillCheckpoint struct {
	Version int            `json:"version"`
	Phase   int            `json:"phase"` // 0: records; 1..4: Queues[Phase-1]
	Cursor  uint64         `json:"cursor"`
	Done    []string       `json:"done,omitempty"`
	Counts  BackfillResult `json:"counts"`
}

const checkpointVersion = 1

type backfill struct {
	s        *Store
	opts     BackfillOptions
	src, dst keyspace
	ckey     string
	batch    int
	start    time.Time
	paced    int64 // keys and members looked at by this run
	res      BackfillResult
	fraction float64
	// whole[i] is set when Queues[i] was copied whole at the start, so
	// that neither the records' entries nor its own entries are synced.
	whole [4]bool
}

func (b *backfill) load(ctx context.Context, cp *backfillCheckpoint) (bool, error) {
	raw, err := b.s.rdb.Get(ctx, b.ckey).Bytes()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, redisError("backfill: read checkpoint", "", err)
	}
	// Phase len(Queues)+1 means every phase is done: a run stopped
	// between its last batch and deleting the checkpoint.
	if err := json.Unmarshal(raw, cp); err != nil || cp.Version != checkpointVersion ||
		cp.Phase < 0 || cp.Phase > len(Queues)+1 || cp.Counts.From != b.res.From || cp.Counts.To != b.res.To {
		return false, fmt.Errorf("%w: backfill checkpoint %s cannot be read; start over with Restart", ErrCorruptRecord, b.ckey)
	}
	return true, nil
}

func (b *backfill) save(ctx context.Context, phase int, cursor uint64, done []string) error {
	if b.opts.DryRun {
		return nil
	}
	raw, err := json.Marshal(backfillCheckpoint{
		Version: checkpointVersion, Phase: phase, Cursor: cursor, Done: done, Counts: b.res,
	})
	if err != nil {
		return fmt.Errorf("jobstore: backfill: checkpoint: %w", err)
	}
	if err := b.s.rdb.Set(ctx, b.ckey, raw, 0).Err(); err != nil {
		return redisError("backfill: save checkpoint", "", err)
	}
	return nil
}

func (b *backfill) phaseName(phase int) string {
	if phase == 0 {
		return "records"
	}
	return string(Queues[phase-1])
}

// run walks the phases from the checkpoint on: the records, then the
// entries of each queue.
func (b *backfill) run(ctx context.Context, cp backfillCheckpoint) error {
	cursor, done := cp.Cursor, cp.Done
	for phase := cp.Phase; phase <= len(Queues); phase++ {
		if phase > 0 && phase == cp.Phase {
			// Resumed past the records: the queues to copy whole may not
			// have been copied before the stop.
			if err := b.copyWhole(ctx); err != nil {
				return err
			}
		}
		if phase > 0 && b.whole[phase-1] {
			cursor, done = 0, nil
			continue
		}
		for {
			if err := ctx.Err(); err != nil {
				return err
			}
			page, next, err := b.scan(ctx, phase, cursor)
			if err != nil {
				return err
			}
			todo := page
			if len(done) > 0 {
				skip := make(map[string]bool, len(done))
				for _, k := range done {
					skip[k] = true
				}
				todo = slices.DeleteFunc(slices.Clone(page), func(k string) bool { return skip[k] })
			}
			if phase == 0 {
				b.fraction = scanFraction(next)
			}
			for len(todo) > 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
				n := min(b.batch, len(todo))
				chunk := todo[:n]
				todo = todo[n:]
				if phase == 0 {
					err = b.copyRecords(ctx, chunk)
				} else {
					err = b.copyEntries(ctx, Queues[phase-1], chunk)
				}
				if err != nil {
					return err
				}
				if len(todo) > 0 {
					done = append(done, chunk...)
					err = b.save(ctx, phase, cursor, done)
				} else if next != 0 {
					err = b.save(ctx, phase, next, nil)
				} else {
					err = b.save(ctx, phase+1, 0, nil)
				}
				if err != nil {
					return err
				}
				b.paced += int64(n)
				b.report(phase)
				if err := b.pace(ctx); err != nil {
					return err
				}
			}
			cursor, done = next, nil
			if cursor == 0 {
				break
			}
		}
		if phase == 0 {
			b.fraction = 1
			if err := b.copyWhole(ctx); err != nil {
				return err
			}
		}
	}
	if b.opts.DryRun {
		return nil
	}
	if err := b.s.rdb.Del(ctx, b.ckey).Err(); err != nil {
		return redisError("backfill: delete checkpoint", "", err)
	}
	return nil
}

// scan returns one page of record keys (phase 0) or of the members of a
// source queue, and the cursor of the next page (0 at the end).
func (b *backfill) scan(ctx context.Context, phase int, cursor uint64) ([]string, uint64, error) {
	if phase == 0 {
		keys, next, err := b.s.rdb.Scan(ctx, cursor, b.src.recordPattern(), int64(b.batch)).Result()
		if err != nil {
			return nil, 0, redisError("backfill: scan", "", err)
		}
		return slices.Compact(keys), next, nil
	}
	q := b.src.queue(Queues[phase-1])
	pairs, next, err := b.s.rdb.ZScan(ctx, q, cursor, "", int64(b.batch)).Result()
	if err != nil {
		return nil, 0, redisError("backfill: scan "+q, "", err)
	}
	members := make([]string, 0, len(pairs)/2)
	for i := 0; i < len(pairs); i += 2 {
		members = append(members, pairs[i])
	}
	return members, next, nil
}

func (b *backfill) report(phase int) {
	if b.opts.Progress == nil {
		return
	}
	r := b.res
	r.Elapsed = time.Since(b.start)
	b.opts.Progress(BackfillProgress{Phase: b.phaseName(phase), Fraction: b.fraction, Scanned: b.paced, BackfillResult: r})
}

// pace sleeps as long as the run is ahead of opts.Rate.
func (b *backfill) pace(ctx context.Context) error {
	if b.opts.Rate <= 0 {
		return nil
	}
	due := b.start.Add(time.Duration(float64(b.paced) / b.opts.Rate * float64(time.Second)))
	return sleepCtx(ctx, time.Until(due))
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// scanFraction estimates how much of the keyspace a SCAN has covered once
// it returned cursor: Redis walks the buckets of its table in reversed-bit
// order, so the cursor's bits reversed, read as a fraction of 2^64, grow
// from 0 to 1 (exactly while the table is not resized). Cursor 0 means
// the scan is complete.
func scanFraction(cursor uint64) float64 {
	if cursor == 0 {
		return 1
	}
	return float64(bits.Reverse64(cursor)) / (1 << 64)
}

func addExample(list []string, key string) []string {
	if len(list) < maxExamples {
		list = append(list, key)
	}
	return list
}

// backfillRecordsScript copies the records whose destination is missing or
// strictly older, each together with its id's entries in the four queues.
// The destination of KEYS[i] is KEYS[i+N].
//
// Backfill sends it only the records whose destination exists (see
// copyRecords); it works for any record, though. HLEN probes the source
// (a hash, and there), COPY without REPLACE copies it where the
// destination is missing; otherwise the two are compared, identity first
// (two HGETALLs), then freshness. The queue entries of the ids copied or
// found unchanged are synced once per batch and queue (sync_queues).
//
//	KEYS: the 4 source queues (Queues order), the source record of each id,
//	      then the same keys in the destination namespace
//	ARGV: "1", "0", dry run ("1"/"0"), the queues to sync (a string of
//	      digits 1-4), id...
//	Reply: {"OK", {}, {}, copied, outcome...} with one outcome per id:
//	       copied, unchanged, newer, conflict, gone, srctype, dsttype
//	     | {"WRONGTYPE", {}, {}, 0, detail}
var backfillRecordsScript = redis.NewScript(preludeCore + preludeScore + freshnessLua + syncQueuesLua + `
local dry = ARGV[3] == '1'
local sync = queue_list(ARGV[4])
for q = 1, 4 do
  local bad = wrongtype(q, 'zset') or wrongtype(q + N, 'zset')
  if bad then return {'WRONGTYPE', {}, {}, 0, bad} end
end
-- hlen is the number of fields of the hash KEYS[i], 0 when it does not
-- exist, nil when it is not a hash.
local function hlen(i)
  local r = redis.pcall('HLEN', KEYS[i])
  if type(r) == 'table' then return nil end
  return r
end
local copied, out = {}, {'OK', {}, {}, 0}
for j = 1, N - 4 do
  local si, di, id = 4 + j, 4 + j + N, ARGV[4 + j]
  local o
  local sl = hlen(si)
  if not sl then o = 'srctype'
  elseif sl == 0 then o = 'gone'
  elseif not dry and redis.call('COPY', KEYS[si], KEYS[di]) == 1 then o = 'copied'
  else
    local dl = hlen(di)
    if not dl then o = 'dsttype'
    elseif dl == 0 then o = 'copied' -- a dry run: the destination is missing
    elseif same(si, di) then o = 'unchanged'
    else
      local c = fresher(si, di)
      if c > 0 then
        o = 'copied'
        if not dry then redis.call('COPY', KEYS[si], KEYS[di], 'REPLACE') end
      elseif c < 0 then o = 'newer'
      else o = 'conflict' end
    end
  end
  -- An unchanged record's entries are synced too: a write made where the
  -- other side was not written can leave them behind.
  if (o == 'copied' or o == 'unchanged') and not dry then copied[#copied + 1] = id end
  out[#out + 1] = o
end
sync_queues(copied, sync)
out[4] = #copied
return out
`)

// syncQueuesLua defines sync_queues(ids, queues): each id's entry in each
// listed destination queue KEYS[N+q] gets its score in the source queue
// KEYS[q], or is removed when the source has none. One ZMSCORE, one ZADD
// and one ZREM per queue and group of ids. queue_list reads the queues as
// a string of digits, "1234" for all four.
const syncQueuesLua = `
local function queue_list(digits)
  local qs = {}
  for c in string.gmatch(digits, '%d') do qs[#qs + 1] = tonumber(c) end
  return qs
end

local function sync_queues(all, queues)
  for lo = 1, #all, 1000 do
    local ids = {unpack(all, lo, math.min(lo + 999, #all))}
    for _, q in ipairs(queues) do
      local sc = redis.call('ZMSCORE', KEYS[q], unpack(ids))
      local add, rem = {}, {}
      for k = 1, #ids do
        if sc[k] then
          add[#add + 1] = sc[k]
          add[#add + 1] = ids[k]
        else
          rem[#rem + 1] = ids[k]
        end
      end
      if #add > 0 then redis.call('ZADD', KEYS[q + N], unpack(add)) end
      if #rem > 0 then redis.call('ZREM', KEYS[q + N], unpack(rem)) end
    end
  end
end
`

// backfillQueuesScript syncs the queue entries of records Backfill has
// copied with plain COPY: the entries are read and written in one atomic
// step, so what a dual-writing service changed meanwhile is never undone.
//
//	KEYS: the 4 source queues (Queues order), then the 4 destination queues
//	ARGV: "1", "0", the queues to sync (digits 1-4), id...
//	Reply: {"OK", {}, {}, 0} | {"WRONGTYPE", {}, {}, 0, detail}
var backfillQueuesScript = redis.NewScript(preludeCore + syncQueuesLua + `
for q = 1, 4 do
  local bad = wrongtype(q, 'zset') or wrongtype(q + N, 'zset')
  if bad then return {'WRONGTYPE', {}, {}, 0, bad} end
end
sync_queues({unpack(ARGV, 4)}, queue_list(ARGV[3]))
return {'OK', {}, {}, 0}
`)

// copyRecords copies one batch of record keys found by SCAN.
//
// Most destinations are missing, and for those a plain COPY without
// REPLACE is already the whole rule: atomic per key, it copies only where
// the destination does not exist, and copies nothing once the source is
// gone. So one pipeline sends TYPE and COPY for each key (a COPY of a key
// that turns out not to be a hash is deleted again); the records whose
// destination exists go through backfillRecordsScript, which compares
// them; and one backfillQueuesScript syncs the queue entries of the ids
// copied. A dry run sends TYPE and EXISTS instead of COPY.
func (b *backfill) copyRecords(ctx context.Context, keys []string) error {
	ids := make([]string, 0, len(keys))
	for _, k := range keys {
		id, ok := b.src.idFromRecordKey(k)
		if !ok {
			b.res.Skipped++
			b.res.SkippedKeys = addExample(b.res.SkippedKeys, k)
			continue
		}
		ids = append(ids, id)
	}
	if len(ids) == 0 {
		return nil
	}
	// Copies must not start if their queue entries cannot follow.
	if err := b.checkQueues(ctx); err != nil {
		return err
	}
	pipe := b.s.rdb.Pipeline()
	types := make([]*redis.StatusCmd, len(ids))
	copies := make([]*redis.IntCmd, len(ids))
	for i, id := range ids {
		types[i] = pipe.Type(ctx, b.src.record(id))
		if b.opts.DryRun {
			copies[i] = pipe.Exists(ctx, b.dst.record(id))
		} else {
			// Not pipe.Copy: go-redis always sends its DB argument.
			copies[i] = redis.NewIntCmd(ctx, "COPY", b.src.record(id), b.dst.record(id))
			_ = pipe.Process(ctx, copies[i])
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return redisError("backfill", "", err)
	}
	var copied, compare, undo []string
	for i, id := range ids {
		t, c := types[i].Val(), copies[i].Val()
		if b.opts.DryRun {
			c = 1 - c // EXISTS answered; "copied" means the destination is missing
		}
		switch {
		case t == "none":
			b.record(id, "gone")
		case t != "hash":
			b.record(id, "srctype")
			if c == 1 && !b.opts.DryRun {
				undo = append(undo, b.dst.record(id))
			}
		case c == 1:
			b.record(id, "copied")
			copied = append(copied, id)
		default:
			compare = append(compare, id)
		}
	}
	if len(undo) > 0 {
		if err := b.s.rdb.Del(ctx, undo...).Err(); err != nil {
			return redisError("backfill: remove copies of keys that are not records", "", err)
		}
	}
	if sync := b.syncList(); len(copied) > 0 && !b.opts.DryRun && sync != "" {
		kk := queueAndRecordKeys(b.src, b.dst, nil)
		args := make([]any, 0, 3+len(copied))
		args = append(args, "1", "0", sync)
		for _, id := range copied {
			args = append(args, id)
		}
		res, err := backfillQueuesScript.Run(ctx, b.s.rdb, kk, args...).Slice()
		if err := scriptOK("backfill", res, err); err != nil {
			return err
		}
	}
	if len(compare) > 0 {
		return b.compareRecords(ctx, compare)
	}
	return nil
}

// syncList lists the queues whose entries are synced record by record:
// those not copied whole, as digits for the scripts ("1234": all four).
func (b *backfill) syncList() string {
	var sb []byte
	for i := range Queues {
		if !b.whole[i] {
			sb = append(sb, byte('1'+i))
		}
	}
	return string(sb)
}

// copyQueuesScript makes each listed destination queue an exact copy of
// its source, in one atomic step: COPY ... REPLACE, or DEL when the source
// queue does not exist.
//
//	KEYS: the 4 source queues (Queues order), then the 4 destination queues
//	ARGV: the queues to copy (a string of digits 1-4)
//	Reply: "OK" | an error naming a key of the wrong type
var copyQueuesScript = redis.NewScript(`
for c in string.gmatch(ARGV[1], '%d') do
  local q = tonumber(c)
  for _, k in ipairs({KEYS[q], KEYS[q + 4]}) do
    local t = redis.call('TYPE', k)['ok']
    if t ~= 'none' and t ~= 'zset' then
      return redis.error_reply('WRONGTYPE ' .. k .. ' is a ' .. t .. ', want a zset')
    end
  end
end
for c in string.gmatch(ARGV[1], '%d') do
  local q = tonumber(c)
  if redis.call('EXISTS', KEYS[q]) == 1 then
    redis.call('COPY', KEYS[q], KEYS[q + 4], 'REPLACE')
  else
    redis.call('DEL', KEYS[q + 4])
  end
end
return 'OK'
`)

// chooseWhole decides which queues this run copies whole (see
// QueueCopyLimit): all of them no larger than the limit, when the source
// is authoritative and the run writes. Their entries are then not synced
// record by record, and copyWhole copies them once the records are done,
// so that the copy takes in every write up to then, mirrored or not, and
// no destination entry ever names a record not copied yet.
func (b *backfill) chooseWhole(ctx context.Context) error {
	limit := b.opts.QueueCopyLimit
	if limit == 0 {
		limit = DefaultQueueCopyLimit
	}
	if b.opts.DryRun || limit < 0 || b.s.Stage().Primary() != b.src.ns {
		return nil
	}
	if shared, ok, err := b.s.SharedStage(ctx); err != nil {
		return err
	} else if ok && shared.Primary() != b.src.ns {
		return nil
	}
	pipe := b.s.rdb.Pipeline()
	cards := make([]*redis.IntCmd, len(Queues))
	for i, q := range Queues {
		cards[i] = pipe.ZCard(ctx, b.src.queue(q))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		if isWrongType(err) {
			return fmt.Errorf("%w: backfill: a source queue is not a sorted set: %v; fix or remove that key, then run again", ErrCorruptRecord, err)
		}
		return redisError("backfill: size queues", "", err)
	}
	for i, c := range cards {
		b.whole[i] = c.Val() <= int64(limit)
	}
	return nil
}

// copyWhole copies the queues chosen by chooseWhole, in one atomic step.
func (b *backfill) copyWhole(ctx context.Context) error {
	var digits []byte
	var names []string
	for i, q := range Queues {
		if b.whole[i] {
			digits = append(digits, byte('1'+i))
			names = append(names, b.dst.queue(q))
		}
	}
	if len(digits) == 0 {
		return nil
	}
	keys := queueAndRecordKeys(b.src, b.dst, nil)
	if err := copyQueuesScript.Run(ctx, b.s.rdb, keys, string(digits)).Err(); err != nil {
		if isWrongType(err) {
			return fmt.Errorf("%w: backfill: %v; fix or remove that key, then run again", ErrCorruptRecord, err)
		}
		return redisError("backfill: copy queues", "", err)
	}
	b.res.QueuesCopied = names
	return nil
}

// checkQueues fails with ErrCorruptRecord when a queue key of either
// namespace exists with a type other than a sorted set.
func (b *backfill) checkQueues(ctx context.Context) error {
	pipe := b.s.rdb.Pipeline()
	var keys []string
	var cmds []*redis.StatusCmd
	for _, ks := range []keyspace{b.src, b.dst} {
		for _, q := range Queues {
			keys = append(keys, ks.queue(q))
			cmds = append(cmds, pipe.Type(ctx, ks.queue(q)))
		}
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return redisError("backfill", "", err)
	}
	for i, c := range cmds {
		if t := c.Val(); t != "none" && t != "zset" {
			return fmt.Errorf("%w: backfill: %s is a %s, want a zset; fix or remove that key, then run again", ErrCorruptRecord, keys[i], t)
		}
	}
	return nil
}

// compareRecords runs backfillRecordsScript on records whose destination
// exists.
func (b *backfill) compareRecords(ctx context.Context, ids []string) error {
	kk := queueAndRecordKeys(b.src, b.dst, ids)
	args := make([]any, 0, 4+len(ids))
	args = append(args, "1", "0", flagArg(b.opts.DryRun), b.syncList())
	for _, id := range ids {
		args = append(args, id)
	}
	res, err := backfillRecordsScript.Run(ctx, b.s.rdb, kk, args...).Slice()
	if err := scriptOK("backfill", res, err); err != nil {
		return err
	}
	for i, id := range ids {
		o, _ := res[4+i].(string)
		b.record(id, o)
	}
	return nil
}

// scriptOK checks the reply of a backfill script.
func scriptOK(op string, res []any, err error) error {
	if err != nil {
		return redisError(op, "", err)
	}
	if len(res) < 4 {
		return fmt.Errorf("jobstore: %s: unexpected script reply %v", op, res)
	}
	if st, _ := res[0].(string); st != "OK" {
		detail := any("")
		if len(res) > 4 {
			detail = res[4]
		}
		return fmt.Errorf("%w: %s: %v; fix or remove that key, then run again", ErrCorruptRecord, op, detail)
	}
	if errs, _ := res[1].([]any); len(errs) > 0 {
		return fmt.Errorf("jobstore: %s: copies failed: %v; fix the keys named, then run Verify with Repair", op, errs)
	}
	return nil
}

// record counts one record's outcome.
func (b *backfill) record(id, outcome string) {
	b.res.Records++
	switch outcome {
	case "copied":
		b.res.Copied++
	case "unchanged":
		b.res.Unchanged++
	case "newer":
		b.res.Newer++
	case "conflict":
		b.res.Conflicts++
		b.res.ConflictKeys = addExample(b.res.ConflictKeys, b.dst.record(id))
	case "gone":
		b.res.Gone++
	case "srctype":
		b.res.WrongType++
		b.res.WrongTypeKeys = addExample(b.res.WrongTypeKeys, b.src.record(id))
	default:
		b.res.WrongType++
		b.res.WrongTypeKeys = addExample(b.res.WrongTypeKeys, b.dst.record(id))
	}
}

// backfillEntriesScript copies queue entries whose id has no record in the
// source, when the destination queue lacks them and the source queue
// still has them.
//
//	KEYS: source queue, destination queue, the source record of each
//	      candidate whose id is valid
//	ARGV: dry run ("1"/"0"), then for each candidate: id, the index in KEYS
//	      of its record (0 for an invalid id, which has no record)
//	Reply: {"OK", outcome...} with one outcome per candidate: copied,
//	       present (the destination has it), record (the source has its
//	       record: the record phase syncs it), gone (left the source queue)
//	     | {"WRONGTYPE", detail}
var backfillEntriesScript = redis.NewScript(`
for i = 1, 2 do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'none' and t ~= 'zset' then return {'WRONGTYPE', KEYS[i] .. ' is a ' .. t .. ', want a zset'} end
end
local dry = ARGV[1] == '1'
local out = {'OK'}
for j = 1, (#ARGV - 1) / 2 do
  local id, ri = ARGV[2 * j], tonumber(ARGV[2 * j + 1])
  local o
  -- Most entries have their record, which the record phase synced: one
  -- EXISTS settles them.
  if ri > 0 and redis.call('EXISTS', KEYS[ri]) == 1 then o = 'record'
  else
    local s = redis.call('ZSCORE', KEYS[1], id)
    if not s then o = 'gone'
    elseif redis.call('ZSCORE', KEYS[2], id) then o = 'present'
    else
      o = 'copied'
      if not dry then redis.call('ZADD', KEYS[2], s, id) end
    end
  end
  out[#out + 1] = o
end
return out
`)

// copyEntries handles one batch of members of the source queue q.
func (b *backfill) copyEntries(ctx context.Context, q Queue, members []string) error {
	// After the record phase nearly every entry is in the destination
	// already: one ZMSCORE leaves out those, and the script sees the rest.
	anys := make([]any, len(members))
	for i, m := range members {
		anys[i] = m
	}
	have, err := zmscore(ctx, b.s.rdb, b.dst.queue(q), anys)
	if err != nil {
		return err
	}
	members = slices.Clone(members)
	n := 0
	for i, m := range members {
		if !have[i].ok {
			members[n] = m
			n++
		}
	}
	if members = members[:n]; len(members) == 0 {
		return nil
	}
	keys := []string{b.src.queue(q), b.dst.queue(q)}
	args := make([]any, 0, 1+2*len(members))
	args = append(args, flagArg(b.opts.DryRun))
	for _, m := range members {
		ri := 0
		if validateID(m) == nil {
			keys = append(keys, b.src.record(m))
			ri = len(keys)
		}
		args = append(args, m, ri)
	}
	res, err := backfillEntriesScript.Run(ctx, b.s.rdb, keys, args...).StringSlice()
	if err != nil {
		return redisError("backfill "+keys[0], "", err)
	}
	if len(res) == 0 || res[0] != "OK" {
		return fmt.Errorf("%w: backfill: %v; fix or remove that key, then run again", ErrCorruptRecord, res)
	}
	for _, o := range res[1:] {
		if o == "record" || o == "gone" {
			continue
		}
		b.res.Entries++
		if o == "copied" {
			b.res.EntriesCopied++
		}
	}
	return nil
}
