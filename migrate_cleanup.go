package jobstore

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Cleanup deletes a namespace once nothing uses it: job:*/jobs:* at the
// end of the migration, or step:*/steps:* after a rollback.

// CleanupOptions configures Cleanup. The zero value checks the stage,
// verifies, then deletes in batches of DefaultBatchSize.
type CleanupOptions struct {
	// DryRun runs the checks and counts what would be deleted, deleting
	// nothing.
	DryRun bool
	// Force deletes without the verification. The stage check still
	// applies.
	Force bool
	// Strict refuses on any difference between what the namespace holds
	// and the other one (a stale copy included), not only on those that
	// deleting it would lose. With services running, the namespace no
	// longer written falls behind at once, so Strict needs writes paused.
	Strict bool
	// BatchSize is how many keys each SCAN asks for and each UNLINK
	// deletes. 0 means DefaultBatchSize; at most MaxBatchSize.
	BatchSize int
	// Verify configures the verification that runs first; its Repair is
	// ignored (Cleanup never writes what it verifies), and its BatchSize
	// defaults to BatchSize.
	Verify VerifyOptions
	// Progress, when set, is called after each batch with the number of
	// keys deleted so far (or, on a dry run, found).
	Progress func(deleted int64)
}

// CleanupResult says what Cleanup deleted, or would delete on a dry run.
type CleanupResult struct {
	Namespace string `json:"namespace"` // "job" or "step"
	DryRun    bool   `json:"dry_run"`
	Forced    bool   `json:"forced"`
	// Verify is the verification that ran first (nil when forced). It
	// looks only at what the namespace holds: what only the other
	// namespace has cannot be lost.
	Verify *VerifyResult `json:"verify,omitempty"`
	// The keys deleted: records, sub-keys, worker active hashes, the
	// pending, completed and failed keys, and Backfill's checkpoints.
	Records      int64 `json:"records"`
	SubKeys      int64 `json:"sub_keys"`
	ActiveHashes int64 `json:"active_hashes"`
	Queues       int64 `json:"queues"`
	Checkpoints  int64 `json:"checkpoints"`
	// Deleted is their sum.
	Deleted int64 `json:"deleted"`
	// Deleting is how long the deletion took (or, on a dry run, the
	// count), from its first batch, without the verification before it
	// (Verify.Elapsed); zero when it never began.
	Deleting time.Duration `json:"deleting_ns"`
}

// Cleanup deletes every key that a job owns in ns (records, sub-keys,
// pending, every worker's active hash, completed, failed) and Backfill's
// checkpoints, with UNLINK in batches, so Redis frees them without
// blocking. Look-alikes (jobsummary, jobs:pending:old, jobs:active,
// job:<invalid id>) and keys outside the namespace stay. In order:
//
//  1. The stage check: no process may still use ns. job:* goes only in
//     step-only, step:* only in legacy; the published shared stage, when
//     there is one, and the Migrator's own stage must both be that one,
//     else the error wraps ErrNamespaceInUse.
//  2. Unless opts.Force, a verification of what ns holds against the
//     other namespace, the authoritative one, with Verify's rounds: a
//     record or entry only ns has, or a copy in ns that is not older than
//     the authoritative one, would be lost, and refuses the deletion
//     (ErrCleanupRefused; the result's Verify lists them in
//     BlockingDiffs). With opts.Strict, any difference refuses.
//  3. The deletion, streaming the keys with SCAN so memory stays flat.
//     Keys written in ns after the scan passed them stay: the stage check
//     is what keeps writers away. Each batch is deleted by a script that
//     checks the published stage first: if it has moved (a rollback
//     during the cleanup), the deletion stops at once with
//     ErrNamespaceInUse, and what it has not reached stays.
//
// The stage check also reads the fleet's check-ins (see FollowStage):
// with no stage published, a live process that reports another stage
// still uses ns, and refuses the cleanup too.
func (m *Migrator) Cleanup(ctx context.Context, ns Namespace, opts CleanupOptions) (CleanupResult, error) {
	res := CleanupResult{Namespace: ns.String(), DryRun: opts.DryRun, Forced: opts.Force}
	if !ns.valid() {
		return res, fmt.Errorf("%w: namespace %d: want job or step", ErrInvalidArgument, int(ns))
	}
	batch, err := batchSize(opts.BatchSize)
	if err != nil {
		return res, err
	}
	guard, err := m.cleanupGuard(ctx, ns)
	if err != nil {
		return res, err
	}
	if !opts.Force {
		if err := m.cleanupVerify(ctx, ns, opts, batch, &res); err != nil {
			return res, err
		}
	}
	d := deleter{m: m, k: m.s.space(ns), dry: opts.DryRun, batch: batch, res: &res, progress: opts.Progress, guard: guard}
	start := time.Now()
	err = d.run(ctx)
	res.Deleting = time.Since(start)
	return res, err
}

