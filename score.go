package jobstore

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// ScoreFormula is how a pending job's score in jobs:pending is computed.
// Claims take the highest score first. Every writer of one queue must use
// the same formula, or their jobs do not interleave in priority order.
type ScoreFormula int

const (
	// ScoreAPI is the legacy API's formula, the default:
	// priority*1e15 - floor(ms/1000), where priority is the workflow's
	// when set and ms the workflow's datetime when set, else created_at.
	// Higher priority first, then older, at one-second resolution (coarser
	// where the product exceeds 2^53: float64 rounds it as JavaScript does).
	ScoreAPI ScoreFormula = iota
	// ScoreService is the legacy RedisService's formula, for teams that
	// submit through it: priority*1e6 + (2^53-1 - ms).
	ScoreService
)

// String returns "api" or "service".
func (f ScoreFormula) String() string {
	switch f {
	case ScoreAPI:
		return "api"
	case ScoreService:
		return "service"
	}
	return fmt.Sprintf("ScoreFormula(%d)", int(f))
}

func (f ScoreFormula) valid() bool { return f == ScoreAPI || f == ScoreService }

// maxSafeInteger is JavaScript's Number.MAX_SAFE_INTEGER, 2^53-1.
const maxSafeInteger = 1<<53 - 1

// Score is the pending score of a job of the given effective priority and
// time (Unix ms), computed with the same float64 operations as the
// JavaScript it restates, so that it is bit for bit the legacy score.
func (f ScoreFormula) Score(priority float64, ms int64) float64 {
	if f == ScoreService {
		return priority*1e6 + (float64(maxSafeInteger) - float64(ms))
	}
	return priority*1e15 - math.Floor(float64(ms)/1000)
}

// jobScore is the score SubmitJob gives j (after withDefaults).
func (f ScoreFormula) jobScore(j *Job) float64 {
	p, t := j.Priority, j.CreatedAt
	if j.WorkflowPriority != 0 {
		p = j.WorkflowPriority
	}
	if !j.WorkflowDatetime.IsZero() {
		t = j.WorkflowDatetime
	}
	return f.Score(float64(p), t.UnixMilli())
}

// ParseScore tells which formula made a pending score, for a queue that
// both legacy writers fed, and what it encodes. A ScoreAPI score gives its
// priority and time (to the second). A ScoreService score does not: one
// step of priority weighs as much as 1,000 s of age, so priority is -1
// and t the time the score would have at priority 0. Scores of times
// outside 2001..2099 are read as ScoreAPI.
func ParseScore(score float64) (f ScoreFormula, priority int, t time.Time) {
	const lo, hi = 1e12, 4.1e12 // Unix ms of 2001 and 2099
	if score >= float64(maxSafeInteger)-hi && score <= float64(maxSafeInteger)-lo+1e9 {
		return ScoreService, -1, time.UnixMilli(int64(float64(maxSafeInteger) - score)).UTC()
	}
	p := math.Ceil(score / 1e15)
	return ScoreAPI, int(p), time.Unix(int64(p*1e15-score), 0).UTC()
}

// The rules below exist twice: here for Go, and in scoreLua for scripts
// that must compute what they read (a retry re-scores a job from its
// record). TestLuaRulesAgree runs both over the same inputs.

// parseIntJS reads an integer as JavaScript's parseInt(s, 10) does:
// leading ASCII white space, an optional sign, then decimal digits, and
// anything after them ignored. ok is false where parseInt gives NaN. The
// value is a float64, as in JavaScript; beyond ±2^53 it fails too, so
// that nothing computed from it overflows.
func parseIntJS(s string) (float64, bool) {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	end := 0
	if end < len(s) && (s[end] == '+' || s[end] == '-') {
		end++
	}
	digits := end
	for end < len(s) && s[end] >= '0' && s[end] <= '9' {
		end++
	}
	if end == digits {
		return 0, false
	}
	f, err := strconv.ParseFloat(s[:end], 64)
	if err != nil || f > 1<<53 || f < -(1<<53) {
		return 0, false
	}
	return f + 0, true // -0 reads as 0
}

