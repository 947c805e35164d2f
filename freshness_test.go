package jobstore

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// freshnessProbe returns, for each record KEYS[i], its freshness as Lua
// reads it, numbers as text so that nothing is lost in the reply, and
// fresher(KEYS[i], KEYS[i+1]).
var freshnessProbe = redis.NewScript(scoreLua + luaStatus + freshnessLua + `
local out = {}
for i = 1, #KEYS do
  local r, k, t = freshness(KEYS[i])
  local c = 0
  if i < #KEYS then c = fresher(KEYS[i], KEYS[i + 1]) end
  out[i] = {string.format('%.17g', r), k, string.format('%.17g', t), c}
end
return out
`)

// freshnessInputs are values of the fields freshness reads: the forms
// records hold, and junk.
var (
	retryInputs = []string{"", "0", "1", "2", " 3", "+4", "-1", "3abc", "NaN", "1e3", "0x10", " ", "\t7",
		"9007199254740992", "9007199254740993", "-9007199254740993", "99999999999999999999", "Infinity", "-0", "1.9"}
	statusInputs = []string{"", "weird", "PENDING", "pending", "queued", "assigned", "accepted", "in_progress",
		"completed", "failed", "cancelled", "timeout", "unworkable"}
	timeInputs = []string{"", "NaN", "abc", "2026-11-28T12:00:00.000Z", "2026-11-28T12:00:00Z",
		"2026-11-28 12:00:00", "2026-11-28", "2026-11-28T12:00:00.123456+02:00", "2026-11-28T12:00:00-0530",
		"1764331200.123456", "1764331200.1", "1764331200", "1764331200123", "999999999999999", "9999999999999999",
		"1969-12-31T23:59:59.999Z", "0000-01-01T00:00:00Z", "2026-13-01", "2026-11-28T25:00:00Z", "1e12",
		"123456789012.5", "1234567890123.5", "2026-11-28T12:00:00.Z", "2026-02-31T00:00:00Z", " 1764331200"}
)

// randomRecord draws a record's fields from the inputs, leaving some out.
func randomRecord(r *rand.Rand) map[string]string {
	pick := func(vals []string) string {
		if r.IntN(4) == 0 { // a value of another form: a real time or count
			return strconv.FormatInt(1_700_000_000_000+r.Int64N(1e11), 10)
		}
		return vals[r.IntN(len(vals))]
	}
	h := map[string]string{fID: "x"}
	if r.IntN(5) > 0 {
		h[fRetryCount] = pick(retryInputs)
	}
	if r.IntN(5) > 0 {
		h[fStatus] = statusInputs[r.IntN(len(statusInputs))]
	}
	for _, f := range lifecycleFields {
		if r.IntN(3) > 0 {
			h[f] = pick(timeInputs)
		}
	}
	return h
}

func TestFreshnessGoAndLuaAgree(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		r := rand.New(rand.NewPCG(1, 2))
		const n = 600
		recs := make([]map[string]string, n)
		keys := make([]string, n)
		pipe := b.rdb.Pipeline()
		for i := range recs {
			recs[i] = randomRecord(r)
			keys[i] = b.key(fmt.Sprintf("fresh:%d", i))
			pipe.HSet(ctx, keys[i], recs[i])
		}
		_, err := pipe.Exec(ctx)
		require.NoError(t, err)
		res, err := freshnessProbe.Run(ctx, b.rdb, keys).Slice()
		require.NoError(t, err)
		for i, row := range res {
			got := row.([]any)
			want := recordFreshness(recs[i])
			retries, err := strconv.ParseFloat(got[0].(string), 64)
			require.NoError(t, err)
			latest, err := strconv.ParseFloat(got[2].(string), 64)
			require.NoError(t, err)
			require.Equal(t, want.retries, retries, "retry_count of %v", recs[i])
			require.Equal(t, int64(want.rank), got[1], "rank of %v", recs[i])
			require.Equal(t, float64(want.latest), latest, "latest of %v", recs[i])
			if i+1 < n {
				require.Equal(t, int64(want.compare(recordFreshness(recs[i+1]))), got[3],
					"fresher(%v, %v)", recs[i], recs[i+1])
			}
		}
	})
}

func TestFreshnessOrder(t *testing.T) {
	at := func(d time.Duration) string { return formatTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).Add(d)) }
	submitted := map[string]string{fRetryCount: "0", fStatus: "pending", fCreatedAt: at(0)}
	claimed := map[string]string{fRetryCount: "0", fStatus: "assigned", fCreatedAt: at(0), fAssignedAt: "1767225601.000123"}
	started := map[string]string{fRetryCount: "0", fStatus: "in_progress", fCreatedAt: at(0), fStartedAt: at(2 * time.Second)}
	retried := map[string]string{fRetryCount: "1", fStatus: "pending", fCreatedAt: at(0), fFailedAt: at(3 * time.Second)}
	later := map[string]string{fRetryCount: "0", fStatus: "pending", fCreatedAt: at(time.Second)}
	noStatus := map[string]string{fCreatedAt: at(time.Hour)}
	for _, c := range []struct {
		name       string
		older, new map[string]string
	}{
		{"claim moves the status on", submitted, claimed},
		{"start moves it further", claimed, started},
		{"a retry outranks any status", started, retried},
		{"same status, later time", submitted, later},
		{"a known status outranks none", noStatus, submitted},
	} {
		t.Run(c.name, func(t *testing.T) {
			require.Equal(t, 1, recordFreshness(c.new).compare(recordFreshness(c.older)))
			require.Equal(t, -1, recordFreshness(c.older).compare(recordFreshness(c.new)))
		})
	}
	require.Zero(t, recordFreshness(submitted).compare(recordFreshness(submitted)))
}
