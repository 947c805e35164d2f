package jobstore

import "github.com/redis/go-redis/v9"

// Every state change is one Lua script, so that on one Redis node the
// primary write and its mirror apply atomically, in one round trip.
//
// Conventions shared by all scripts (see the prelude):
//
//   - KEYS holds the primary keys, then, when ARGV[1] is "1", the mirror
//     keys in the same order: the mirror of KEYS[i] is KEYS[i+N]. Scripts
//     never build a key name, so every key they touch is declared.
//   - ARGV[1] is "1" to mirror, ARGV[2] is "1" to return a log of what was
//     mirrored. Each script's own arguments start at ARGV[3].
//   - The primary part checks key types before it writes anything, so it
//     either fails with a WRONGTYPE status and no write, or applies fully.
//   - The mirror part runs after the primary part and copies state rather
//     than replaying commands: COPY ... REPLACE of each record touched
//     (TTL included; DEL when the primary is gone) and, for each queue
//     member touched, its primary score (ZREM when it is gone). Every
//     mirror command runs under redis.pcall and the whole part under a Lua
//     pcall, so a failing mirror never fails or undoes the primary.
//   - The reply is {status, mirror_errors, mirror_log, mirrored, data...}:
//     status is "OK" or a failure code, mirror_errors and mirror_log are
//     arrays of text, mirrored counts the keys and members synced.

// prelude is every shared part; scripts include only the parts they use,
// since Redis runs the whole text, defining each function, on every call.
const prelude = preludeCore + preludeScore + preludeHeld + preludeRetry

// preludeCore: the mirror, the reply, and key type guards.
const preludeCore = `
local MIRROR = ARGV[1] == '1'
local MLOG = ARGV[2] == '1'
local N = #KEYS
if MIRROR then N = #KEYS / 2 end
local merr, mlog, nmirrored = {}, {}, 0

local ACTIVE = {assigned = true, accepted = true, in_progress = true}
local FINISHED = {completed = true, failed = true, cancelled = true, timeout = true, unworkable = true}

local function errtext(e)
  if type(e) == 'table' then return tostring(e.err or e.ok or '?') end
  return tostring(e)
end

-- mcall runs a mirror command under pcall; on error it records the error
-- and returns nil, else the command's reply.
local function mcall(key, ...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then
    merr[#merr + 1] = key .. ': ' .. r.err
    return nil
  end
  return r
end

local function note(text)
  if MLOG then mlog[#mlog + 1] = text end
end

-- sync_record copies the record KEYS[i] over its mirror, or deletes the
-- mirror when the record is gone (COPY answers 0 for a missing source).
local function sync_record(i)
  local src, dst = KEYS[i], KEYS[i + N]
  local r = mcall(dst, 'COPY', src, dst, 'REPLACE')
  if r == 1 then
    note('copied ' .. src .. ' → ' .. dst)
  elseif r == 0 and mcall(dst, 'DEL', dst) == 1 then
    note('deleted ' .. dst)
  end
end

-- sync_member gives member m of the mirror of queue KEYS[i] its score in
-- KEYS[i]: s when the caller knows it (false: known to be absent), else
-- read with ZSCORE.
local function sync_member(i, m, s)
  local dst = KEYS[i + N]
  if s == nil then s = redis.call('ZSCORE', KEYS[i], m) end
  if s then
    local r = mcall(dst, 'ZADD', dst, s, m)
    if r == 1 then note('added ' .. m .. ' to ' .. dst)
    elseif r then note('updated ' .. m .. ' in ' .. dst) end
  elseif mcall(dst, 'ZREM', dst, m) == 1 then
    note('removed ' .. m .. ' from ' .. dst)
  end
end

-- done mirrors the records (key indexes) and queue members ({index, id}
-- or {index, id, score or false}) the operation touched, then builds the
-- reply.
local function done(status, recs, mems, data)
  if MIRROR and (#recs > 0 or #mems > 0) then
    nmirrored = #recs + #mems
    local ok, e = pcall(function()
      for _, i in ipairs(recs) do sync_record(i) end
      for _, p in ipairs(mems) do sync_member(p[1], p[2], p[3]) end
    end)
    if not ok then merr[#merr + 1] = 'mirror: ' .. errtext(e) end
  end
  local out = {status, merr, mlog, nmirrored}
  if data then
    for _, v in ipairs(data) do out[#out + 1] = v end
  end
  return out
end

-- wrongtype describes KEYS[i] if it exists with a type other than want
-- ('hash' or 'zset'). It probes with a command that answers an integer,
-- cheaper in a script than TYPE's status reply, which only the error path
-- reads.
local PROBE = {hash = 'HLEN', zset = 'ZCARD'}
local function wrongtype(i, want)
  local r = redis.pcall(PROBE[want], KEYS[i])
  if type(r) == 'table' and r.err then
    return KEYS[i] .. ' is a ' .. redis.call('TYPE', KEYS[i])['ok'] .. ', want a ' .. want
  end
  return false
end
`

