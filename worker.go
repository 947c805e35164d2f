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

// Workers announce themselves as the legacy workers do: a worker:<id>
// hash with their capabilities and status, their id in workers:active,
// and worker:<id>:heartbeat, a key that lives 60 s and that they renew
// every 30 s. The heartbeat is the lease on every job a worker holds:
// once it is gone, RecoverExpired takes the worker's jobs back, whichever
// side (legacy or jobstore) claimed them.

// HeartbeatTTL is the life of worker:<id>:heartbeat, the legacy value;
// DefaultHeartbeatInterval is how often KeepAlive renews it.
const (
	HeartbeatTTL             = 60 * time.Second
	DefaultHeartbeatInterval = 30 * time.Second
)

// Version is the library's version, stored in the worker:<id> hash of
// jobstore workers (field "jobstore") to tell them from legacy ones.
const Version = "0.4.0"

// RegisterWorker announces a worker: its worker:<id> hash (worker_id,
// machine_id, capabilities JSON, status idle, connected_at,
// last_heartbeat, zero job counts, as the legacy worker writes it, and
// the jobstore field), its id in workers:active, and its heartbeat. The
// hash is replaced whole: a registration left under the same id (a
// legacy worker's, on a machine moved to jobstore) keeps none of its
// fields. A worker:<id> or workers:active key of the wrong type is an
// error wrapping ErrCorruptRecord, and nothing is written.
func (s *Store) RegisterWorker(ctx context.Context, caps Capabilities) error {
	capsJSON, err := caps.validate()
	if err != nil {
		return err
	}
	now := formatTime(s.now())
	machine := caps.MachineID
	if machine == "" {
		machine = "unknown"
	}
	w := caps.WorkerID
	err = registerScript.Run(ctx, s.rdb,
		[]string{workerKey(s.prefix, w), workersActiveKey(s.prefix), heartbeatKey(s.prefix, w)},
		w, now, HeartbeatTTL.Milliseconds(),
		"worker_id", w, "machine_id", machine, "capabilities", string(capsJSON), "status", "idle",
		"connected_at", now, "last_heartbeat", now, "total_jobs_completed", "0", "total_jobs_failed", "0",
		fWorkerJobstore, Version, fWorkerBeat, now).Err()
	if err != nil {
		return redisError("register worker", w, err)
	}
	return nil
}

// registerScript writes a worker's registration atomically, after
// checking the types of the keys it writes (it writes all, or nothing).
//
//	KEYS[1] -> worker:<id>, KEYS[2] -> workers:active, KEYS[3] -> worker:<id>:heartbeat
//	ARGV[1] -> worker id, ARGV[2] -> now (ISO-8601), ARGV[3] -> heartbeat TTL (ms)
//	ARGV[4..] -> the hash's field, value pairs
var registerScript = redis.NewScript(`
for i, want in ipairs({'hash', 'set'}) do
  local t = redis.call('TYPE', KEYS[i])['ok']
  if t ~= 'none' and t ~= want then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' is a ' .. t .. ', want a ' .. want)
  end
end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
return 'OK'
`)

// Heartbeat renews a worker's heartbeat (and last_heartbeat in its hash),
// as the legacy worker does every 30 s. A worker that misses it for 60 s
// loses its jobs to RecoverExpired. A worker whose worker:<id> hash is
// gone (unregistered) gets ErrNotRegistered and nothing is written: a
// heartbeat next to no registration would make it look like a legacy
// worker (see Migrator.LegacyEvidence); register it again.
func (s *Store) Heartbeat(ctx context.Context, workerID string) error {
	if err := validateWorker(workerID); err != nil {
		return err
	}
	now := formatTime(s.now())
	res, err := heartbeatScript.Run(ctx, s.rdb, []string{workerKey(s.prefix, workerID), heartbeatKey(s.prefix, workerID)},
		now, HeartbeatTTL.Milliseconds()).Text()
	if err != nil {
		return redisError("heartbeat", workerID, err)
	}
	if res != "OK" {
		return fmt.Errorf("%w: worker=%q: %s is gone", ErrNotRegistered, workerID, workerKey(s.prefix, workerID))
	}
	return nil
}

