package jobstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Submitting takes one of two paths, both one round trip and atomic with
// the mirror on a single node:
//
//   - A job whose id SubmitJob generates cannot exist yet (a random UUID),
//     so it is written with MULTI: HSET record, ZADD pending, then, when
//     the stage mirrors, COPY record REPLACE and ZADD the mirror queue.
//     Redis runs this in a fraction of the time of a script, and MULTI
//     returns each command's error separately, so a failing mirror
//     command never fails the primary ones.
//   - A job with an id the caller chose may collide with an existing
//     record, so it goes through submitScript, which checks first.

// scoreScale is 2^43: milliseconds up to the year 2248, with
// 1001 * 2^43 < 2^53, so every score is exact in a float64.
const scoreScale = 1 << 43

// pendingScore is the claim-order score of a pending job: its priority
// (the workflow's when set) times 2^43, plus 2^43-1 minus its time in
// milliseconds (the workflow's when set), so that higher priority sorts
// first, then older. The scripts' score_of computes the same from a record
// when a job goes back to pending; TestLegacyScores checks they agree.
func pendingScore(j *Job, created time.Time) float64 {
	p, t := j.Priority, created
	if j.WorkflowPriority != 0 {
		p = j.WorkflowPriority
	}
	if !j.WorkflowDatetime.IsZero() {
		t = j.WorkflowDatetime
	}
	p = min(max(p, MinPriority), MaxPriority)
	ms := min(max(t.UnixMilli(), 0), scoreScale-1)
	return float64(int64(p)*scoreScale + (scoreScale - 1 - ms))
}

// newJob is a validated job ready to write.
type newJob struct {
	id     string
	fields []any // name, value, ...
	score  float64
	fresh  bool // the id was generated here
}

// prepareJob validates j and builds what submitting it writes. An empty id
// gets a new UUID.
func (s *Store) prepareJob(j Job, now time.Time) (newJob, error) {
	fresh := j.ID == ""
	if fresh {
		j.ID = newID()
	}
	fields, err := newRecord(&j, now, s.maxPayload)
	if err != nil {
		return newJob{}, err
	}
	created := j.CreatedAt
	if created.IsZero() {
		created = now
	}
	return newJob{id: j.ID, fields: fields, score: pendingScore(&j, created), fresh: fresh}, nil
}

// SubmitJob stores a new pending job and queues it, and returns its id. An
// empty j.ID gets a new UUID. An id that exists gives ErrJobExists, unless
// its record holds exactly the job given (same fields, created_at
// included): that is a repeat of the same submit, which succeeds and
// writes nothing, so a retried call never fails on its own job. Invalid
// input gives an error wrapping one of the ErrInvalid sentinels (or
// ErrPayloadTooLarge) and writes nothing.
//
// The record and its queue entry are written in one atomic step and one
// round trip, mirrored in the same step when the stage dual-writes.
func (s *Store) SubmitJob(ctx context.Context, j Job) (string, error) {
	st, end := s.begin()
	defer end()
	nj, err := s.prepareJob(j, s.now())
	if err != nil {
		return "", err
	}
	if nj.fresh {
		if err := s.submitCoalesced(ctx, st, nj); err != nil {
			return "", err
		}
		return nj.id, nil
	}
	c := s.submitCall(ctx, st, nj)
	res, err := submitScript.Run(ctx, s.rdb, c.keys, c.argv...).Slice()
	return s.submitted(ctx, c, res, err)
}

// MaxBatch is the most jobs SubmitJobs sends in one pipeline; larger
// batches go in several.
const MaxBatch = 1000

// txBatch is the most jobs written in one MULTI, so that one transaction
// never keeps Redis busy for long.
const txBatch = 200

