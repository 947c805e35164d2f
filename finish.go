package jobstore

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// A worker holds a job while its id is in the worker's active hash
// (jobs:active:<worker>), where the claim put it. Start, progress,
// complete and fail need the job held by the worker that calls them; a
// job recovered, cancelled or finished meanwhile gives ErrNotHeld and
// nothing changes.

// startScript marks a held job in progress and tells the clients.
//
//	KEYS[1] -> job:<id>               KEYS[3] -> step:<id>   (mirror)
//	KEYS[2] -> jobs:active:<worker>   KEYS[4] -> steps:active:<worker> (mirror)
//	KEYS[#KEYS] -> jobstore:stage; ARGV[1..3] -> mirror, log, stage (every script: see lua.go)
//	ARGV[4] -> id
//	ARGV[5] -> now (ISO-8601)
//	ARGV[6] -> update_job_progress channel, ARGV[7] -> its message
//	Reply: OK | NOTFOUND | NOTHELD status | WRONGTYPE detail
var startScript = redis.NewScript(newScriptText(luaCore, luaHeld, `
local id = ARGV[4]
local bad = wrongtype(KEYS[1], 'hash') or wrongtype(KEYS[2], 'hash')
if bad then return done('WRONGTYPE', bad) end
if redis.call('EXISTS', KEYS[1]) == 0 then return done('NOTFOUND') end
local st, stale = not_held(KEYS[1], KEYS[2], id)
if st then
  if stale then
    redis.call('HDEL', KEYS[2], id)
    mirror_field(KEYS[2], KEYS[4], id, false)
  end
  return done('NOTHELD', st)
end
redis.call('HSET', KEYS[1], 'status', 'in_progress', 'started_at', ARGV[5])
redis.call('PUBLISH', ARGV[6], ARGV[7])
mirror_key(KEYS[1], KEYS[3])
return done('OK')
`))

// progressScript records a held job's progress in job:<id>:progress, as
// the legacy worker does, and tells the clients.
//
//	KEYS[1] -> job:<id>               KEYS[4] -> step:<id>:progress (mirror)
//	KEYS[2] -> jobs:active:<worker>
//	KEYS[3] -> job:<id>:progress
//	KEYS[#KEYS] -> jobstore:stage; ARGV[1..3] -> mirror, log, stage (every script: see lua.go)
//	ARGV[4] -> id
//	ARGV[5] -> progress, ARGV[6] -> status, ARGV[7] -> message, ARGV[8] -> now (ISO-8601)
//	ARGV[9] -> update_job_progress channel, ARGV[10] -> its message
//	Reply: OK | NOTFOUND | NOTHELD status | WRONGTYPE detail
var progressScript = redis.NewScript(newScriptText(luaCore, luaHeld, `
local id = ARGV[4]
local bad = wrongtype(KEYS[1], 'hash') or wrongtype(KEYS[2], 'hash') or wrongtype(KEYS[3], 'hash')
if bad then return done('WRONGTYPE', bad) end
if redis.call('EXISTS', KEYS[1]) == 0 then return done('NOTFOUND') end
local st = not_held(KEYS[1], KEYS[2], id)
if st then return done('NOTHELD', st) end
redis.call('HSET', KEYS[3], 'progress', ARGV[5], 'status', ARGV[6], 'message', ARGV[7], 'updated_at', ARGV[8])
redis.call('PUBLISH', ARGV[9], ARGV[10])
mirror_key(KEYS[3], KEYS[4])
return done('OK')
`))

