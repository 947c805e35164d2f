package jobstore

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
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
// Every case starts from the same state: "pend" pending, "held" claimed
// by worker w1, "done" completed by w1, with dual-write on.
func badInputs() []badInput {
	submit := func(j Job) func(*Store) error {
		return func(s *Store) error { _, err := s.SubmitJob(ctx, j); return err }
	}
	get := func(id string) func(*Store) error {
		return func(s *Store) error { _, err := s.GetJob(ctx, id); return err }
	}
	claim := func(worker string, services ...string) func(*Store) error {
		return func(s *Store) error { _, err := s.ClaimJob(ctx, worker, services...); return err }
	}
	complete := func(id, worker string, result json.RawMessage) func(*Store) error {
		return func(s *Store) error { return s.CompleteJob(ctx, id, worker, result) }
	}
	hset := func(id string, kv ...string) func(b *backend) error {
		return func(b *backend) error {
			args := make([]any, len(kv))
			for i, v := range kv {
				args[i] = v
			}
			return b.rdb.HSet(ctx, b.key("job:"+id), args...).Err()
		}
	}
	hdel := func(id, field string) func(b *backend) error {
		return func(b *backend) error { return b.rdb.HDel(ctx, b.key("job:"+id), field).Err() }
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
	hash := func(b *backend, k string) error { return b.rdb.HSet(ctx, k, "f", "v").Err() }
	set := func(b *backend, k string) error { return b.rdb.SAdd(ctx, k, "x").Err() }
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
		{name: "id with DEL", call: submit(Job{ID: "a\x7f", Service: "s"}), want: e(ErrInvalidID), says: "control character"},
		{name: "id with non-UTF-8", call: submit(Job{ID: "a\xff\xfe", Service: "s"}), want: e(ErrInvalidID), says: "not valid UTF-8"},
		{name: "id of 129 bytes", call: submit(Job{ID: strings.Repeat("a", 129), Service: "s"}), want: e(ErrInvalidID), says: "129 bytes, longer than 128"},
		{name: "get with glob id", call: get("*"), want: e(ErrInvalidID), says: `'*'`},
		{name: "get with empty id", call: get(""), want: e(ErrInvalidID), says: "empty"},
		{name: "cancel with empty id", call: func(s *Store) error { return s.CancelJob(ctx, "") }, want: e(ErrInvalidID), says: "empty"},
		{name: "complete with empty id", call: complete("", "w1", nil), want: e(ErrInvalidID), says: "empty"},

		// Services.
		{name: "zero Job", call: submit(Job{}), want: e(ErrInvalidService), says: "service is empty"},
		{name: "blank service", call: submit(Job{Service: " \t"}), want: e(ErrInvalidService), says: "service is empty"},
		{name: "huge service", call: submit(Job{Service: strings.Repeat("s", 1<<20)}), want: e(ErrInvalidService), says: "1048576 bytes, longer than 128"},
		{name: "service with tab", call: submit(Job{Service: "comfy\tui"}), want: e(ErrInvalidService), says: "whitespace"},
		{name: "service not UTF-8", call: submit(Job{Service: "s\xc3"}), want: e(ErrInvalidService), says: "not valid UTF-8"},
		{name: "claim for an empty service", call: claim("w2", "s", ""), want: e(ErrInvalidService), says: "service is empty"},

		// Numbers.
		{name: "priority -1", call: submit(Job{Service: "s", Priority: -1}), want: e(ErrInvalidPriority), says: "priority -1 is outside 0..1000"},
		{name: "priority 1001", call: submit(Job{Service: "s", Priority: 1001}), want: e(ErrInvalidPriority), says: "priority 1001"},
		{name: "priority MaxInt", call: submit(Job{Service: "s", Priority: math.MaxInt}), want: e(ErrInvalidPriority), says: fmt.Sprint(math.MaxInt)},
		{name: "workflow priority -1", call: submit(Job{Service: "s", WorkflowPriority: -1}), want: e(ErrInvalidPriority), says: "workflow priority -1"},
		{name: "max retries -1", call: submit(Job{Service: "s", MaxRetries: -1}), want: e(ErrInvalidMaxRetries), says: "-1 is outside 0..1000"},
		{name: "max retries 1001", call: submit(Job{Service: "s", MaxRetries: 1001}), want: e(ErrInvalidMaxRetries), says: "1001"},
		{name: "negative step", call: submit(Job{Service: "s", CurrentStep: -1}), want: e(ErrInvalidArgument), says: "negative workflow step"},
		{name: "created at in the year 10000", call: submit(Job{Service: "s", CreatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}), want: e(ErrInvalidArgument), says: "outside the years 0000..9999"},
		{name: "workflow datetime before 1970", call: submit(Job{Service: "s", WorkflowDatetime: time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC)}), want: e(ErrInvalidArgument), says: "workflow datetime 1969-12-31"},
		{name: "pending limit 0", call: func(s *Store) error { _, err := s.GetPendingJobs(ctx, 0); return err }, want: e(ErrInvalidArgument), says: "limit 0"},
		{name: "maintain interval 0", call: func(s *Store) error { return s.Maintain(ctx, 0) }, want: e(ErrInvalidArgument), says: "interval 0s"},

		// JSON and text.
		{name: "payload not JSON", call: submit(Job{Service: "s", Payload: json.RawMessage(`{"a":`)}), want: e(ErrInvalidPayload), says: "payload is not valid JSON"},
		{name: "payload of two values", call: submit(Job{Service: "s", Payload: json.RawMessage(`{} {}`)}), want: e(ErrInvalidPayload), says: "payload"},
		{name: "payload over 1 MiB", call: submit(Job{Service: "s", Payload: bigJSON}), want: e(ErrPayloadTooLarge), says: "payload is 1048578 bytes, limit 1048576"},
		{name: "requirements not JSON", call: submit(Job{Service: "s", Requirements: json.RawMessage(`gpu`)}), want: e(ErrInvalidPayload), says: "requirements"},
		{name: "requirements over 1 MiB", call: submit(Job{Service: "s", Requirements: bigJSON}), want: e(ErrPayloadTooLarge), says: "requirements"},
		{name: "result not JSON", call: complete("held", "w1", json.RawMessage(`{`)), want: e(ErrInvalidPayload), says: "result"},
		{name: "result over 1 MiB", call: complete("held", "w1", bigJSON), want: e(ErrPayloadTooLarge), says: "result"},
		{name: "reason not UTF-8", call: func(s *Store) error { return s.FailJob(ctx, "held", "w1", "\xff") }, want: e(ErrInvalidArgument), says: "reason is not valid UTF-8"},
		{name: "customer id too long", call: submit(Job{Service: "s", CustomerID: strings.Repeat("c", 2000)}), want: e(ErrInvalidArgument), says: "customer id is 2000 bytes"},
		{name: "extra field named status", call: submit(Job{Service: "s", Extra: map[string]string{"status": "done"}}), want: e(ErrInvalidArgument), says: `"status" is a known field`},
		{name: "extra value not UTF-8", call: submit(Job{Service: "s", Extra: map[string]string{"trace": "\xff"}}), want: e(ErrInvalidArgument), says: "extra field trace"},

		// Workers.
		{name: "claim with empty worker", call: claim(""), want: e(ErrInvalidWorker), says: "worker id is empty"},
		{name: "claim with blank worker", call: claim("  "), want: e(ErrInvalidWorker), says: "worker id is empty"},
		{name: "claim with 129-byte worker", call: claim(strings.Repeat("w", 129)), want: e(ErrInvalidWorker), says: "129 bytes"},
		{name: "complete with empty worker", call: complete("held", "", nil), want: e(ErrInvalidWorker), says: "worker id is empty"},
		{name: "extend with empty worker", call: func(s *Store) error { _, err := s.ExtendLease(ctx, "held", "", 0); return err }, want: e(ErrInvalidWorker), says: "worker id is empty"},
		{name: "complete a job another worker holds", call: complete("held", "w2", nil), want: e(ErrNotHeld), says: "held by worker w1"},
		{name: "fail a job another worker holds", call: func(s *Store) error { return s.FailJob(ctx, "held", "w2", "x") }, want: e(ErrNotHeld), says: "held by worker w1"},
		{name: "start a job another worker holds", call: func(s *Store) error { return s.StartJob(ctx, "held", "w2") }, want: e(ErrNotHeld), says: "held by worker w1"},
		{name: "extend a job another worker holds", call: func(s *Store) error { _, err := s.ExtendLease(ctx, "held", "w2", 0); return err }, want: e(ErrNotHeld), says: "held by worker w1"},
		{name: "complete a pending job", call: complete("pend", "w1", nil), want: e(ErrNotHeld), says: "its status is pending"},
		{name: "complete twice", call: complete("done", "w1", nil), want: e(ErrNotHeld, ErrJobFinished), says: "its status is completed"},
		{name: "fail a completed job", call: func(s *Store) error { return s.FailJob(ctx, "done", "w1", "x") }, want: e(ErrNotHeld, ErrJobFinished), says: "completed"},
		{name: "cancel a completed job", call: func(s *Store) error { return s.CancelJob(ctx, "done") }, want: e(ErrJobFinished), says: "has status completed"},
		{name: "complete a missing job", call: complete("nope", "w1", nil), want: e(ErrJobNotFound), says: `"nope"`},
		{name: "submit an existing id", call: submit(Job{ID: "pend", Service: "other"}), want: e(ErrJobExists), says: `"pend"`},

		// Corrupt records planted in Redis.
		{name: "record without status", plant: hdel("pend", "status"), call: get("pend"), want: e(ErrCorruptRecord), says: "field status=\"\": required field is missing"},
		{name: "record without service", plant: hdel("pend", "service_required"), call: get("pend"), want: e(ErrCorruptRecord), says: "service_required"},
		{name: "priority not a number", plant: hset("pend", "priority", "high"), call: get("pend"), want: e(ErrCorruptRecord), says: `priority="high": not an integer`},
		{name: "retry_count not an integer", plant: hset("pend", "retry_count", "1.5"), call: get("pend"), want: e(ErrCorruptRecord), says: `retry_count="1.5"`},
		{name: "max_retries not a number", plant: hset("pend", "max_retries", "three"), call: get("pend"), want: e(ErrCorruptRecord), says: "max_retries"},
		{name: "created_at not a time", plant: hset("pend", "created_at", "yesterday"), call: get("pend"), want: e(ErrCorruptRecord), says: `created_at="yesterday"`},
		{name: "payload not JSON in Redis", plant: hset("pend", "payload", "{oops"), call: get("pend"), want: e(ErrCorruptRecord), says: "payload"},
		{name: "unknown status", plant: hset("pend", "status", "sleeping"), call: get("pend"), want: e(ErrCorruptRecord), says: "unknown status"},
		{name: "id field of another job", plant: hset("pend", "id", "other"), call: get("pend"), want: e(ErrCorruptRecord), says: "does not match the key"},
		{name: "corrupt record in the pending list", plant: hset("pend", "priority", "x"), call: func(s *Store) error { _, err := s.GetPendingJobs(ctx, 10); return err }, want: e(ErrCorruptRecord), says: "priority"},
		{name: "held record without worker_id", plant: hdel("held", "worker_id"), call: complete("held", "w1", nil), want: e(ErrNotHeld), says: "held by worker "},
		{name: "record is a string: get", plant: replace("job:pend", str), call: get("pend"), want: e(ErrCorruptRecord), says: "WRONGTYPE"},
		{name: "record is a string: complete", plant: replace("job:held", str), call: complete("held", "w1", nil), want: e(ErrCorruptRecord), says: "job:held is a string, want a hash"},
		{name: "record is a list: cancel", plant: replace("job:pend", list), call: func(s *Store) error { return s.CancelJob(ctx, "pend") }, want: e(ErrCorruptRecord), says: "job:pend is a list"},
		{name: "pending queue is a string", plant: replace("jobs:pending", str), call: submit(Job{ID: "new", Service: "s"}), want: e(ErrCorruptRecord), says: "jobs:pending is a string, want a zset"},
		{name: "active queue is a hash", plant: replace("jobs:active", hash), call: claim("w2"), want: e(ErrCorruptRecord), says: "jobs:active is a hash"},
		{name: "completed queue is a set", plant: replace("jobs:completed", set), call: complete("held", "w1", nil), want: e(ErrCorruptRecord), says: "jobs:completed is a set"},
		{name: "failed queue is a list on recovery", plant: replace("jobs:failed", list), call: func(s *Store) error {
			s.now = func() time.Time { return time.Now().Add(24 * time.Hour) } // the lease of held has run out
			_, err := s.RecoverExpired(ctx)
			return err
		}, want: e(ErrCorruptRecord), says: "jobs:failed is a list"},
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
	require.GreaterOrEqual(t, len(cases), 30)
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
	for _, id := range []string{"done", "held"} {
		_, err := s.SubmitJob(ctx, Job{ID: id, Service: "s", Priority: len(id)})
		require.NoError(t, err)
		j, err := s.ClaimJob(ctx, "w1")
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

// TestOrphansDoNotBlockTheQueue puts queue entries whose records are gone
// ahead of a real job, more of them than several pages of claim
// candidates. The claim must reach the job behind them and remove the
// orphans it passed, and listing must pass over them.
func TestOrphansDoNotBlockTheQueue(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		_, err := s.SubmitJob(ctx, Job{ID: "real", Service: "s"})
		require.NoError(t, err)
		orphans := make([]redis.Z, 300)
		for i := range orphans {
			orphans[i] = redis.Z{Score: 9e15 - float64(i), Member: fmt.Sprint("gone", i)}
		}
		require.NoError(t, b.rdb.ZAdd(ctx, b.key("jobs:pending"), orphans...).Err())

		jobs, err := s.GetPendingJobs(ctx, 5)
		require.NoError(t, err)
		require.Len(t, jobs, 1)
		require.Equal(t, "real", jobs[0].ID)

		j, err := s.ClaimJob(ctx, "w", "s")
		require.NoError(t, err)
		require.Equal(t, "real", j.ID)
		requireNoKeys(t, b, "jobs:pending")
		_, err = s.ClaimJob(ctx, "w")
		require.ErrorIs(t, err, ErrNoJob)
		requireMirrored(t, b)
	})
}