// parseTimeMs reads the time forms found in records into Unix ms:
//
//   - decimal digits: Unix milliseconds (workflow_datetime, Date.now());
//   - digits '.' digits: Unix seconds and a fraction, as the claim function
//     writes assigned_at (<secs>.<micros>);
//   - ISO-8601, YYYY-MM-DD, then optionally T or ' ' and hh:mm:ss, an
//     optional fraction (cut to ms), and Z, ±hh:mm, ±hhmm or no zone (UTC).
func parseTimeMs(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	if isDigits(s) {
		if len(s) > 15 {
			return 0, false
		}
		n, err := strconv.ParseInt(s, 10, 64)
		return n, err == nil
	}
	if secs, frac, ok := strings.Cut(s, "."); ok && isDigits(secs) && isDigits(frac) && len(secs) <= 12 {
		n, _ := strconv.ParseInt(secs, 10, 64)
		return n*1000 + fracMs(frac), true
	}
	return parseISOMs(s)
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// fracMs is the milliseconds of a fraction's digits, truncated.
func fracMs(frac string) int64 {
	frac = (frac + "000")[:3]
	n, _ := strconv.ParseInt(frac, 10, 64)
	return n
}

func parseISOMs(s string) (int64, bool) {
	num := func(s string) int64 { n, _ := strconv.ParseInt(s, 10, 64); return n }
	if len(s) < 10 || !isDigits(s[0:4]) || s[4] != '-' || !isDigits(s[5:7]) || s[7] != '-' || !isDigits(s[8:10]) {
		return 0, false
	}
	y, mo, d := num(s[0:4]), num(s[5:7]), num(s[8:10])
	var h, mi, sec, ms, off int64
	rest := s[10:]
	if rest != "" {
		if len(rest) < 9 || (rest[0] != 'T' && rest[0] != ' ') || !isDigits(rest[1:3]) || rest[3] != ':' ||
			!isDigits(rest[4:6]) || rest[6] != ':' || !isDigits(rest[7:9]) {
			return 0, false
		}
		h, mi, sec = num(rest[1:3]), num(rest[4:6]), num(rest[7:9])
		rest = rest[9:]
		if strings.HasPrefix(rest, ".") {
			i := 1
			for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
				i++
			}
			if i == 1 {
				return 0, false
			}
			ms = fracMs(rest[1:i])
			rest = rest[i:]
		}
		switch {
		case rest == "" || rest == "Z":
		case len(rest) == 6 && (rest[0] == '+' || rest[0] == '-') && isDigits(rest[1:3]) && rest[3] == ':' && isDigits(rest[4:6]):
			off = (num(rest[1:3])*60 + num(rest[4:6])) * 60000
		case len(rest) == 5 && (rest[0] == '+' || rest[0] == '-') && isDigits(rest[1:5]):
			off = (num(rest[1:3])*60 + num(rest[3:5])) * 60000
		default:
			return 0, false
		}
		if rest != "" && rest[0] == '+' {
			off = -off
		}
	}
	if mo < 1 || mo > 12 || d < 1 || d > 31 || h > 24 || mi > 59 || sec > 60 {
		return 0, false
	}
	days := daysFromCivil(y, mo, d)
	return ((days*86400+h*3600+mi*60+sec)*1000 + ms) + off, true
}

