package jobstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// submitScript stores a new job and queues it, as the legacy API does: the
// record's fields, then its entry in pending, then the job_submitted
// message (and workflow_submitted for a workflow's first step).
//
// A record that exists and holds this call's token among its last ones is
// this very submit run a second time (go-redis sends a script again when its reply was
// lost): it reports OK and writes nothing.
//
//	KEYS[1] -> job:<id>       KEYS[3] -> step:<id>       (mirror)
//	KEYS[2] -> jobs:pending   KEYS[4] -> steps:pending   (mirror)
//	KEYS[#KEYS] -> jobstore:stage; ARGV[1..3] -> mirror, log, stage (every script: see lua.go)
//	ARGV[4] -> token
//	ARGV[5] -> id
//	ARGV[6] -> score
//	ARGV[7] -> job_submitted channel, ARGV[8] -> its message
//	ARGV[9] -> workflow_submitted channel, ARGV[10] -> its message, or ''
//	ARGV[11..] -> field, value, ... (the token's field last)
//	Reply: OK | EXISTS | WRONGTYPE detail
var submitScript = redis.NewScript(newScriptText(luaCore, luaTokens, `
if redis.call('EXISTS', KEYS[1]) == 1 then
  local bad = wrongtype(KEYS[1], 'hash')
  if bad then return done('WRONGTYPE', bad) end
  if has_token(KEYS[1], ARGV[4]) then return done('OK') end
  return done('EXISTS')
end
local r = redis.pcall('ZADD', KEYS[2], ARGV[6], ARGV[5])
if type(r) == 'table' and r.err then
  -- The first write: a key of the wrong type, or Redis refusing it (OOM).
  -- Either way nothing was written.
  if string.sub(r.err, 1, 9) == 'WRONGTYPE' then return done('WRONGTYPE', KEYS[2] .. ': ' .. r.err) end
  return redis.error_reply(r.err)
end
redis.call('HSET', KEYS[1], unpack(ARGV, 11))
if ARGV[10] ~= '' then redis.call('PUBLISH', ARGV[9], ARGV[10]) end
redis.call('PUBLISH', ARGV[7], ARGV[8])
mirror_key(KEYS[1], KEYS[3])
mirror_member(KEYS[2], KEYS[4], ARGV[5])
return done('OK')
`))

// decodeSubmit maps the submit script's reply to SubmitJob's error.
func decodeSubmit(id string, r reply) error {
	switch r.status {
	case "OK":
		return nil
	case "EXISTS":
		return fmt.Errorf("%w: id=%q", ErrJobExists, id)
	case "WRONGTYPE":
		return fmt.Errorf("%w: submit id=%q: %s", ErrCorruptRecord, id, r.str(0))
	}
	return unexpected(opSubmit, id, r)
}

// SubmitJob stores a new pending job and queues it, and returns its id,
// writing what the legacy API writes: the record with all its fields (” for
// those absent), its entry in jobs:pending scored by the Store's formula
// (ScoreAPI by default), and the job_submitted message. An empty j.ID gets a
// new UUID, priority 0 becomes DefaultPriority and max retries 0
// DefaultMaxRetries.
//
// An id that exists gives ErrJobExists. Invalid input gives an error
// wrapping one of the ErrInvalid sentinels (or ErrPayloadTooLarge) and
// writes nothing. The record, its queue entry, the message and, when the
// stage dual-writes, their mirror are one atomic step and one round trip.
func (s *Store) SubmitJob(ctx context.Context, j Job) (string, error) {
	sp, err := s.submitSpec(j)
	if err != nil {
		return "", err
	}
	r, err := s.run(ctx, func(Stage) spec { return sp })
	if err != nil {
		return "", err
	}
	if err := decodeSubmit(sp.id, r); err != nil {
		return "", err
	}
	return sp.id, nil
}

// submitSpec validates j and describes its submit.
func (s *Store) submitSpec(j Job) (spec, error) {
	now := s.now()
	j = withDefaults(j, now)
	if err := validateSubmit(&j, s.maxPayload); err != nil {
		return spec{}, err
	}
	tok := token()
	fields := append(submitRecord(&j), fOpToken, tok)
	submitted, workflow := submitEvents(&j, now)
	args := make([]any, 0, 8+len(fields))
	args = append(args, tok, j.ID, scoreArg(s.formula.jobScore(&j)),
		s.channel(chJobSubmitted), submitted, s.channel(chWorkflowSubmitted), workflow)
	args = append(args, fields...)
	return spec{op: opSubmit, id: j.ID, script: submitScript, args: args,
		keys: func(k keyspace) []string { return []string{k.record(j.ID), k.pending()} }}, nil
}

// MaxBatch is the most jobs SubmitJobs takes in one call.
const MaxBatch = 10000

// SubmitJobs submits many jobs in as few round trips as it can: their
// writes go out pipelined, each exactly SubmitJob's, atomic with its
// mirror. The batch as a whole is not atomic.
//
// Every job is validated before anything is sent: if any is invalid,
// SubmitJobs returns an error naming its index and writes nothing. After
// that, ids[i] is the id of jobs[i], or "" for a job that was not written;
// the error then joins one error per such job, each naming its index and
// wrapping the cause (ErrJobExists, ErrCorruptRecord, a network error...).
func (s *Store) SubmitJobs(ctx context.Context, jobs []Job) ([]string, error) {
	if len(jobs) > MaxBatch {
		return nil, fmt.Errorf("%w: %d jobs, more than MaxBatch (%d)", ErrInvalidArgument, len(jobs), MaxBatch)
	}
	specs := make([]spec, len(jobs))
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		sp, err := s.submitSpec(j)
		if err != nil {
			return nil, fmt.Errorf("job %d: %w", i, err)
		}
		specs[i], ids[i] = sp, sp.id
	}
	var errs []error
	for i, err := range s.execAll(ctx, func(i int, _ Stage) spec { return specs[i] }, len(specs),
		func(i int, r reply) error { return decodeSubmit(ids[i], r) }) {
		if err != nil {
			ids[i] = ""
			errs = append(errs, fmt.Errorf("job %d: %w", i, err))
		}
	}
	return ids, errors.Join(errs...)
}

// unexpected is the error for a script status its decoder does not know.
func unexpected(op, id string, r reply) error {
	return fmt.Errorf("jobstore: %s id=%q: unexpected script status %q", op, id, r.status)
}
