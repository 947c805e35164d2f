package jobstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Stage is a setting of the migration from job:*/jobs:* to step:*/steps:*.
// Every running process has one. Adjacent stages work side by side, as
// they must during a rolling restart; see the README's runbook.
//
//	stage         writes (authoritative first)   plain reads
//	legacy        job                            job
//	dual-write    job, then mirror to step       job
//	dual-read     job, then mirror to step       step, falling back to job
//	step-primary  step, then mirror to job       step
//	step-only     step                           step
//
// State changes (claim, complete, fail, cancel, ...) always act on the
// authoritative namespace, and mirror the result in the same atomic step.
// The zero value is StageLegacy.
type Stage int

// The five stages, in migration order.
const (
	StageLegacy Stage = iota
	StageDualWrite
	StageDualRead
	StageStepPrimary
	StageStepOnly
)

var stageNames = [...]string{"legacy", "dual-write", "dual-read", "step-primary", "step-only"}

// String returns the stage's name, as ParseStage reads it.
func (s Stage) String() string {
	if s.valid() {
		return stageNames[s]
	}
	return fmt.Sprintf("Stage(%d)", int(s))
}

func (s Stage) valid() bool { return s >= StageLegacy && s <= StageStepOnly }

// ParseStage reads a stage name: legacy, dual-write, dual-read,
// step-primary or step-only, in any case.
func ParseStage(name string) (Stage, error) {
	n := strings.ToLower(strings.TrimSpace(name))
	for i, sn := range stageNames {
		if n == sn {
			return Stage(i), nil
		}
	}
	return 0, fmt.Errorf("unknown stage %q (want %s)", name, strings.Join(stageNames[:], ", "))
}

