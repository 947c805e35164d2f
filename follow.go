package jobstore

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// The follower mirrors to step:* the writes of processes that do not
// mirror: the legacy services, which write job:* only, and jobstore
// processes still in the legacy stage. It is needed from dual-write until
// the last such process is gone.
//
// How it works. Redis keyspace notifications tell it which job:<id> key
// (record or sub-key, of any type) changed; every legacy operation writes
// the record, so every changed job is seen, though not which queue
// entries changed with it. A changed job is synced after a short quiet
// time (Debounce), so that the rest of a legacy operation's commands,
// which follow the record write within milliseconds, have landed, but no
// later than MaxDelay after its first notification, so that a job written
// without pause is synced too; and once more after Recheck for any that
// were slower. Syncing a job makes its step side equal to its job side,
// in one atomic script: the record and the sub-keys seen (content and
// TTL), its pending entry, its entries in the completed and failed hashes
// (with their TTLs) and its entries in the active hashes of the workers
// its records name. A worker's active hash also changes on its own (an
// entry removed once no record names the worker): its notifications make
// the whole step hash equal to the job hash. Keys of the wrong type are
// passed over, counted and logged once. The job side is authoritative in
// the stages the follower runs in, and the script copies the job side as
// it is when the script runs, so a sync never puts back older data than
// the step side has: a dual-writing process that changed the job
// meanwhile changed both sides at once.
//
// The stage. The follower runs in dual-write and dual-read only. Each
// sync is built for its Store's stage and refused, by Go and by the
// script, in any other; the script's stage check refuses one built for a
// stage no longer published. Whichever path sees the stage leave them
// first (a sync, a sweep, the watch that reads the published stage every
// second, or the Store moved by its own Migrator's PublishStage) stops
// Follow with ErrNamespaceInUse.
//
// Notifications are fire-and-forget: while the follower is disconnected,
// or before it starts, writes go unseen. So it sweeps: when it starts,
// after every reconnection, and every Sweep interval, it walks every
// record and queue entry of the job namespace, and the active hashes of
// both namespaces, and syncs what differs; then the step namespace's
// records and sub-keys, and syncs each whose job original is gone, which
// deletes it, and its pending, completed and failed entries, and syncs
// each whose job has neither record nor entry, which removes it: a job
// key or entry deleted or expired while the follower did not listen is
// met by no walk of the job side. A restarted or failed-over
// server comes back without the notification setting, and another user of
// the server may replace it: the follower checks it after every
// reconnection and every second, sets it again (Configure) and sweeps,
// or fails. Two followers, or a follower and a backfill, can run side by
// side: each sync is atomic and idempotent.

// FollowOptions configure Migrator.Follow. The zero value works.
type FollowOptions struct {
	// Debounce is how long a changed job must stay quiet before it is
	// synced; 20 ms when 0.
	Debounce time.Duration
	// MaxDelay bounds the wait of a job that never stays quiet (a worker
	// streaming progress): it is synced at the latest MaxDelay after the
	// first notification of its round, written or not; 10 × Debounce
	// when 0, and never less than Debounce.
	MaxDelay time.Duration
	// Recheck is when a synced job is synced once more, for the writes
	// of a legacy operation that came late; 2 s when 0.
	Recheck time.Duration
	// Sweep is how often the whole namespace is re-checked; 10 minutes
	// when 0; a negative value sweeps only at start and after reconnects.
	Sweep time.Duration
	// SweepRate bounds the records and entries a sweep looks at per
	// second; 20,000 when 0.
	SweepRate float64
	// Workers is how many syncs run at once, each a pipeline of up to 100
	// jobs; 4 when 0.
	Workers int
	// Configure lets the follower turn on the keyspace notifications it
	// needs (CONFIG SET notify-keyspace-events, adding flags only). Without
	// it, a server that lacks them is an error naming the command to run.
	Configure bool
	// Report, when set, is called about every second with the counters.
	Report func(FollowStats)
}

// FollowStats counts what a follower did since it started.
type FollowStats struct {
	Events  uint64 `json:"events"`  // keyspace notifications received
	Synced  uint64 `json:"synced"`  // job syncs run
	Changed uint64 `json:"changed"` // syncs that found the step side behind: writes nobody mirrored
	// SweepChanged is the part of Changed that sweeps found: writes made
	// while the follower was not listening (before it started, while it
	// reconnected), or whose notification it never had. Their time is
	// unknown, so they have no lag.
	SweepChanged uint64 `json:"sweep_changed"`
	Backlog      int    `json:"backlog"`  // jobs waiting to be synced
	Sweeps       uint64 `json:"sweeps"`   // full re-checks finished
	Restarts     uint64 `json:"restarts"` // (re)subscriptions, each followed by a sweep
	// WrongType counts the keys of the wrong type (a jobs:active:<w> that
	// is not a hash, ...) that syncs passed over, each once; each is
	// logged once, at level Warn.
	WrongType uint64 `json:"wrong_type"`
	// LagP50 and LagP99 are the time from a job's first notification to
	// the end of its sync, over the last 4096 syncs after a notification
	// that changed something (Debounce included); sweeps' catch-ups are
	// not in them (SweepChanged). Zero when there was none.
	LagP50 time.Duration `json:"lag_p50_ns"`
	LagP99 time.Duration `json:"lag_p99_ns"`
	// LastLegacyWrite is when a sync last found the step side behind.
	LastLegacyWrite time.Time `json:"last_legacy_write,omitzero"`
}

// syncActiveScript makes a worker's step active hash equal to its job
// active hash: it is the mirror of that hash in the stages the follower
// runs in, whoever wrote it. This catches what a job's sync cannot: an
// entry removed after neither record names the worker any more (the
// legacy orphan recovery's late HDEL).
//
//	KEYS[1] -> jobs:active:<w>, KEYS[2] -> steps:active:<w>
//	KEYS[3] -> jobstore:stage; ARGV[1..3] -> '0', '0', stage
//	Reply: OK changed | WRONGTYPE detail | REFUSED stage
var syncActiveScript = redis.NewScript(newScriptText(luaCore, luaFollowStage, `
local bad = wrongtype(KEYS[1], 'hash') or wrongtype(KEYS[2], 'hash')
if bad then return done('WRONGTYPE', bad) end
local changed = 0
local src, dst = redis.call('HGETALL', KEYS[1]), redis.call('HGETALL', KEYS[2])
local have, kept = {}, {}
for i = 1, #dst, 2 do have[dst[i]] = dst[i + 1] end
for i = 1, #src, 2 do
  local f, v = src[i], src[i + 1]
  kept[f] = true
  if have[f] ~= v then
    redis.call('HSET', KEYS[2], f, v)
    changed = changed + 1
  end
end
for i = 1, #dst, 2 do
  if not kept[dst[i]] then
    redis.call('HDEL', KEYS[2], dst[i])
    changed = changed + 1
  end
end
return done('OK', changed)
`))

