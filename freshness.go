package jobstore

import (
	"cmp"
	"strconv"
)

// Records carry no version, but a job's record only ever moves forward:
// every write either raises retry_count (a retry), moves the status on
// (pending → assigned → in_progress → a final status), or adds a later
// lifecycle timestamp. So the freshness of a record is the tuple
//
//	(retry_count, status rank, latest lifecycle timestamp)
//
// compared in that order, with the status ranks
//
//	-1  missing or unknown status
//	 0  pending, queued
//	 1  assigned, accepted
//	 2  in_progress
//	 3  completed, failed, cancelled, timeout, unworkable
//
// and the latest of created_at, assigned_at, started_at, completed_at,
// failed_at and cancelled_at (ISO-8601 or Unix ms; unreadable ones count
// as absent). Backfill copies a record only over a destination that is
// missing or strictly older; two records of equal freshness but different
// content are a conflict it reports and leaves for Verify with Repair.
// Verify uses the same rule to tell a stale copy from drift.
//
// The rule is written twice, here and in freshnessLua, and a table test
// holds the two together.

var statusRank = map[string]int{
	"pending": 0, "queued": 0,
	"assigned": 1, "accepted": 1,
	"in_progress": 2,
	"completed":   3, "failed": 3, "cancelled": 3, "timeout": 3, "unworkable": 3,
}

// lifecycleFields are the timestamps whose latest value is the third part
// of a record's freshness.
var lifecycleFields = []string{fCreatedAt, fAssignedAt, fStartedAt, fCompletedAt, fFailedAt, fCancelledAt}

type freshness struct {
	retries float64
	rank    int
	latest  int64 // Unix ms
}

func recordFreshness(h map[string]string) freshness {
	f := freshness{rank: -1}
	if r, ok := statusRank[h[fStatus]]; ok {
		f.rank = r
	}
	if n, err := strconv.ParseFloat(h[fRetryCount], 64); err == nil {
		f.retries = n
	}
	for _, name := range lifecycleFields {
		if v := h[name]; v != "" {
			if t, err := parseTime(v); err == nil {
				f.latest = max(f.latest, t.UnixMilli())
			}
		}
	}
	return f
}

// compare returns 1 when a is fresher than b, -1 when b is, 0 when neither.
func (a freshness) compare(b freshness) int {
	if c := cmp.Compare(a.retries, b.retries); c != 0 {
		return c
	}
	if c := cmp.Compare(a.rank, b.rank); c != 0 {
		return c
	}
	return cmp.Compare(a.latest, b.latest)
}

// freshnessLua is the same rule for scripts, on top of the prelude.
// fresher(a, b) compares the records KEYS[a] and KEYS[b] (both hashes);
// same(a, b) tells whether they have the same fields and values.
const freshnessLua = `
local RANK = {pending = 0, queued = 0, assigned = 1, accepted = 1, in_progress = 2,
  completed = 3, failed = 3, cancelled = 3, timeout = 3, unworkable = 3}

local function freshness(i)
  local f = redis.call('HMGET', KEYS[i], 'retry_count', 'status',
    'created_at', 'assigned_at', 'started_at', 'completed_at', 'failed_at', 'cancelled_at')
  local latest = 0
  for k = 3, #f do
    local t = parse_ms(f[k])
    if t and t > latest then latest = t end
  end
  return tonumber(f[1]) or 0, RANK[f[2]] or -1, latest
end

local function fresher(a, b)
  local ar, ak, at = freshness(a)
  local br, bk, bt = freshness(b)
  if ar ~= br then return ar > br and 1 or -1 end
  if ak ~= bk then return ak > bk and 1 or -1 end
  if at ~= bt then return at > bt and 1 or -1 end
  return 0
end

local function same(a, b)
  local x, y = redis.call('HGETALL', KEYS[a]), redis.call('HGETALL', KEYS[b])
  if #x ~= #y then return false end
  local m = {}
  for k = 1, #x, 2 do m[x[k]] = x[k + 1] end
  for k = 1, #y, 2 do
    if m[y[k]] ~= y[k + 1] then return false end
  end
  return true
end
`
