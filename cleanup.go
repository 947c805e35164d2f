package jobstore

import (
	"context"
	"fmt"
	"slices"
)

// Cleanup is phase 4.3.5 (delete job:* once every process is step-only)
// and its mirror image for a rollback (delete step:* once every process
// is back on legacy): the report's "Clean up dual-written keys", made
// safe.

// CleanupOptions configures Cleanup. The zero value verifies first, then
// deletes in batches of DefaultBatchSize.
type CleanupOptions struct {
	// DryRun runs the checks and counts what would be deleted, deleting
	// nothing.
	DryRun bool
	// Force deletes without the verification. The stage guard still
	// applies.
	Force bool
	// Strict refuses on any difference the verification finds, as a
	// plain Verify reports them, instead of only on those that deleting
	// would lose. In step-only (or legacy, for a rollback) every write
	// leaves the deleted side behind, so Strict needs writes paused.
	Strict bool
	// BatchSize is how many keys each SCAN asks for and each UNLINK
	// deletes. 0 means DefaultBatchSize.
	BatchSize int
	// Verify configures the verification that runs first. Its Repair is
	// ignored: Cleanup never writes what it verifies.
	Verify VerifyOptions
	// Progress, when set, is called after each batch deleted (or counted)
	// with the keys so far.
	Progress func(deleted int64)
}

// CleanupResult says what Cleanup deleted, or would delete on a dry run.
type CleanupResult struct {
	Namespace string `json:"namespace"` // "job" or "step"
	DryRun    bool   `json:"dry_run"`
	Forced    bool   `json:"forced"`
	// Verify is the verification that ran first; nil when forced.
	Verify *VerifyResult `json:"verify,omitempty"`
	// Records counts record keys deleted, Queues the queue keys (at most
	// four) and Checkpoints Backfill's checkpoint keys.
	Records     int64 `json:"records"`
	Queues      int64 `json:"queues"`
	Checkpoints int64 `json:"checkpoints"`
	// Kept counts keys under the record prefix that are not records, such
	// as job:<id>:progress: they are left alone. KeptKeys names a few.
	Kept     int64    `json:"kept"`
	KeptKeys []string `json:"kept_keys,omitempty"`
}

// usesNamespace reports whether a process in stage st reads or writes ns.
func usesNamespace(st Stage, ns Namespace) bool {
	if st.Primary() == ns || st.Reads() == ns {
		return true
	}
	m, ok := st.Mirror()
	return ok && m == ns
}

