package jobstore

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// MaxBatch is the most jobs SubmitJobs sends in one pipeline; larger
// batches go in several.
const MaxBatch = 1000

// SubmitJobs submits many jobs with as few round trips as possible: one
// pipeline per MaxBatch jobs. Each job is written exactly as SubmitJob
// writes it, in its own atomic step with its mirror; the batch as a whole
// is not atomic.
//
// Every job is validated before anything is sent: if any is invalid,
// SubmitJobs returns an error naming its index and writes nothing. After
// that, ids[i] is the id of jobs[i], or "" for a job that was not written;
// the error then joins one error per such job, each naming its index and
// wrapping the cause (ErrJobExists, ErrCorruptRecord, a network error...).
func (s *Store) SubmitJobs(ctx context.Context, jobs []Job) (ids []string, err error) {
	st := s.Stage()
	now := s.now()
	calls := make([]call, len(jobs))
	for i := range jobs {
		j := jobs[i] // the caller's slice is not modified
		if calls[i], err = s.submitCall(ctx, st, &j, now); err != nil {
			return nil, fmt.Errorf("job %d: %w", i, err)
		}
	}
	ids = make([]string, len(jobs))
	var errs []error
	for lo := 0; lo < len(calls); lo += MaxBatch {
		batch := calls[lo:min(lo+MaxBatch, len(calls))]
		results, err := s.runBatch(ctx, submitScript, batch)
		for i, c := range batch {
			var res []any
			rerr := err
			if rerr == nil {
				res, rerr = results[i].Slice()
			}
			id, serr := s.submitted(ctx, c, res, rerr)
			if serr != nil {
				errs = append(errs, fmt.Errorf("job %d: %w", lo+i, serr))
				continue
			}
			ids[lo+i] = id
		}
	}
	return ids, errors.Join(errs...)
}

// runBatch runs the script once per call in one pipeline, by SHA. If Redis
// has lost the script (after SCRIPT FLUSH or a restart), it loads it and
// runs again the calls that failed for that reason only. err is a failure
// to load the script; per-call errors are in the commands.
func (s *Store) runBatch(ctx context.Context, script *redis.Script, calls []call) ([]*redis.Cmd, error) {
	// Exec's own error is the first command's error; every command keeps
	// its own, including a connection failure, so only those are read.
	exec := func(calls []call) []*redis.Cmd {
		pipe := s.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(calls))
		for i, c := range calls {
			cmds[i] = script.EvalSha(ctx, pipe, c.keys, c.argv...)
		}
		_, _ = pipe.Exec(ctx)
		return cmds
	}
	cmds := exec(calls)
	var retry []int
	for i, cmd := range cmds {
		if isNoScript(cmd.Err()) {
			retry = append(retry, i)
		}
	}
	if len(retry) == 0 {
		return cmds, nil
	}
	if err := script.Load(ctx, s.rdb).Err(); err != nil {
		return nil, err
	}
	again := make([]call, len(retry))
	for k, i := range retry {
		again[k] = calls[i]
	}
	more := exec(again)
	for k, i := range retry {
		cmds[i] = more[k]
	}
	return cmds, nil
}

func isNoScript(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "NOSCRIPT")
}