// MarshalText implements encoding.TextMarshaler.
func (s Stage) MarshalText() ([]byte, error) {
	if !s.valid() {
		return nil, fmt.Errorf("jobstore: invalid stage %d", int(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText implements encoding.TextUnmarshaler, with ParseStage.
func (s *Stage) UnmarshalText(b []byte) error {
	st, err := ParseStage(string(b))
	if err != nil {
		return fmt.Errorf("jobstore: %w", err)
	}
	*s = st
	return nil
}

// Primary is the authoritative namespace: writes land there first, and
// state changes read it.
func (s Stage) Primary() Namespace {
	if s >= StageStepPrimary {
		return StepNamespace
	}
	return JobNamespace
}

// Mirror is the namespace writes are mirrored to, if any.
func (s Stage) Mirror() (Namespace, bool) {
	switch s {
	case StageDualWrite, StageDualRead:
		return StepNamespace, true
	case StageStepPrimary:
		return JobNamespace, true
	}
	return 0, false
}

// DualWrites reports whether the stage writes both namespaces.
func (s Stage) DualWrites() bool {
	_, ok := s.Mirror()
	return ok
}

// Reads is the namespace plain reads (GetJob, GetPendingJobs, QueueSizes)
// go to. In dual-read they fall back to the job namespace for what the
// step namespace does not have yet.
func (s Stage) Reads() Namespace {
	if s >= StageDualRead {
		return StepNamespace
	}
	return JobNamespace
}

// readsFallBack reports whether plain reads fall back to job:*.
func (s Stage) readsFallBack() bool { return s == StageDualRead }

// adjacent reports whether a move from s to t is at most one stage.
func (s Stage) adjacent(t Stage) bool { return t-s <= 1 && s-t <= 1 }

// Stage returns the Store's current stage. It is safe for concurrent use.
func (s *Store) Stage() Stage { return Stage(s.stage.Load()) }

// begin starts a writing operation: it returns the stage the operation
// runs under, and counts it as running under that stage until end is
// called (see AwaitStage).
func (s *Store) begin() (st Stage, end func()) {
	// Count first, then check that the stage did not change meanwhile:
	// AwaitStage, which reads the stage and then the counts, then never
	// misses an operation that runs under an older stage.
	for {
		st = s.Stage()
		s.running[st].Add(1)
		if s.Stage() == st {
			return st, func() { s.running[st].Add(-1) }
		}
		s.running[st].Add(-1)
	}
}

// AwaitStage waits until no writing operation this Store started under a
// stage other than its current one is still running, or until ctx is
// done. After SetStage, operations already under way finish as they
// started; call it before work that must see only the new stage's writes,
// such as a Backfill right after a switch. Other processes are not
// counted: for them, wait one FollowStage interval and the length of an
// operation.
func (s *Store) AwaitStage(ctx context.Context) error {
	for {
		cur, busy := s.Stage(), false
		for st := range s.running {
			if Stage(st) != cur && s.running[st].Load() > 0 {
				busy = true
			}
		}
		if !busy {
			return nil
		}
		if err := sleepCtx(ctx, time.Millisecond); err != nil {
			return err
		}
	}
}

func (s *Store) casStage(from, to Stage) bool {
	if !s.stage.CompareAndSwap(int32(from), int32(to)) {
		return false
	}
	if from != to {
		s.log.LogAttrs(context.Background(), slog.LevelInfo, "jobstore: stage changed",
			slog.String("from", from.String()), slog.String("to", to.String()))
	}
	return true
}

// SetStage moves the Store to another stage for every later operation,
// without a restart. It refuses, with ErrStageJump, a move of more than
// one stage: adjacent stages are the ones that can run side by side. Use
// a published stage (Migrator.PublishStage) to jump. It is safe for concurrent use.
func (s *Store) SetStage(to Stage) error {
	if !to.valid() {
		return fmt.Errorf("%w: %d is not a stage", ErrInvalidArgument, int(to))
	}
	for {
		from := s.Stage()
		if !from.adjacent(to) {
			return fmt.Errorf("%w: from %s to %s", ErrStageJump, from, to)
		}
		if s.casStage(from, to) {
			return nil
		}
	}
}

// forceStage moves the Store to any stage, however far. It is safe for
// concurrent use.
func (s *Store) forceStage(to Stage) error {
	if !to.valid() {
		return fmt.Errorf("%w: %d is not a stage", ErrInvalidArgument, int(to))
	}
	for !s.casStage(s.Stage(), to) {
	}
	return nil
}

// SharedStage reads the stage published in Redis for every process (the
// hash jobstore:stage). ok is false when none has been published. A
// published stage that cannot be read, a value no stage has or a
// jobstore:stage key that is not a hash, is an error wrapping
// ErrCorruptRecord that says what to do; the writes of every process
// ignore it meanwhile, and run under their own stage.
func (m *Migrator) SharedStage(ctx context.Context) (st Stage, ok bool, err error) {
	return m.s.sharedStage(ctx)
}

// sharedStage reads the published stage by the rules of the scripts'
// stage check (luaStageCheck): what they ignore is an ErrCorruptRecord
// here, for the operator's tools, and nothing else is.
func (s *Store) sharedStage(ctx context.Context) (st Stage, ok bool, err error) {
	key := stageKey(s.prefix)
	v, err := s.rdb.HGet(ctx, key, "stage").Result()
	if errors.Is(err, redis.Nil) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, s.keyError(ctx, "read shared stage", key, "hash", err,
			"every write ignores it and runs under its process's own stage; look at it, delete it if nothing else uses it, then publish the stage (PublishStage with Force, or stepmigrate stage set NAME --force)")
	}
	if st, ok = storedStage(v); !ok {
		return 0, false, fmt.Errorf("%w: %s: unknown stage %q (want %s); every write ignores it and runs under its process's own stage: publish a valid one with Force",
			ErrCorruptRecord, key, v, strings.Join(stageNames[:], ", "))
	}
	return st, true, nil
}

// storedStage reads a stage stored in jobstore:stage as the scripts read
// it (stage_name in lua.go): ASCII space around it and ASCII case do not
// matter, nothing else is forgiven.
func storedStage(v string) (Stage, bool) {
	n := []byte(strings.Trim(v, " \t\n\v\f\r"))
	for i, c := range n {
		if 'A' <= c && c <= 'Z' {
			n[i] = c + 'a' - 'A'
		}
	}
	for i, sn := range stageNames {
		if string(n) == sn {
			return Stage(i), true
		}
	}
	return 0, false
}

// keyError turns an error reading key into one wrapping ErrCorruptRecord
// that names the key's type when the key has the wrong one (with advice
// for the operator, if any); other errors as redisError does.
func (s *Store) keyError(ctx context.Context, what, key, want string, err error, advice string) error {
	if !hasErrorPrefix(err, "WRONGTYPE") {
		return redisError(what+" "+key, "", err)
	}
	typ, terr := s.rdb.Type(ctx, key).Result()
	if terr != nil {
		typ = "key of another type"
	}
	msg := fmt.Sprintf("%s: %s is a %s, not a %s", what, key, typ, want)
	if advice != "" {
		msg += "; " + advice
	}
	return fmt.Errorf("%w: %s", ErrCorruptRecord, msg)
}

// publishStageScript sets the shared stage, refusing a jump of more than
// one stage unless forced: from the published stage and from the stage of
// every live process of the fleet (a process that has not yet taken the
// last published stage must not be left two behind); when none is
// published, from the Migrator's stage too. The check and the write are
// atomic, so two operators cannot race each other past the rule. The
// stored stage is read as the writes read it (stage_name): ASCII case and
// surrounding space do not matter. A stage key of another type is never
// overwritten, forced or not: it may belong to something else.
//
//	KEYS: stage key
//	ARGV: to, force ("1"/"0"), now_iso, k, the k stages the fleet runs
//	(the Migrator's first, then the live check-ins'), stage names in
//	order...
//	Reply: {"OK", previous} | {"JUMP", stage, "published" | "unpublished" | "fleet"}
//	       | {"WRONGTYPE", type}
var publishStageScript = redis.NewScript(luaStages + `
local k = tonumber(ARGV[4])
local order = {}
for i = 5 + k, #ARGV do order[ARGV[i]] = i end
local cur = redis.pcall('HGET', KEYS[1], 'stage')
if type(cur) == 'table' then return {'WRONGTYPE', redis.call('TYPE', KEYS[1])['ok']} end
local to = ARGV[1]
local running = {}
if cur then
  cur = stage_name(cur) or cur
  running[1] = {cur, 'published'}
  for i = 6, 4 + k do running[#running + 1] = {ARGV[i], 'fleet'} end
else
  cur = ARGV[5]
  for i = 5, 4 + k do running[#running + 1] = {ARGV[i], 'unpublished'} end
end
if ARGV[2] ~= '1' then
  for _, r in ipairs(running) do
    if not order[r[1]] or math.abs(order[r[1]] - order[to]) > 1 then
      return {'JUMP', r[1], r[2]}
    end
  end
end
redis.call('HSET', KEYS[1], 'stage', to, 'previous', cur, 'changed_at', ARGV[3])
return {'OK', cur}
`)

// PublishStage writes the shared stage. Every write of every Store checks
// it and runs under it from then on (see lua.go), and FollowStage moves
// each Store's reads to it within one interval. Unless opts.Force is set,
// it refuses with ErrStageJump a move of more than one stage from the
// stage published before, or from the stage any live process of the
// fleet checks in with (or, when none was published, from the
// Migrator's stage), and with
// ErrLegacyAlive a move to dual-read or later while a legacy
// process looks alive (see LegacyEvidence). The check and the write are
// atomic.
func (m *Migrator) PublishStage(ctx context.Context, to Stage, opts PublishOptions) error {
	s := m.s
	if !to.valid() {
		return fmt.Errorf("%w: %d is not a stage", ErrInvalidArgument, int(to))
	}
	if err := m.guardLegacy(ctx, to, opts); err != nil {
		return err
	}
	running := []string{s.Stage().String()}
	if !opts.Force {
		procs, _, err := m.Fleet(ctx)
		if err != nil {
			return err
		}
		now := s.now()
		for _, p := range procs {
			if !p.Stale(now) && !slices.Contains(running, p.Stage.String()) {
				running = append(running, p.Stage.String())
			}
		}
	}
	args := []any{to.String(), flagArg(opts.Force), formatTime(s.now()), len(running)}
	for _, r := range running {
		args = append(args, r)
	}
	for _, n := range stageNames {
		args = append(args, n)
	}
	res, err := publishStageScript.Run(ctx, s.rdb, []string{stageKey(s.prefix)}, args...).StringSlice()
	if err != nil {
		return redisError("publish stage", "", err)
	}
	if len(res) == 3 && res[0] == "JUMP" {
		switch res[2] {
		case "published":
			return fmt.Errorf("%w: the shared stage is %s, not next to %s; move one stage at a time or force", ErrStageJump, res[1], to)
		case "fleet":
			return fmt.Errorf("%w: a live process of the fleet still runs %s, not next to %s; wait until the fleet has taken the published stage (WaitForStage, stepmigrate stage set --wait), or force",
				ErrStageJump, res[1], to)
		}
		return fmt.Errorf("%w: no stage is published, and this Migrator or a live process of the fleet runs %s, not next to %s; move one stage at a time or force",
			ErrStageJump, res[1], to)
	}
	if len(res) == 2 && res[0] == "WRONGTYPE" {
		return fmt.Errorf("%w: publish stage: %s is a %s, not a hash; nothing was published (every write ignores it and runs under its process's own stage). Look at it, delete it if nothing else uses it, then publish again",
			ErrCorruptRecord, stageKey(s.prefix), res[1])
	}
	return s.forceStage(to)
}

// Sync reads the published stage once and moves the Store to it. Writes
// never need it (each checks the published stage itself); call it at
// start-up before serving reads, which FollowStage then keeps current.
//
// A published stage that cannot be read (a value no stage has, or a
// jobstore:stage key that is not a hash) is ignored, as every write
// ignores it: the Store keeps its stage, the problem is logged once, and
// Sync returns nil, so that a junk key cannot keep API services and
// workers from starting. The operator's tools (SharedStage, PublishStage,
// the stepmigrate command) report it as an error. Other errors, such as
// the network's, are returned.
func (s *Store) Sync(ctx context.Context) error {
	st, ok, err := s.sharedStage(ctx)
	if errors.Is(err, ErrCorruptRecord) {
		s.logOnce(ctx, "stage: "+err.Error(), "jobstore: the published stage cannot be read; keeping this process's stage",
			slog.String("stage", s.Stage().String()), slog.String("error", err.Error()))
		return nil
	}
	if err != nil {
		return err
	}
	if ok && st != s.Stage() {
		s.adopt(ctx, st.String())
	}
	return nil
}

// FollowStage makes the Store follow the shared stage and report to the
// fleet: it reads the stage now and every interval until ctx is done,
// moving the Store to it when it changes, and checks in each round (see
// Migrator.Fleet) with its stage and counters, which it also adds to the
// fleet's totals (Migrator.FleetStats). Then it checks out and returns
// ctx.Err(). Every API service and worker runs it in a goroutine. Errors
// are logged and retried at the next interval.
//
// Writes run under the published stage whatever FollowStage has read
// (each script checks it); plain reads follow it within one interval.
func (s *Store) FollowStage(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return fmt.Errorf("%w: interval %v must be positive", ErrInvalidArgument, interval)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		s.flushStats(ctx)
		s.logStageError(ctx, "jobstore: read shared stage", s.Sync(ctx))
		s.logStageError(ctx, "jobstore: fleet check-in", s.checkIn(ctx, interval))
		select {
		case <-ctx.Done():
			// A last flush, so that a process shutting down still
			// counts what it did, and a check-out.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			s.flushStats(fctx)
			s.checkOut(fctx)
			cancel()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// fleetCounts is what one Store has added to the shared stats so far.
type fleetCounts struct {
	dw DualWriteStats
	rd ReadStats
}

// flushStats adds the counts since the last flush to the shared stats
// hash. On error nothing is counted as flushed, so the next round retries
// the same deltas. Concurrent calls are serialised.
func (s *Store) flushStats(ctx context.Context) {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	prev := s.flushed
	cur := fleetCounts{dw: s.DualWriteStats(), rd: s.ReadStats()}
	deltas := []struct {
		field string
		n     uint64
	}{
		{"dual_write_attempted", cur.dw.Attempted - prev.dw.Attempted},
		{"dual_write_failed", cur.dw.Failed - prev.dw.Failed},
		{"dual_write_panics", cur.dw.Panics - prev.dw.Panics},
		{"reads", cur.rd.Reads - prev.rd.Reads},
		{"read_fallbacks", cur.rd.Fallbacks - prev.rd.Fallbacks},
		{"shadow_checks", cur.rd.ShadowChecks - prev.rd.ShadowChecks},
		{"shadow_mismatches", cur.rd.ShadowMismatches - prev.rd.ShadowMismatches},
	}
	pipe := s.rdb.TxPipeline()
	n := 0
	for _, d := range deltas {
		if d.n > 0 {
			pipe.HIncrBy(ctx, statsKey(s.prefix), d.field, int64(d.n))
			n++
		}
	}
	if n == 0 {
		return
	}
	if _, err := pipe.Exec(ctx); err != nil {
		switch {
		case ctx.Err() != nil:
		case hasErrorPrefix(err, "WRONGTYPE"): // it lasts until an operator sees it (FleetStats)
			s.logOnce(ctx, "stats: wrong type", "jobstore: flush fleet stats", slog.String("error", err.Error()))
		default:
			s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: flush fleet stats", slog.String("error", err.Error()))
		}
		return
	}
	s.flushed = cur
}

// FleetStats sums the counters that every Store running FollowStage has
// added to Redis: the dual-write success rate of all API services and
// workers together, as the report's monitoring asks for. A
// jobstore:stats key that is not a hash is an error wrapping
// ErrCorruptRecord (the processes cannot add to it meanwhile; they log it
// once and go on).
func (m *Migrator) FleetStats(ctx context.Context) (DualWriteStats, ReadStats, error) {
	s := m.s
	h, err := s.rdb.HGetAll(ctx, statsKey(s.prefix)).Result()
	if err != nil {
		return DualWriteStats{}, ReadStats{}, s.keyError(ctx, "read fleet stats", statsKey(s.prefix), "hash", err,
			"look at it, and delete it if nothing else uses it: the processes running FollowStage start it again")
	}
	get := func(f string) uint64 {
		n, _ := strconv.ParseUint(h[f], 10, 64)
		return n
	}
	return DualWriteStats{
			Attempted: get("dual_write_attempted"), Failed: get("dual_write_failed"), Panics: get("dual_write_panics"),
		}, ReadStats{
			Reads: get("reads"), Fallbacks: get("read_fallbacks"),
			ShadowChecks: get("shadow_checks"), ShadowMismatches: get("shadow_mismatches"),
		}, nil
}

// sleepCtx sleeps for d, or until ctx is done.
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

// SetDualWrite is the report's switch: it moves the Store between
// StageLegacy (off) and StageDualWrite (on) for every later operation,
// without a restart (an admin endpoint can call it). Operations already
// sent finish as they started. In the later stages, where SetStage is the
// switch, it changes nothing and returns ErrStageJump. It is safe for
// concurrent use.
func (s *Store) SetDualWrite(on bool) error {
	to := StageLegacy
	if on {
		to = StageDualWrite
	}
	for {
		from := s.Stage()
		if from > StageDualWrite {
			return fmt.Errorf("%w: the store is in stage %s, past dual-write; use SetStage", ErrStageJump, from)
		}
		if s.casStage(from, to) {
			return nil
		}
	}
}

// DualWrite reports whether writes are mirrored to the other namespace:
// true in dual-write, dual-read and step-primary.
func (s *Store) DualWrite() bool { return s.Stage().DualWrites() }