// syncJobScript makes the step side of one job equal to its job side
// (see above), and counts what it changed.
//
//	KEYS[1] -> job:<id>        KEYS[5] -> step:<id>
//	KEYS[2] -> jobs:pending    KEYS[6] -> steps:pending
//	KEYS[3] -> jobs:completed  KEYS[7] -> steps:completed
//	KEYS[4] -> jobs:failed     KEYS[8] -> steps:failed
//	KEYS[9] -> jobstore:stage; ARGV[1..3] -> '0', '0', stage (every script: see lua.go)
//	ARGV[4] -> id
//	ARGV[5] -> jobs:active: prefix, ARGV[6] -> steps:active: prefix
//	ARGV[7..] -> sub-key suffixes to sync (progress, ...)
//	Reply: OK changed passed-over... | WRONGTYPE detail | REFUSED stage
//
// A queue key of the wrong type (a jobs:active:<w> that is a string, say)
// is passed over and named in the reply; the rest of the job is synced.
// A record of the wrong type stops the job's sync (WRONGTYPE).
var syncJobScript = redis.NewScript(newScriptText(luaCore, luaFollowStage, `
local id = ARGV[4]
local bad = {}
local function usable(key, want)
  local b = wrongtype(key, want)
  if b then bad[#bad + 1] = b end
  return not b
end
if not (usable(KEYS[1], 'hash') and usable(KEYS[5], 'hash')) then return done('WRONGTYPE', bad[1]) end
local changed = 0
-- sync_ttl gives dst the TTL of src, within TTL_SLACK ms (a TTL renewed
-- on the job side must reach the step side, or the copy expires first),
-- and counts a change.
local TTL_SLACK = 1000
local function sync_ttl(src, dst)
  local t1, t2 = redis.call('PTTL', src), redis.call('PTTL', dst)
  if t2 == -2 then return end
  if t1 > 0 and (t2 < 0 or math.abs(t1 - t2) > TTL_SLACK) then
    redis.call('PEXPIRE', dst, t1)
    changed = changed + 1
  elseif t1 == -1 and t2 >= 0 then
    redis.call('PERSIST', dst)
    changed = changed + 1
  end
end
local function same_hash(a, b)
  local x, y = redis.call('HGETALL', a), redis.call('HGETALL', b)
  if #x ~= #y then return false end
  local m = {}
  for k = 1, #x, 2 do m[x[k]] = x[k + 1] end
  for k = 1, #y, 2 do
    if m[y[k]] ~= y[k + 1] then return false end
  end
  return true
end
local workers = {}
local function note_workers(key)
  local f = redis.pcall('HMGET', key, 'worker_id', 'last_failed_worker')
  if type(f) == 'table' and not f.err then
    for _, w in ipairs(f) do
      if w and w ~= '' then workers[w] = true end
    end
  end
end
note_workers(KEYS[1])
note_workers(KEYS[5])
-- The record.
if redis.call('EXISTS', KEYS[1]) == 1 then
  if not same_hash(KEYS[1], KEYS[5]) then
    redis.call('COPY', KEYS[1], KEYS[5], 'REPLACE')
    changed = changed + 1
  else
    sync_ttl(KEYS[1], KEYS[5])
  end
elseif redis.call('DEL', KEYS[5]) == 1 then
  changed = changed + 1
end
-- Sub-keys, whole.
for i = 7, #ARGV do
  local src, dst = KEYS[1] .. ':' .. ARGV[i], KEYS[5] .. ':' .. ARGV[i]
  if redis.call('EXISTS', src) == 1 then
    if redis.call('DUMP', src) ~= redis.pcall('DUMP', dst) then
      redis.call('COPY', src, dst, 'REPLACE')
      changed = changed + 1
    else
      sync_ttl(src, dst)
    end
  elseif redis.call('DEL', dst) == 1 then
    changed = changed + 1
  end
end
-- The pending entry.
if usable(KEYS[2], 'zset') and usable(KEYS[6], 'zset') then
  local s1, s2 = redis.call('ZSCORE', KEYS[2], id), redis.call('ZSCORE', KEYS[6], id)
  if s1 ~= s2 then
    if s1 then redis.call('ZADD', KEYS[6], s1, id) else redis.call('ZREM', KEYS[6], id) end
    changed = changed + 1
  end
end
-- Hash entries: the result hashes (with their whole-key TTL) and the
-- active hashes of the workers the records name.
local function sync_entry(src, dst, with_ttl)
  if not (usable(src, 'hash') and usable(dst, 'hash')) then return end
  local v1, v2 = redis.call('HGET', src, id), redis.call('HGET', dst, id)
  if v1 ~= v2 then
    if v1 then redis.call('HSET', dst, id, v1) else redis.call('HDEL', dst, id) end
    changed = changed + 1
  end
  if with_ttl then sync_ttl(src, dst) end
end
sync_entry(KEYS[3], KEYS[7], true)
sync_entry(KEYS[4], KEYS[8], true)
for w in pairs(workers) do
  sync_entry(ARGV[5] .. w, ARGV[6] .. w, false)
end
return done('OK', changed, unpack(bad))
`))

// luaFollowStage ends a sync built for a stage the follower must not run
// in. The stage check before it has made sure that the stage it was built
// for (ARGV[3]) is the published one, when one is published; so no sync
// ever copies job:* over step:* once step:* is authoritative, even if the
// Go side missed the change.
var luaFollowStage = fmt.Sprintf(`
if ARGV[3] ~= %q and ARGV[3] ~= %q then return done('REFUSED', ARGV[3]) end
`, StageDualWrite, StageDualRead)

// followStage reports whether the follower may run in st: job:* is
// authoritative and step:* is written.
func followStage(st Stage) bool { return st == StageDualWrite || st == StageDualRead }

// refused is the error that stops a follower in stage st.
func refused(st Stage) error {
	return fmt.Errorf("%w: the follower runs in the dual-write and dual-read stages, not %s", ErrNamespaceInUse, st)
}

