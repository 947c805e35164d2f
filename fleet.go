package jobstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The fleet: every process that runs FollowStage checks in at each
// interval with its stage and counters, in a key of its own that expires
// when it stops (jobstore:fleet:<process>). Operators list it
// (Migrator.Fleet), wait for it to reach a stage (Migrator.WaitForStage),
// and PublishStage refuses the stages that legacy processes would break
// while there is evidence of one.

// Process is one process's last check-in.
type Process struct {
	ID        string         `json:"id"` // host-pid-random, unique per Store
	Host      string         `json:"host"`
	PID       int            `json:"pid"`
	Version   string         `json:"version"`
	Stage     Stage          `json:"stage"`
	CheckedAt time.Time      `json:"checked_at"`
	Interval  time.Duration  `json:"interval_ns"`
	DualWrite DualWriteStats `json:"dual_write"`
	Reads     ReadStats      `json:"reads"`
}

// Stale reports whether the process has missed two check-ins by now.
func (p Process) Stale(now time.Time) bool { return now.Sub(p.CheckedAt) > 2*p.Interval }

// processID names this Store in the fleet.
func processID() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "unknown"
	}
	var b [3]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("%s-%d-%s", strings.ReplaceAll(host, ":", "_"), os.Getpid(), hex.EncodeToString(b[:]))
}

// ProcessID is the id this Store checks in under (see FollowStage and
// Migrator.Fleet), unique per Store: host-pid-random.
func (s *Store) ProcessID() string { return s.process }

// checkIn writes this Store's check-in; it lives three intervals (at
// least ten seconds).
func (s *Store) checkIn(ctx context.Context, interval time.Duration) error {
	host, _ := os.Hostname()
	p := Process{ID: s.process, Host: host, PID: os.Getpid(), Version: Version, Stage: s.Stage(),
		CheckedAt: s.now().UTC(), Interval: interval, DualWrite: s.DualWriteStats(), Reads: s.ReadStats()}
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	return s.rdb.Set(ctx, fleetKey(s.prefix, s.process), b, max(3*interval, 10*time.Second)).Err()
}

// checkOut removes this Store's check-in.
func (s *Store) checkOut(ctx context.Context) {
	_ = s.rdb.Del(ctx, fleetKey(s.prefix, s.process)).Err()
}

// Fleet lists the processes checked in (those that ran FollowStage within
// their last three intervals), sorted by id. Check-ins that cannot be read
// (not JSON of a Process, or keys of another type) are skipped and counted
// in unreadable.
func (m *Migrator) Fleet(ctx context.Context) (procs []Process, unreadable int, err error) {
	s := m.s
	iter := s.rdb.Scan(ctx, 0, fleetPattern(s.prefix), 500).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return nil, 0, redisError("fleet", "", err)
	}
	for batch := range slices.Chunk(dedupe(keys), 500) {
		vals, err := s.rdb.MGet(ctx, batch...).Result()
		if err != nil {
			return nil, 0, redisError("fleet", "", err)
		}
		var missing []string // nil from MGET: gone since the scan, or not a string
		for i, v := range vals {
			str, ok := v.(string)
			var p Process
			if !ok || json.Unmarshal([]byte(str), &p) != nil {
				if ok {
					unreadable++
				} else {
					missing = append(missing, batch[i])
				}
				continue
			}
			procs = append(procs, p)
		}
		for _, k := range missing {
			t, err := s.rdb.Type(ctx, k).Result()
			if err != nil {
				return nil, 0, redisError("fleet", "", err)
			}
			if t != "none" {
				unreadable++
			}
		}
	}
	slices.SortFunc(procs, func(a, b Process) int { return strings.Compare(a.ID, b.ID) })
	return procs, unreadable, nil
}

// WaitForStage waits until every process checked in reports st, and
// returns nil; or until ctx is done, and returns the processes that do not
// yet (the stragglers) with ctx's error. The stragglers are those of the
// last listing of the fleet that completed: when ctx ends while the fleet
// is being listed (a SCAN of the whole keyspace), they are the previous
// round's, and none only if no round completed. An error listing the
// fleet ends the wait too, with the same stragglers. A fleet with no
// process checked in counts as reached: there is nobody to wait for (the
// status command warns about a silent fleet). It polls every poll (a
// second when 0).
func (m *Migrator) WaitForStage(ctx context.Context, st Stage, poll time.Duration) ([]Process, error) {
	if poll <= 0 {
		poll = time.Second
	}
	var last []Process // the stragglers of the last round that completed
	unread := 0        // check-ins of the last round that could not be read
	for {
		procs, unreadable, err := m.Fleet(ctx)
		if err != nil {
			if cerr := ctx.Err(); cerr != nil {
				return last, waitError(cerr, unread, fleetKey(m.s.prefix, ""))
			}
			return last, err
		}
		var behind []Process
		for _, p := range procs {
			if p.Stage != st {
				behind = append(behind, p)
			}
		}
		// A check-in that cannot be read may be a process of any stage:
		// it is waited for like a straggler.
		if len(behind) == 0 && unreadable == 0 {
			return nil, nil
		}
		last, unread = behind, unreadable
		if err := sleepCtx(ctx, poll); err != nil {
			return behind, waitError(err, unread, fleetKey(m.s.prefix, ""))
		}
	}
}

// waitError is the error of a wait that ended: ctx's, with the number of
// check-ins that could not be read, when there were any.
func waitError(err error, unreadable int, keys string) error {
	if unreadable == 0 {
		return err
	}
	return fmt.Errorf("%w (and %d fleet check-ins cannot be read: look at the keys %s*)", err, unreadable, keys)
}

