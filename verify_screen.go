package jobstore

import (
	"context"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Verify's fast path. Comparing in Go means every record's fields cross
// the network twice, and on the bench that kept Redis busy with replies
// for 160 µs of CPU per job. Most pairs are equal, so a script first
// screens a chunk of pairs where they live and answers one integer per
// pair; only the pairs it cannot call equal are read and judged in Go, by
// the same code as before. The screen only ever says "certainly equal":
// it is a filter in front of the judgement, never a judgement of its own.

// verifyScreenScript takes pairs of keys (KEYS[2i-1], KEYS[2i]), the TTL
// tolerance in milliseconds (ARGV[1]) and whether strings count (ARGV[2],
// "1" for sub-keys; records must be hashes). It answers 1 for a pair
// whose two keys are both missing, or of the same type (a hash, or a
// string when allowed) with the same content and TTLs that are both
// absent or within the tolerance; 0 for anything else.
var verifyScreenScript = redis.NewScript(`
local tol = tonumber(ARGV[1])
local strings_ok = ARGV[2] == '1'
local out = {}
for i = 1, #KEYS, 2 do
  local a, o = KEYS[i], KEYS[i + 1]
  local ta, to = redis.call('TYPE', a).ok, redis.call('TYPE', o).ok
  local same = 0
  if ta == 'none' and to == 'none' then
    same = 1
  elseif ta == to and (ta == 'hash' or (ta == 'string' and strings_ok)) then
    local pa, po = redis.call('PTTL', a), redis.call('PTTL', o)
    if (pa > 0) == (po > 0) and (pa <= 0 or math.abs(pa - po) <= tol) then
      if ta == 'string' then
        if redis.call('GET', a) == redis.call('GET', o) then same = 1 end
      else
        local fa, fo = redis.call('HGETALL', a), redis.call('HGETALL', o)
        if #fa == #fo then
          local m = {}
          for j = 1, #fa, 2 do m[fa[j]] = fa[j + 1] end
          same = 1
          for j = 1, #fo, 2 do
            if m[fo[j]] ~= fo[j + 1] then
              same = 0
              break
            end
          end
        end
      end
    end
  end
  out[#out + 1] = same
end
return out
`)

// screen returns the indexes of the pairs that may differ. stringsOK lets
// two equal strings pass, as sub-keys may be strings while records must
// be hashes.
func (v *verifier) screen(ctx context.Context, pairs [][2]string, stringsOK bool) ([]int, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, 2*len(pairs))
	for _, p := range pairs {
		keys = append(keys, p[0], p[1])
	}
	tol := strconv.FormatInt(v.opts.TTLTolerance.Milliseconds(), 10)
	res, err := verifyScreenScript.Run(ctx, v.rdb, keys, tol, flagArg(stringsOK)).Int64Slice()
	if err != nil {
		return nil, redisError("verify: screen", "", err)
	}
	var maybe []int
	for i := range pairs {
		if i >= len(res) || res[i] != 1 {
			maybe = append(maybe, i)
		}
	}
	return maybe, nil
}

// pickAt returns the elements of s at the indexes.
func pickAt[T any](s []T, idx []int) []T {
	out := make([]T, len(idx))
	for i, j := range idx {
		out[i] = s[j]
	}
	return out
}