// Follow runs a follower until ctx is done, then returns ctx.Err(), or
// an error that stops it: the notifications are off and it may not turn
// them on (ErrInvalidConfig; at start, or later after a restart or a
// failover), or the stage, published or the Migrator's own, leaves
// dual-write and dual-read (ErrNamespaceInUse): in step-primary and
// step-only job:* is not authoritative, legacy writers must be gone and a
// follower would copy stale data; in legacy nothing reads step:*. No sync
// runs under a refused stage. It needs a *redis.Client (single node or
// Sentinel).
func (m *Migrator) Follow(ctx context.Context, opts FollowOptions) error {
	f, err := m.newFollower(ctx, opts)
	if err != nil {
		return err
	}
	return f.run(ctx)
}

type follower struct {
	m    *Migrator
	s    *Store
	opts FollowOptions
	db   int
	id   string

	mu      sync.Mutex
	dirty   map[string]*dirtyJob // by target key
	due     dueHeap
	wake    chan struct{}
	fatal   chan error
	lag     []time.Duration // ring of the last lagRing lags
	lagNext int

	events, synced, changed, sweeps, restarts atomic.Uint64
	sweepChanged, wrongType                   atomic.Uint64
	passedOver                                map[string]bool // under mu: the wrong-type keys already logged
	lastLegacy                                atomic.Int64    // Unix ms
}

const lagRing = 4096

// stageWatchInterval is how often a follower reads the published stage
// (when no sync tells it) and the server's notification setting.
const stageWatchInterval = time.Second

// target is what a sync makes equal: a job (id), or a worker's active
// hash (worker), whose changes the follower hears as events on
// jobs:active:<worker> itself. Ids never hold ':', so the keys of the two
// kinds never meet.
type target struct {
	id     string
	worker string
}

func (t target) key() string {
	if t.worker != "" {
		return "active:" + t.worker
	}
	return t.id
}

type dirtyJob struct {
	target
	suffixes map[string]bool
	first    time.Time // first notification of this round, for the lag and MaxDelay
	due      time.Time
	// notBefore is when a sync that failed may be tried again: new
	// notifications do not bring it earlier.
	notBefore time.Time
	index     int  // in the heap, -1 when not in it
	recheck   bool // this round is the recheck of an earlier sync
	swept     bool // a sweep found it, not a notification: no lag
}

// dueHeap orders dirty jobs by when they are due.
type dueHeap []*dirtyJob

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *dueHeap) Push(x any)        { d := x.(*dirtyJob); d.index = len(*h); *h = append(*h, d) }
func (h *dueHeap) Pop() any {
	old := *h
	d := old[len(old)-1]
	*h = old[:len(old)-1]
	d.index = -1
	return d
}

func (m *Migrator) newFollower(ctx context.Context, opts FollowOptions) (*follower, error) {
	if opts.Debounce <= 0 {
		opts.Debounce = 20 * time.Millisecond
	}
	if opts.MaxDelay <= 0 {
		opts.MaxDelay = 10 * opts.Debounce
	}
	opts.MaxDelay = max(opts.MaxDelay, opts.Debounce)
	if opts.Recheck <= 0 {
		opts.Recheck = 2 * time.Second
	}
	if opts.Sweep == 0 {
		opts.Sweep = 10 * time.Minute
	}
	if opts.SweepRate <= 0 {
		opts.SweepRate = 20000
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	c, ok := m.s.rdb.(*redis.Client)
	if !ok {
		return nil, fmt.Errorf("%w: the follower needs a *redis.Client (single node or Sentinel) for keyspace notifications", ErrInvalidArgument)
	}
	f := &follower{m: m, s: m.s, opts: opts, db: c.Options().DB, id: processID(),
		dirty: map[string]*dirtyJob{}, passedOver: map[string]bool{}, wake: make(chan struct{}, 1), fatal: make(chan error, 1)}
	if err := f.checkStage(ctx); err != nil {
		return nil, err
	}
	if _, err := f.notifications(ctx); err != nil {
		return nil, err
	}
	return f, nil
}

// checkStage adopts the published stage and refuses the stages the
// follower does not run in (an error wrapping ErrNamespaceInUse).
func (f *follower) checkStage(ctx context.Context) error {
	if err := f.s.Sync(ctx); err != nil {
		return err
	}
	if st := f.s.Stage(); !followStage(st) {
		return refused(st)
	}
	return nil
}

// stop makes Follow return err, unless it is already returning another.
// Every path that finds the follower refused calls it: event syncs,
// sweeps and the stage watch.
func (f *follower) stop(err error) {
	select {
	case f.fatal <- err:
	default:
	}
}

// watch reads the published stage and the server's notification
// setting every interval. A move out of the stages the follower runs in
// stops it even while no sync runs, and so does its own Store leaving
// them (a PublishStage through the same Migrator moves it at once).
// Notifications found off are turned on again (see renotify).
func (f *follower) watch(ctx context.Context, interval time.Duration, sweepNow chan<- struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := f.checkStage(ctx)
		if errors.Is(err, ErrNamespaceInUse) {
			f.stop(err)
			return
		}
		if err != nil && ctx.Err() == nil {
			f.s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: follower: read the published stage", slog.String("error", err.Error()))
		}
		if err := f.renotify(ctx, sweepNow); err != nil {
			f.stop(err)
			return
		}
	}
}

// notifyFlags are the notification classes the follower needs: keyspace
// events (K) of generic commands (g: DEL, EXPIRE, COPY, RENAME...) and of
// every type a job's keys may have, as Backfill and Verify copy them:
// strings ($), lists (l), sets (s), hashes (h), sorted sets (z) and
// streams (t); and expiries (x) and evictions (e), which change the job
// side too. A sub-key of a type whose class is off would never be heard
// of. "A" stands for all the classes.
const notifyFlags = "Kg$lshztxe"