// heartbeatScript renews a registered worker's heartbeat.
//
//	KEYS[1] -> worker:<id>, KEYS[2] -> worker:<id>:heartbeat
//	ARGV[1] -> now (ISO-8601), ARGV[2] -> heartbeat TTL (ms)
//	Reply: OK | NOTREG | a WRONGTYPE error, with nothing written
var heartbeatScript = redis.NewScript(`
local t = redis.call('TYPE', KEYS[1])['ok']
if t == 'none' then return 'NOTREG' end
if t ~= 'hash' then return redis.error_reply('WRONGTYPE ' .. KEYS[1] .. ' is a ' .. t .. ', want a hash') end
redis.call('HSET', KEYS[1], 'last_heartbeat', ARGV[1], '` + fWorkerBeat + `', ARGV[1])
redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
return 'OK'
`)

// UnregisterWorker removes a worker as the legacy worker's disconnect
// does: out of workers:active, its hash and heartbeat deleted. Jobs it
// still holds are then recovered by the next RecoverExpired; finish or
// fail them first.
func (s *Store) UnregisterWorker(ctx context.Context, workerID string) error {
	if err := validateWorker(workerID); err != nil {
		return err
	}
	tx := s.rdb.TxPipeline()
	tx.SRem(ctx, workersActiveKey(s.prefix), workerID)
	tx.Del(ctx, workerKey(s.prefix, workerID), heartbeatKey(s.prefix, workerID))
	if _, err := tx.Exec(ctx); err != nil {
		return redisError("unregister worker", workerID, err)
	}
	return nil
}

// KeepAlive keeps a worker alive for its whole life: it registers it
// unless jobstore registered it already and its heartbeat lives (call
// RegisterWorker first to claim at once and see registration errors; a
// legacy worker's registration under the same id is replaced), renews its
// heartbeat every interval (DefaultHeartbeatInterval when 0; it must be
// under HeartbeatTTL), registering it again if its registration was
// deleted meanwhile, until ctx is done, then unregisters it and returns
// ctx.Err(). Workers run it in a goroutine. A failed heartbeat is logged
// and tried again at the next interval.
func (s *Store) KeepAlive(ctx context.Context, caps Capabilities, interval time.Duration) error {
	if interval == 0 {
		interval = DefaultHeartbeatInterval
	}
	if interval < 0 || interval >= HeartbeatTTL {
		return fmt.Errorf("%w: heartbeat interval %v must be positive and under %v", ErrInvalidArgument, interval, HeartbeatTTL)
	}
	if _, err := caps.validate(); err != nil {
		return err
	}
	// Registered means by jobstore: a legacy worker's hash and heartbeat
	// under this id (a machine moved to jobstore within the 60 s its
	// legacy heartbeat lives) must give way to a jobstore registration, or
	// Workers and LegacyEvidence report this worker as a legacy one.
	pipe := s.rdb.Pipeline()
	mark := pipe.HMGet(ctx, workerKey(s.prefix, caps.WorkerID), fWorkerJobstore, fWorkerBeat)
	beat := pipe.Get(ctx, heartbeatKey(s.prefix, caps.WorkerID))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) && !hasErrorPrefix(err, "WRONGTYPE") {
		return redisError("keep alive", caps.WorkerID, err)
	}
	var err error
	if jobstoreWorker(sliceString(mark.Val(), 0), sliceString(mark.Val(), 1), beat.Val()) {
		err = s.Heartbeat(ctx, caps.WorkerID)
	} else {
		err = s.RegisterWorker(ctx, caps)
	}
	if err != nil {
		return err
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			if err := s.UnregisterWorker(uctx, caps.WorkerID); err != nil {
				s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: unregister worker", slog.String("worker", caps.WorkerID), slog.String("error", err.Error()))
			}
			cancel()
			return ctx.Err()
		case <-t.C:
			err := s.Heartbeat(ctx, caps.WorkerID)
			if errors.Is(err, ErrNotRegistered) { // its hash was deleted under it
				err = s.RegisterWorker(ctx, caps)
			}
			if err != nil && ctx.Err() == nil {
				s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: heartbeat", slog.String("worker", caps.WorkerID), slog.String("error", err.Error()))
			}
		}
	}
}

