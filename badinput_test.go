package jobstore

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// badInput is one call through the public API that must be refused.
type badInput struct {
	name string
	// plant, when set, puts corrupt data in Redis before the call.
	plant func(b *backend) error
	call  func(s *Store) error
	want  []error // sentinels the error must wrap
	says  string  // what the message must contain to name the problem
}

// badInputs is the systematic table of inputs the public API refuses.
// Every case starts from the same state (seedBadInputState): "pend"
// pending, "held" claimed by worker w1, "done" completed by w1, worker w1
// registered, with dual-write on.
func badInputs() []badInput {
	submit := func(j Job) func(*Store) error {
		return func(s *Store) error { _, err := s.SubmitJob(ctx, j); return err }
	}
	get := func(id string) func(*Store) error {
		return func(s *Store) error { _, err := s.GetJob(ctx, id); return err }
	}
	claim := func(c Capabilities) func(*Store) error {
		return func(s *Store) error { _, err := s.ClaimJob(ctx, c); return err }
	}
	w1 := Capabilities{WorkerID: "w1", Services: []string{"s"}}
	complete := func(id, worker string, result json.RawMessage) func(*Store) error {
		return func(s *Store) error { return s.CompleteJob(ctx, id, worker, result) }
	}
	fail := func(id, worker, reason string) func(*Store) error {
		return func(s *Store) error { _, err := s.FailJob(ctx, id, worker, reason, true); return err }
	}
	hset := func(key string, kv ...string) func(b *backend) error {
		return func(b *backend) error {
			args := make([]any, len(kv))
			for i, v := range kv {
				args[i] = v
			}
			return b.rdb.HSet(ctx, b.key(key), args...).Err()
		}
	}
	replace := func(key string, write func(b *backend, key string) error) func(b *backend) error {
		return func(b *backend) error {
			if err := b.rdb.Del(ctx, b.key(key)).Err(); err != nil {
				return err
			}
			return write(b, b.key(key))
		}
	}
	str := func(b *backend, k string) error { return b.rdb.Set(ctx, k, "text", 0).Err() }
	list := func(b *backend, k string) error { return b.rdb.RPush(ctx, k, "x").Err() }
	set := func(b *backend, k string) error { return b.rdb.SAdd(ctx, k, "x").Err() }
	zset := func(b *backend, k string) error { return b.rdb.ZAdd(ctx, k, redisZ(1, "x")).Err() }
	bigJSON := json.RawMessage(`"` + strings.Repeat("x", DefaultMaxPayloadBytes) + `"`)
	e := func(errs ...error) []error { return errs }

	return []badInput{
		// Ids. Each would make a key that globs, nests or collides.
		{name: "id with *", call: submit(Job{ID: "a*", Service: "s"}), want: e(ErrInvalidID), says: `contains '*'`},
		{name: "id with ?", call: submit(Job{ID: "a?", Service: "s"}), want: e(ErrInvalidID), says: `contains '?'`},
		{name: "id with [", call: submit(Job{ID: "a[0]", Service: "s"}), want: e(ErrInvalidID), says: `contains '['`},
		{name: "id with :", call: submit(Job{ID: "a:progress", Service: "s"}), want: e(ErrInvalidID), says: `contains ':'`},
		{name: "id with {", call: submit(Job{ID: "{tag}", Service: "s"}), want: e(ErrInvalidID), says: `contains '{'`},
		{name: `id with \`, call: submit(Job{ID: `a\b`, Service: "s"}), want: e(ErrInvalidID), says: `contains '\\'`},
		{name: "id with space", call: submit(Job{ID: "a b", Service: "s"}), want: e(ErrInvalidID), says: "whitespace"},
		{name: "id with newline", call: submit(Job{ID: "a\nb", Service: "s"}), want: e(ErrInvalidID), says: "control character"},
		{name: "id with NUL", call: submit(Job{ID: "a\x00", Service: "s"}), want: e(ErrInvalidID), says: "control character"},
		{name: "id with non-UTF-8", call: submit(Job{ID: "a\xff\xfe", Service: "s"}), want: e(ErrInvalidID), says: "not valid UTF-8"},
		{name: "id of 129 bytes", call: submit(Job{ID: strings.Repeat("a", 129), Service: "s"}), want: e(ErrInvalidID), says: "129 bytes, longer than 128"},
		{name: "get with glob id", call: get("*"), want: e(ErrInvalidID), says: `'*'`},
		{name: "get with empty id", call: get(""), want: e(ErrInvalidID), says: "empty"},
		{name: "cancel with empty id", call: func(s *Store) error { return s.CancelJob(ctx, "", "") }, want: e(ErrInvalidID), says: "empty"},
		{name: "complete with empty id", call: complete("", "w1", nil), want: e(ErrInvalidID), says: "empty"},

		// Services.
		{name: "zero Job", call: submit(Job{}), want: e(ErrInvalidService), says: "service is empty"},
		{name: "blank service", call: submit(Job{Service: " \t"}), want: e(ErrInvalidService), says: "whitespace"},
		{name: "huge service", call: submit(Job{Service: strings.Repeat("s", 1<<20)}), want: e(ErrInvalidService), says: "1048576 bytes, longer than 128"},
		{name: "service not UTF-8", call: submit(Job{Service: "s\xc3"}), want: e(ErrInvalidService), says: "not valid UTF-8"},
		{name: "claim with no services", call: claim(Capabilities{WorkerID: "w1"}), want: e(ErrInvalidService), says: "has no services"},
		{name: "claim for an empty service", call: claim(Capabilities{WorkerID: "w1", Services: []string{"s", ""}}), want: e(ErrInvalidService), says: "service is empty"},

		// Numbers.
		{name: "priority -1", call: submit(Job{Service: "s", Priority: -1}), want: e(ErrInvalidPriority), says: "priority -1 is outside 0..1000"},
		{name: "priority 1001", call: submit(Job{Service: "s", Priority: 1001}), want: e(ErrInvalidPriority), says: "priority 1001"},
		{name: "priority MaxInt", call: submit(Job{Service: "s", Priority: math.MaxInt}), want: e(ErrInvalidPriority), says: fmt.Sprint(math.MaxInt)},
		{name: "workflow priority -1", call: submit(Job{Service: "s", WorkflowPriority: -1}), want: e(ErrInvalidPriority), says: "workflow priority -1"},
		{name: "max retries -1", call: submit(Job{Service: "s", MaxRetries: -1}), want: e(ErrInvalidMaxRetries), says: "-1 is outside 0..1000"},
		{name: "max retries 1001", call: submit(Job{Service: "s", MaxRetries: 1001}), want: e(ErrInvalidMaxRetries), says: "1001"},
		{name: "negative step", call: submit(Job{Service: "s", CurrentStep: -1}), want: e(ErrInvalidArgument), says: "negative workflow step"},
		{name: "created at in the year 10000", call: submit(Job{Service: "s", CreatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}), want: e(ErrInvalidArgument), says: "outside the years 1970..9999"},
		{name: "workflow datetime before 1970", call: submit(Job{Service: "s", WorkflowDatetime: time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC)}), want: e(ErrInvalidArgument), says: "workflow datetime 1969-12-31"},
		{name: "pending limit 0", call: func(s *Store) error { _, err := s.GetPendingJobs(ctx, 0); return err }, want: e(ErrInvalidArgument), says: "limit 0"},
		{name: "maintain interval 0", call: func(s *Store) error { return s.Maintain(ctx, 0) }, want: e(ErrInvalidArgument), says: "interval 0s"},
		{name: "progress NaN", call: func(s *Store) error { return s.ReportProgress(ctx, "held", "w1", math.NaN(), "") }, want: e(ErrInvalidArgument), says: "progress NaN"},
		{name: "progress 101", call: func(s *Store) error { return s.ReportProgress(ctx, "held", "w1", 101, "") }, want: e(ErrInvalidArgument), says: "outside 0..100"},
		{name: "heartbeat interval of a minute", call: func(s *Store) error { return s.KeepAlive(ctx, w1, time.Minute) }, want: e(ErrInvalidArgument), says: "under 1m0s"},
		{name: "too many jobs in a batch", call: func(s *Store) error { _, err := s.SubmitJobs(ctx, make([]Job, MaxBatch+1)); return err }, want: e(ErrInvalidArgument), says: "more than MaxBatch"},
		{name: "an invalid job in a batch", call: func(s *Store) error {
			_, err := s.SubmitJobs(ctx, []Job{{Service: "s"}, {Service: "s", Priority: -3}})
			return err
		}, want: e(ErrInvalidPriority), says: "job 1: "},

		// JSON and text.
		{name: "payload not JSON", call: submit(Job{Service: "s", Payload: json.RawMessage(`{"a":`)}), want: e(ErrInvalidPayload), says: "payload is not valid JSON"},
		{name: "payload of two values", call: submit(Job{Service: "s", Payload: json.RawMessage(`{} {}`)}), want: e(ErrInvalidPayload), says: "payload"},
		{name: "payload over 1 MiB", call: submit(Job{Service: "s", Payload: bigJSON}), want: e(ErrPayloadTooLarge), says: "payload is 1048578 bytes, limit 1048576"},
		{name: "requirements a number", call: submit(Job{Service: "s", Requirements: json.RawMessage(`5`)}), want: e(ErrInvalidPayload), says: "requirements must be a JSON object, not 5"},
		{name: "requirements a list", call: submit(Job{Service: "s", Requirements: json.RawMessage(`["gpu"]`)}), want: e(ErrInvalidPayload), says: "must be a JSON object"},
		{name: "requirements not JSON", call: submit(Job{Service: "s", Requirements: json.RawMessage(`gpu`)}), want: e(ErrInvalidPayload), says: "requirements"},
		{name: "requirements over 1 MiB", call: submit(Job{Service: "s", Requirements: bigJSON}), want: e(ErrPayloadTooLarge), says: "requirements"},
		{name: "ctx not JSON", call: submit(Job{Service: "s", Ctx: json.RawMessage(`{`)}), want: e(ErrInvalidPayload), says: "ctx"},
		{name: "result not JSON", call: complete("held", "w1", json.RawMessage(`{`)), want: e(ErrInvalidPayload), says: "result"},
		{name: "result over 1 MiB", call: complete("held", "w1", bigJSON), want: e(ErrPayloadTooLarge), says: "result"},
		{name: "reason not UTF-8", call: fail("held", "w1", "\xff"), want: e(ErrInvalidArgument), says: "reason is not valid UTF-8"},
		{name: "progress message not UTF-8", call: func(s *Store) error { return s.ReportProgress(ctx, "held", "w1", 1, "\xff") }, want: e(ErrInvalidArgument), says: "message"},
		{name: "customer id too long", call: submit(Job{Service: "s", CustomerID: strings.Repeat("c", 2000)}), want: e(ErrInvalidArgument), says: "customer id is 2000 bytes"},
		{name: "extra field named status", call: submit(Job{Service: "s", Extra: map[string]string{"status": "done"}}), want: e(ErrInvalidArgument), says: `"status" is a known field`},
		{name: "extra field named jobstore_op", call: submit(Job{Service: "s", Extra: map[string]string{fOpToken: "x"}}), want: e(ErrInvalidArgument), says: `"jobstore_op" is a known field`},
		{name: "extra value not UTF-8", call: submit(Job{Service: "s", Extra: map[string]string{"trace": "\xff"}}), want: e(ErrInvalidArgument), says: "extra field trace"},
		{name: "capability repeating a field", call: claim(Capabilities{WorkerID: "w1", Services: []string{"s"}, Extra: map[string]any{"hardware": 1}}), want: e(ErrInvalidArgument), says: `Extra["hardware"]`},
		{name: "capability that is no JSON", call: claim(Capabilities{WorkerID: "w1", Services: []string{"s"}, Extra: map[string]any{"f": math.Inf(1)}}), want: e(ErrInvalidArgument), says: "capabilit"},

		// Workers.
		{name: "claim with empty worker", call: claim(Capabilities{Services: []string{"s"}}), want: e(ErrInvalidWorker), says: "worker id is empty"},
		{name: "claim with blank worker", call: claim(Capabilities{WorkerID: "  ", Services: []string{"s"}}), want: e(ErrInvalidWorker), says: "whitespace"},
		{name: "claim with 129-byte worker", call: claim(Capabilities{WorkerID: strings.Repeat("w", 129), Services: []string{"s"}}), want: e(ErrInvalidWorker), says: "129 bytes"},
		{name: "worker with ':'", call: claim(Capabilities{WorkerID: "a:heartbeat", Services: []string{"s"}}), want: e(ErrInvalidWorker), says: `contains ':'`},
		{name: "register a worker with '*'", call: func(s *Store) error {
			return s.RegisterWorker(ctx, Capabilities{WorkerID: "w*", Services: []string{"s"}})
		}, want: e(ErrInvalidWorker), says: `contains '*'`},
		{name: "claim by an unregistered worker", call: claim(Capabilities{WorkerID: "ghost", Services: []string{"s"}}), want: e(ErrNotRegistered), says: `worker="ghost" has no heartbeat`},
		{name: "complete with empty worker", call: complete("held", "", nil), want: e(ErrInvalidWorker), says: "worker id is empty"},
		{name: "complete a job another worker holds", call: complete("held", "w2", nil), want: e(ErrNotHeld), says: `worker="w2": not in its active jobs (status assigned)`},
		{name: "fail a job another worker holds", call: fail("held", "w2", "x"), want: e(ErrNotHeld), says: "not in its active jobs"},
		{name: "start a job another worker holds", call: func(s *Store) error { return s.StartJob(ctx, "held", "w2") }, want: e(ErrNotHeld), says: "not in its active jobs"},
		{name: "progress of a job another worker holds", call: func(s *Store) error { return s.ReportProgress(ctx, "held", "w2", 5, "") }, want: e(ErrNotHeld), says: "not in its active jobs"},
		{name: "complete a pending job", call: complete("pend", "w1", nil), want: e(ErrNotHeld), says: "(status pending)"},
		{name: "complete twice", call: complete("done", "w1", nil), want: e(ErrNotHeld, ErrJobFinished), says: "the job is completed"},
		{name: "fail a completed job", call: fail("done", "w1", "x"), want: e(ErrNotHeld, ErrJobFinished), says: "completed"},
		{name: "cancel a completed job", call: func(s *Store) error { return s.CancelJob(ctx, "done", "") }, want: e(ErrJobFinished), says: "has status completed"},
		{name: "complete a missing job", call: complete("nope", "w1", nil), want: e(ErrJobNotFound), says: `"nope"`},
		{name: "cancel a missing job", call: func(s *Store) error { return s.CancelJob(ctx, "nope", "") }, want: e(ErrJobNotFound), says: `"nope"`},
		{name: "submit an existing id", call: submit(Job{ID: "pend", Service: "other"}), want: e(ErrJobExists), says: `"pend"`},

		// Corrupt data planted in Redis.
		{name: "record without id field", plant: func(b *backend) error { return b.rdb.HDel(ctx, b.key("job:pend"), "id").Err() }, call: get("pend"), want: e(ErrCorruptRecord), says: "no id field"},
		{name: "id field of another job", plant: hset("job:pend", "id", "other"), call: get("pend"), want: e(ErrCorruptRecord), says: `its id field is "other"`},
		{name: "record is a string: get", plant: replace("job:pend", str), call: get("pend"), want: e(ErrCorruptRecord), says: "WRONGTYPE"},
		{name: "record is a string: complete", plant: replace("job:held", str), call: complete("held", "w1", nil), want: e(ErrCorruptRecord), says: "job:held is a string, want a hash"},
		{name: "record is a list: cancel", plant: replace("job:pend", list), call: func(s *Store) error { return s.CancelJob(ctx, "pend", "") }, want: e(ErrCorruptRecord), says: "job:pend is a list"},
		{name: "record is a set: submit over it", plant: replace("job:new", set), call: submit(Job{ID: "new", Service: "s"}), want: e(ErrCorruptRecord), says: "job:new is a set"},
		{name: "pending queue is a string", plant: replace("jobs:pending", str), call: submit(Job{ID: "new", Service: "s"}), want: e(ErrCorruptRecord), says: "jobs:pending"},
		// A generated id goes through the same script; the mirror's entry
		// must not be left behind either (the old MULTI path left it).
		{name: "pending queue is a string: generated id", plant: replace("jobs:pending", str), call: submit(Job{Service: "s"}), want: e(ErrCorruptRecord), says: "jobs:pending"},
		{name: "pending queue is a string: batch", plant: replace("jobs:pending", str), call: func(s *Store) error {
			_, err := s.SubmitJobs(ctx, []Job{{Service: "s"}, {ID: "b2", Service: "s"}})
			return err
		}, want: e(ErrCorruptRecord), says: "jobs:pending"},
		{name: "pending queue is a hash: claim", plant: replace("jobs:pending", func(b *backend, k string) error { return b.rdb.HSet(ctx, k, "f", "v").Err() }), call: claim(w1), want: e(ErrCorruptRecord), says: "jobs:pending is a hash, want a zset"},
		{name: "active hash is a zset (the old layout)", plant: replace("jobs:active:w1", zset), call: complete("held", "w1", nil), want: e(ErrCorruptRecord), says: "jobs:active:w1 is a zset, want a hash"},
		{name: "completed is a zset (the old layout)", plant: replace("jobs:completed", zset), call: complete("held", "w1", nil), want: e(ErrCorruptRecord), says: "jobs:completed is a zset, want a hash"},
		// A retry never writes jobs:failed and goes on (see
		// TestJunkFailedHashStopsOnlyFailsForGood); a fail for good stops.
		{name: "failed is a list on failure", plant: replace("jobs:failed", list), call: func(s *Store) error {
			_, err := s.FailJob(ctx, "held", "w1", "x", false)
			return err
		}, want: e(ErrCorruptRecord), says: "jobs:failed is a list"},
		{name: "failed is a list on recovery", plant: func(b *backend) error {
			if err := replace("jobs:failed", list)(b); err != nil {
				return err
			}
			return b.rdb.Del(ctx, b.key("worker:w1:heartbeat")).Err()
		}, call: func(s *Store) error { _, err := s.RecoverExpired(ctx); return err }, want: e(ErrCorruptRecord), says: "jobs:failed is a list"},
		{name: "worker hash is a string", plant: replace("worker:w1", str), call: complete("held", "w1", nil), want: e(ErrCorruptRecord), says: "worker:w1 is a string"},
		{name: "progress hash is a string", plant: replace("job:held:progress", str), call: func(s *Store) error { return s.ReportProgress(ctx, "held", "w1", 5, "") }, want: e(ErrCorruptRecord), says: "job:held:progress is a string"},
		{name: "queued record is gone: get", plant: func(b *backend) error { return b.rdb.Del(ctx, b.key("job:pend")).Err() }, call: get("pend"), want: e(ErrJobNotFound), says: `"pend"`},
		{name: "held record is gone: complete", plant: func(b *backend) error { return b.rdb.Del(ctx, b.key("job:held")).Err() }, call: complete("held", "w1", nil), want: e(ErrJobNotFound), says: `"held"`},
	}
}

// TestBadInput runs every case of badInputs on each backend. Each must
// give an error that wraps its sentinels and names the problem, write
// nothing at all (every key under the prefix, the mirror included, is
// compared before and after, values and expiry times too), and never
// panic.
func TestBadInput(t *testing.T) {
	cases := badInputs()
	require.GreaterOrEqual(t, len(cases), 80)
	eachBackend(t, func(t *testing.T, b *backend) {
		for i, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				bb := &backend{name: b.name, rdb: b.rdb, mr: b.mr, prefix: fmt.Sprintf("%scase%d:", b.prefix, i), clock: newFakeClock()}
				s := newStore(t, bb, WithDualWrite(true))
				seedBadInputState(t, s)
				if tc.plant != nil {
					require.NoError(t, tc.plant(bb))
				}
				before := snapshotKeys(t, bb)
				err := callNoPanic(t, func() error { return tc.call(s) })
				require.Error(t, err)
				for _, want := range tc.want {
					require.ErrorIs(t, err, want)
				}
				require.ErrorContains(t, err, tc.says)
				require.Equal(t, before, snapshotKeys(t, bb), "a refused call wrote something")
			})
		}
	})
}

func seedBadInputState(t *testing.T, s *Store) {
	t.Helper()
	caps := registerWorker(t, s, "w1", "s")
	for _, id := range []string{"done", "held"} {
		_, err := s.SubmitJob(ctx, Job{ID: id, Service: "s", Priority: len(id)})
		require.NoError(t, err)
		j, err := s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		require.Equal(t, id, j.ID)
	}
	require.NoError(t, s.CompleteJob(ctx, "done", "w1", nil))
	_, err := s.SubmitJob(ctx, Job{ID: "pend", Service: "s"})
	require.NoError(t, err)
}

// callNoPanic runs call and turns a panic into a test failure that says
// so, instead of a crash of the whole test binary.
func callNoPanic(t *testing.T, call func() error) (err error) {
	t.Helper()
	defer func() {
		if p := recover(); p != nil {
			t.Fatalf("panic: %v", p)
		}
	}()
	return call()
}