// notifications checks that the server sends the notifications the
// follower needs, and, with Configure, turns on those missing, adding to
// what is set and removing nothing. It reports whether it had to turn any
// on. Without Configure, missing ones are an error wrapping
// ErrInvalidConfig that names the command to run.
func (f *follower) notifications(ctx context.Context) (changed bool, err error) {
	cur, err := f.s.rdb.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		return false, redisError("follow: CONFIG GET notify-keyspace-events", "", err)
	}
	have := cur["notify-keyspace-events"]
	want := have
	if strings.Contains(have, "A") {
		if !strings.Contains(have, "K") {
			want += "K"
		}
	} else {
		for _, c := range notifyFlags {
			if !strings.ContainsRune(want, c) {
				want += string(c)
			}
		}
	}
	if want == have {
		return false, nil
	}
	if !f.opts.Configure {
		return false, fmt.Errorf("%w: the follower needs keyspace notifications: run CONFIG SET notify-keyspace-events %s (now %q), or let it (--configure)",
			ErrInvalidConfig, want, have)
	}
	if err := f.s.rdb.ConfigSet(ctx, "notify-keyspace-events", want).Err(); err != nil {
		return false, redisError("follow: CONFIG SET notify-keyspace-events "+want, "", err)
	}
	f.s.log.LogAttrs(ctx, slog.LevelInfo, "jobstore: turned on keyspace notifications", slog.String("from", have), slog.String("to", want))
	return true, nil
}

// renotify checks the notifications again while the follower runs: a
// server restarted or failed over to a replica has its own setting, and
// another user of the server may replace it. It returns an error only
// when they are off and the follower may not turn them on; Follow then
// fails rather than run deaf. When it had to turn them on, writes may
// have gone unheard: it asks for a sweep.
func (f *follower) renotify(ctx context.Context, sweepNow chan<- struct{}) error {
	changed, err := f.notifications(ctx)
	switch {
	case errors.Is(err, ErrInvalidConfig):
		return fmt.Errorf("jobstore: follow: the server's keyspace notifications went off (a restart, a failover, another user?): %w", err)
	case err != nil:
		if ctx.Err() == nil {
			f.s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: follower: check keyspace notifications", slog.String("error", err.Error()))
		}
	case changed:
		f.s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: follower found keyspace notifications off and turned them on again; sweeping for the writes it missed")
		signal(sweepNow)
	}
	return nil
}

// signal sends on a channel of capacity 1 without waiting.
func signal(c chan<- struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

func (f *follower) channelPrefix() string { return fmt.Sprintf("__keyspace@%d__:", f.db) }

// The follower reads its subscription itself (ReceiveTimeout), rather
// than through go-redis's Channel, whose goroutine drops a message,
// silently but for a log line, when the channel stays full. Read here,
// every notification reaches mark or stays on the server: a follower
// falling that far behind overflows its connection's pub/sub output
// buffer (client-output-buffer-limit pubsub), Redis closes it, and the
// reconnection is counted (Restarts) and followed by a sweep.
//
// A connection that goes silent without being closed (a peer gone
// without a word) is found by a PING: go-redis replaces a connection only
// when a read or a write fails, which on a dead route takes the kernel
// many minutes; the follower replaces its subscription as soon as a PING
// goes unanswered.
const (
	// pingAfter is how long a quiet subscription waits before a PING, and
	// then for its answer.
	pingAfter = 3 * time.Second
	// subscribeTimeout bounds the wait for the first confirmations.
	subscribeTimeout = 10 * time.Second
)

// subscription is the follower's current PubSub, which listen replaces
// when its connection goes silent, and run closes at the end.
type subscription struct {
	mu     sync.Mutex
	ps     *redis.PubSub
	closed bool
}

func (s *subscription) get() *redis.PubSub {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ps
}

// replace closes the current PubSub and installs ps; once the
// subscription is closed, it closes ps instead and reports false.
func (s *subscription) replace(ps *redis.PubSub) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		_ = ps.Close()
		return false
	}
	_ = s.ps.Close()
	s.ps = ps
	return true
}

// close closes the current PubSub, ending a read under way.
func (s *subscription) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	_ = s.ps.Close()
}

// confirm reads ps until every pattern is confirmed, handling the
// notifications that come meanwhile.
func (f *follower) confirm(ctx context.Context, ps *redis.PubSub, patterns int, timeout time.Duration) error {
	for confirmed := 0; confirmed < patterns; {
		msg, err := ps.ReceiveTimeout(ctx, timeout)
		if err != nil {
			return err
		}
		if sub, ok := msg.(*redis.Subscription); ok && sub.Kind == "psubscribe" {
			confirmed = sub.Count
		} else {
			f.receive(msg, patterns, nil)
		}
	}
	return nil
}

func (f *follower) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	job := f.s.space(JobNamespace)
	patterns := []string{f.channelPrefix() + job.recordPattern(), f.channelPrefix() + job.queuePrefix() + "*"}
	ps := f.s.rdb.PSubscribe(ctx, patterns...)
	// Every pattern's confirmation, before anything else: each one after
	// these is a resubscription, after a reconnection.
	if err := f.confirm(ctx, ps, len(patterns), subscribeTimeout); err != nil {
		_ = ps.Close()
		return redisError("follow: subscribe", "", err)
	}
	sub := &subscription{ps: ps}
	var wg sync.WaitGroup
	work := make(chan []*dirtyJob)
	for range f.opts.Workers {
		wg.Go(func() { f.syncLoop(ctx, work) })
	}
	sweepNow := make(chan struct{}, 1)
	wg.Go(func() { f.schedule(ctx, work) })
	wg.Go(func() { f.watch(ctx, stageWatchInterval, sweepNow) })
	wg.Go(func() { f.sweepLoop(ctx, sweepNow) })
	wg.Go(func() { f.reportLoop(ctx) })
	wg.Go(func() { f.listen(ctx, sub, patterns, sweepNow) })
	var err error
	select {
	case <-ctx.Done():
		err = ctx.Err()
	case err = <-f.fatal:
	}
	cancel()
	sub.close() // ends a read under way in listen
	wg.Wait()
	return err
}

// listen reads the subscription until ctx is done.
func (f *follower) listen(ctx context.Context, sub *subscription, patterns []string, sweepNow chan<- struct{}) {
	failures, pinged := 0, false
	for ctx.Err() == nil {
		ps := sub.get()
		msg, err := ps.ReceiveTimeout(ctx, pingAfter)
		var ne net.Error
		switch {
		case err == nil:
			failures, pinged = 0, false
			f.receive(msg, len(patterns), sweepNow)
		case ctx.Err() != nil || errors.Is(err, redis.ErrClosed):
			return
		case errors.As(err, &ne) && ne.Timeout() && !pinged:
			// Quiet: a PING, answered within pingAfter by a live
			// connection (a failed write makes go-redis reconnect).
			pctx, cancel := context.WithTimeout(ctx, pingAfter)
			_ = ps.Ping(pctx)
			cancel()
			pinged = true
		case errors.As(err, &ne) && ne.Timeout():
			f.s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: follower's subscription does not answer; subscribing again on a new connection")
			if !f.resubscribe(ctx, sub, patterns) {
				return
			}
			failures, pinged = 0, false
			f.restarts.Add(1)
			signal(sweepNow)
		default:
			// go-redis reconnects on the next read; do not spin while
			// the server is away.
			if failures++; failures > 1 {
				_ = sleepCtx(ctx, 100*time.Millisecond)
			}
		}
	}
}