// recoverScript takes back jobs of a worker whose heartbeat is gone, as
// the legacy RedisService's releaseStuckJob does: each job held goes back
// to pending with retry_count+1 (scored by the formula), or, once
// retry_count+1 reaches max_retries, is failed with its entry in
// jobs:failed (with the record retention, if any, on its record and its
// progress hash, as FailJob sets it); job_failed tells the clients.
// Entries whose record is gone, finished, or held by another worker are
// dropped from the active hash. An entry whose record says pending (or
// queued) but that is not in pending is a retry the worker did not finish
// (the legacy failJob sets status pending, then ZADDs, then HDELs; a
// worker killed between the first two leaves only its active entry): it
// is put back in pending as the retry would have, scored by the formula
// from the record as a retry is, its record and retry_count as they are,
// and counted as requeued; dropping it would lose the job.
// It re-checks the heartbeat first, so a worker that came back keeps its
// jobs. Each job moves whole, with its mirror, in this one script; like
// releaseStuckJob it stamps failed_at on every job it moves and sets the
// worker idle, if its worker:<id> hash still exists.
//
//	KEYS[1] -> jobs:active:<worker>   KEYS[6] -> steps:active:<worker> (mirror)
//	KEYS[2] -> jobs:pending           KEYS[7] -> steps:pending         (mirror)
//	KEYS[3] -> jobs:failed            KEYS[8] -> steps:failed          (mirror)
//	KEYS[4] -> worker:<worker>:heartbeat
//	KEYS[5] -> worker:<worker>
//	KEYS[#KEYS] -> jobstore:stage; ARGV[1..3] -> mirror, log, stage (every script: see lua.go)
//	ARGV[4] -> token, ARGV[5] -> worker
//	ARGV[6] -> now (ISO-8601), ARGV[7] -> now (Unix ms)
//	ARGV[8] -> score formula, ARGV[9] -> TTL of jobs:failed (s), ARGV[10] -> record retention (ms)
//	ARGV[11] -> record prefix (job:), ARGV[12] -> mirror record prefix (step:)
//	ARGV[13] -> job_failed channel
//	ARGV[14] -> reason, ARGV[15] -> reason as a JSON string
//	ARGV[16] -> the progress hash's suffix to a record key (:progress, see subSuffix)
//	ARGV[17..] -> ids
//	Reply: OK requeued failed dropped {left...} | ALIVE | WRONGTYPE detail
var recoverScript = redis.NewScript(newScriptText(luaCore, luaTokens, luaStatus, scoreLua, luaFailEntry, `
local tok, worker, now_iso, now_ms = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7])
local bad = wrongtype(KEYS[1], 'hash') or wrongtype(KEYS[2], 'zset') or wrongtype(KEYS[3], 'hash')
if bad then return done('WRONGTYPE', bad) end
if redis.call('EXISTS', KEYS[4]) == 1 then return done('ALIVE') end
local requeued, failed, dropped, left = 0, 0, 0, {}
for i = 17, #ARGV do
  local id = ARGV[i]
  if redis.call('HEXISTS', KEYS[1], id) == 1 then
    local rec = ARGV[11] .. id
    local f = redis.pcall('HMGET', rec, 'status', 'worker_id', 'retry_count', 'max_retries')
    if type(f) == 'table' and f.err then
      left[#left + 1] = id .. ': ' .. rec .. ' is not a hash'
    elseif RANK[f[1] or ''] == 0 and not redis.call('ZSCORE', KEYS[2], id) then
      -- A retry stopped between its HSET of the record and its ZADD: the
      -- active entry is the job's only trace. Finish the retry.
      redis.call('ZADD', KEYS[2], score_arg(record_score(rec, ARGV[8], now_ms)), id)
      redis.call('HDEL', KEYS[1], id)
      mirror_member(KEYS[2], KEYS[7], id)
      mirror_key(rec, ARGV[12] .. id)
      requeued = requeued + 1
    elseif not ACTIVE[f[1] or ''] or f[2] ~= worker then
      redis.call('HDEL', KEYS[1], id)
      dropped = dropped + 1
    else
      local n = (parse_int(f[3]) or 0) + 1
      local retry = n < (parse_int(f[4]) or 3)
      if retry then
        redis.call('HSET', rec, 'status', 'pending', 'worker_id', '', 'assigned_at', '', 'failed_at', now_iso,
          'retry_count', string.format('%d', n), 'last_failed_worker', worker, 'error', ARGV[14], 'jobstore_op', push_token(rec, tok))
        redis.call('ZADD', KEYS[2], score_arg(record_score(rec, ARGV[8], now_ms)), id)
        mirror_member(KEYS[2], KEYS[7], id)
        requeued = requeued + 1
      else
        redis.call('HSET', rec, 'status', 'failed', 'failed_at', now_iso, 'retry_count', string.format('%d', n),
          'last_failed_worker', worker, 'worker_id', '', 'error', ARGV[14], 'jobstore_op', push_token(rec, tok))
        redis.call('HSET', KEYS[3], id, fail_entry(ARGV[15], now_iso, n))
        redis.call('EXPIRE', KEYS[3], ARGV[9])
        mirror_field(KEYS[3], KEYS[8], id, true)
        local keep = tonumber(ARGV[10])
        if keep > 0 then
          redis.call('PEXPIRE', rec, keep)
          redis.call('PEXPIRE', rec .. ARGV[16], keep)
          mirror_key(rec .. ARGV[16], ARGV[12] .. id .. ARGV[16])
        end
        failed = failed + 1
      end
      redis.call('HDEL', KEYS[1], id)
      redis.call('PUBLISH', ARGV[13], cjson.encode({job_id = id, error = ARGV[14], retry_count = n,
        will_retry = retry, failed_at = now_iso}))
      mirror_key(rec, ARGV[12] .. id)
    end
    mirror_field(KEYS[1], KEYS[6], id, false)
  end
end
-- Only a registration that exists is set idle: one deleted by
-- UnregisterWorker would come back as a hash without its fields.
if requeued + failed > 0 and redis.call('EXISTS', KEYS[5]) == 1 and not wrongtype(KEYS[5], 'hash') then
  redis.call('HSET', KEYS[5], 'status', 'idle', 'current_job_id', '', 'active_jobs', '[]', 'last_status_update', now_iso)
end
return done('OK', requeued, failed, dropped, left)
`))