// preludeScore: pending scores, computed from a record.
const preludeScore = `
-- 2^43 ms reaches the year 2248; 1001 * 2^43 < 2^53 keeps scores exact.
local SCALE = 8796093022208

local function num(x) return string.format('%.0f', x) end

local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
  local doe = yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy
  return era * 146097 + doe - 719468
end

-- parse_ms reads Unix milliseconds or an ISO-8601 time, as parseTime does
-- in Go (fractions truncated to milliseconds); nil when it cannot.
local function parse_ms(s)
  if type(s) ~= 'string' or s == '' then return nil end
  if string.match(s, '^%d+$') then return tonumber(s) end
  local Y, M, D, h, mi, sec, frac, zone = string.match(s,
    '^(%d%d%d%d)%-(%d%d)%-(%d%d)[T ](%d%d):(%d%d):(%d%d)(%.?%d*)(.*)$')
  if not Y then return nil end
  local ms = 0
  if #frac > 1 then ms = tonumber(string.sub(string.sub(frac, 2) .. '00', 1, 3)) end
  local off = 0
  if zone ~= '' and zone ~= 'Z' then
    local sign, oh, om = string.match(zone, '^([%+%-])(%d%d):?(%d%d)$')
    if not sign then return nil end
    off = (tonumber(oh) * 60 + tonumber(om)) * 60000
    if sign == '+' then off = -off end
  end
  local days = days_from_civil(tonumber(Y), tonumber(M), tonumber(D))
  return ((days * 86400 + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)) * 1000 + ms) + off
end

local function clamp(x, lo, hi)
  if x < lo then return lo end
  if x > hi then return hi end
  return x
end

-- score_of is the pending score of the record KEYS[i]: its priority (the
-- workflow's when set) times 2^43, plus 2^43-1 minus its time in ms (the
-- workflow's when set), so higher priority sorts first, then older.
local function score_of(i, now_ms)
  local f = redis.call('HMGET', KEYS[i], 'priority', 'created_at', 'workflow_priority', 'workflow_datetime')
  local p = f[3] and tonumber(f[3])
  if not p or p == 0 then p = f[1] and tonumber(f[1]) or 0 end
  local t = parse_ms(f[4]) or parse_ms(f[2]) or now_ms
  p = clamp(math.floor(p), 0, 1000)
  t = clamp(math.floor(t), 0, SCALE - 1)
  return num(p * SCALE + (SCALE - 1 - t))
end

`

// preludeHeld: the check that a worker holds a job.
const preludeHeld = `
-- not_held explains why worker does not hold the job, or returns false.
local function not_held(rec, active, id, worker)
  local f = redis.call('HMGET', KEYS[rec], 'status', 'worker_id')
  local st, w = f[1] or '', f[2] or ''
  if not ACTIVE[st] then return 'its status is ' .. st, st end
  if w ~= worker then return 'it is held by worker ' .. w, st end
  if not redis.call('ZSCORE', KEYS[active], id) then
    return 'its lease was lost: it is not in ' .. KEYS[active], st
  end
  return false, st
end

`

// preludeRetry: what a failure does; needs preludeScore.
const preludeRetry = `
-- retry_or_fail moves a job on after a failure: back to pending with one
-- more retry while retries remain, else to failed with the retention TTL.
local function retry_or_fail(rec, active, pending, failed, id, worker, reason, now_ms, now_iso, ttl)
  local f = redis.call('HMGET', KEYS[rec], 'retry_count', 'max_retries')
  local rc = f[1] and tonumber(f[1]) or 0
  local mr = f[2] and tonumber(f[2]) or 3
  redis.call('ZREM', KEYS[active], id)
  if rc < mr then
    redis.call('HSET', KEYS[rec], 'status', 'pending', 'retry_count', num(rc + 1),
      'error', reason, 'last_failed_worker', worker)
    redis.call('HDEL', KEYS[rec], 'worker_id', 'assigned_at', 'started_at')
    redis.call('ZADD', KEYS[pending], score_of(rec, now_ms), id)
    return 'retried'
  end
  redis.call('HSET', KEYS[rec], 'status', 'failed', 'failed_at', now_iso,
    'error', reason, 'last_failed_worker', worker)
  redis.call('ZADD', KEYS[failed], now_ms, id)
  if ttl > 0 then redis.call('PEXPIRE', KEYS[rec], ttl) end
  return 'failed'
end
`