// resubscribe replaces the subscription with a new one, on a new
// connection, and returns once its every pattern is confirmed; false when
// ctx ends first.
func (f *follower) resubscribe(ctx context.Context, sub *subscription, patterns []string) bool {
	for backoff := 100 * time.Millisecond; ctx.Err() == nil; backoff = min(2*backoff, 5*time.Second) {
		ps := f.s.rdb.PSubscribe(ctx, patterns...)
		if !sub.replace(ps) {
			return false
		}
		err := f.confirm(ctx, ps, len(patterns), pingAfter)
		if err == nil {
			return true
		}
		if ctx.Err() == nil {
			f.s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: follower: subscribe again", slog.String("error", err.Error()))
			_ = sleepCtx(ctx, backoff)
		}
	}
	return false
}

// receive handles one message of the subscription: a notification, or
// the last confirmation of a resubscription (go-redis resubscribes every
// pattern after it reconnects), which calls for a sweep: writes made
// meanwhile went unseen.
func (f *follower) receive(msg any, patterns int, sweepNow chan<- struct{}) {
	switch m := msg.(type) {
	case *redis.Message:
		f.events.Add(1)
		f.event(strings.TrimPrefix(m.Channel, f.channelPrefix()))
	case *redis.Subscription:
		if m.Kind == "psubscribe" && m.Count == patterns && sweepNow != nil {
			f.restarts.Add(1)
			signal(sweepNow)
		}
	}
}

// event marks the job of a changed key dirty, or, for a worker's active
// hash, that hash. The other queue keys name no job: their changes are
// caught by syncing the jobs whose records changed with them, by the
// recheck, and by sweeps.
func (f *follower) event(key string) {
	job := f.s.space(JobNamespace)
	if id, suffix, ok := job.parseRecordKey(key); ok {
		f.mark(target{id: id}, time.Now(), false, suffix)
	} else if w, ok := job.workerFromActive(key); ok {
		f.mark(target{worker: w}, time.Now(), false)
	}
}

// mark schedules a sync of id, adding suffixes to its sub-keys. A
// notification (recheck false) makes it due Debounce from now, but no
// later than MaxDelay after the first notification of the round, so that
// a job written without pause is still synced; a job that waited for its
// recheck starts a new round, due at the debounce. A recheck (after a
// sync) makes it due Recheck from now, unless a new round is already
// waiting, which gets its own recheck.
func (f *follower) mark(t target, now time.Time, recheck bool, suffixes ...string) {
	f.mu.Lock()
	d := f.dirty[t.key()]
	fresh := d == nil
	if fresh {
		d = f.newDirty(t, now, recheck)
	}
	for _, sfx := range suffixes {
		if sfx != "" {
			d.suffixes[sfx] = true
		}
	}
	switch {
	case recheck && (fresh || d.recheck):
		f.setDue(d, later(d.due, now.Add(f.opts.Recheck)))
	case recheck:
		// A new round waits; its sync is followed by its own recheck.
	default:
		if d.recheck {
			d.recheck, d.swept, d.first = false, false, now // a new write: its lag counts from now
		}
		due := now.Add(f.opts.Debounce)
		if bound := d.first.Add(f.opts.MaxDelay); bound.Before(due) {
			due = bound
		}
		f.setDue(d, later(due, d.notBefore))
	}
	f.mu.Unlock()
	f.poke()
}

// later returns the later of two times.
func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// requeue schedules the sync of d again at at, after a sync that failed
// or must run again under a newly published stage. Its sub-keys, its
// first notification and its kind (a recheck or not) are kept, merged
// into any round that began meanwhile; it is not synced before at.
func (f *follower) requeue(d *dirtyJob, at time.Time) {
	f.mu.Lock()
	cur := f.dirty[d.key()]
	if cur == nil {
		cur = f.newDirty(d.target, d.first, d.recheck)
		cur.swept = d.swept
	} else if !d.recheck {
		if cur.recheck || d.first.Before(cur.first) {
			cur.first = d.first
		}
		cur.recheck, cur.swept = false, false
	}
	maps.Copy(cur.suffixes, d.suffixes)
	cur.notBefore = at
	f.setDue(cur, later(cur.due, at))
	f.mu.Unlock()
	f.poke()
}

// newDirty adds a dirty target, not yet in the heap; f.mu is held.
func (f *follower) newDirty(t target, first time.Time, recheck bool) *dirtyJob {
	d := newDirtyJob(t, first, recheck)
	f.dirty[t.key()] = d
	return d
}

// newDirtyJob returns a dirty target; a job's sub-keys start with its
// progress hash.
func newDirtyJob(t target, first time.Time, recheck bool) *dirtyJob {
	d := &dirtyJob{target: t, suffixes: map[string]bool{}, first: first, index: -1, recheck: recheck}
	if t.worker == "" {
		d.suffixes["progress"] = true
	}
	return d
}

// setDue puts d in the heap at due, or moves it there, earlier or later;
// f.mu is held.
func (f *follower) setDue(d *dirtyJob, due time.Time) {
	d.due = due
	if d.index < 0 {
		heap.Push(&f.due, d)
	} else {
		heap.Fix(&f.due, d.index)
	}
}

// poke wakes the scheduler.
func (f *follower) poke() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// schedule hands due jobs to the sync workers, up to 100 at a time.
func (f *follower) schedule(ctx context.Context, work chan<- []*dirtyJob) {
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		f.mu.Lock()
		var batch []*dirtyJob
		now := time.Now()
		for len(f.due) > 0 && !f.due[0].due.After(now) && len(batch) < 100 {
			d := heap.Pop(&f.due).(*dirtyJob)
			delete(f.dirty, d.key())
			batch = append(batch, d)
		}
		next := time.Hour
		if len(f.due) > 0 {
			next = max(time.Until(f.due[0].due), 0)
		}
		f.mu.Unlock()
		if len(batch) > 0 {
			select {
			case work <- batch:
			case <-ctx.Done():
				return
			}
			continue
		}
		timer.Reset(next)
		select {
		case <-ctx.Done():
			return
		case <-f.wake:
		case <-timer.C:
		}
	}
}