// RecoveryStats says what RecoverExpired did.
type RecoveryStats struct {
	Workers  int // workers found without a heartbeat and holding jobs
	Requeued int // jobs put back to pending with retry_count+1, or as a dead worker's unfinished retry left them
	Failed   int // jobs failed because their retries were used up
	Dropped  int // active entries whose record was gone, finished or another worker's
	// Skipped counts jobs:active:* keys passed over because they are not
	// hashes (a look-alike, or junk of another writer); each is logged
	// once per Store.
	Skipped int
}

// recoverReason is the error recovery writes, the legacy one.
const recoverReason = "Worker timeout: Worker heartbeat missing"

// RecoverExpired takes back the jobs of every worker whose heartbeat is
// gone, as the legacy RedisService does for a stuck job: it finds the
// workers by their jobs:active:<worker> hashes, and for each whose
// worker:<id>:heartbeat is missing, moves each job back to pending, or to
// failed (see recoverScript).
//
// A recovery counts as a failed attempt: retry_count goes up by one, and
// a job whose workers keep dying is failed once retry_count+1 reaches
// max_retries, as FailJob would fail it. (The legacy orphan sweep,
// detectAndFixOrphanedJobs, puts jobs back without counting; where it
// runs, it takes jobstore workers' jobs back too, since their active
// hashes are the legacy ones.)
//
// It recovers legacy workers' jobs as well as jobstore's. A
// jobs:active:<worker> key that is not a hash is passed over (counted in
// Skipped), and the other workers are recovered. Concurrent runs are
// safe: each job moves atomically and once. Run it periodically (Maintain
// does).
func (s *Store) RecoverExpired(ctx context.Context) (RecoveryStats, error) {
	var rs RecoveryStats
	k := s.space(s.Stage().Primary())
	iter := s.rdb.Scan(ctx, 0, k.activePattern(), 500).Iterator()
	var workers []string
	for iter.Next(ctx) {
		if w, ok := k.workerFromActive(iter.Val()); ok {
			workers = append(workers, w)
		}
	}
	if err := iter.Err(); err != nil {
		return rs, redisError("recover: scan", "", err)
	}
	for _, w := range dedupe(workers) {
		alive, err := s.rdb.Exists(ctx, heartbeatKey(s.prefix, w)).Result()
		if err != nil {
			return rs, redisError("recover", "", err)
		}
		if alive == 1 {
			continue
		}
		n, err := s.recoverWorker(ctx, w, &rs)
		var wt wrongTypeActive
		if errors.As(err, &wt) {
			// Junk under an active hash's name blocks nobody else.
			rs.Skipped++
			s.logOnce(ctx, "recover: wrong type: "+wt.key, "jobstore: recovery passed over a key that is not an active hash",
				slog.String("key", wt.key), slog.String("error", wt.detail))
			continue
		}
		if err != nil {
			return rs, err
		}
		if n > 0 {
			rs.Workers++
		}
	}
	return rs, nil
}

