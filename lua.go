package jobstore

import (
	"fmt"
	"maps"
	"slices"
	"strings"
)

// Every state change is one Lua script, run the one way write.go runs
// them, so that on one Redis node the primary write and its mirror apply
// atomically, in one round trip. The conventions all scripts share:
//
//   - ARGV[1] is "1" to mirror, ARGV[2] is "1" to return a log of what
//     was mirrored, and ARGV[3] is the stage the write was built for; each
//     script's own arguments start at ARGV[4]. The last key, KEYS[#KEYS],
//     is the shared stage hash (jobstore:stage). Each script's header
//     lists its KEYS and ARGV with their literal indices.
//   - Before anything else, every script reads the published stage: when
//     one is published and it is not the write's stage, the script writes
//     nothing and answers STAGE with it, and the Store adopts it and runs
//     the write again. So no write ever lands under a stage other than
//     the published one, whatever a process's own setting and however
//     long ago it last polled.
//   - The primary part checks key types before it writes anything, so it
//     either fails with a WRONGTYPE status and no write, or applies fully.
//     Values read from records never abort a script: numbers go through
//     parse_int, which refuses NaN, infinities and what does not fit.
//   - The mirror part runs after the primary part and copies state rather
//     than replaying commands: each record or sub-key touched is copied
//     whole with COPY ... REPLACE (TTL included; the copy is deleted when
//     the original is gone), each sorted-set member touched gets its
//     primary score (or is removed), and each hash field touched gets its
//     primary value (or is removed), with the primary hash's TTL. Every
//     mirror command runs under redis.pcall, and the whole part under a
//     Lua pcall, so a failing mirror never fails or undoes the primary.
//   - Every script replies {status, mirror_errors, mirror_log, mirrored,
//     data...}: status is "OK" or a failure code, mirror_errors and
//     mirror_log are lists of text, mirrored counts the keys, members and
//     fields synced. Each script's Go caller decodes its data with a typed
//     decoder next to it.

// luaCore is the mirror and the reply, included by every script.
const luaCore = `
local MIRROR = ARGV[1] == '1'
local MLOG = ARGV[2] == '1'
local merr, mlog, msync = {}, {}, {}

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

-- Calls that name what the mirror must copy once the primary part is done.
local function mirror_key(src, dst) msync[#msync + 1] = {1, src, dst} end
local function mirror_member(src, dst, m) msync[#msync + 1] = {2, src, dst, m} end
-- mirror_field copies a hash field; with_ttl also copies the hash's TTL
-- (the result hashes carry one; the active hashes never do).
local function mirror_field(src, dst, f, with_ttl) msync[#msync + 1] = {3, src, dst, f, with_ttl} end

local function sync_key(src, dst)
  local r = mcall(dst, 'COPY', src, dst, 'REPLACE')
  if r == 1 then
    note('copied ' .. src .. ' → ' .. dst)
  elseif r == 0 and mcall(dst, 'DEL', dst) == 1 then
    note('deleted ' .. dst)
  end
end

local function sync_member(src, dst, m)
  local s = redis.call('ZSCORE', src, m)
  if s then
    local r = mcall(dst, 'ZADD', dst, s, m)
    if r == 1 then note('added ' .. m .. ' to ' .. dst)
    elseif r then note('updated ' .. m .. ' in ' .. dst) end
  elseif mcall(dst, 'ZREM', dst, m) == 1 then
    note('removed ' .. m .. ' from ' .. dst)
  end
end

local function sync_field(src, dst, f, with_ttl, ttls)
  local v = redis.call('HGET', src, f)
  if v then
    if mcall(dst, 'HSET', dst, f, v) then note('set ' .. dst .. ' ' .. f) end
  elseif mcall(dst, 'HDEL', dst, f) == 1 then
    note('removed ' .. f .. ' from ' .. dst)
  end
  if with_ttl and not ttls[dst] then
    ttls[dst] = true
    local t = redis.call('PTTL', src)
    if t > 0 then mcall(dst, 'PEXPIRE', dst, t)
    elseif t == -1 then mcall(dst, 'PERSIST', dst) end
  end
end

-- done runs the mirror of what the operation named, then builds the reply
-- from the status and the operation's data.
local function done(status, ...)
  if MIRROR and #msync > 0 then
    local ok, e = pcall(function()
      local ttls = {}
      for _, s in ipairs(msync) do
        if s[1] == 1 then sync_key(s[2], s[3])
        elseif s[1] == 2 then sync_member(s[2], s[3], s[4])
        else sync_field(s[2], s[3], s[4], s[5], ttls) end
      end
    end)
    if not ok then merr[#merr + 1] = 'mirror: ' .. errtext(e) end
  end
  local n = 0
  if MIRROR then n = #msync end
  return {status, merr, mlog, n, ...}
end

-- wrongtype describes key if it exists with a type other than want
-- ('hash', 'zset' or 'string'), else returns false. It probes with a
-- command that answers an integer, cheaper in a script than TYPE.
local PROBE = {hash = 'HLEN', zset = 'ZCARD', string = 'STRLEN', set = 'SCARD'}
local function wrongtype(key, want)
  local r = redis.pcall(PROBE[want], key)
  if type(r) == 'table' and r.err then
    return key .. ' is a ' .. redis.call('TYPE', key)['ok'] .. ', want a ' .. want
  end
  return false
end
`