func (f *follower) syncLoop(ctx context.Context, work <-chan []*dirtyJob) {
	for {
		select {
		case <-ctx.Done():
			return
		case batch := <-work:
			if err := f.syncBatch(ctx, batch); err != nil && ctx.Err() == nil {
				f.stop(err)
				return
			}
		}
	}
}

// syncBatch syncs jobs in one pipeline. Each job synced after a
// notification is scheduled for its recheck. It returns an error
// wrapping ErrNamespaceInUse when the stage, its Store's or the
// published one, is one the follower must not run in; it then syncs
// nothing.
func (f *follower) syncBatch(ctx context.Context, batch []*dirtyJob) error {
	st := f.s.Stage()
	if !followStage(st) {
		return refused(st)
	}
	job, step := f.s.space(JobNamespace), f.s.space(StepNamespace)
	ws := make([]*write, len(batch))
	for i, d := range batch {
		if d.worker != "" {
			ws[i] = &write{op: "follow", id: job.active(d.worker), st: st, script: syncActiveScript,
				argv: []any{"0", "0", st.String()},
				keys: []string{job.active(d.worker), step.active(d.worker), stageKey(f.s.prefix)}}
			continue
		}
		args := []any{"0", "0", st.String(), d.id, job.activePrefix(), step.activePrefix()}
		for _, sfx := range slices.Sorted(maps.Keys(d.suffixes)) {
			args = append(args, sfx)
		}
		ws[i] = &write{op: "follow", id: d.id, st: st, script: syncJobScript, argv: args, keys: []string{
			job.record(d.id), job.pending(), job.completed(), job.failed(),
			step.record(d.id), step.pending(), step.completed(), step.failed(), stageKey(f.s.prefix)}}
	}
	f.s.enqueue(ctx, ws...)
	now := time.Now()
	for i, w := range ws {
		res, err := wait(ctx, w)
		r, err := f.s.settle(ctx, w, res, err)
		if err != nil {
			f.s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: follower sync failed; the job is retried", slog.String("id", w.id), slog.String("error", err.Error()))
			f.requeue(batch[i], time.Now().Add(f.opts.Recheck))
			continue
		}
		switch r.status {
		case "OK":
			for j := 1; j < len(r.data); j++ {
				f.passOver(ctx, r.str(j))
			}
		case "STAGE":
			// Another stage is published: adopt it (the script names
			// it), stop if the follower must not run in it, else sync
			// the job again under it.
			f.s.adopt(ctx, r.str(0))
			if st := f.s.Stage(); !followStage(st) {
				return refused(st)
			}
			f.requeue(batch[i], time.Now())
			continue
		case "REFUSED":
			st, _ := ParseStage(r.str(0))
			return refused(st)
		case "WRONGTYPE":
			f.passOver(ctx, r.str(0))
			continue
		default:
			return unexpected("follow", w.id, r)
		}
		f.synced.Add(1)
		if r.int(0) > 0 {
			f.changed.Add(1)
			f.lastLegacy.Store(now.UnixMilli())
			if batch[i].swept {
				f.sweepChanged.Add(1)
			} else {
				f.addLag(time.Since(batch[i].first))
			}
		}
		// A job's recheck catches the queue writes of its operation that
		// came late; an active hash's own writes are heard.
		if !batch[i].recheck && !batch[i].swept && batch[i].worker == "" {
			f.mark(batch[i].target, time.Now(), true, slices.Collect(maps.Keys(batch[i].suffixes))...)
		}
	}
	return nil
}

// maxPassedOver bounds the wrong-type keys remembered, and so logged
// once each; beyond it they are neither logged nor counted.
const maxPassedOver = 10000

// passOver counts and logs, once per key, a key of the wrong type that a
// sync passed over (why names the key and its type). Retrying would not
// help: the key stays what it is until someone fixes it.
func (f *follower) passOver(ctx context.Context, why string) {
	f.mu.Lock()
	seen := f.passedOver[why] || len(f.passedOver) >= maxPassedOver
	if !seen {
		f.passedOver[why] = true
	}
	f.mu.Unlock()
	if !seen {
		f.wrongType.Add(1)
		f.s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: follower passes over a key of the wrong type; fix or delete it",
			slog.String("why", why))
	}
}

func (f *follower) addLag(d time.Duration) {
	f.mu.Lock()
	if len(f.lag) < lagRing {
		f.lag = append(f.lag, d)
	} else {
		f.lag[f.lagNext] = d
		f.lagNext = (f.lagNext + 1) % lagRing
	}
	f.mu.Unlock()
}

// Stats returns the counters.
func (f *follower) stats() FollowStats {
	f.mu.Lock()
	lags := slices.Clone(f.lag)
	backlog := len(f.dirty)
	f.mu.Unlock()
	st := FollowStats{Events: f.events.Load(), Synced: f.synced.Load(), Changed: f.changed.Load(),
		Backlog: backlog, Sweeps: f.sweeps.Load(), Restarts: f.restarts.Load(), WrongType: f.wrongType.Load(),
		SweepChanged: f.sweepChanged.Load()}
	if ms := f.lastLegacy.Load(); ms > 0 {
		st.LastLegacyWrite = time.UnixMilli(ms).UTC()
	}
	if len(lags) > 0 {
		slices.Sort(lags)
		st.LagP50 = lags[len(lags)/2]
		st.LagP99 = lags[min(len(lags)-1, len(lags)*99/100)]
	}
	return st
}

// reportLoop publishes the follower's counters about every second: to
// Redis, for status and the legacy gate (jobstore:follower), and to
// opts.Report.
func (f *follower) reportLoop(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			// A stopped follower reports no more: its counters go (the
			// latest legacy write it saw stays, for the stage gate).
			dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			f.publish(dctx)
			_ = f.s.rdb.HDel(dctx, followerKey(f.s.prefix), f.id).Err()
			cancel()
			return
		case <-t.C:
			f.publish(ctx)
		}
	}
}