// wrongTypeActive is recoverWorker's error for a worker's active hash
// that is not a hash.
type wrongTypeActive struct{ key, detail string }

func (e wrongTypeActive) Error() string {
	return fmt.Sprintf("%v: recover: %s is not a hash: %s", ErrCorruptRecord, e.key, e.detail)
}

func (e wrongTypeActive) Unwrap() error { return ErrCorruptRecord }

// recoverWorker recovers the jobs of one worker, in batches, and returns
// how many it moved or dropped. Each batch runs under the stage the Store
// has then (a published stage adopted meanwhile moves the next batches).
// An active key of the wrong type gives a wrongTypeActive error.
func (s *Store) recoverWorker(ctx context.Context, worker string, rs *RecoveryStats) (int, error) {
	moved := 0
	var cursor uint64
	for {
		active := s.space(s.Stage().Primary()).active(worker)
		fields, next, err := s.rdb.HScan(ctx, active, cursor, "*", 100).Result()
		if hasErrorPrefix(err, "WRONGTYPE") {
			return moved, wrongTypeActive{key: active, detail: err.Error()}
		}
		if err != nil {
			return moved, redisError("recover", "", err)
		}
		var batch []any
		for i := 0; i < len(fields); i += 2 { // HSCAN gives field, value pairs
			batch = append(batch, fields[i])
		}
		if len(batch) > 0 {
			now := s.now()
			tok := token()
			r, err := s.run(ctx, func(st Stage) spec {
				mirrorPrefix := ""
				if mns, ok := st.Mirror(); ok {
					mirrorPrefix = s.space(mns).recordPrefix()
				}
				args := append([]any{tok, worker, formatTime(now), nowMs(now), s.formula.String(),
					secondsArg(s.failedTTL), s.recordRetention.Milliseconds(), s.space(st.Primary()).recordPrefix(),
					mirrorPrefix, s.channel(chJobFailed), recoverReason, mustJSON(recoverReason), subSuffix(progressSuffix)}, batch...)
				return spec{op: opRecover, script: recoverScript, args: args,
					keys:   func(k keyspace) []string { return []string{k.active(worker), k.pending(), k.failed()} },
					shared: []string{heartbeatKey(s.prefix, worker), workerKey(s.prefix, worker)}}
			})
			if err != nil {
				return moved, err
			}
			switch r.status {
			case "ALIVE":
				return moved, nil
			case "OK":
			case "WRONGTYPE":
				if strings.HasPrefix(r.str(0), active+" ") { // it changed type since the HSCAN
					return moved, wrongTypeActive{key: active, detail: r.str(0)}
				}
				return moved, fmt.Errorf("%w: recover worker=%q: %s", ErrCorruptRecord, worker, r.str(0))
			default:
				return moved, unexpected(opRecover, "", r)
			}
			rs.Requeued += int(r.int(0))
			rs.Failed += int(r.int(1))
			rs.Dropped += int(r.int(2))
			moved += int(r.int(0) + r.int(1) + r.int(2))
			for _, n := range r.list(3) {
				s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: recovery left a job", slog.String("worker", worker), slog.Any("why", n))
			}
		}
		if cursor = next; cursor == 0 {
			return moved, nil
		}
	}
}