// freeStage is the one stage in which no process uses ns.
func freeStage(ns Namespace) Stage {
	if ns == JobNamespace {
		return StageStepOnly
	}
	return StageLegacy
}

// cleanupGuard refuses to delete a namespace that the shared stage or
// the Migrator's own still reads or writes.
func (m *Migrator) cleanupGuard(ctx context.Context, ns Namespace) (cleanupStage, error) {
	want := freeStage(ns)
	shared, published, err := m.s.sharedStage(ctx)
	if err != nil {
		return cleanupStage{}, err
	}
	if published && shared != want {
		return cleanupStage{}, fmt.Errorf("%w: the shared stage is %s, in which processes still use %s:*; publish %s first",
			ErrNamespaceInUse, shared, ns, want)
	}
	if own := m.s.Stage(); own != want {
		return cleanupStage{}, fmt.Errorf("%w: this Migrator's stage is %s, in which %s:* is still used; move it (and every process) to %s first",
			ErrNamespaceInUse, own, ns, want)
	}
	procs, _, err := m.Fleet(ctx)
	if err != nil {
		return cleanupStage{}, err
	}
	var users []string
	now := m.s.now()
	for _, p := range procs {
		if !p.Stale(now) && p.Stage != want {
			users = append(users, fmt.Sprintf("%s (%s)", p.ID, p.Stage))
		}
	}
	if len(users) > 0 {
		return cleanupStage{}, fmt.Errorf("%w: %d live processes report a stage in which %s:* is still used: %s; move them to %s first",
			ErrNamespaceInUse, len(users), ns, firstN(users, 5), want)
	}
	return cleanupStage{want: want.String(), published: published}, nil
}

// firstN joins the first n strings, and says how many more there are.
func firstN(list []string, n int) string {
	out := strings.Join(list[:min(n, len(list))], ", ")
	if len(list) > n {
		out += fmt.Sprintf(" and %d more", len(list)-n)
	}
	return out
}

// cleanupStage is what the deletion script checks before each batch:
// the stage the cleanup needs, and whether it was published when the
// cleanup began (then it must stay published).
type cleanupStage struct {
	want      string
	published bool
}

// unlinkScript deletes (or, on a dry run, counts) a batch of keys, unless
// the published stage is no longer the one the cleanup needs.
//
//	KEYS[1..n] -> the keys, KEYS[n+1] -> jobstore:stage
//	ARGV[1] -> the stage the cleanup needs, ARGV[2] -> "1" if it was
//	published, ARGV[3] -> "1" for a dry run
//	Reply: {"OK", n} | {"STAGE", published or ""}
var unlinkScript = redis.NewScript(`
local pub = redis.pcall('HGET', KEYS[#KEYS], 'stage')
if type(pub) ~= 'string' then pub = nil end
if (pub and string.lower(pub) ~= ARGV[1]) or (ARGV[2] == '1' and not pub) then
  return {'STAGE', pub or ''}
end
local n = 0
for i = 1, #KEYS - 1 do
  if ARGV[3] == '1' then n = n + redis.call('EXISTS', KEYS[i]) else n = n + redis.call('UNLINK', KEYS[i]) end
end
return {'OK', n}
`)

// cleanupVerify compares what ns holds with the other namespace and
// refuses on what deleting ns would lose.
func (m *Migrator) cleanupVerify(ctx context.Context, ns Namespace, opts CleanupOptions, batch int, res *CleanupResult) error {
	vo := opts.Verify
	vo.Repair = false
	vo.BatchSize = cmpOr(vo.BatchSize, batch)
	v, err := m.newVerifier(ns.other(), vo)
	if err != nil {
		return err
	}
	v.forCleanup = true
	err = v.run(ctx, []verifySide{{s: v.o, c: v.a, full: true}})
	v.res.Elapsed = time.Since(v.start)
	res.Verify = &v.res
	if err != nil {
		return err
	}
	// Advice that keeps what the refusal protects: a repair from the other
	// side would delete it just the same.
	switch r := &v.res; {
	case r.Blocking > 0:
		return fmt.Errorf("%w: deleting %s:* would lose %d things only it has, or copies not older than %s:*'s: %s; "+
			"copy them to %s:* with Backfill from %s:* (it keeps the fresher copy; a copy as fresh as the other but different needs your choice), "+
			"or find the process still writing %s:*",
			ErrCleanupRefused, ns, r.Blocking, ns.other(), firstDiffs(r.BlockingDiffs, 3), ns.other(), ns, ns)
	case opts.Strict && r.Differences > 0:
		return fmt.Errorf("%w: strict: %s:* differs from %s:* in %d places, none of which deleting it would lose (first: %s); "+
			"make %s:* match with Verify with Repair from %s:*, writes paused, or clean up without Strict",
			ErrCleanupRefused, ns, ns.other(), r.Differences, r.Diffs[0], ns, ns.other())
	}
	return nil
}