// reportScript stores a follower's counters and keeps the latest legacy
// write of all followers.
//
//	KEYS[1] -> jobstore:follower
//	ARGV[1] -> follower id, ARGV[2] -> its counters (JSON), ARGV[3] -> its last legacy write (Unix ms, 0: none)
var reportScript = redis.NewScript(`
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local cur = tonumber(redis.call('HGET', KEYS[1], 'last_legacy_write_ms') or '0') or 0
if tonumber(ARGV[3]) > cur then redis.call('HSET', KEYS[1], 'last_legacy_write_ms', ARGV[3]) end
return 1
`)

func (f *follower) publish(ctx context.Context) {
	st := f.stats()
	if f.opts.Report != nil {
		f.opts.Report(st)
	}
	var last int64
	if !st.LastLegacyWrite.IsZero() {
		last = st.LastLegacyWrite.UnixMilli()
	}
	body := fmt.Sprintf(`{"checked_at_ms":%d,"stats":%s}`, time.Now().UnixMilli(), mustJSON(st))
	err := reportScript.Run(ctx, f.s.rdb, []string{followerKey(f.s.prefix)}, f.id, body, last).Err()
	if err != nil && ctx.Err() == nil {
		f.s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: follower report", slog.String("error", err.Error()))
	}
}

// sweepLoop sweeps at start, when told (after a reconnection, or
// notifications found off), and every Sweep interval. Before a sweep
// other than the first, it checks the notifications, so that a server
// that came back without them is heard from again before the sweep
// catches up with what was missed.
func (f *follower) sweepLoop(ctx context.Context, now chan struct{}) {
	var tick <-chan time.Time
	if f.opts.Sweep > 0 {
		t := time.NewTicker(f.opts.Sweep)
		defer t.Stop()
		tick = t.C
	}
	var retry <-chan time.Time
	backoff := time.Second
	for first := true; ; first = false {
		retry = nil
		if !first {
			if err := f.renotify(ctx, now); err != nil {
				f.stop(err)
				return
			}
			select { // the sweep about to run covers a request just made
			case <-now:
			default:
			}
		}
		if err := f.sweep(ctx); errors.Is(err, ErrNamespaceInUse) {
			f.stop(err)
			return
		} else if err != nil && ctx.Err() == nil {
			// Run it again soon: what it was to catch up with (a
			// reconnection's gap) is otherwise missed until the next
			// Sweep, or for good with Sweep < 0.
			f.s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: follower sweep failed; it runs again", slog.String("error", err.Error()),
				slog.Duration("in", backoff))
			retry = time.After(backoff)
			backoff = min(2*backoff, 30*time.Second)
		} else if err == nil {
			f.sweeps.Add(1)
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-now:
		case <-tick:
		case <-retry:
		}
	}
}

// sweep syncs every job of the job namespace: the records (SCAN) and the
// ids in its queues (ZSCAN, HSCAN), in batches, at SweepRate; then the
// step copies whose original is gone (sweepOrphans) and the step entries
// whose job is gone (sweepOrphanEntries). Jobs already equal
// cost a comparison and write nothing.
func (f *follower) sweep(ctx context.Context) error {
	job, step := f.s.space(JobNamespace), f.s.space(StepNamespace)
	pace := newPacer(f.opts.SweepRate)
	var pending []*dirtyJob
	byID := map[string]*dirtyJob{}
	flush := func() error {
		if len(pending) == 0 {
			return nil
		}
		batch := pending
		pending, byID = nil, map[string]*dirtyJob{}
		if err := f.syncBatch(ctx, batch); err != nil {
			return err
		}
		return pace.wait(ctx, len(batch))
	}
	add := func(t target, suffix string) error {
		d := byID[t.key()]
		if d == nil {
			d = newDirtyJob(t, time.Now(), true)
			d.swept = true
			byID[t.key()] = d
			pending = append(pending, d)
		}
		if suffix != "" {
			d.suffixes[suffix] = true
		}
		if len(pending) >= 100 {
			return flush()
		}
		return nil
	}
	// Records and sub-keys.
	iter := f.s.rdb.Scan(ctx, 0, job.recordPattern(), 500).Iterator()
	for iter.Next(ctx) {
		if id, suffix, ok := job.parseRecordKey(iter.Val()); ok {
			if err := add(target{id: id}, suffix); err != nil {
				return err
			}
		}
	}
	if err := iter.Err(); err != nil {
		return err
	}
	// The workers' active hashes, of either side: one the job side lost
	// (its last entry removed) may still hold entries on the step side.
	queues := []string{job.pending(), job.completed(), job.failed()}
	workers := map[string]bool{}
	for _, sp := range []keyspace{job, step} {
		aiter := f.s.rdb.Scan(ctx, 0, sp.activePattern(), 500).Iterator()
		for aiter.Next(ctx) {
			if w, ok := sp.workerFromActive(aiter.Val()); ok && !workers[w] {
				workers[w] = true
				if sp.ns == JobNamespace {
					queues = append(queues, aiter.Val())
				}
				if err := add(target{worker: w}, ""); err != nil {
					return err
				}
			}
		}
		if err := aiter.Err(); err != nil {
			return err
		}
	}
	// Entries whose record is gone.
	for i, q := range queues {
		var it *redis.ScanIterator
		if i == 0 {
			it = f.s.rdb.ZScan(ctx, q, 0, "*", 500).Iterator()
		} else {
			it = f.s.rdb.HScan(ctx, q, 0, "*", 500).Iterator()
		}
		for n := 0; it.Next(ctx); n++ {
			if n%2 == 0 && validateID(it.Val()) == nil { // members/fields; scores and values between
				if err := add(target{id: it.Val()}, ""); err != nil {
					return err
				}
			}
		}
		if err := it.Err(); err != nil && !hasErrorPrefix(err, "WRONGTYPE") {
			return err
		}
	}
	// Step copies whose original is gone: a job key deleted or expired
	// while no follower listened is met by no walk of the job side.
	if err := f.sweepOrphans(ctx, job, step, pace, add); err != nil {
		return err
	}
	if err := f.sweepOrphanEntries(ctx, job, step, pace, add); err != nil {
		return err
	}
	return flush()
}