// Maintain runs RecoverExpired every interval until ctx is done, then
// returns ctx.Err(). Errors are logged, not returned, so one bad round
// does not stop it. Workers or a service run it in a goroutine.
func (s *Store) Maintain(ctx context.Context, interval time.Duration) error {
	if interval <= 0 {
		return fmt.Errorf("%w: interval %v must be positive", ErrInvalidArgument, interval)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if st, err := s.RecoverExpired(ctx); err != nil {
			if ctx.Err() == nil {
				s.log.LogAttrs(ctx, slog.LevelError, "jobstore: recover jobs of dead workers", slog.String("error", err.Error()))
			}
		} else if st.Workers+st.Requeued+st.Failed+st.Dropped > 0 { // Skipped keys are logged once, by RecoverExpired
			s.log.LogAttrs(ctx, slog.LevelInfo, "jobstore: recovered jobs of dead workers",
				slog.Int("workers", st.Workers), slog.Int("requeued", st.Requeued),
				slog.Int("failed", st.Failed), slog.Int("dropped", st.Dropped))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// WorkerInfo is a registered worker as RegisterWorker (or a legacy
// worker) wrote it.
type WorkerInfo struct {
	ID        string
	Status    string // idle or busy
	CurrentID string // the job it works on, when busy
	// Jobstore is the jobstore version of a jobstore worker, "" for a
	// legacy one (one whose heartbeat a jobstore process did not write
	// last, whatever its hash says).
	Jobstore string
	// Alive reports whether its heartbeat exists.
	Alive bool
}

// Workers lists the workers in workers:active.
func (s *Store) Workers(ctx context.Context) ([]WorkerInfo, error) {
	ids, err := s.rdb.SMembers(ctx, workersActiveKey(s.prefix)).Result()
	if err != nil {
		return nil, redisError("workers", "", err)
	}
	pipe := s.rdb.Pipeline()
	hs := make([]*redis.SliceCmd, len(ids))
	hb := make([]*redis.StringCmd, len(ids))
	for i, id := range ids {
		hs[i] = pipe.HMGet(ctx, workerKey(s.prefix, id), "status", "current_job_id", fWorkerJobstore, fWorkerBeat)
		hb[i] = pipe.Get(ctx, heartbeatKey(s.prefix, id))
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) && !hasErrorPrefix(err, "WRONGTYPE") {
		return nil, redisError("workers", "", err)
	}
	out := make([]WorkerInfo, 0, len(ids))
	for i, id := range ids {
		wi := WorkerInfo{ID: id, Alive: hb[i].Err() == nil}
		if v := hs[i].Val(); len(v) == 4 {
			wi.Status, _ = v[0].(string)
			wi.CurrentID, _ = v[1].(string)
			// A dead worker keeps the kind its hash says; a live one is
			// jobstore's only while its heartbeat is jobstore's.
			if mark := sliceString(v, 2); !wi.Alive || jobstoreWorker(mark, sliceString(v, 3), hb[i].Val()) {
				wi.Jobstore = mark
			}
		}
		out = append(out, wi)
	}
	return out, nil
}

// sliceString is v[i] as a string, "" when absent or not a string.
func sliceString(v []any, i int) string {
	if i >= len(v) {
		return ""
	}
	str, _ := v[i].(string)
	return str
}

func dedupe(xs []string) []string {
	seen := make(map[string]bool, len(xs))
	out := xs[:0]
	for _, x := range xs {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}
