package jobstore

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/redis/go-redis/v9"
)

// submitScript stores new jobs and queues them, each as the legacy API
// does: the record's fields, then its entry in pending, then the
// job_submitted message (and workflow_submitted for a workflow's first
// step), then, when the stage mirrors, the copy of the record and of the
// entry. It takes one job or several: concurrent submits go out together,
// in one run (see mergeSubmits), which spreads the script's fixed cost
// over them.
//
// A record that exists and holds the job's token among its last ones is
// this very submit run a second time (go-redis sends a script again when
// its reply was lost): that job is OK, and nothing is written for it.
//
//	KEYS[1] -> jobs:pending    KEYS[2] -> steps:pending (mirror)
//	KEYS[#KEYS] -> jobstore:stage; ARGV[1..3] -> mirror, log, stage (every script: see lua.go)
//	ARGV[4] -> record prefix (job:), ARGV[5] -> mirror record prefix (step:)
//	ARGV[6] -> job_submitted channel, ARGV[7] -> workflow_submitted channel
//	ARGV[8..] -> for each job: token, id, score, its job_submitted message,
//	  its workflow_submitted message or '', n, then n fields and values
//	  (the token's field last)
//	Reply: OK {} {} mirrored, then for each job: status (OK | REPLAY |
//	  EXISTS | WRONGTYPE | ERR), detail, mirror errors ('' when none)
var submitScript = redis.NewScript(newScriptText(luaCore, luaTokens, `
local rp, mrp = ARGV[4], ARGV[5]
local out, mirrored = {'OK', {}, {}, 0}, 0
local i = 8
while i <= #ARGV do
  local tok, id, score, msg, wmsg = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  local first = i + 6
  local last = i + 5 + tonumber(ARGV[i + 5])
  i = last + 1
  local rec = rp .. id
  local status, detail, errs = 'OK', '', {}
  if redis.call('EXISTS', rec) == 1 then
    local bad = wrongtype(rec, 'hash')
    if bad then status, detail = 'WRONGTYPE', bad
    elseif has_token(rec, tok) then status = 'REPLAY'
    else status = 'EXISTS' end
  else
    -- The first write: a key of the wrong type, or Redis refusing it
    -- (OOM) writes nothing for this job.
    local r = redis.pcall('ZADD', KEYS[1], score, id)
    if type(r) == 'table' and r.err then
      status, detail = 'ERR', r.err
      if string.sub(r.err, 1, 9) == 'WRONGTYPE' then status, detail = 'WRONGTYPE', KEYS[1] .. ': ' .. r.err end
    else
      redis.call('HSET', rec, unpack(ARGV, first, last))
      if wmsg ~= '' then redis.call('PUBLISH', ARGV[7], wmsg) end
      redis.call('PUBLISH', ARGV[6], msg)
      if MIRROR then
        mirrored = mirrored + 2
        local ok, e = pcall(function()
          local dst = mrp .. id
          local c = redis.pcall('COPY', rec, dst, 'REPLACE')
          if type(c) == 'table' and c.err then errs[#errs + 1] = dst .. ': ' .. c.err end
          local z = redis.pcall('ZADD', KEYS[2], score, id)
          if type(z) == 'table' and z.err then errs[#errs + 1] = KEYS[2] .. ': ' .. z.err end
        end)
        if not ok then errs[#errs + 1] = 'mirror: ' .. errtext(e) end
      end
    end
  end
  out[#out + 1] = status
  out[#out + 1] = detail
  out[#out + 1] = table.concat(errs, '; ')
end
out[4] = mirrored
return out
`))

// submitHeader is the number of ARGV before the jobs' parts.
const submitHeader = 7

// splitSubmit turns the reply of a submit run for n jobs into n replies of
// the shape every script has ({status, mirror errors, mirror log,
// mirrored, detail}), the one for each job's write. A reply of another
// shape (STAGE) is every job's.
func splitSubmit(res []any, ws []*write) [][]any {
	out := make([][]any, len(ws))
	if len(res) != 4+3*len(ws) {
		for k := range ws {
			out[k] = res
		}
		return out
	}
	for k, w := range ws {
		status, _ := res[4+3*k].(string)
		detail, _ := res[5+3*k].(string)
		merr, _ := res[6+3*k].(string)
		var errs, logs []any
		n := int64(0)
		if status == "REPLAY" {
			status = "OK" // written by the first run; nothing to mirror now
		} else if w.mirror && status == "OK" {
			n = 2
			if merr != "" {
				errs = []any{merr}
			} else if w.debug {
				rec, dst := w.argv[3].(string)+w.id, w.argv[4].(string)+w.id
				logs = []any{"copied " + rec + " → " + dst, "added " + w.id + " to " + w.keys[1]}
			}
		}
		out[k] = []any{status, errs, logs, n, detail}
	}
	return out
}

// mergeable reports whether two submit writes can go in one run: the same
// stage, keys and header.
func mergeable(a, b *write) bool {
	if a.script != submitScript || b.script != submitScript || a.st != b.st || a.mirror != b.mirror ||
		a.debug != b.debug || !slices.Equal(a.keys, b.keys) {
		return false
	}
	for i := range submitHeader {
		if a.argv[i] != b.argv[i] {
			return false
		}
	}
	return true
}