// submitScript stores a new job and queues it. SubmitJob uses it for ids
// the caller chose; it writes jobs with ids it generated itself with
// MULTI/EXEC instead (see submitTx), which needs no existence check.
//
// A record that holds exactly the fields this submit would write, apart
// from the lifecycle fields that state changes write, is this very submit
// run a second time: go-redis sends a command again when its reply
// was lost, with the same arguments, created_at included. That replay
// reports OK and writes nothing, so a job is never refused as existing by
// the call that created it.
//
//	KEYS: record, pending
//	ARGV: id, score, field, value, ...
//	Reply: OK | EXISTS | WRONGTYPE detail
var submitScript = redis.NewScript(preludeCore + `
local id, score = ARGV[3], ARGV[4]
if redis.call('EXISTS', KEYS[1]) == 1 then
  local bad = wrongtype(1, 'hash')
  if bad then return done('WRONGTYPE', {}, {}, {bad}) end
  -- The fields state changes write; a submit writes only status and
  -- retry_count of them.
  local LIFECYCLE = {status = true, retry_count = true, worker_id = true, assigned_at = true,
    started_at = true, completed_at = true, failed_at = true, cancelled_at = true,
    error = true, last_failed_worker = true, result = true}
  local want = {}
  for i = 5, #ARGV - 1, 2 do want[ARGV[i]] = ARGV[i + 1] end
  local h = redis.call('HGETALL', KEYS[1])
  for i = 1, #h - 1, 2 do
    local f, v = h[i], h[i + 1]
    if not LIFECYCLE[f] and want[f] ~= v then return done('EXISTS', {}, {}) end
    want[f] = nil
  end
  if next(want) then return done('EXISTS', {}, {}) end
  return done('OK', {}, {})
end
local bad = wrongtype(2, 'zset')
if bad then return done('WRONGTYPE', {}, {}, {bad}) end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('ZADD', KEYS[2], score, id)
return done('OK', {1}, {{2, id, score}})
`)

// claimScript claims the first claimable candidate, in the order given.
// Candidates no longer in pending are passed over. A candidate whose
// record is gone is removed from pending, so it cannot block the queue;
// one whose record is of the wrong type or not pending is skipped.
//
//	KEYS: pending, active, record of each candidate
//	ARGV: worker, now_ms, now_iso, deadline_ms, nservices, service..., candidate id...
//	Reply: OK id {field, value, ...} {note...} | NONE skipped {note...} | WRONGTYPE detail
var claimScript = redis.NewScript(preludeCore + `
local worker, iso, deadline = ARGV[3], ARGV[5], ARGV[6]
local ns = tonumber(ARGV[7])
local want = {}
for j = 1, ns do want[ARGV[7 + j]] = true end
local base = 7 + ns
local bad = wrongtype(1, 'zset') or wrongtype(2, 'zset')
if bad then return done('WRONGTYPE', {}, {}, {bad}) end
local mems, notes, skipped = {}, {}, 0
for c = 1, N - 2 do
  local ki, id = c + 2, ARGV[base + c]
  if redis.call('ZSCORE', KEYS[1], id) then
    local f = redis.pcall('HMGET', KEYS[ki], 'status', 'service_required')
    if f.err then
      skipped = skipped + 1
      notes[#notes + 1] = 'skipped ' .. id .. ': ' .. KEYS[ki] .. ' is a ' .. redis.call('TYPE', KEYS[ki])['ok']
    elseif not f[1] and redis.call('EXISTS', KEYS[ki]) == 0 then
      redis.call('ZREM', KEYS[1], id)
      mems[#mems + 1] = {1, id, false}
      notes[#notes + 1] = 'removed ' .. id .. ' from ' .. KEYS[1] .. ': ' .. KEYS[ki] .. ' does not exist'
    elseif f[1] ~= 'pending' and f[1] ~= 'queued' then
      skipped = skipped + 1
      notes[#notes + 1] = 'skipped ' .. id .. ': in ' .. KEYS[1] .. ' with status ' .. tostring(f[1] or 'missing')
    elseif ns == 0 or want[f[2]] then
      redis.call('HSET', KEYS[ki], 'status', 'assigned', 'worker_id', worker, 'assigned_at', iso)
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZADD', KEYS[2], deadline, id)
      mems[#mems + 1] = {1, id, false}
      mems[#mems + 1] = {2, id, deadline}
      return done('OK', {ki}, mems, {id, redis.call('HGETALL', KEYS[ki]), notes})
    else
      skipped = skipped + 1
    end
  end
end
return done('NONE', {}, mems, {skipped, notes})
`)