// SubmitJobs submits many jobs with as few round trips as possible. Each
// job is written exactly as SubmitJob writes it, atomically with its
// mirror; jobs without an id are written in MULTI transactions of up to
// 200 jobs, which makes each such group atomic too, but the batch as a
// whole is not.
//
// Every job is validated before anything is sent: if any is invalid,
// SubmitJobs returns an error naming its index and writes nothing. After
// that, ids[i] is the id of jobs[i], or "" for a job that was not written;
// the error then joins one error per such job, each naming its index and
// wrapping the cause (ErrJobExists, ErrCorruptRecord, a network error...).
func (s *Store) SubmitJobs(ctx context.Context, jobs []Job) ([]string, error) {
	st, end := s.begin()
	defer end()
	now := s.now()
	all := make([]newJob, len(jobs))
	var fresh, chosen []int
	for i, j := range jobs {
		nj, err := s.prepareJob(j, now)
		if err != nil {
			return nil, fmt.Errorf("job %d: %w", i, err)
		}
		all[i] = nj
		if nj.fresh {
			fresh = append(fresh, i)
		} else {
			chosen = append(chosen, i)
		}
	}
	ids := make([]string, len(jobs))
	errs := make([]error, len(jobs))
	for lo := 0; lo < len(fresh); lo += txBatch {
		idx := fresh[lo:min(lo+txBatch, len(fresh))]
		group := make([]newJob, len(idx))
		for k, i := range idx {
			group[k] = all[i]
		}
		for k, err := range s.submitTx(ctx, st, group) {
			errs[idx[k]] = err
		}
	}
	for lo := 0; lo < len(chosen); lo += MaxBatch {
		idx := chosen[lo:min(lo+MaxBatch, len(chosen))]
		calls := make([]call, len(idx))
		for k, i := range idx {
			calls[k] = s.submitCall(ctx, st, all[i])
		}
		cmds, err := s.runBatch(ctx, submitScript, calls)
		for k, i := range idx {
			var res []any
			rerr := err
			if rerr == nil {
				res, rerr = cmds[k].Slice()
			}
			_, errs[i] = s.submitted(ctx, calls[k], res, rerr)
		}
	}
	var joined []error
	for i, err := range errs {
		if err != nil {
			joined = append(joined, fmt.Errorf("job %d: %w", i, err))
		} else {
			ids[i] = all[i].id
		}
	}
	return ids, errors.Join(joined...)
}

// submitCall prepares the submit script for a job.
func (s *Store) submitCall(ctx context.Context, st Stage, nj newJob) call {
	args := make([]any, 0, 2+len(nj.fields))
	args = append(args, nj.id, nj.score)
	args = append(args, nj.fields...)
	return s.prepare(ctx, st, "submit", nj.id, []keyRef{recordRef(nj.id), queueRef(QueuePending)}, args...)
}

// submitted maps the result of a submit script to SubmitJob's results.
func (s *Store) submitted(ctx context.Context, c call, res []any, err error) (string, error) {
	r, err := s.finish(ctx, c, res, err)
	if err != nil {
		return "", err
	}
	switch r.status {
	case "OK":
		return c.id, nil
	case "EXISTS":
		return "", fmt.Errorf("%w: id=%q", ErrJobExists, c.id)
	}
	return "", s.statusError("submit", c.id, r)
}

// txJob holds the commands of one job in a submit transaction.
type txJob struct {
	mkeys       []string // mirror record and queue; nil when not mirrored
	hset, zadd  *redis.IntCmd
	copy, mzadd *redis.IntCmd
}