// TestClaimCorruptRecord documents what a claim does with a pending record
// it cannot decode: the claim stands (the script cannot know what Go will
// fail to read), the caller gets ErrCorruptRecord naming the field, and
// the job behind it is claimed by the next call. The corrupt job comes
// back through lease recovery and ends failed once its retries are used
// up, so it never blocks the queue and is never lost.
func TestClaimCorruptRecord(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithLeaseDuration(time.Minute))
		_, err := s.SubmitJob(ctx, Job{ID: "bad", Service: "s", Priority: 9, MaxRetries: 1})
		require.NoError(t, err)
		_, err = s.SubmitJob(ctx, Job{ID: "good", Service: "s", Priority: 1})
		require.NoError(t, err)
		require.NoError(t, b.rdb.HSet(ctx, b.key("job:bad"), "created_at", "someday").Err())

		for round := range 2 {
			_, err = s.ClaimJob(ctx, "w")
			require.ErrorIs(t, err, ErrCorruptRecord)
			require.ErrorContains(t, err, `id="bad" field created_at="someday"`)
			if round == 0 {
				j, err := s.ClaimJob(ctx, "w")
				require.NoError(t, err)
				require.Equal(t, "good", j.ID, "the corrupt job does not block the one behind it")
			}
			b.clock.Advance(2 * time.Minute)
			_, err = s.RecoverExpired(ctx)
			require.NoError(t, err)
		}
		status, err := b.rdb.HGet(ctx, b.key("job:bad"), "status").Result()
		require.NoError(t, err)
		require.Equal(t, "failed", status)
		n, err := b.rdb.ZScore(ctx, b.key("jobs:failed"), "bad").Result()
		require.NoError(t, err)
		require.Positive(t, n)
	})
}