// mergeSubmits makes one write of submit writes that are mergeable: the
// header once, then each job's part.
func mergeSubmits(ws []*write) *write {
	m := &write{op: opSubmit, st: ws[0].st, script: submitScript, keys: ws[0].keys, mirror: ws[0].mirror, debug: ws[0].debug}
	m.argv = append(m.argv, ws[0].argv[:submitHeader]...)
	for _, w := range ws {
		m.argv = append(m.argv, w.argv[submitHeader:]...)
	}
	return m
}

// decodeSubmit maps the submit script's reply to SubmitJob's error.
func decodeSubmit(id string, r reply) error {
	switch r.status {
	case "OK":
		return nil
	case "EXISTS":
		return fmt.Errorf("%w: id=%q", ErrJobExists, id)
	case "WRONGTYPE":
		return fmt.Errorf("%w: submit id=%q: %s", ErrCorruptRecord, id, r.str(0))
	case "ERR":
		return fmt.Errorf("jobstore: submit id=%q: %s", id, r.str(0))
	}
	return unexpected(opSubmit, id, r)
}

// SubmitJob stores a new pending job and queues it, and returns its id,
// writing what the legacy API writes: the record with all its fields (empty
// for those absent), its entry in jobs:pending scored by the Store's formula
// (ScoreAPI by default), and the job_submitted message. An empty j.ID gets a
// new UUID, priority 0 becomes DefaultPriority and max retries 0
// DefaultMaxRetries.
//
// An id that exists gives ErrJobExists. Invalid input gives an error
// wrapping one of the ErrInvalid sentinels (or ErrPayloadTooLarge) and
// writes nothing. The record, its queue entry, the message and, when the
// stage dual-writes, their mirror are one atomic step and one round trip.
//
// When the outcome is unknown (the context ended, the connection failed:
// Redis may have stored the job), the error comes with the job's id, even
// one SubmitJob generated. To retry safely, submit the job again with that
// id: ErrJobExists then means the first call stored it. Any other error
// comes with an empty id: nothing was stored.
func (s *Store) SubmitJob(ctx context.Context, j Job) (string, error) {
	build, id, err := s.submitSpec(j)
	if err != nil {
		return "", err
	}
	r, err := s.run(ctx, build)
	if err != nil {
		if r.status == "STAGE" {
			return "", err // refused by every try: nothing stored
		}
		return id, err
	}
	if err := decodeSubmit(id, r); err != nil {
		return "", err
	}
	return id, nil
}

// submitSpec validates j and describes its submit, for a stage.
func (s *Store) submitSpec(j Job) (func(Stage) spec, string, error) {
	now := s.now()
	j = withDefaults(j, now)
	if err := validateSubmit(&j, s.maxPayload); err != nil {
		return nil, "", err
	}
	tok := token()
	fields := append(submitRecord(&j), fOpToken, tok)
	submitted, workflow := submitEvents(&j, now)
	id, score := j.ID, scoreArg(s.formula.jobScore(&j))
	return func(st Stage) spec {
		mrp := ""
		if mns, ok := st.Mirror(); ok {
			mrp = s.space(mns).recordPrefix()
		}
		args := make([]any, 0, 10+len(fields))
		args = append(args, s.space(st.Primary()).recordPrefix(), mrp,
			s.channel(chJobSubmitted), s.channel(chWorkflowSubmitted),
			tok, id, score, submitted, workflow, len(fields))
		return spec{op: opSubmit, id: id, script: submitScript, args: append(args, fields...),
			keys: func(k keyspace) []string { return []string{k.pending()} }}
	}, id, nil
}

// MaxBatch is the most jobs SubmitJobs takes in one call.
const MaxBatch = 10000

// SubmitJobs submits many jobs in as few round trips as it can: their
// writes go out pipelined, each exactly SubmitJob's, atomic with its
// mirror. The batch as a whole is not atomic.
//
// Every job is validated before anything is sent: if any is invalid,
// SubmitJobs returns an error naming its index and writes nothing. After
// that, ids[i] is the id of jobs[i], or "" for a job that was certainly
// not written; the error then joins one error per job that failed, each
// naming its index and wrapping the cause (ErrJobExists, ErrCorruptRecord,
// a network error...). A job whose outcome is unknown (a network error,
// the context's end) keeps its id, as with SubmitJob: retry it with that
// id.
func (s *Store) SubmitJobs(ctx context.Context, jobs []Job) ([]string, error) {
	if len(jobs) > MaxBatch {
		return nil, fmt.Errorf("%w: %d jobs, more than MaxBatch (%d)", ErrInvalidArgument, len(jobs), MaxBatch)
	}
	builds := make([]func(Stage) spec, len(jobs))
	ids := make([]string, len(jobs))
	for i, j := range jobs {
		build, id, err := s.submitSpec(j)
		if err != nil {
			return nil, fmt.Errorf("job %d: %w", i, err)
		}
		builds[i], ids[i] = build, id
	}
	var errs []error
	refused := make([]bool, len(jobs))
	for i, err := range s.execAll(ctx, func(i int, st Stage) spec { return builds[i](st) }, len(builds),
		func(i int, r reply) error {
			err := decodeSubmit(ids[i], r)
			refused[i] = err != nil // the script answered: nothing stored
			return err
		}) {
		if err != nil {
			if refused[i] {
				ids[i] = ""
			}
			errs = append(errs, fmt.Errorf("job %d: %w", i, err))
		}
	}
	return ids, errors.Join(errs...)
}

// unexpected is the error for a script status its decoder does not know.
func unexpected(op, id string, r reply) error {
	return fmt.Errorf("jobstore: %s id=%q: unexpected script status %q", op, id, r.status)
}
