package jobstore

import (
	"cmp"
	"strconv"
	"strings"
)

// Records carry no version, but a job's record only moves forward: every
// write raises retry_count (a retry), moves the status on (pending →
// assigned → in_progress → a final status) or adds a later lifecycle
// timestamp. So the freshness of a record is the tuple
//
//	(retry_count, status rank, latest lifecycle timestamp)
//
// compared in that order:
//
//   - retry_count is read as JavaScript's parseInt reads it (parseIntJS);
//     missing or unreadable counts as 0, as the fail script reads it.
//   - the status rank is statusRanks' (0 pending or queued, 1 assigned or
//     accepted, 2 in_progress, 3 final); a missing or unknown status
//     ranks -1, below every known one.
//   - the latest of created_at, assigned_at, started_at, completed_at,
//     failed_at and cancelled_at, in Unix ms, in the forms parseTimeMs
//     reads (ISO-8601, <secs>.<micros>, Unix ms); unreadable ones are
//     ignored, and a record without any is older than every record with
//     one.
//
// Backfill copies a record only over one that is missing or strictly
// older; Verify and Cleanup use the rule to tell a stale copy from one
// that would be lost. The rule exists twice, in Go and in freshnessLua;
// TestFreshnessGoAndLuaAgree holds them together.

// lifecycleFields are the timestamps whose latest is the third part of a
// record's freshness.
var lifecycleFields = []string{fCreatedAt, fAssignedAt, fStartedAt, fCompletedAt, fFailedAt, fCancelledAt}

// noTime is the latest timestamp of a record without a readable one:
// below every time parseTimeMs can return, and exact in a Lua number.
const noTime = -(1 << 53)

// freshness is a record's place in its job's life; see above.
type freshness struct {
	retries float64
	rank    int
	latest  int64
}

// recordFreshness reads the freshness of a record's fields.
func recordFreshness(h map[string]string) freshness {
	f := freshness{rank: -1, latest: noTime}
	if n, ok := parseIntJS(h[fRetryCount]); ok {
		f.retries = n
	}
	if r, ok := statusRanks[Status(h[fStatus])]; ok {
		f.rank = r
	}
	for _, name := range lifecycleFields {
		if ms, ok := parseTimeMs(h[name]); ok && ms > f.latest {
			f.latest = ms
		}
	}
	return f
}

// compare returns 1 when a is fresher than b, -1 when b is, and 0 when
// neither is.
func (a freshness) compare(b freshness) int {
	if c := cmp.Compare(a.retries, b.retries); c != 0 {
		return c
	}
	if c := cmp.Compare(a.rank, b.rank); c != 0 {
		return c
	}
	return cmp.Compare(a.latest, b.latest)
}

// freshnessLua is the rule for scripts. It needs scoreLua (parse_int,
// parse_time_ms) and luaStatus (RANK) before it.
//
//	freshness(key)  -> retries, rank, latest of the record at key
//	fresher(a, b)   -> 1, -1 or 0, as freshness.compare
//	same_hash(a, b) -> whether two hashes have the same fields and values
var freshnessLua = `
local NO_TIME = ` + itoa64(noTime) + `
local function freshness(key)
  local f = redis.call('HMGET', key, 'retry_count', 'status', ` + luaQuoted(lifecycleFields) + `)
  local latest = NO_TIME
  for i = 3, #f do
    local t = parse_time_ms(f[i])
    if t and t > latest then latest = t end
  end
  return parse_int(f[1]) or 0, RANK[f[2]] or -1, latest
end

local function cmp3(a1, a2, a3, b1, b2, b3)
  if a1 ~= b1 then return a1 > b1 and 1 or -1 end
  if a2 ~= b2 then return a2 > b2 and 1 or -1 end
  if a3 ~= b3 then return a3 > b3 and 1 or -1 end
  return 0
end

local function fresher(a, b)
  local a1, a2, a3 = freshness(a)
  local b1, b2, b3 = freshness(b)
  return cmp3(a1, a2, a3, b1, b2, b3)
end

local function same_hash(a, b)
  if redis.call('HLEN', a) ~= redis.call('HLEN', b) then return false end
  local x = redis.call('HGETALL', a)
  for i = 1, #x, 2 do
    if redis.call('HGET', b, x[i]) ~= x[i + 1] then return false end
  end
  return true
end
`

func itoa64(n int64) string { return strconv.FormatInt(n, 10) }

// luaQuoted writes names as a list of Lua string literals: 'a', 'b'.
func luaQuoted(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = "'" + n + "'"
	}
	return strings.Join(q, ", ")
}