// luaStatus is the status tables, generated from statusRanks so that Go
// and Lua cannot disagree: RANK of every known status, and the sets
// FINISHED (rank 3) and ACTIVE (rank 1 and 2: a worker holds the job).
var luaStatus = func() string {
	names := slices.Sorted(maps.Keys(statusRanks))
	var rank, fin, act []string
	for _, s := range names {
		r := statusRanks[s]
		rank = append(rank, fmt.Sprintf("%s = %d", s, r))
		if r == 3 {
			fin = append(fin, string(s)+" = true")
		}
		if r == 1 || r == 2 {
			act = append(act, string(s)+" = true")
		}
	}
	return "\nlocal RANK = {" + strings.Join(rank, ", ") + "}\n" +
		"local FINISHED = {" + strings.Join(fin, ", ") + "}\n" +
		"local ACTIVE = {" + strings.Join(act, ", ") + "}\n"
}()

// luaHeld is the check that a worker holds a job: its id is in the
// worker's active hash, as the claim put it there.
//
// A finished job is not held even where its id is still in the active
// hash: a legacy cancel reads the record, then clears the active hash of
// the worker it read, so a claim in between leaves the id in the
// claimer's hash with the record cancelled. not_held then also reports
// that stale entry, which the script removes instead of applying a
// complete or a retry over the cancel.
var luaHeld = luaStatus + `
-- not_held returns false when the job is in the active hash and not
-- finished; else the record's status, for the error, and whether the id
-- is a stale entry of the active hash.
local function not_held(rec, active, id)
  local st = redis.call('HGET', rec, 'status') or ''
  if redis.call('HEXISTS', active, id) == 0 then return st, false end
  if FINISHED[st] then return st, true end
  return false
end
`

// luaTokens keeps the tokens of the last calls that changed a record, in
// its jobstore_op field (see fOpToken): up to four, space-separated,
// newest last, each with an optional note after a colon (a fail keeps its
// outcome there). Four, because a call's reply can be lost and the call sent
// again after a back-off, while other calls change the job meanwhile (a
// fail that requeues it, a claim, a complete): the replay must still find
// its own token.
const luaTokens = `
-- has_token returns false, or, when the record holds the call's token,
-- the note stored with it ('' when none; see push_token).
local function has_token(rec, tok)
  local v = redis.call('HGET', rec, 'jobstore_op')
  if not v then return false end
  for t in string.gmatch(v, '%S+') do
    if t == tok then return '' end
    if string.sub(t, 1, #tok + 1) == tok .. ':' then return string.sub(t, #tok + 2) end
  end
  return false
end

local function push_token(rec, tok)
  local ts = {}
  for t in string.gmatch(redis.call('HGET', rec, 'jobstore_op') or '', '%S+') do ts[#ts + 1] = t end
  ts[#ts + 1] = tok
  while #ts > 4 do table.remove(ts, 1) end
  return table.concat(ts, ' ')
end
`

// luaWorkerIdle sets a worker idle once it holds no job, as the legacy
// worker does after each completion or failure; a worker whose
// registration is gone (UnregisterWorker) is left alone, or its hash
// would come back without its fields.
const luaWorkerIdle = `
local function worker_idle(worker_key, active, now_iso, now_ms, channel, worker)
  if redis.call('HLEN', active) > 0 or redis.call('EXISTS', worker_key) == 0 then return end
  redis.call('HSET', worker_key, 'status', 'idle', 'current_job_id', '', 'last_status_change', now_iso)
  redis.call('PUBLISH', channel, '{"worker_id":' .. cjson.encode(worker) .. ',"new_status":"idle","timestamp":' .. now_ms .. '}')
end
`

// luaStageCheck ends a write whose stage is not the published one (see
// above); it runs first in every write script. What it cannot read as a
// stage (no jobstore:stage, a hash without the field, a value no stage
// has, a key of another type) is no published stage: the write runs under
// its own, and the check never raises, so one junk key cannot stop every
// write of every process. Store.sharedStage reads the key by the same
// rules (TestStageRulesAgree).
const luaStageCheck = `
do
  local published = stage_name(redis.pcall('HGET', KEYS[#KEYS], 'stage'))
  if published and published ~= ARGV[3] then return {'STAGE', {}, {}, 0, published} end
end
`

// luaStages is the set of stage names, generated from stageNames, and
// stage_name, which reads a stored stage as storedStage does in Go: ASCII
// space around it and ASCII case do not matter, nothing else is forgiven.
// It spells out its ASCII classes and case mapping instead of using %s
// and string.lower, which some engines' Lua extends beyond ASCII.
var luaStages = func() string {
	var names []string
	for _, n := range stageNames {
		names = append(names, fmt.Sprintf("[%q] = true", n))
	}
	return "\nlocal STAGES = {" + strings.Join(names, ", ") + "}\n" + `
-- stage_name returns the stage v names, or nil (v may be any reply).
local function stage_name(v)
  if type(v) ~= 'string' then return nil end
  local n = string.match(v, '^[ \t\n\v\f\r]*(.-)[ \t\n\v\f\r]*$')
  n = string.gsub(n, '[A-Z]', function(c) return string.char(string.byte(c) + 32) end)
  if STAGES[n] then return n end
  return nil
end
`
}()

// newScriptText assembles a write script from the parts it uses, after
// the stage check every write script runs first.
func newScriptText(parts ...string) string {
	return luaStages + luaStageCheck + strings.Join(parts, "")
}

// newToolScriptText assembles a script of the operator's tools (backfill,
// verify's repair), which copy between the namespaces whatever the stage
// and take no stage argument: no stage check.
func newToolScriptText(parts ...string) string {
	return luaStages + strings.Join(parts, "")
}