// submitTx writes jobs with generated ids in one MULTI/EXEC and returns one
// error per job. The primary commands come first; when the stage mirrors,
// each job's record is then copied whole with COPY ... REPLACE and its
// queue entry added to the mirror queue. A mirror command's error is
// counted and logged, never returned.
func (s *Store) submitTx(ctx context.Context, st Stage, jobs []newJob) []error {
	primary := s.space(st.Primary())
	mns, mirror := st.Mirror()
	pending := primary.queue(QueuePending)
	tx := s.rdb.TxPipeline()
	cmds := make([]txJob, len(jobs))
	for i, j := range jobs {
		rec := primary.record(j.id)
		cmds[i].hset = tx.HSet(ctx, rec, j.fields...)
		cmds[i].zadd = tx.ZAdd(ctx, pending, redis.Z{Score: j.score, Member: j.id})
		if mirror {
			var keys []string
			if s.mirrorKeys(ctx, "submit", j.id, s.space(mns), []keyRef{recordRef(j.id), queueRef(QueuePending)}, &keys) {
				cmds[i].mkeys = keys
				// Not tx.Copy: go-redis always sends its DB argument,
				// which would copy into another database.
				cmds[i].copy = redis.NewIntCmd(ctx, "COPY", rec, keys[0], "REPLACE")
				_ = tx.Process(ctx, cmds[i].copy)
				cmds[i].mzadd = tx.ZAdd(ctx, keys[1], redis.Z{Score: j.score, Member: j.id})
			}
		}
	}
	_, execErr := tx.Exec(ctx) // each command keeps its own error
	if lost := lostReply(execErr); lost {
		// The transaction may or may not have run: go-redis does not
		// send it again once written. The ids are new, so a record under
		// one can only be this call's; read them back to tell.
		return s.readBack(ctx, primary, jobs, mirror, execErr)
	}

	errs := make([]error, len(jobs))
	var undo []string
	for i, j := range jobs {
		c := cmds[i]
		if err := c.hset.Err(); err != nil {
			errs[i] = redisError("submit", j.id, err)
			continue
		}
		if err := c.zadd.Err(); err != nil {
			// The record was written but cannot be queued: take it back,
			// so that a failed submit leaves nothing behind.
			errs[i] = redisError("submit", j.id, err)
			if isWrongType(err) {
				errs[i] = fmt.Errorf("%w: submit id=%q: %s is not a sorted set", ErrCorruptRecord, j.id, pending)
				undo = append(undo, primary.record(j.id))
				if c.mkeys != nil {
					undo = append(undo, c.mkeys[0])
				}
			}
			continue
		}
		if c.mkeys != nil {
			s.accountTx(ctx, j.id, primary.record(j.id), c)
		}
	}
	if len(undo) > 0 {
		if err := s.rdb.Del(context.WithoutCancel(ctx), undo...).Err(); err != nil {
			s.log.LogAttrs(ctx, slog.LevelError, "jobstore: could not remove records of a failed submit",
				slog.Any("keys", undo), slog.String("error", err.Error()))
		}
	}
	return errs
}

// accountTx counts and logs the mirror commands of one job of submitTx, as
// accountMirror does for scripts.
func (s *Store) accountTx(ctx context.Context, id, rec string, c txJob) {
	defer func() {
		if p := recover(); p != nil {
			s.mirrorPanic(ctx, "submit", id, p)
		}
	}()
	s.stats.attempted.Add(1)
	if s.mirrorHook != nil {
		s.mirrorHook("submit.reply")
	}
	var failed []string
	for k, cmd := range []*redis.IntCmd{c.copy, c.mzadd} {
		if err := cmd.Err(); err != nil {
			failed = append(failed, c.mkeys[k]+": "+err.Error())
		}
	}
	if len(failed) > 0 {
		s.stats.failed.Add(1)
		s.log.LogAttrs(ctx, slog.LevelError, "Dual-write failed; the primary write succeeded",
			slog.String("op", "submit"), slog.String("id", id), slog.String("errors", strings.Join(failed, "; ")))
		return
	}
	if s.log.Enabled(ctx, slog.LevelDebug) {
		s.log.LogAttrs(ctx, slog.LevelDebug, "Dual-write: copied "+rec+" → "+c.mkeys[0], slog.String("op", "submit"))
		s.log.LogAttrs(ctx, slog.LevelDebug, "Dual-write: added "+id+" to "+c.mkeys[1], slog.String("op", "submit"))
	}
}

// lostReply reports whether err, from a transaction's Exec, is a transport
// failure (a dropped connection, a timeout) rather than a Redis reply.
func lostReply(err error) bool {
	var rerr redis.Error
	return err != nil && !errors.As(err, &rerr)
}

// readBack settles the outcome of a submit transaction whose reply was
// lost: a job whose record exists was written, with its mirror, since the
// transaction is atomic; the others get the transport error. It gives up,
// returning that error for every job, when the read-back fails too or the
// caller's context is done.
func (s *Store) readBack(ctx context.Context, primary keyspace, jobs []newJob, mirrored bool, cause error) []error {
	errs := make([]error, len(jobs))
	fail := func() []error {
		for i, j := range jobs {
			errs[i] = redisError("submit", j.id, cause)
		}
		return errs
	}
	if ctx.Err() != nil {
		return fail()
	}
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.StringCmd, len(jobs))
	for i, j := range jobs {
		cmds[i] = pipe.HGet(ctx, primary.record(j.id), fID)
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return fail()
	}
	for i, j := range jobs {
		if v, err := cmds[i].Result(); err != nil || v != j.id {
			errs[i] = redisError("submit", j.id, cause)
		} else if mirrored {
			s.stats.attempted.Add(1) // its mirror commands' own results are lost
		}
	}
	s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: submit reply lost; outcome read back",
		slog.Int("jobs", len(jobs)), slog.String("cause", cause.Error()))
	return errs
}