// completeScript completes a held job as the legacy worker does: the
// record's status and completed_at, the id out of the worker's active
// hash, the result into jobs:completed (whose TTL it renews), the
// complete_job message, and the worker idle once it holds nothing. A call
// sent again after a lost reply finds its token in the record (see
// luaTokens) and answers OK.
//
//	KEYS[1] -> job:<id>               KEYS[6] -> step:<id>             (mirror)
//	KEYS[2] -> jobs:active:<worker>   KEYS[7] -> steps:active:<worker> (mirror)
//	KEYS[3] -> jobs:completed         KEYS[8] -> steps:completed       (mirror)
//	KEYS[4] -> job:<id>:progress      KEYS[9] -> step:<id>:progress    (mirror)
//	KEYS[5] -> worker:<worker>
//	KEYS[#KEYS] -> jobstore:stage; ARGV[1..3] -> mirror, log, stage (every script: see lua.go)
//	ARGV[4] -> token, ARGV[5] -> id, ARGV[6] -> worker
//	ARGV[7] -> now (ISO-8601), ARGV[8] -> now (Unix ms)
//	ARGV[9] -> entry for jobs:completed, ARGV[10] -> its TTL (s)
//	ARGV[11] -> record retention (ms, 0: none)
//	ARGV[12] -> complete_job channel, ARGV[13] -> its message
//	ARGV[14] -> worker_status channel
//	Reply: OK | NOTFOUND | NOTHELD status | WRONGTYPE detail
var completeScript = redis.NewScript(newScriptText(luaCore, luaTokens, luaHeld, luaWorkerIdle, `
local tok, id, worker = ARGV[4], ARGV[5], ARGV[6]
local bad = wrongtype(KEYS[1], 'hash') or wrongtype(KEYS[2], 'hash') or wrongtype(KEYS[3], 'hash')
  or wrongtype(KEYS[5], 'hash')
if bad then return done('WRONGTYPE', bad) end
if redis.call('EXISTS', KEYS[1]) == 0 then return done('NOTFOUND') end
if has_token(KEYS[1], tok) then return done('OK') end
local st, stale = not_held(KEYS[1], KEYS[2], id)
if st then
  if stale then
    redis.call('HDEL', KEYS[2], id)
    worker_idle(KEYS[5], KEYS[2], ARGV[7], ARGV[8], ARGV[14], worker)
    mirror_field(KEYS[2], KEYS[7], id, false)
  end
  return done('NOTHELD', st)
end
redis.call('HSET', KEYS[1], 'status', 'completed', 'completed_at', ARGV[7], 'jobstore_op', push_token(KEYS[1], tok))
redis.call('HDEL', KEYS[2], id)
redis.call('HSET', KEYS[3], id, ARGV[9])
redis.call('EXPIRE', KEYS[3], ARGV[10])
local keep = tonumber(ARGV[11])
if keep > 0 then
  redis.call('PEXPIRE', KEYS[1], keep)
  redis.call('PEXPIRE', KEYS[4], keep)
  mirror_key(KEYS[4], KEYS[9])
end
redis.call('PUBLISH', ARGV[12], ARGV[13])
worker_idle(KEYS[5], KEYS[2], ARGV[7], ARGV[8], ARGV[14], worker)
mirror_key(KEYS[1], KEYS[6])
mirror_field(KEYS[2], KEYS[7], id, false)
mirror_field(KEYS[3], KEYS[8], id, true)
return done('OK')
`))

// luaFailEntry builds the legacy JSON of a jobs:failed entry.
const luaFailEntry = `
local function fail_entry(reason_json, now_iso, n)
  return '{"error":' .. reason_json .. ',"failed_at":' .. cjson.encode(now_iso) .. ',"retry_count":' .. string.format('%d', n) .. '}'
end
`