func firstDiffs(ds []Diff, n int) string {
	var s []string
	for _, d := range ds[:min(n, len(ds))] {
		s = append(s, d.String())
	}
	return strings.Join(s, "; ")
}

// deleter deletes (or counts) the keys of a namespace.
type deleter struct {
	m        *Migrator
	k        keyspace
	dry      bool
	batch    int
	res      *CleanupResult
	progress func(int64)
	guard    cleanupStage
}

func (d *deleter) run(ctx context.Context) error {
	rdb, n := d.m.s.rdb, int64(d.batch)
	if err := d.scan(ctx, keyScanner(rdb, d.k.recordPattern(), n), d.recordKeys); err != nil {
		return err
	}
	if err := d.scan(ctx, keyScanner(rdb, d.k.activePattern(), n), d.activeKeys); err != nil {
		return err
	}
	c, err := d.unlink(ctx, []string{d.k.pending(), d.k.completed(), d.k.failed()})
	d.res.Queues += c
	if err != nil {
		return err
	}
	c, err = d.unlink(ctx, checkpointKeys(d.m.s.prefix))
	d.res.Checkpoints += c
	return err
}

// recordKeys deletes the records and sub-keys of a page.
func (d *deleter) recordKeys(ctx context.Context, items []scanItem) error {
	var recs, subs []string
	for _, it := range items {
		switch _, suffix, ok := d.k.parseRecordKey(it.name); {
		case ok && suffix == "":
			recs = append(recs, it.name)
		case ok:
			subs = append(subs, it.name)
		}
	}
	n, err := d.unlink(ctx, recs)
	d.res.Records += n
	if err != nil {
		return err
	}
	n, err = d.unlink(ctx, subs)
	d.res.SubKeys += n
	return err
}

// activeKeys deletes the workers' active hashes of a page.
func (d *deleter) activeKeys(ctx context.Context, items []scanItem) error {
	var keys []string
	for _, it := range items {
		if _, ok := d.k.workerFromActive(it.name); ok {
			keys = append(keys, it.name)
		}
	}
	n, err := d.unlink(ctx, keys)
	d.res.ActiveHashes += n
	return err
}

// scan hands a scan's pages to handle, in chunks of the batch size.
func (d *deleter) scan(ctx context.Context, scan scanner, handle func(context.Context, []scanItem) error) error {
	for cursor := uint64(0); ; {
		page, next, err := scan(ctx, cursor)
		if err != nil {
			return err
		}
		for chunk := range slices.Chunk(notDone(page, nil), d.batch) {
			if err := handle(ctx, chunk); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// unlink deletes keys with UNLINK, or on a dry run counts those that
// exist, and reports progress.
func (d *deleter) unlink(ctx context.Context, keys []string) (int64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	args := []any{d.guard.want, flagArg(d.guard.published), flagArg(d.dry)}
	r, err := unlinkScript.Run(ctx, d.m.s.rdb, append(slices.Clone(keys), stageKey(d.m.s.prefix)), args...).Slice()
	if err != nil {
		return 0, redisError("cleanup: unlink", "", err)
	}
	if len(r) != 2 {
		return 0, fmt.Errorf("jobstore: cleanup: unexpected script reply %v", r)
	}
	if r[0] == "STAGE" {
		now := "unpublished"
		if p, _ := r[1].(string); p != "" {
			now = p
		}
		return 0, fmt.Errorf("%w: the shared stage is now %s: the cleanup stopped after deleting %d keys; the rest of %s:* stays",
			ErrNamespaceInUse, now, d.res.Deleted, d.k.ns)
	}
	n, _ := r[1].(int64)
	d.res.Deleted += n
	if d.progress != nil {
		d.progress(d.res.Deleted)
	}
	return n, nil
}
