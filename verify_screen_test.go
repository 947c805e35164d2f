package jobstore

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The screen may only call a pair equal when Verify's judgement (the Go
// comparison it stands in front of) finds no difference, and it must call
// the common equal pairs equal, or it saves nothing. Pairs are made at
// random from a small alphabet so that equal ones are frequent, plus the
// cases that matter by hand: strings as records, other types, TTLs either
// side of the tolerance, empty values.
func TestVerifyScreenNeverHidesADifference(t *testing.T) {
	eachBackend(t, func(t *testing.T, b *backend) {
		s := newStore(t, b)
		m := &Migrator{s: s}
		v, err := m.newVerifier(JobNamespace, VerifyOptions{})
		require.NoError(t, err)
		rng := rand.New(rand.NewPCG(7, 11))

		type pair struct{ a, o string }
		var recs, subs []pair
		var recIDs []string
		var subIDs [][2]string
		write := func(key string, kind int, fields map[string]string, ttl time.Duration) {
			switch kind {
			case 0: // none
				return
			case 1:
				if len(fields) == 0 {
					return
				}
				require.NoError(t, b.rdb.HSet(ctx, key, fields).Err())
			case 2:
				require.NoError(t, b.rdb.Set(ctx, key, fields["v"], 0).Err())
			case 3:
				require.NoError(t, b.rdb.RPush(ctx, key, "x").Err())
			}
			if ttl > 0 {
				require.NoError(t, b.rdb.PExpire(ctx, key, ttl).Err())
			}
		}
		randFields := func() map[string]string {
			f := map[string]string{}
			for _, k := range []string{"status", "priority", "payload", "v"} {
				if rng.IntN(4) > 0 {
					f[k] = []string{"", "1", "pending", "é\x00z"}[rng.IntN(4)]
				}
			}
			return f
		}
		randTTL := func() time.Duration {
			return []time.Duration{0, 0, time.Hour, time.Hour + time.Second, time.Hour + 5*time.Second}[rng.IntN(5)]
		}
		for i := range 300 {
			id := fmt.Sprintf("s%d", i)
			kindA := []int{0, 1, 1, 1, 1, 2, 3}[rng.IntN(7)]
			kindO := kindA
			if rng.IntN(4) == 0 {
				kindO = rng.IntN(4)
			}
			fa := randFields()
			fo := fa
			if rng.IntN(3) == 0 {
				fo = randFields()
			}
			ttlA := randTTL()
			ttlO := ttlA
			if rng.IntN(3) == 0 {
				ttlO = randTTL()
			}
			if i%2 == 0 {
				write(s.space(JobNamespace).record(id), kindA, fa, ttlA)
				write(s.space(StepNamespace).record(id), kindO, fo, ttlO)
				recIDs = append(recIDs, id)
				recs = append(recs, pair{s.space(JobNamespace).record(id), s.space(StepNamespace).record(id)})
			} else {
				write(s.space(JobNamespace).sub(id, "progress"), kindA, fa, ttlA)
				write(s.space(StepNamespace).sub(id, "progress"), kindO, fo, ttlO)
				subIDs = append(subIDs, [2]string{id, "progress"})
				subs = append(subs, pair{s.space(JobNamespace).sub(id, "progress"), s.space(StepNamespace).sub(id, "progress")})
			}
		}
		toPairs := func(ps []pair) [][2]string {
			out := make([][2]string, len(ps))
			for i, p := range ps {
				out[i] = [2]string{p.a, p.o}
			}
			return out
		}

		// Records: the judgement is recordDiff on what readRecords reads.
		maybe, err := v.screen(ctx, toPairs(recs), false)
		require.NoError(t, err)
		flagged := map[int]bool{}
		for _, i := range maybe {
			flagged[i] = true
		}
		pipe := b.rdb.Pipeline()
		read := v.readRecords(ctx, pipe, recIDs)
		require.NoError(t, execReads(ctx, pipe))
		got, err := read()
		require.NoError(t, err)
		passed, judgedEqual := 0, 0
		for i, id := range recIDs {
			d := v.recordDiff(id, got[i])
			if d == nil {
				judgedEqual++
			}
			if !flagged[i] {
				passed++
				require.Nil(t, d, "the screen passed record %s, which differs: %v", id, d)
			}
		}
		require.Equal(t, judgedEqual, passed, "records the judgement finds equal are all passed by the screen")

		// Sub-keys: the judgement is subKeyDiff on what readSubKey reads.
		maybe, err = v.screen(ctx, toPairs(subs), true)
		require.NoError(t, err)
		flagged = map[int]bool{}
		for _, i := range maybe {
			flagged[i] = true
		}
		passed, judgedEqual = 0, 0
		for i, sk := range subIDs {
			it := vitem{what: ItemSubKey, id: sk[0], sub: sk[1]}
			ta, err := b.rdb.Type(ctx, subs[i].a).Result()
			require.NoError(t, err)
			to, err := b.rdb.Type(ctx, subs[i].o).Result()
			require.NoError(t, err)
			pipe := b.rdb.Pipeline()
			rd := v.readSubKey(ctx, pipe, it, vtypes{ta, to})
			require.NoError(t, execReads(ctx, pipe))
			d := v.subKeyDiff(it, rd(), recPair{})
			// Lists are never passed by the screen, though they may be equal.
			if d == nil && ta != "list" {
				judgedEqual++
			}
			if !flagged[i] {
				passed++
				require.Nil(t, d, "the screen passed sub-key %s, which differs: %v", subs[i].a, d)
			}
		}
		require.Equal(t, judgedEqual, passed, "sub-keys the judgement finds equal are all passed by the screen")
		require.Greater(t, passed, 20, "the random pairs hold equal ones")
	})
}
