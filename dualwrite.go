package jobstore

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// Dual-write: every state change is one script run with the primary keys
// and, when mirroring is on, the mirror keys of the same records and
// queues. One code path serves both namespaces: an operation lists the keys
// it touches as keyRefs, and each namespace turns them into key names.

// keyRef names a key independently of the namespace: a record when queue
// is empty, else a queue.
type keyRef struct {
	queue Queue
	id    string
}

func recordRef(id string) keyRef { return keyRef{id: id} }
func queueRef(q Queue) keyRef    { return keyRef{queue: q} }

// keys appends the key names of refs in keyspace k to dst.
func (k keyspace) keys(dst []string, refs []keyRef) []string {
	for _, r := range refs {
		if r.queue == "" {
			dst = append(dst, k.record(r.id))
		} else {
			dst = append(dst, k.queue(r.queue))
		}
	}
	return dst
}

// DualWriteStats counts mirror writes since the Store was created. The
// report's "dual-write success rate" is SuccessRate.
type DualWriteStats struct {
	// Attempted counts write operations that mirrored something.
	Attempted uint64
	// Failed counts those whose mirror failed in whole or part, including
	// Panics. The primary write succeeded in every one of them.
	Failed uint64
	// Panics counts mirror code panics that were recovered.
	Panics uint64
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
}

// DualWriteStats returns the mirror counters. It is safe for concurrent use.
func (s *Store) DualWriteStats() DualWriteStats {
	return DualWriteStats{
		Attempted: s.stats.attempted.Load(),
		Failed:    s.stats.failed.Load(),
		Panics:    s.stats.panics.Load(),
	}
}

// SetDualWrite is the phase 4.3.1 switch: it moves the Store between
// StageLegacy (off) and StageDualWrite (on) for every later operation,
// without a restart (an admin endpoint can call it). Operations already
// sent to Redis finish as they started. In the later stages, where
// SetStage is the switch, it changes nothing and logs an error. It is
// safe for concurrent use.
func (s *Store) SetDualWrite(on bool) {
	to := StageLegacy
	if on {
		to = StageDualWrite
	}
	for {
		from := s.Stage()
		if from > StageDualWrite {
			s.log.LogAttrs(context.Background(), slog.LevelError,
				"jobstore: SetDualWrite ignored: the store is past dual-write; use SetStage",
				slog.String("stage", from.String()), slog.Bool("dual_write", on))
			return
		}
		if s.casStage(from, to) {
			return
		}
	}
}

// DualWrite reports whether writes are mirrored to the other namespace:
// true in dual-write, dual-read and step-primary.
func (s *Store) DualWrite() bool { return s.Stage().DualWrites() }

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

// call is one state-change script run, prepared for a stage: the keys of
// its refs in the authoritative namespace, then, when the stage mirrors,
// in the mirror namespace, and ARGV with the mirror and log flags first.
type call struct {
	st     Stage
	op, id string
	mirror bool
	keys   []string
	argv   []any
}

// prepare builds the call for the operation op in stage st. A failure to
// prepare the mirror, even a panic, is recovered and counted, and the call
// then runs without it: the primary write still happens.
func (s *Store) prepare(ctx context.Context, st Stage, op, id string, refs []keyRef, args ...any) call {
	c := call{st: st, op: op, id: id}
	c.keys = s.space(st.Primary()).keys(make([]string, 0, 2*len(refs)), refs)
	if mns, ok := st.Mirror(); ok {
		c.mirror = s.mirrorKeys(ctx, op, id, s.space(mns), refs, &c.keys)
	}
	debug := c.mirror && s.log.Enabled(ctx, slog.LevelDebug)
	c.argv = make([]any, 0, 2+len(args))
	c.argv = append(c.argv, flagArg(c.mirror), flagArg(debug))
	c.argv = append(c.argv, args...)
	return c
}

// finish turns the script's result into a reply, and counts and logs its
// mirror part; accounting never fails the call.
func (s *Store) finish(ctx context.Context, c call, res []any, err error) (reply, error) {
	if err != nil {
		return reply{}, redisError(c.op, c.id, err)
	}
	if len(res) < 4 {
		return reply{}, fmt.Errorf("jobstore: %s id=%q: unexpected script reply %v", c.op, c.id, res)
	}
	status, _ := res[0].(string)
	if c.mirror {
		s.accountMirror(ctx, c.st, c.op, c.id, res)
	}
	return reply{status: status, data: res[4:]}, nil
}

// exec runs one state-change script for the operation op in stage st, in
// one round trip; see prepare and finish.
func (s *Store) exec(ctx context.Context, st Stage, op, id string, script *redis.Script, refs []keyRef, args ...any) (reply, error) {
	c := s.prepare(ctx, st, op, id, refs, args...)
	res, err := script.Run(ctx, s.rdb, c.keys, c.argv...).Slice()
	return s.finish(ctx, c, res, err)
}

// mirrorKeys appends the mirror keys of refs to keys. It reports false,
// leaving keys as they were, if building them panicked.
func (s *Store) mirrorKeys(ctx context.Context, op, id string, mirror keyspace, refs []keyRef, keys *[]string) (ok bool) {
	n := len(*keys)
	defer func() {
		if p := recover(); p != nil {
			*keys = (*keys)[:n]
			s.stats.attempted.Add(1)
			s.mirrorPanic(ctx, op, id, p)
			ok = false
		}
	}()
	if s.mirrorHook != nil {
		s.mirrorHook(op)
	}
	*keys = mirror.keys(*keys, refs)
	return true
}

// accountMirror counts and logs the mirror part of a script reply.
func (s *Store) accountMirror(ctx context.Context, st Stage, op, id string, res []any) {
	counted := false
	defer func() {
		if p := recover(); p != nil {
			if !counted {
				s.stats.attempted.Add(1)
			}
			s.mirrorPanic(ctx, op, id, p)
		}
	}()
	if s.mirrorHook != nil {
		s.mirrorHook(op + ".reply")
	}
	errs, _ := res[1].([]any)
	logs, _ := res[2].([]any)
	n, _ := res[3].(int64)
	if n == 0 && len(errs) == 0 {
		return
	}
	s.stats.attempted.Add(1)
	counted = true
	if len(errs) > 0 {
		s.stats.failed.Add(1)
		msgs := make([]string, 0, len(errs))
		for _, e := range errs {
			msgs = append(msgs, fmt.Sprint(e))
		}
		s.log.LogAttrs(ctx, slog.LevelError, "Dual-write failed; the primary write succeeded",
			slog.String("op", op), slog.String("id", id),
			slog.String("stage", st.String()),
			slog.String("errors", strings.Join(msgs, "; ")))
	}
	for _, l := range logs {
		s.log.LogAttrs(ctx, slog.LevelDebug, fmt.Sprintf("Dual-write: %v", l), slog.String("op", op))
	}
}

func (s *Store) mirrorPanic(ctx context.Context, op, id string, p any) {
	s.stats.failed.Add(1)
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
	if isWrongType(err) {
		if id == "" {
			return fmt.Errorf("%w: %s: %v", ErrCorruptRecord, op, err)
		}
		return fmt.Errorf("%w: %s id=%q: %v", ErrCorruptRecord, op, id, err)
	}
	if id == "" {
		return fmt.Errorf("jobstore: %s: %w", op, err)
	}
	return fmt.Errorf("jobstore: %s id=%q: %w", op, id, err)
}

func isWrongType(err error) bool {
	return err != nil && strings.HasPrefix(err.Error(), "WRONGTYPE")
}