// startScript marks a held job in progress.
//
//	KEYS: record, active
//	ARGV: id, worker, now_iso
//	Reply: OK | NOTFOUND | NOTHELD why status | WRONGTYPE detail
var startScript = redis.NewScript(preludeCore + preludeHeld + `
local id, worker = ARGV[3], ARGV[4]
local bad = wrongtype(1, 'hash') or wrongtype(2, 'zset')
if bad then return done('WRONGTYPE', {}, {}, {bad}) end
if redis.call('EXISTS', KEYS[1]) == 0 then return done('NOTFOUND', {}, {}) end
local why, st = not_held(1, 2, id, worker)
if why then return done('NOTHELD', {}, {}, {why, st}) end
redis.call('HSET', KEYS[1], 'status', 'in_progress', 'started_at', ARGV[5])
return done('OK', {1}, {{2, id}})
`)

// extendScript moves the lease deadline of a held job.
//
//	KEYS: record, active
//	ARGV: id, worker, deadline_ms
//	Reply: OK | NOTFOUND | NOTHELD why status | WRONGTYPE detail
var extendScript = redis.NewScript(preludeCore + preludeHeld + `
local id, worker = ARGV[3], ARGV[4]
local bad = wrongtype(1, 'hash') or wrongtype(2, 'zset')
if bad then return done('WRONGTYPE', {}, {}, {bad}) end
if redis.call('EXISTS', KEYS[1]) == 0 then return done('NOTFOUND', {}, {}) end
local why, st = not_held(1, 2, id, worker)
if why then return done('NOTHELD', {}, {}, {why, st}) end
redis.call('ZADD', KEYS[2], 'XX', ARGV[5], id)
return done('OK', {1}, {{2, id, ARGV[5]}})
`)

// completeScript marks a held job completed and starts its retention.
//
//	KEYS: record, active, completed
//	ARGV: id, worker, now_ms, now_iso, ttl_ms, result ("" for none)
//	Reply: OK | NOTFOUND | NOTHELD why status | WRONGTYPE detail
var completeScript = redis.NewScript(preludeCore + preludeHeld + `
local id, worker, now, ttl = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[7])
local bad = wrongtype(1, 'hash') or wrongtype(2, 'zset') or wrongtype(3, 'zset')
if bad then return done('WRONGTYPE', {}, {}, {bad}) end
if redis.call('EXISTS', KEYS[1]) == 0 then return done('NOTFOUND', {}, {}) end
local why, st = not_held(1, 2, id, worker)
if why then return done('NOTHELD', {}, {}, {why, st}) end
redis.call('HSET', KEYS[1], 'status', 'completed', 'completed_at', ARGV[6])
if ARGV[8] ~= '' then redis.call('HSET', KEYS[1], 'result', ARGV[8]) end
redis.call('ZREM', KEYS[2], id)
redis.call('ZADD', KEYS[3], now, id)
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return done('OK', {1}, {{2, id, false}, {3, id, now}})
`)

// failScript records a failure of a held job: retried or failed.
//
//	KEYS: record, active, pending, failed
//	ARGV: id, worker, reason, now_ms, now_iso, ttl_ms
//	Reply: OK retried|failed | NOTFOUND | NOTHELD why status | WRONGTYPE detail
var failScript = redis.NewScript(prelude + `
local id, worker = ARGV[3], ARGV[4]
local bad = wrongtype(1, 'hash') or wrongtype(2, 'zset') or wrongtype(3, 'zset') or wrongtype(4, 'zset')
if bad then return done('WRONGTYPE', {}, {}, {bad}) end
if redis.call('EXISTS', KEYS[1]) == 0 then return done('NOTFOUND', {}, {}) end
local why, st = not_held(1, 2, id, worker)
if why then return done('NOTHELD', {}, {}, {why, st}) end
local outcome = retry_or_fail(1, 2, 3, 4, id, worker, ARGV[5], tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8]))
return done('OK', {1}, {{2, id}, {3, id}, {4, id}}, {outcome})
`)