// sweepOrphans walks the step side's records and sub-keys (SCAN), a page
// at a time, and adds a sync for each whose job counterpart does not
// exist (one pipelined EXISTS per page): the sync deletes the copy. Keys
// whose original exists were synced by the walk of the job side; they
// are paced as looked at. Deleting is safe next to every other writer:
// the sync script checks the original again, atomically, and deletes
// only a copy whose original is gone at that moment, in a stage where
// job:* is authoritative; a dual-writing process writes both sides in one
// script, and the legacy RedisService writes its step:<id> snapshot
// after job:<id>, so neither leaves a copy without its original.
func (f *follower) sweepOrphans(ctx context.Context, job, step keyspace, pace *pacer, add func(target, string) error) error {
	if st := f.s.Stage(); !followStage(st) {
		return refused(st)
	}
	type orphan struct {
		id, suffix string
		exists     *redis.IntCmd
	}
	for cursor := uint64(0); ; {
		keys, next, err := f.s.rdb.Scan(ctx, cursor, step.recordPattern(), 500).Result()
		if err != nil {
			return err
		}
		page := make([]orphan, 0, len(keys))
		pipe := f.s.rdb.Pipeline()
		for _, k := range keys {
			if id, suffix, ok := step.parseRecordKey(k); ok {
				src := job.record(id)
				if suffix != "" {
					src = job.sub(id, suffix)
				}
				page = append(page, orphan{id: id, suffix: suffix, exists: pipe.Exists(ctx, src)})
			}
		}
		if len(page) > 0 {
			if _, err := pipe.Exec(ctx); err != nil {
				return err
			}
		}
		kept := len(keys)
		for _, o := range page {
			if o.exists.Val() == 0 {
				kept--
				if err := add(target{id: o.id}, o.suffix); err != nil {
					return err
				}
			}
		}
		if err := pace.wait(ctx, kept); err != nil {
			return err
		}
		if next == 0 {
			return nil
		}
		cursor = next
	}
}

// sweepOrphanEntries walks the step side's pending, completed and failed
// entries (ZSCAN, HSCAN), a page at a time, and adds a sync for each id
// whose job has neither record nor entry in the same queue (one pipelined
// EXISTS and ZSCORE or HEXISTS per id, per page): the sync makes the
// step entries equal to the job side's, none. The ids with a record or an
// entry on the job side were synced by the walks of the job side; they
// are paced as looked at. The active hashes need no such walk: the
// sweep syncs those of both sides whole. A queue of the wrong type, on
// either side, is passed over, as the sync passes it over.
func (f *follower) sweepOrphanEntries(ctx context.Context, job, step keyspace, pace *pacer, add func(target, string) error) error {
	type candidate struct {
		id     string
		record *redis.IntCmd
		entry  redis.Cmder // ZSCORE (redis.Nil: none) or HEXISTS
	}
	queues := []struct {
		src, dst string
		zset     bool
	}{{job.pending(), step.pending(), true}, {job.completed(), step.completed(), false}, {job.failed(), step.failed(), false}}
	for _, q := range queues {
		for cursor := uint64(0); ; {
			var page []string // members or fields, each followed by its score or value
			var next uint64
			var err error
			if q.zset {
				page, next, err = f.s.rdb.ZScan(ctx, q.dst, cursor, "*", 500).Result()
			} else {
				page, next, err = f.s.rdb.HScan(ctx, q.dst, cursor, "*", 500).Result()
			}
			if hasErrorPrefix(err, "WRONGTYPE") {
				break
			}
			if err != nil {
				return err
			}
			pipe := f.s.rdb.Pipeline()
			var cands []candidate
			for i := 0; i < len(page); i += 2 {
				if id := page[i]; validateID(id) == nil {
					c := candidate{id: id, record: pipe.Exists(ctx, job.record(id))}
					if q.zset {
						c.entry = pipe.ZScore(ctx, q.src, id)
					} else {
						c.entry = pipe.HExists(ctx, q.src, id)
					}
					cands = append(cands, c)
				}
			}
			if len(cands) > 0 {
				_, _ = pipe.Exec(ctx) // each command's error is read below
			}
			kept := (len(page) + 1) / 2
			for _, c := range cands {
				if err := c.record.Err(); err != nil {
					return err
				}
				gone, err := entryGone(c.entry)
				if err != nil {
					return err
				}
				if gone && c.record.Val() == 0 {
					kept--
					if err := add(target{id: c.id}, ""); err != nil {
						return err
					}
				}
			}
			if err := pace.wait(ctx, kept); err != nil {
				return err
			}
			if next == 0 {
				break
			}
			cursor = next
		}
	}
	return nil
}

// entryGone reads a ZSCORE or HEXISTS of a job queue: whether the entry
// is absent. A queue of the wrong type holds no entry a sync could copy:
// it counts as present, so that nothing is synced for it.
func entryGone(cmd redis.Cmder) (bool, error) {
	err := cmd.Err()
	switch {
	case errors.Is(err, redis.Nil):
		return true, nil
	case hasErrorPrefix(err, "WRONGTYPE"):
		return false, nil
	case err != nil:
		return false, err
	}
	if b, ok := cmd.(*redis.BoolCmd); ok {
		return !b.Val(), nil
	}
	return false, nil
}

// pacer spreads work at a rate per second.
type pacer struct {
	rate  float64
	start time.Time
	done  float64
}

func newPacer(rate float64) *pacer { return &pacer{rate: rate, start: time.Now()} }

func (p *pacer) wait(ctx context.Context, n int) error {
	p.done += float64(n)
	ahead := time.Duration(p.done/p.rate*float64(time.Second)) - time.Since(p.start)
	return sleepCtx(ctx, ahead)
}

// FollowerReports reads the counters every follower last reported, by
// follower id, and the latest legacy write any of them mirrored.
func (m *Migrator) FollowerReports(ctx context.Context) (map[string]FollowReport, time.Time, error) {
	h, err := m.s.rdb.HGetAll(ctx, followerKey(m.s.prefix)).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, time.Time{}, redisError("follower reports", "", err)
	}
	out := map[string]FollowReport{}
	var last time.Time
	for k, v := range h {
		if k == "last_legacy_write_ms" {
			if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms > 0 {
				last = time.UnixMilli(ms).UTC()
			}
			continue
		}
		var r struct {
			CheckedAtMs int64       `json:"checked_at_ms"`
			Stats       FollowStats `json:"stats"`
		}
		if jsonUnmarshal(v, &r) == nil {
			out[k] = FollowReport{CheckedAt: time.UnixMilli(r.CheckedAtMs).UTC(), Stats: r.Stats}
		}
	}
	return out, last, nil
}

// FollowReport is one follower's last report.
type FollowReport struct {
	CheckedAt time.Time   `json:"checked_at"`
	Stats     FollowStats `json:"stats"`
}