// failScript records a failure of a held job by the legacy rule: with
// retry_count+1 < max_retries (and a retryable failure) the job goes back
// to pending, scored by the formula, with retry_count+1; otherwise it is
// failed, with its entry in jobs:failed (whose TTL it renews). Either way
// it leaves the worker's active hash, the job_failed message goes out and
// the worker is idle once it holds nothing. A call sent again after a lost
// reply finds its token in the record and answers with the outcome of the
// first run.
//
//	KEYS[1] -> job:<id>               KEYS[7] -> step:<id>             (mirror)
//	KEYS[2] -> jobs:active:<worker>   KEYS[8] -> steps:active:<worker> (mirror)
//	KEYS[3] -> jobs:pending           KEYS[9] -> steps:pending         (mirror)
//	KEYS[4] -> jobs:failed            KEYS[10] -> steps:failed         (mirror)
//	KEYS[5] -> job:<id>:progress      KEYS[11] -> step:<id>:progress   (mirror)
//	KEYS[6] -> worker:<worker>
//	KEYS[#KEYS] -> jobstore:stage; ARGV[1..3] -> mirror, log, stage (every script: see lua.go)
//	ARGV[4] -> token, ARGV[5] -> id, ARGV[6] -> worker
//	ARGV[7] -> reason, ARGV[8] -> reason as a JSON string
//	ARGV[9] -> now (ISO-8601), ARGV[10] -> now (Unix ms)
//	ARGV[11] -> "1" if the failure may be retried
//	ARGV[12] -> score formula (api or service)
//	ARGV[13] -> TTL of jobs:failed (s), ARGV[14] -> record retention (ms, 0: none)
//	ARGV[15] -> job_failed channel, ARGV[16] -> worker_status channel
//	Reply: OK retried|failed retry_count | NOTFOUND | NOTHELD status | WRONGTYPE detail
var failScript = redis.NewScript(newScriptText(luaCore, luaTokens, scoreLua, luaHeld, luaWorkerIdle, luaFailEntry, `
local tok, id, worker = ARGV[4], ARGV[5], ARGV[6]
-- jobs:failed is checked only by a fail for good, the one write to it:
-- a junk key there must not stop the retries.
local bad = wrongtype(KEYS[1], 'hash') or wrongtype(KEYS[2], 'hash') or wrongtype(KEYS[3], 'zset')
  or wrongtype(KEYS[6], 'hash')
if bad then return done('WRONGTYPE', bad) end
if redis.call('EXISTS', KEYS[1]) == 0 then return done('NOTFOUND') end
local first = has_token(KEYS[1], tok)
if first then
  local outcome, n = string.match(first, '^(%a+)/(%-?%d+)$')
  return done('OK', outcome, tonumber(n))
end
local st, stale = not_held(KEYS[1], KEYS[2], id)
if st then
  if stale then
    redis.call('HDEL', KEYS[2], id)
    worker_idle(KEYS[6], KEYS[2], ARGV[9], tonumber(ARGV[10]), ARGV[16], worker)
    mirror_field(KEYS[2], KEYS[8], id, false)
  end
  return done('NOTHELD', st)
end
local f = redis.call('HMGET', KEYS[1], 'retry_count', 'max_retries')
local n = (parse_int(f[1]) or 0) + 1
local retry = ARGV[11] == '1' and n < (parse_int(f[2]) or 3)
if not retry then
  bad = wrongtype(KEYS[4], 'hash')
  if bad then return done('WRONGTYPE', bad) end
end
local now_iso, now_ms = ARGV[9], tonumber(ARGV[10])
local toks = push_token(KEYS[1], tok .. ':' .. (retry and 'retried' or 'failed') .. '/' .. string.format('%d', n))
redis.call('HDEL', KEYS[2], id)
if retry then
  redis.call('HSET', KEYS[1], 'status', 'pending', 'worker_id', '', 'assigned_at', '',
    'retry_count', string.format('%d', n), 'last_failed_worker', worker, 'failed_at', now_iso,
    'error', ARGV[7], 'jobstore_op', toks)
  redis.call('ZADD', KEYS[3], score_arg(record_score(KEYS[1], ARGV[12], now_ms)), id)
  mirror_member(KEYS[3], KEYS[9], id)
else
  redis.call('HSET', KEYS[1], 'status', 'failed', 'failed_at', now_iso,
    'retry_count', string.format('%d', n), 'last_failed_worker', worker, 'error', ARGV[7], 'jobstore_op', toks)
  redis.call('HSET', KEYS[4], id, fail_entry(ARGV[8], now_iso, n))
  redis.call('EXPIRE', KEYS[4], ARGV[13])
  mirror_field(KEYS[4], KEYS[10], id, true)
  local keep = tonumber(ARGV[14])
  if keep > 0 then
    redis.call('PEXPIRE', KEYS[1], keep)
    redis.call('PEXPIRE', KEYS[5], keep)
    mirror_key(KEYS[5], KEYS[11])
  end
end
redis.call('PUBLISH', ARGV[15], cjson.encode({job_id = id, worker_id = worker, status = retry and 'pending' or 'failed',
  error = ARGV[7], retry_count = n, will_retry = retry, can_retry = retry, timestamp = now_ms}))
worker_idle(KEYS[6], KEYS[2], now_iso, now_ms, ARGV[16], worker)
mirror_key(KEYS[1], KEYS[7])
mirror_field(KEYS[2], KEYS[8], id, false)
return done('OK', retry and 'retried' or 'failed', n)
`))