// cancelScript cancels a job that has not finished, wherever it is queued.
//
//	KEYS: record, pending, active
//	ARGV: id, now_iso, ttl_ms
//	Reply: OK previous_status | NOTFOUND | FINISHED status | WRONGTYPE detail
var cancelScript = redis.NewScript(preludeCore + `
local id, ttl = ARGV[3], tonumber(ARGV[5])
local bad = wrongtype(1, 'hash') or wrongtype(2, 'zset') or wrongtype(3, 'zset')
if bad then return done('WRONGTYPE', {}, {}, {bad}) end
if redis.call('EXISTS', KEYS[1]) == 0 then return done('NOTFOUND', {}, {}) end
local st = redis.call('HGET', KEYS[1], 'status') or ''
if FINISHED[st] then return done('FINISHED', {}, {}, {st}) end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'cancelled_at', ARGV[4])
redis.call('ZREM', KEYS[2], id)
redis.call('ZREM', KEYS[3], id)
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return done('OK', {1}, {{2, id}, {3, id}}, {st})
`)

// recoverScript handles expired leases among the candidates: a job still
// held goes back to pending, or to failed once its retries are used up; an
// entry whose record is gone or finished is dropped from active.
//
//	KEYS: active, pending, failed, record of each candidate
//	ARGV: now_ms, now_iso, ttl_ms, reason, candidate id...
//	Reply: OK requeued failed dropped | WRONGTYPE detail
var recoverScript = redis.NewScript(prelude + `
local now, iso, ttl, reason = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]), ARGV[6]
local bad = wrongtype(1, 'zset') or wrongtype(2, 'zset') or wrongtype(3, 'zset')
if bad then return done('WRONGTYPE', {}, {}, {bad}) end
local recs, mems, requeued, failed, dropped = {}, {}, 0, 0, 0
for c = 1, N - 3 do
  local ki, id = c + 3, ARGV[6 + c]
  local s = redis.call('ZSCORE', KEYS[1], id)
  if s and tonumber(s) <= now then
    local t = redis.call('TYPE', KEYS[ki])['ok']
    local st = t == 'hash' and redis.call('HGET', KEYS[ki], 'status') or ''
    if ACTIVE[st] then
      local w = redis.call('HGET', KEYS[ki], 'worker_id') or ''
      local outcome = retry_or_fail(ki, 1, 2, 3, id, w, reason, now, iso, ttl)
      if outcome == 'retried' then requeued = requeued + 1 else failed = failed + 1 end
      recs[#recs + 1] = ki
      mems[#mems + 1] = {2, id}
      mems[#mems + 1] = {3, id}
    elseif t ~= 'hash' and t ~= 'none' then
      -- a corrupt record stays where it is, for an operator to look at
    else
      redis.call('ZREM', KEYS[1], id)
      dropped = dropped + 1
    end
    mems[#mems + 1] = {1, id}
  end
end
return done('OK', recs, mems, {requeued, failed, dropped})
`)

// trimScript ends the retention of finished jobs: it removes each
// candidate whose score is at or before the cutoff from the queue, and
// deletes its record when the record still has the queue's status.
//
//	KEYS: queue, record of each candidate
//	ARGV: cutoff_ms, status, candidate id...
//	Reply: OK removed | WRONGTYPE detail
var trimScript = redis.NewScript(preludeCore + `
local cutoff, status = tonumber(ARGV[3]), ARGV[4]
local bad = wrongtype(1, 'zset')
if bad then return done('WRONGTYPE', {}, {}, {bad}) end
local recs, mems, removed = {}, {}, 0
for c = 1, N - 1 do
  local ki, id = c + 1, ARGV[4 + c]
  local s = redis.call('ZSCORE', KEYS[1], id)
  if s and tonumber(s) <= cutoff then
    redis.call('ZREM', KEYS[1], id)
    mems[#mems + 1] = {1, id}
    removed = removed + 1
    if redis.call('TYPE', KEYS[ki])['ok'] == 'hash' and redis.call('HGET', KEYS[ki], 'status') == status then
      redis.call('DEL', KEYS[ki])
      recs[#recs + 1] = ki
    end
  end
end
return done('OK', recs, mems, {removed})
`)
