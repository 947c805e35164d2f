package jobstore

import (
	"context"
	"fmt"
	"sync"
)

// Concurrent SubmitJob calls for jobs whose ids they generate are written
// together: a call that finds fewer than maxInflight writes in flight
// starts one at once; calls that arrive meanwhile queue, and the next
// write takes them all, in one MULTI. Under load that spreads one round
// trip, and Redis's reading and answering it, over many jobs; alone, a
// call waits for nothing. Each job is still written whole with its mirror,
// atomically: the group is one transaction.

// coalescer holds the submits waiting for the next write.
type coalescer struct {
	mu       sync.Mutex
	queue    []*queuedSubmit
	inflight int // writes in flight, at most maxInflight
}

// maxInflight is how many writes of queued submits may be in flight at
// once: one more keeps Redis busy while the last one's reply travels.
const maxInflight = 2

type queuedSubmit struct {
	st   Stage
	job  newJob
	done chan error // buffered: the writer never waits for the caller
}

// submitCoalesced writes a job with a generated id, with whatever other
// such submits are waiting. If ctx ends first it returns ctx's error; the
// job may still be written, as after any lost reply.
func (s *Store) submitCoalesced(ctx context.Context, st Stage, nj newJob) error {
	q := &queuedSubmit{st: st, job: nj, done: make(chan error, 1)}
	c := &s.coalesce
	c.mu.Lock()
	c.queue = append(c.queue, q)
	var batch []*queuedSubmit
	if c.inflight < maxInflight {
		c.inflight++
		batch, c.queue = c.queue, nil
	}
	c.mu.Unlock()

	switch {
	case len(batch) == 1:
		// Alone: write inline, under the caller's own context, as if
		// nothing were coalesced; then hand on what queued meanwhile.
		err := s.submitTx(ctx, st, []newJob{nj})[0]
		if s.release() {
			go s.flushLoop(context.WithoutCancel(ctx))
		}
		return err
	case len(batch) > 1:
		// Others' jobs too: the write runs apart, so that this caller's
		// context ending does not fail them, and so that this caller
		// still returns by its deadline if Redis does not answer.
		go func() {
			wctx := context.WithoutCancel(ctx)
			s.write(wctx, batch)
			if s.release() {
				s.flushLoop(wctx)
			}
		}()
	}
	select {
	case err := <-q.done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("jobstore: submit id=%q: %w (the job may have been written)", nj.id, ctx.Err())
	}
}

// release ends a write: it reports whether submits queued meanwhile, in
// which case the caller must go on writing them (the write stays in
// flight); else the write is over.
func (s *Store) release() bool {
	c := &s.coalesce
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) > 0 {
		return true
	}
	c.inflight--
	return false
}

// flushLoop writes queued submits until none is left.
func (s *Store) flushLoop(ctx context.Context) {
	for {
		c := &s.coalesce
		c.mu.Lock()
		batch := c.queue
		c.queue = nil
		c.mu.Unlock()
		s.write(ctx, batch)
		if !s.release() {
			return
		}
	}
}

// write writes a batch of queued submits, grouped by stage, in
// transactions of at most txBatch jobs, and tells each caller its result.
func (s *Store) write(ctx context.Context, batch []*queuedSubmit) {
	for len(batch) > 0 {
		st := batch[0].st
		var group, rest []*queuedSubmit
		for _, q := range batch {
			if q.st == st && len(group) < txBatch {
				group = append(group, q)
			} else {
				rest = append(rest, q)
			}
		}
		jobs := make([]newJob, len(group))
		for i, q := range group {
			jobs[i] = q.job
		}
		// The callers count too, but one whose context ended has gone.
		s.running[st].Add(1)
		errs := s.submitTx(ctx, st, jobs)
		s.running[st].Add(-1)
		for i, err := range errs {
			group[i].done <- err
		}
		batch = rest
	}
}
