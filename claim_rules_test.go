package jobstore

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

var validIDProbe = redis.NewScript(luaValidID + `
local out = {}
for i, id in ipairs(ARGV) do out[i] = valid_id(id) and 1 or 0 end
return out
`)

// The claim passes over ids the finishing calls refuse, by luaValidID;
// the calls refuse them by validateID. The two must agree on every id, or
// a worker gets a job it cannot finish (or never gets one it could).
func TestLuaValidIDAgrees(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	inputs := []string{"", "a", "job-1", "a b", "a\tb", "a:b", "a*", "x?", "[x]", "{x}", `a\b`, "é", "日本",
		"a\u00a0b", "a\u0085b", "a\u1680b", "a\u2000b", "a\u200ab", "a\u200bb", "a\u2028b", "a\u202fb", "a\u3000b",
		"a\x7fb", "a\u009fb", "a\u00a1b", "\xff", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80", "\xf0\x9f\x98\x80",
		"\xe2\x82", strings.Repeat("a", MaxIDLength), strings.Repeat("a", MaxIDLength+1),
		strings.Repeat("é", MaxIDLength/2), strings.Repeat("é", MaxIDLength/2) + "a"}
	runes := []rune{'a', 'Z', '0', '-', '_', '.', ' ', '\t', ':', '*', '\\', 0, 0x7f, 0x85, 0xa0, 0xe9, 0x1680, 0x2000,
		0x2009, 0x200b, 0x2028, 0x205f, 0x3000, 0xfeff, 0xfffd, 0x1f600, 0x10ffff}
	for range 2000 {
		var b strings.Builder
		switch r.IntN(3) {
		case 0: // random bytes
			for range 1 + r.IntN(8) {
				b.WriteByte(byte(r.IntN(256)))
			}
		case 1: // runes, mostly valid
			for range 1 + r.IntN(8) {
				b.WriteRune(runes[r.IntN(len(runes))])
			}
		default: // any code point
			for range 1 + r.IntN(4) {
				b.WriteRune(rune(r.IntN(0x110000)))
			}
		}
		inputs = append(inputs, b.String())
	}
	eachBackend(t, func(t *testing.T, b *backend) {
		args := make([]any, len(inputs))
		for i, in := range inputs {
			args[i] = in
		}
		got, err := validIDProbe.Run(ctx, b.rdb, nil, args...).Int64Slice()
		require.NoError(t, err)
		valid := 0
		for i, in := range inputs {
			want := validateID(in) == nil
			if want {
				valid++
			}
			require.Equal(t, want, got[i] == 1, "id %q (valid UTF-8: %v)", in, utf8.ValidString(in))
		}
		require.Greater(t, valid, 200, "the inputs hold valid ids too")
	})
}

// HeldJobs lists what a worker holds, for a worker that restarts.
func TestHeldJobs(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		caps := registerWorker(t, s, "w", "s")
		held, err := s.HeldJobs(ctx, "w")
		require.NoError(t, err)
		require.Empty(t, held)
		var want []string
		for range 3 {
			id, err := s.SubmitJob(ctx, Job{Service: "s"})
			require.NoError(t, err)
			j, err := s.ClaimJob(ctx, caps)
			require.NoError(t, err)
			require.Equal(t, id, j.ID)
			want = append(want, id)
		}
		require.NoError(t, s.CompleteJob(ctx, want[0], "w", nil))
		held, err = s.HeldJobs(ctx, "w")
		require.NoError(t, err)
		require.ElementsMatch(t, want[1:], held)

		_, err = s.HeldJobs(ctx, "bad worker")
		require.ErrorIs(t, err, ErrInvalidWorker)
		require.NoError(t, b.rdb.Set(ctx, b.key("jobs:active:x"), "junk", 0).Err())
		_, err = s.HeldJobs(ctx, "x")
		require.ErrorIs(t, err, ErrCorruptRecord)
	})
}

// A jobs:failed of the wrong type refuses a fail for good (its one write
// there) and nothing else: retries go on. Found by review.
func TestJunkFailedHashStopsOnlyFailsForGood(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b, WithDualWrite(true))
		caps := registerWorker(t, s, "w", "s")
		id, err := s.SubmitJob(ctx, Job{Service: "s", MaxRetries: 2})
		require.NoError(t, err)
		require.NoError(t, b.rdb.Set(ctx, b.key("jobs:failed"), "junk", 0).Err())
		_, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		out, err := s.FailJob(ctx, id, "w", "boom", true)
		require.NoError(t, err)
		require.Equal(t, Retried, out)
		_, err = s.ClaimJob(ctx, caps)
		require.NoError(t, err)
		before := nsSnapshot(t, b, JobNamespace)
		_, err = s.FailJob(ctx, id, "w", "boom", true)
		require.ErrorIs(t, err, ErrCorruptRecord)
		require.Equal(t, before, nsSnapshot(t, b, JobNamespace), "nothing written")
	})
}