// LegacyEvidence is what shows a legacy process alive.
type LegacyEvidence struct {
	// Workers are workers with a live heartbeat whose worker:<id> hash a
	// jobstore process did not write.
	Workers []string `json:"workers,omitempty"`
	// LastLegacyWrite is when a follower last mirrored a write that no
	// dual-writing process had mirrored: a legacy writer's.
	LastLegacyWrite time.Time `json:"last_legacy_write,omitzero"`
}

// Alive reports whether the evidence shows a legacy process alive within
// window: a legacy worker's heartbeat, or a legacy write since now-window.
func (e LegacyEvidence) Alive(now time.Time, window time.Duration) bool {
	return len(e.Workers) > 0 || (!e.LastLegacyWrite.IsZero() && now.Sub(e.LastLegacyWrite) <= window)
}

func (e LegacyEvidence) String() string {
	var parts []string
	if len(e.Workers) > 0 {
		ws := e.Workers
		more := ""
		if len(ws) > 5 {
			ws, more = ws[:5], fmt.Sprintf(" and %d more", len(e.Workers)-5)
		}
		parts = append(parts, fmt.Sprintf("legacy worker heartbeat of %s%s", strings.Join(ws, ", "), more))
	}
	if !e.LastLegacyWrite.IsZero() {
		parts = append(parts, "a legacy write mirrored by the follower at "+e.LastLegacyWrite.UTC().Format(time.RFC3339))
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "; ")
}

// LegacyEvidence looks for live legacy processes: the heartbeat keys of
// workers not registered by jobstore, and the last legacy write a
// follower mirrored.
func (m *Migrator) LegacyEvidence(ctx context.Context) (LegacyEvidence, error) {
	s := m.s
	var ev LegacyEvidence
	var workers []string
	iter := s.rdb.Scan(ctx, 0, heartbeatPattern(s.prefix), 500).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		w := strings.TrimSuffix(strings.TrimPrefix(k, workerKey(s.prefix, "")), ":heartbeat")
		workers = append(workers, w)
	}
	if err := iter.Err(); err != nil {
		return ev, redisError("legacy evidence", "", err)
	}
	workers = dedupe(workers)
	pipe := s.rdb.Pipeline()
	marks := make([]*redis.SliceCmd, len(workers))
	beats := make([]*redis.StringCmd, len(workers))
	for i, w := range workers {
		marks[i] = pipe.HMGet(ctx, workerKey(s.prefix, w), fWorkerJobstore, fWorkerBeat)
		beats[i] = pipe.Get(ctx, heartbeatKey(s.prefix, w))
	}
	last := pipe.HGet(ctx, followerKey(s.prefix), "last_legacy_write_ms")
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) && !hasErrorPrefix(err, "WRONGTYPE") {
		return ev, redisError("legacy evidence", "", err)
	}
	for i, w := range workers {
		// A heartbeat gone since the scan is no evidence; one a jobstore
		// process did not write last is (see fWorkerBeat).
		if errors.Is(beats[i].Err(), redis.Nil) {
			continue
		}
		v := marks[i].Val()
		if !jobstoreWorker(sliceString(v, 0), sliceString(v, 1), beats[i].Val()) {
			ev.Workers = append(ev.Workers, w)
		}
	}
	slices.Sort(ev.Workers)
	if ms, err := strconv.ParseInt(last.Val(), 10, 64); err == nil && ms > 0 {
		ev.LastLegacyWrite = time.UnixMilli(ms).UTC()
	}
	return ev, nil
}

// PublishOptions changes how PublishStage guards a move.
type PublishOptions struct {
	// Force allows a move of more than one stage, and a move to
	// dual-read or later while legacy processes look alive. Forcing risks
	// what the guards prevent: processes of stages that cannot run side
	// by side, stale dual reads, and a job run twice by a legacy and a
	// jobstore worker.
	Force bool
	// LegacyWindow is how recent a follower's mirrored legacy write must
	// be to count as a live legacy writer; DefaultLegacyWindow when 0.
	LegacyWindow time.Duration
}

// DefaultLegacyWindow is how long after a follower last mirrored a legacy
// write PublishStage still counts it as a live legacy writer.
const DefaultLegacyWindow = time.Minute

// guardLegacy refuses a move to dual-read or later while legacy processes
// look alive: from dual-read on they do harm (their job:* writes make dual
// reads stale; in step-primary a legacy worker and a jobstore worker can
// run the same job).
func (m *Migrator) guardLegacy(ctx context.Context, to Stage, opts PublishOptions) error {
	if to < StageDualRead || opts.Force {
		return nil
	}
	ev, err := m.LegacyEvidence(ctx)
	if err != nil {
		return err
	}
	window := opts.LegacyWindow
	if window <= 0 {
		window = DefaultLegacyWindow
	}
	if ev.Alive(m.s.now(), window) {
		return fmt.Errorf("%w: %s; stop them (and let the follower drain) before %s, or force, which risks stale reads and jobs run twice",
			ErrLegacyAlive, ev, to)
	}
	return nil
}

// logStageError logs an error of a stage round unless ctx is over.
func (s *Store) logStageError(ctx context.Context, msg string, err error) {
	if err != nil && ctx.Err() == nil {
		s.log.LogAttrs(ctx, slog.LevelWarn, msg, slog.String("error", err.Error()))
	}
}