// cancelScript cancels a job that has not finished, pending or held: its
// status becomes cancelled (with cancelled_at), it leaves pending and the
// active hash of the worker holding it, and an entry {"error": reason,
// "cancelled": true} goes into jobs:failed, where the legacy API puts
// cancelled jobs. The worker holding it is told with cancel_job, the
// clients with job_cancelled. A call sent again after a lost reply finds
// its token in the record and answers OK.
//
//	KEYS[1] -> job:<id>           KEYS[5] -> step:<id>            (mirror)
//	KEYS[2] -> jobs:pending       KEYS[6] -> steps:pending        (mirror)
//	KEYS[3] -> jobs:failed        KEYS[7] -> steps:failed         (mirror)
//	KEYS[4] -> job:<id>:progress  KEYS[8] -> step:<id>:progress   (mirror)
//	KEYS[#KEYS] -> jobstore:stage; ARGV[1..3] -> mirror, log, stage (every script: see lua.go)
//	ARGV[4] -> token, ARGV[5] -> id
//	ARGV[6] -> reason as a JSON string, ARGV[7] -> now (ISO-8601), ARGV[8] -> now (Unix ms)
//	ARGV[9] -> active hash prefix (jobs:active:), ARGV[10] -> mirror's (steps:active:)
//	ARGV[11] -> TTL of jobs:failed (s), ARGV[12] -> record retention (ms, 0: none)
//	ARGV[13] -> cancel_job channel, ARGV[14] -> job_cancelled channel, ARGV[15] -> its message
//	Reply: OK previous_status | NOTFOUND | FINISHED status | WRONGTYPE detail
var cancelScript = redis.NewScript(newScriptText(luaCore, luaTokens, luaStatus, `
local tok, id = ARGV[4], ARGV[5]
local bad = wrongtype(KEYS[1], 'hash') or wrongtype(KEYS[2], 'zset') or wrongtype(KEYS[3], 'hash')
if bad then return done('WRONGTYPE', bad) end
if redis.call('EXISTS', KEYS[1]) == 0 then return done('NOTFOUND') end
if has_token(KEYS[1], tok) then return done('OK', 'cancelled') end
local f = redis.call('HMGET', KEYS[1], 'status', 'worker_id')
local st, w = f[1] or '', f[2] or ''
if FINISHED[st] then return done('FINISHED', st) end
local active
if w ~= '' then
  active = ARGV[9] .. w
  local b = wrongtype(active, 'hash')
  if b then return done('WRONGTYPE', b) end
end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'cancelled_at', ARGV[7], 'jobstore_op', push_token(KEYS[1], tok))
redis.call('ZREM', KEYS[2], id)
redis.call('HSET', KEYS[3], id, '{"error":' .. ARGV[6] .. ',"failed_at":' .. cjson.encode(ARGV[7]) .. ',"cancelled":true}')
redis.call('EXPIRE', KEYS[3], ARGV[11])
if active then
  redis.call('HDEL', active, id)
  mirror_field(active, ARGV[10] .. w, id, false)
  redis.call('PUBLISH', ARGV[13], '{"job_id":' .. cjson.encode(id) .. ',"worker_id":' .. cjson.encode(w) ..
    ',"reason":' .. ARGV[6] .. ',"timestamp":' .. ARGV[8] .. '}')
end
local keep = tonumber(ARGV[12])
if keep > 0 then
  redis.call('PEXPIRE', KEYS[1], keep)
  redis.call('PEXPIRE', KEYS[4], keep)
  mirror_key(KEYS[4], KEYS[8])
end
redis.call('PUBLISH', ARGV[14], ARGV[15])
mirror_key(KEYS[1], KEYS[5])
mirror_member(KEYS[2], KEYS[6], id)
mirror_field(KEYS[3], KEYS[7], id, true)
return done('OK', st)
`))