// Cleanup deletes one namespace, JobNamespace (phase 4.3.5) or
// StepNamespace (after a rollback to legacy):
//
//  1. The stage guard: neither the shared stage (when one is published)
//     nor the Store's own stage may read or write ns, so job:* goes only
//     in step-only and step:* only in legacy. Otherwise the error wraps
//     ErrNamespaceInUse and names the stage to move to.
//  2. Unless opts.Force, a Verify (the Store's stage makes the other
//     namespace the primary) must find no unsafe difference, nothing that
//     deleting ns would lose: see VerifyResult.Unsafe. A stale or missing
//     copy in ns is expected once it is no longer written and does not
//     count; a record or entry only ns has, or a copy that is not older,
//     does. With opts.Strict it must find no difference at all. Otherwise
//     the error wraps ErrCleanupRefused, and the result holds the
//     verification.
//  3. It deletes, with UNLINK in batches, the keys of ns that are records
//     (never sub-keys such as job:<id>:progress, nor any other look-alike),
//     its four queue keys and Backfill's checkpoints. Keys are streamed
//     with SCAN, so memory stays flat.
func (s *Store) Cleanup(ctx context.Context, ns Namespace, opts CleanupOptions) (CleanupResult, error) {
	if ns != JobNamespace && ns != StepNamespace {
		return CleanupResult{}, fmt.Errorf("%w: namespace %q: want job or step", ErrInvalidArgument, ns)
	}
	res := CleanupResult{Namespace: ns.String(), DryRun: opts.DryRun, Forced: opts.Force}
	if err := s.cleanupGuard(ctx, ns); err != nil {
		return res, err
	}
	if !opts.Force {
		vo := opts.Verify
		vo.Repair = false
		vr, err := s.Verify(ctx, vo)
		res.Verify = &vr
		if err != nil {
			return res, err
		}
		if opts.Strict && vr.Differences() > 0 {
			return res, fmt.Errorf("%w: strict: verification found %d differences between job:* and step:*; repair them (Verify with Repair) with writes paused, or drop the strict rule",
				ErrCleanupRefused, vr.Differences())
		}
		if vr.Unsafe > 0 {
			return res, fmt.Errorf("%w: verification found %d differences that deleting %s:* would lose (first: %s); repair them from %s:* (Verify with Repair) or find the process still writing %s:*",
				ErrCleanupRefused, vr.Unsafe, ns, firstUnsafe(vr), vr.Primary, ns)
		}
	}
	batch := opts.BatchSize
	if batch <= 0 {
		batch = DefaultBatchSize
	}
	k := s.space(ns)
	deleted := int64(0)
	for cursor := uint64(0); ; {
		keys, next, err := s.rdb.Scan(ctx, cursor, k.recordPattern(), int64(batch)).Result()
		if err != nil {
			return res, redisError("cleanup: scan", "", err)
		}
		var recs []string
		for _, key := range slices.Compact(keys) {
			if _, ok := k.idFromRecordKey(key); ok {
				recs = append(recs, key)
			} else {
				res.Kept++
				res.KeptKeys = addExample(res.KeptKeys, key)
			}
		}
		for c := range slices.Chunk(recs, batch) {
			n, err := s.unlink(ctx, opts.DryRun, c)
			if err != nil {
				return res, err
			}
			res.Records += n
			deleted += n
			if opts.Progress != nil {
				opts.Progress(deleted)
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	queues := make([]string, 0, len(Queues))
	for _, q := range Queues {
		queues = append(queues, k.queue(q))
	}
	n, err := s.unlink(ctx, opts.DryRun, queues)
	if err != nil {
		return res, err
	}
	res.Queues = n
	n, err = s.unlink(ctx, opts.DryRun, []string{
		checkpointKey(s.prefix, JobNamespace, StepNamespace), checkpointKey(s.prefix, StepNamespace, JobNamespace),
	})
	res.Checkpoints = n
	return res, err
}

func firstUnsafe(vr VerifyResult) string {
	for _, d := range vr.Diffs {
		if d.Unsafe {
			return d.String()
		}
	}
	return "not among the differences listed"
}

// unlink deletes keys, or on a dry run counts those that exist.
func (s *Store) unlink(ctx context.Context, dry bool, keys []string) (int64, error) {
	if len(keys) == 0 {
		return 0, nil
	}
	var n int64
	var err error
	if dry {
		n, err = s.rdb.Exists(ctx, keys...).Result()
	} else {
		n, err = s.rdb.Unlink(ctx, keys...).Result()
	}
	if err != nil {
		return 0, redisError("cleanup: unlink", "", err)
	}
	return n, nil
}

// cleanupGuard refuses to delete a namespace that the shared stage or the
// Store's own stage still reads or writes.
func (s *Store) cleanupGuard(ctx context.Context, ns Namespace) error {
	want := StageStepOnly
	if ns == StepNamespace {
		want = StageLegacy
	}
	shared, published, err := s.SharedStage(ctx)
	if err != nil {
		return err
	}
	if published && usesNamespace(shared, ns) {
		return fmt.Errorf("%w: the shared stage is %s, which still reads or writes %s:*; move every process to %s first",
			ErrNamespaceInUse, shared, ns, want)
	}
	if own := s.Stage(); usesNamespace(own, ns) {
		return fmt.Errorf("%w: this Store's stage is %s, which still reads or writes %s:*; move it (and every process) to %s first",
			ErrNamespaceInUse, own, ns, want)
	}
	return nil
}
