package jobstore

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// snapshotKeys describes every key under the backend's prefix: its type,
// its absolute expiry time and its whole content, so that two snapshots
// are equal exactly when nothing under the prefix was written in between.
// It reads Redis directly, independently of the library.
func snapshotKeys(t testing.TB, b *backend) map[string]string {
	t.Helper()
	ctx := context.Background()
	snap := make(map[string]string)
	for _, key := range scanKeys(t, b.rdb, b.prefix+"*") {
		typ, err := b.rdb.Type(ctx, key).Result()
		require.NoError(t, err)
		exp, err := b.rdb.PExpireTime(ctx, key).Result()
		require.NoError(t, err)
		var content string
		switch typ {
		case "hash":
			h, err := b.rdb.HGetAll(ctx, key).Result()
			require.NoError(t, err)
			var parts []string
			for _, k := range slices.Sorted(maps.Keys(h)) {
				parts = append(parts, fmt.Sprintf("%q=%q", k, h[k]))
			}
			content = strings.Join(parts, " ")
		case "zset":
			z, err := b.rdb.ZRangeWithScores(ctx, key, 0, -1).Result()
			require.NoError(t, err)
			content = fmt.Sprint(z)
		case "string":
			content, err = b.rdb.Get(ctx, key).Result()
			require.NoError(t, err)
		case "list":
			l, err := b.rdb.LRange(ctx, key, 0, -1).Result()
			require.NoError(t, err)
			content = fmt.Sprintf("%q", l)
		case "set":
			m, err := b.rdb.SMembers(ctx, key).Result()
			require.NoError(t, err)
			slices.Sort(m)
			content = fmt.Sprintf("%q", m)
		case "stream":
			xs, err := b.rdb.XRange(ctx, key, "-", "+").Result()
			require.NoError(t, err)
			content = fmt.Sprint(xs)
		default:
			content = "?"
		}
		snap[strings.TrimPrefix(key, b.prefix)] = fmt.Sprintf("%s exp=%d %s", typ, exp.Milliseconds(), content)
	}
	return snap
}