// heldError maps the statuses the worker-side scripts share.
func heldError(op, id, worker string, r reply) error {
	switch r.status {
	case "OK":
		return nil
	case "NOTFOUND":
		return fmt.Errorf("%w: id=%q", ErrJobNotFound, id)
	case "NOTHELD":
		st := Status(r.str(0))
		if st.Finished() {
			return fmt.Errorf("%w: id=%q worker=%q: the job is %s: %w", ErrNotHeld, id, worker, st, ErrJobFinished)
		}
		return fmt.Errorf("%w: id=%q worker=%q: not in its active jobs (status %s)", ErrNotHeld, id, worker, st)
	case "WRONGTYPE":
		return fmt.Errorf("%w: %s id=%q: %s", ErrCorruptRecord, op, id, r.str(0))
	}
	return unexpected(op, id, r)
}

func validateHeld(id, workerID string) error {
	if err := validateID(id); err != nil {
		return err
	}
	return validateWorker(workerID)
}

// StartJob marks a job the worker holds as in progress (status
// in_progress, started_at) and publishes update_job_progress. Calling it
// is optional: a claimed job can be completed or failed directly.
func (s *Store) StartJob(ctx context.Context, id, workerID string) error {
	if err := validateHeld(id, workerID); err != nil {
		return err
	}
	now := s.now()
	msg := mustJSON(progressEvent{JobID: id, WorkerID: workerID, Status: string(StatusInProgress),
		Message: "Job started", Timestamp: nowMs(now)})
	r, err := s.run(ctx, func(Stage) spec {
		return spec{op: opStart, id: id, script: startScript,
			keys: func(k keyspace) []string { return []string{k.record(id), k.active(workerID)} },
			args: []any{id, formatTime(now), s.channel(chProgress), msg}}
	})
	if err != nil {
		return err
	}
	return heldError(opStart, id, workerID, r)
}

// ReportProgress records the progress (0 to 100) of a job the worker
// holds, with an optional message, in the job:<id>:progress hash the
// legacy worker writes (progress, status in_progress, message,
// updated_at), and publishes update_job_progress.
func (s *Store) ReportProgress(ctx context.Context, id, workerID string, progress float64, message string) error {
	if err := validateHeld(id, workerID); err != nil {
		return err
	}
	if math.IsNaN(progress) || progress < 0 || progress > 100 {
		return fmt.Errorf("%w: progress %v is outside 0..100", ErrInvalidArgument, progress)
	}
	if err := validateText("message", message, maxTextLength); err != nil {
		return err
	}
	now := s.now()
	p := strconv.FormatFloat(progress, 'f', -1, 64)
	msg := mustJSON(progressEvent{JobID: id, WorkerID: workerID, Progress: progress,
		Status: string(StatusInProgress), Message: message, Timestamp: nowMs(now)})
	r, err := s.run(ctx, func(Stage) spec {
		return spec{op: opProgress, id: id, script: progressScript,
			keys:   func(k keyspace) []string { return []string{k.record(id), k.active(workerID), k.progress(id)} },
			mirror: func(k keyspace) []string { return []string{k.progress(id)} },
			args:   []any{id, p, string(StatusInProgress), message, formatTime(now), s.channel(chProgress), msg}}
	})
	if err != nil {
		return err
	}
	return heldError(opProgress, id, workerID, r)
}

// CompleteJob completes a job the worker holds, as the legacy worker does:
// status completed and completed_at on the record, the id out of
// jobs:active:<worker>, {"success":true,"data":result,"completed_at":...}
// into jobs:completed (renewing that hash's TTL, 24 h by default), the
// complete_job message, and the worker idle once it holds nothing. result
// is optional JSON; GetJob returns it as Job.Result while jobs:completed
// keeps it. A worker that does not hold the job gets ErrNotHeld and
// nothing changes.
func (s *Store) CompleteJob(ctx context.Context, id, workerID string, result json.RawMessage) error {
	if err := validateHeld(id, workerID); err != nil {
		return err
	}
	if len(result) > 0 {
		if err := validateJSON("result", result, s.maxPayload); err != nil {
			return err
		}
	}
	now := s.now()
	entry := mustJSON(completedEntry{Success: true, Data: result, CompletedAt: formatTime(now)})
	msg := mustJSON(completeEvent{JobID: id, WorkerID: workerID, Status: StatusCompleted, Result: result, Timestamp: nowMs(now)})
	tok := token()
	r, err := s.run(ctx, func(Stage) spec {
		return spec{op: opComplete, id: id, script: completeScript,
			keys: func(k keyspace) []string {
				return []string{k.record(id), k.active(workerID), k.completed(), k.progress(id)}
			},
			shared: []string{workerKey(s.prefix, workerID)},
			args: []any{tok, id, workerID, formatTime(now), nowMs(now), entry, secondsArg(s.completedTTL),
				s.recordRetention.Milliseconds(), s.channel(chCompleteJob), msg, s.channel(chWorkerStatus)}}
	})
	if err != nil {
		return err
	}
	return heldError(opComplete, id, workerID, r)
}

