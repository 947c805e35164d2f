package jobstore

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// ruleInputs are values found in legacy records, and junk.
var ruleInputs = []string{
	"", "0", "50", "-5", "+7", "007", " 42", "\t9", "50.5", "1e+21", "5e2", "NaN", "Infinity", "-Infinity",
	"abc", "12abc", "0x10", "9007199254740992", "9007199254740993", "99999999999999999999", "-0",
	"1764460800000", "1764460800.123456", "1764460800.1", "1764460800.", ".5",
	"2026-11-29T23:00:00.000Z", "2026-11-29T23:00:00Z", "2026-11-29T23:00:00.1234567Z",
	"2026-11-29T23:00:00+02:00", "2026-11-29T23:00:00-0530", "2026-11-29 23:00:00", "2026-11-29",
	"2026-11-29T23:00", "2026-13-01T00:00:00Z", "1970-01-01T00:00:00.000Z", "1969-12-31T23:59:59.999Z",
	"0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z", "Sun Nov 29 2026", "undefined", "null",
}

var rulesScript = redis.NewScript(scoreLua + `
local out = {}
for i = 2, #ARGV do
  local v
  if ARGV[1] == 'int' then v = parse_int(ARGV[i]) else v = parse_time_ms(ARGV[i]) end
  if v then out[#out + 1] = string.format('%.17g', v) else out[#out + 1] = 'nil' end
end
return out
`)

var recordScoreScript = redis.NewScript(scoreLua + `
return score_arg(record_score(KEYS[1], ARGV[1], tonumber(ARGV[2])))
`)

// TestLuaRulesAgree holds the rules that exist in Go and in Lua
// together: integer and time parsing, and the score of a record.
func TestLuaRulesAgree(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	inputs := append([]string(nil), ruleInputs...)
	for range 300 {
		inputs = append(inputs,
			strconv.FormatInt(r.Int64N(1<<55)-1<<54, 10),
			strconv.FormatInt(r.Int64N(5e12), 10),
			fmt.Sprintf("%d.%06d", r.Int64N(3e9), r.Int64N(1e6)),
			time.UnixMilli(r.Int64N(4e12)).UTC().Format(isoLayout),
			time.UnixMilli(r.Int64N(4e12)).In(time.FixedZone("x", int(r.Int64N(50000))-25000)).Format("2006-01-02T15:04:05.999999999-07:00"),
		)
	}
	eachBackend(t, func(t *testing.T, b *backend) {
		ctx := context.Background()
		for _, kind := range []string{"int", "time"} {
			args := []any{kind}
			for _, in := range inputs {
				args = append(args, in)
			}
			got, err := rulesScript.Run(ctx, b.rdb, nil, args...).StringSlice()
			require.NoError(t, err)
			for i, in := range inputs {
				var f float64
				var ok bool
				if kind == "int" {
					f, ok = parseIntJS(in)
				} else {
					var ms int64
					ms, ok = parseTimeMs(in)
					f = float64(ms)
				}
				want := "nil"
				if ok {
					want = strconv.FormatFloat(f, 'f', -1, 64)
				}
				g := got[i]
				if g != "nil" {
					gf, err := strconv.ParseFloat(g, 64)
					require.NoError(t, err)
					g = strconv.FormatFloat(gf, 'f', -1, 64)
				}
				require.Equal(t, want, g, "%s %q", kind, in)
			}
		}
		now := b.clock.Now().UnixMilli()
		key := b.key("rule-record")
		for i := range 400 {
			h := map[string]string{}
			for _, f := range []string{fPriority, fCreatedAt, fWorkflowPriority, fWorkflowDatetime} {
				if r.IntN(4) > 0 {
					h[f] = inputs[r.IntN(len(inputs))]
				}
			}
			for _, formula := range []ScoreFormula{ScoreAPI, ScoreService} {
				require.NoError(t, b.rdb.Del(ctx, key).Err())
				if len(h) > 0 {
					require.NoError(t, b.rdb.HSet(ctx, key, h).Err())
				}
				got, err := recordScoreScript.Run(ctx, b.rdb, []string{key}, formula.String(), now).Text()
				require.NoError(t, err)
				gf, err := strconv.ParseFloat(got, 64)
				require.NoError(t, err, "case %d %v", i, h)
				want := formula.recordScore(h, now)
				require.False(t, math.IsNaN(want) || math.IsInf(want, 0), "case %d %v", i, h)
				require.Equal(t, want, gf, "case %d %v %s", i, h, formula)
			}
		}
	})
}

// TestScoreFormulas checks the formulas against values the legacy
// JavaScript computes (node: 60 * 1e15 - Math.floor(1764460800123 / 1000)
// and 60 * 1000000 + (Number.MAX_SAFE_INTEGER - 1764460800123)).
func TestScoreFormulas(t *testing.T) {
	ms := int64(1764460800123)
	require.Equal(t, "59999998235539200", strconv.FormatFloat(ScoreAPI.Score(60, ms), 'f', -1, 64))
	require.Equal(t, "9005434853940868", strconv.FormatFloat(ScoreService.Score(60, ms), 'f', -1, 64))
	f, p, tm := ParseScore(ScoreAPI.Score(60, ms))
	require.Equal(t, ScoreAPI, f)
	require.Equal(t, 60, p)
	require.Equal(t, time.UnixMilli(ms).Truncate(time.Second).UTC(), tm)
	f, p, _ = ParseScore(ScoreService.Score(60, ms))
	require.Equal(t, ScoreService, f)
	require.Equal(t, -1, p)
	f, p, _ = ParseScore(ScoreAPI.Score(9, ms))
	require.Equal(t, ScoreAPI, f, "priority 9 API scores are not taken for service ones")
	require.Equal(t, 9, p)
	f, p, _ = ParseScore(ScoreAPI.Score(0, ms))
	require.Equal(t, ScoreAPI, f)
	require.Equal(t, 0, p)
}