// daysFromCivil is the number of days from 1970-01-01 to y-m-d in the
// proleptic Gregorian calendar (Howard Hinnant's algorithm).
func daysFromCivil(y, m, d int64) int64 {
	if m <= 2 {
		y--
	}
	era := y / 400
	if y < 0 && y%400 != 0 {
		era--
	}
	yoe := y - era*400
	mp := (m + 9) % 12
	doy := (153*mp+2)/5 + d - 1
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

// scoreLua is the same rules for scripts: parse_int, parse_time_ms and
// record_score(key, formula, now_ms), which reads a record's priority and
// times as the score of a retried job.
const scoreLua = `
local function parse_int(s)
  if type(s) ~= 'string' then return nil end
  local d = string.match(s, '^[ \t\n\v\f\r]*([%+%-]?%d+)')
  if not d then return nil end
  if string.sub(d, 1, 1) == '+' then d = string.sub(d, 2) end
  local n = tonumber(d)
  if not n or n > 9007199254740992 or n < -9007199254740992 then return nil end
  if n == 0 then return 0 end
  return n
end

local function is_digits(s) return string.match(s, '^%d+$') ~= nil end

local function frac_ms(f) return tonumber(string.sub(f .. '000', 1, 3)) end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

local function parse_iso_ms(s)
  local Y, Mo, D, rest = string.match(s, '^(%d%d%d%d)%-(%d%d)%-(%d%d)(.*)$')
  if not Y then return nil end
  local h, mi, sec, ms, off = 0, 0, 0, 0, 0
  if rest ~= '' then
    local hh, mm, ss, tail = string.match(rest, '^[T ](%d%d):(%d%d):(%d%d)(.*)$')
    if not hh then return nil end
    h, mi, sec, rest = tonumber(hh), tonumber(mm), tonumber(ss), tail
    if string.sub(rest, 1, 1) == '.' then
      local f, tail2 = string.match(rest, '^%.(%d+)(.*)$')
      if not f then return nil end
      ms, rest = frac_ms(f), tail2
    end
    if rest ~= '' and rest ~= 'Z' then
      local sign, oh, om = string.match(rest, '^([%+%-])(%d%d):(%d%d)$')
      if not sign then sign, oh, om = string.match(rest, '^([%+%-])(%d%d)(%d%d)$') end
      if not sign then return nil end
      off = (tonumber(oh) * 60 + tonumber(om)) * 60000
      if sign == '+' then off = -off end
    end
  end
  local y, m, d = tonumber(Y), tonumber(Mo), tonumber(D)
  if m < 1 or m > 12 or d < 1 or d > 31 or h > 24 or mi > 59 or sec > 60 then return nil end
  return ((days_from_civil(y, m, d) * 86400 + h * 3600 + mi * 60 + sec) * 1000 + ms) + off
end

local function parse_time_ms(s)
  if type(s) ~= 'string' or s == '' then return nil end
  if is_digits(s) then
    if #s > 15 then return nil end
    return tonumber(s)
  end
  local secs, frac = string.match(s, '^(%d+)%.(%d+)$')
  if secs and #secs <= 12 then return tonumber(secs) * 1000 + frac_ms(frac) end
  return parse_iso_ms(s)
end

local function formula_score(formula, p, ms)
  if formula == 'service' then return p * 1e6 + (9007199254740991 - ms) end
  return p * 1e15 - math.floor(ms / 1000)
end

-- record_score is the pending score of the record at key: the workflow's
-- priority when set and not 0, else its priority (50 when unreadable), and
-- the workflow's datetime when set, else created_at, else now_ms.
local function record_score(key, formula, now_ms)
  local f = redis.call('HMGET', key, 'priority', 'created_at', 'workflow_priority', 'workflow_datetime')
  local p = parse_int(f[3])
  if not p or p == 0 then p = parse_int(f[1]) or 50 end
  local t = parse_int(f[4])
  if not t or t == 0 then t = parse_time_ms(f[2]) or now_ms end
  return formula_score(formula, p, t)
end

-- score_arg formats a score for ZADD exactly (17 significant digits).
local function score_arg(x) return string.format('%.17g', x) end
`

// recordScore is record_score in Go: the pending score of a record's
// fields, as a retry computes it. TestLuaRulesAgree holds the two together.
func (f ScoreFormula) recordScore(h map[string]string, nowMs int64) float64 {
	p, ok := parseIntJS(h[fWorkflowPriority])
	if !ok || p == 0 {
		if p, ok = parseIntJS(h[fPriority]); !ok {
			p = DefaultPriority
		}
	}
	t, ok := parseIntJS(h[fWorkflowDatetime])
	if !ok || t == 0 {
		ms, ok := parseTimeMs(h[fCreatedAt])
		if !ok {
			ms = nowMs
		}
		t = float64(ms)
	}
	if f == ScoreService {
		return p*1e6 + (float64(maxSafeInteger) - t)
	}
	return p*1e15 - math.Floor(t/1000)
}