// FailOutcome says what FailJob did.
type FailOutcome string

// The outcomes of a failure.
const (
	Retried FailOutcome = "retried" // back to pending, retry_count+1
	Failed  FailOutcome = "failed"  // failed for good
)

// FailJob records that the worker failed the job it holds, by the legacy
// rule: while retry_count+1 < max_retries, and retry is true, the job
// goes back to pending in the place the score formula gives it, with
// retry_count+1; otherwise it is failed, with its entry in jobs:failed.
// A worker that does not hold the job gets ErrNotHeld and nothing
// changes. retry false is the legacy canRetry=false, for failures that
// trying again cannot fix.
func (s *Store) FailJob(ctx context.Context, id, workerID, reason string, retry bool) (FailOutcome, error) {
	if err := validateHeld(id, workerID); err != nil {
		return "", err
	}
	if err := validateText("reason", reason, s.maxPayload); err != nil {
		return "", err
	}
	now := s.now()
	tok := token()
	r, err := s.run(ctx, func(Stage) spec {
		return spec{op: opFail, id: id, script: failScript,
			keys: func(k keyspace) []string {
				return []string{k.record(id), k.active(workerID), k.pending(), k.failed(), k.progress(id)}
			},
			shared: []string{workerKey(s.prefix, workerID)},
			args: []any{tok, id, workerID, reason, mustJSON(reason), formatTime(now), nowMs(now), flagArg(retry),
				s.formula.String(), secondsArg(s.failedTTL), s.recordRetention.Milliseconds(),
				s.channel(chJobFailed), s.channel(chWorkerStatus)}}
	})
	if err != nil {
		return "", err
	}
	if err := heldError(opFail, id, workerID, r); err != nil {
		return "", err
	}
	return FailOutcome(r.str(0)), nil
}

// CancelJob cancels a job that has not finished, pending or held by a
// worker: its status becomes cancelled, it leaves pending and the
// worker's active jobs, and jobs:failed gets the entry the legacy API
// writes for a cancel ({"error": reason, "cancelled": true}). The worker
// holding it gets cancel_job, so that a legacy worker stops; its later
// CompleteJob or FailJob gets ErrNotHeld. A finished job gives
// ErrJobFinished. reason may be empty: "Job cancelled by user".
func (s *Store) CancelJob(ctx context.Context, id, reason string) error {
	if err := validateID(id); err != nil {
		return err
	}
	if reason == "" {
		reason = "Job cancelled by user"
	}
	if err := validateText("reason", reason, maxTextLength); err != nil {
		return err
	}
	now := s.now()
	msg := mustJSON(cancelledEvent{JobID: id, Reason: reason, CancelledAt: formatTime(now)})
	tok := token()
	r, err := s.run(ctx, func(st Stage) spec {
		mirrorActive := ""
		if mns, ok := st.Mirror(); ok {
			mirrorActive = s.space(mns).activePrefix()
		}
		return spec{op: opCancel, id: id, script: cancelScript,
			keys: func(k keyspace) []string { return []string{k.record(id), k.pending(), k.failed(), k.progress(id)} },
			args: []any{tok, id, mustJSON(reason), formatTime(now), nowMs(now), s.space(st.Primary()).activePrefix(),
				mirrorActive, secondsArg(s.failedTTL), s.recordRetention.Milliseconds(),
				s.channel(chCancelJob), s.channel(chJobCancelled), msg}}
	})
	if err != nil {
		return err
	}
	switch r.status {
	case "OK":
		return nil
	case "FINISHED":
		return fmt.Errorf("%w: id=%q has status %s", ErrJobFinished, id, r.str(0))
	}
	return heldError(opCancel, id, "", r)
}
