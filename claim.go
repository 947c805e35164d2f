package jobstore

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"

	"github.com/redis/go-redis/v9"
)

// Capabilities is what a worker can run: the JSON a legacy worker sends to
// the claim function findMatchingJob, as a Go value. A claim matches it
// against each pending job's service_required, requirements, workflow_id
// and customer_id by the function's rules (see ClaimJob).
//
// The zero value of each field is left out of the JSON. For the services-
// only claim of most workers:
//
//	store.ClaimJob(ctx, jobstore.Capabilities{WorkerID: "w1", Services: []string{"comfyui"}})
type Capabilities struct {
	WorkerID string `json:"worker_id"`
	// Services are the services the worker runs (job_service_required_map);
	// a job is claimed only if its service_required is one of them.
	Services []string `json:"job_service_required_map"`
	// MachineID is stored with the worker's registration.
	MachineID string `json:"machine_id,omitempty"`
	// Hardware is compared with a job's hardware requirements: each
	// required amount is a minimum.
	Hardware *Hardware `json:"hardware,omitempty"`
	// Models lists, per service, the models the worker has; a job that
	// requires models needs all of them under its service.
	Models map[string][]string `json:"models,omitempty"`
	// CustomerAccess restricts which customers' jobs the worker takes.
	CustomerAccess *CustomerAccess `json:"customer_access,omitempty"`
	// WorkflowID, when set, restricts the worker to that workflow's jobs.
	WorkflowID string `json:"workflow_id,omitempty"`
	// Extra holds any other capability, at the top level of the JSON,
	// where a job's custom requirements look for it (a requirement
	// "region": "eu" needs Extra["region"] = "eu"; a dotted name such as
	// "gpu.vendor" walks nested objects).
	Extra map[string]any `json:"-"`
}

// Hardware is a worker's hardware, as requirements compare it.
type Hardware struct {
	GPUMemoryGB float64 `json:"gpu_memory_gb,omitempty"`
	CPUCores    float64 `json:"cpu_cores,omitempty"`
	RAMGB       float64 `json:"ram_gb,omitempty"`
	// GPUModel and anything else are compared by custom requirements
	// under "hardware.<name>".
	GPUModel string `json:"gpu_model,omitempty"`
}

// CustomerAccess is a worker's customer isolation.
type CustomerAccess struct {
	// Isolation "strict" is needed by jobs that require strict isolation.
	Isolation        string   `json:"isolation,omitempty"`
	AllowedCustomers []string `json:"allowed_customers,omitempty"`
	DeniedCustomers  []string `json:"denied_customers,omitempty"`
}

// MarshalJSON writes the capabilities as a legacy worker sends them, with
// Extra's entries at the top level.
func (c Capabilities) MarshalJSON() ([]byte, error) {
	type plain Capabilities
	base, err := json.Marshal(plain(c))
	if err != nil || len(c.Extra) == 0 {
		return base, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(base, &m); err != nil {
		return nil, err
	}
	for _, k := range slices.Sorted(maps.Keys(c.Extra)) {
		if _, taken := m[k]; taken {
			return nil, fmt.Errorf("%w: capability %q is a field of Capabilities", ErrInvalidArgument, k)
		}
		v, err := json.Marshal(c.Extra[k])
		if err != nil {
			return nil, fmt.Errorf("%w: capability %q: %v", ErrInvalidArgument, k, err)
		}
		m[k] = v
	}
	return json.Marshal(m)
}

// capabilityFields are the JSON names of Capabilities' own fields, which
// Extra must not repeat.
var capabilityFields = map[string]bool{
	"worker_id": true, "job_service_required_map": true, "machine_id": true, "hardware": true,
	"models": true, "customer_access": true, "workflow_id": true,
}

// validate checks c and returns its JSON.
func (c *Capabilities) validate() ([]byte, error) {
	if err := validateWorker(c.WorkerID); err != nil {
		return nil, err
	}
	if len(c.Services) == 0 {
		return nil, fmt.Errorf("%w: worker %q has no services: it could claim no job", ErrInvalidService, c.WorkerID)
	}
	for _, svc := range c.Services {
		if err := validateService(svc); err != nil {
			return nil, err
		}
	}
	for k := range c.Extra {
		if capabilityFields[k] {
			return nil, fmt.Errorf("%w: Extra[%q] repeats a field of Capabilities; set the field instead", ErrInvalidArgument, k)
		}
	}
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("%w: capabilities: %v", ErrInvalidArgument, err)
	}
	if len(b) > maxCapabilityBytes {
		return nil, fmt.Errorf("%w: capabilities of worker %q are %d bytes of JSON, more than %d",
			ErrInvalidArgument, c.WorkerID, len(b), maxCapabilityBytes)
	}
	if d := jsonDepth(b); d > maxCapabilityDepth {
		return nil, fmt.Errorf("%w: capabilities of worker %q are nested %d levels deep, more than %d",
			ErrInvalidArgument, c.WorkerID, d, maxCapabilityDepth)
	}
	return b, nil
}

// Bounds of a worker's capabilities as JSON. The claim script decodes
// them with cjson, which refuses more than 1000 levels of nesting: deeper
// capabilities would be registered and then fail every claim. Real ones
// nest a few levels and weigh a few kilobytes.
const (
	maxCapabilityDepth = 64
	maxCapabilityBytes = 1 << 20
)

// jsonDepth returns the deepest nesting of objects and arrays in valid
// JSON b: 0 for a scalar, 1 for {"a":1}.
func jsonDepth(b []byte) int {
	depth, deepest, inString, escaped := 0, 0, false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			deepest = max(deepest, depth)
		case c == '}' || c == ']':
			depth--
		}
	}
	return deepest
}

// luaMatch is the claim function's matching, restated: matches(worker,
// job) tells whether a worker (its capabilities, decoded from JSON) can
// run a job (a table of its service_required, requirements, workflow_id
// and customer_id). The rules are findMatchingJob's:
//
//   - A worker restricted to a workflow takes only that workflow's jobs.
//   - A job's service must be among the worker's services.
//   - requirements (JSON) holds positive_requirements and
//     negative_requirements, or the positive ones at its top level;
//     unparseable requirements count as none.
//   - hardware: gpu_memory_gb, cpu_cores and ram_gb are minimums ('all'
//     means any); customer_isolation 'strict' needs a strict worker, whose
//     allowed and denied customer lists then apply; models must all be
//     among the worker's models for the job's service ('all' means any).
//   - Any other requirement names a capability (dots walk nested
//     objects): a list needs every item in the worker's list, a number is
//     a minimum, a string or boolean must be equal, an object compares
//     field by field.
//   - A negative requirement refuses a worker that has what it names.
//
// Where findMatchingJob raises a Lua error (requirements that are a bare
// number or string, a minimum compared with a value of another type, ...)
// and fails the whole claim, the claim script calls matches under pcall
// and passes over that one job.
const luaMatch = `
local function is_list(t)
  if type(t) ~= 'table' then return false end
  local n = 0
  for _ in pairs(t) do
    n = n + 1
    if t[n] == nil then return false end
  end
  return true
end

local function contains(list, v)
  for _, x in ipairs(list) do
    if x == v then return true end
  end
  return false
end

local function satisfies(have, need)
  if have == nil then return false end
  if is_list(need) then
    if not is_list(have) then return false end
    for _, x in ipairs(need) do
      if not contains(have, x) then return false end
    end
    return true
  end
  if is_list(have) then return contains(have, need) end
  if type(need) == 'number' then return type(have) == 'number' and have >= need end
  return have == need
end

local function lookup(obj, path)
  local v = obj
  for part in string.gmatch(path, '[^.]+') do
    if type(v) ~= 'table' or v[part] == nil then return nil end
    v = v[part]
  end
  return v
end

local function capability(worker, name, need)
  local have = lookup(worker, name)
  if type(need) == 'table' and not is_list(need) then
    if type(have) ~= 'table' then return false end
    for k, v in pairs(need) do
      if not satisfies(have[k], v) then return false end
    end
    return true
  end
  return satisfies(have, need)
end

local HW = {'gpu_memory_gb', 'cpu_cores', 'ram_gb'}
local function hardware_ok(have, need)
  for _, name in ipairs(HW) do
    local n = need[name]
    if n and n ~= 'all' then
      local h = have[name]
      if not h or h < n then return false end
    end
  end
  return true
end

local function customers_ok(access, isolation, customer)
  if isolation == 'strict' and access.isolation ~= 'strict' then return false end
  if customer and type(access.allowed_customers) == 'table' and not contains(access.allowed_customers, customer) then
    return false
  end
  if customer and type(access.denied_customers) == 'table' and contains(access.denied_customers, customer) then
    return false
  end
  return true
end

local function models_ok(models, need, service)
  if type(need) ~= 'table' then return true end
  local have = models[service] or {}
  if type(have) ~= 'table' then return false end
  for _, m in ipairs(need) do
    if not contains(have, m) then return false end
  end
  return true
end

local SPECIAL = {service_type = true, hardware = true, customer_isolation = true, models = true}

local function matches(worker, job)
  local req = {}
  if job.requirements and job.requirements ~= '' then
    local ok, v = pcall(cjson.decode, job.requirements)
    if ok then req = v end
  end
  local wf = worker.workflow_id
  if wf and wf ~= '' and (not job.workflow_id or job.workflow_id == '' or job.workflow_id ~= wf) then
    return false
  end
  if job.service_required then
    local map = worker.job_service_required_map
    if type(map) ~= 'table' or not contains(map, job.service_required) then return false end
  end
  local pos = req.positive_requirements or req
  if pos then
    if pos.hardware and not hardware_ok(worker.hardware or {}, pos.hardware) then return false end
    if pos.customer_isolation and not customers_ok(worker.customer_access or {}, pos.customer_isolation, job.customer_id) then
      return false
    end
    if pos.models and pos.models ~= 'all' and not models_ok(worker.models or {}, pos.models, job.service_required) then
      return false
    end
    for k, v in pairs(pos) do
      if not SPECIAL[k] and not capability(worker, k, v) then return false end
    end
  end
  local neg = req.negative_requirements
  if neg then
    for k, v in pairs(neg) do
      if k == 'hardware' then
        if worker.hardware then
          for hk, hv in pairs(v) do
            local h = worker.hardware[hk]
            if h and satisfies(h, hv) then return false end
          end
        end
      elseif capability(worker, k, v) then
        return false
      end
    end
  end
  return true
end
`

// luaValidID is validateID in Lua: an id the finishing calls accept
// (StartJob, CompleteJob, FailJob, ...). At most MaxIDLength bytes of
// valid UTF-8, with no whitespace or control character (Go's
// unicode.IsSpace and unicode.IsControl) and none of *?[]{}:\.
// TestLuaValidIDAgrees holds the two to the same answers.
var luaValidID = `
local ID_SPACE = {[0x85] = true, [0xA0] = true, [0x1680] = true, [0x2028] = true, [0x2029] = true,
  [0x202F] = true, [0x205F] = true, [0x3000] = true}
local ID_FORBIDDEN = {}
for c in string.gmatch('*?[]{}:\\', '.') do ID_FORBIDDEN[string.byte(c)] = true end
local function valid_id(id)
  local n = #id
  if n == 0 or n > ` + strconv.Itoa(MaxIDLength) + ` then return false end
  local i = 1
  while i <= n do
    local c = string.byte(id, i)
    local cp, len
    if c < 0x80 then cp, len = c, 1
    elseif c >= 0xC2 and c <= 0xDF then cp, len = c - 0xC0, 2
    elseif c >= 0xE0 and c <= 0xEF then cp, len = c - 0xE0, 3
    elseif c >= 0xF0 and c <= 0xF4 then cp, len = c - 0xF0, 4
    else return false end
    if i + len - 1 > n then return false end
    for k = 1, len - 1 do
      local cc = string.byte(id, i + k)
      if cc < 0x80 or cc > 0xBF then return false end
      cp = cp * 64 + (cc - 0x80)
    end
    if (len == 3 and cp < 0x800) or (len == 4 and (cp < 0x10000 or cp > 0x10FFFF))
      or (cp >= 0xD800 and cp <= 0xDFFF) then return false end
    if cp <= 0x20 or (cp >= 0x7F and cp <= 0x9F) or ID_SPACE[cp] or (cp >= 0x2000 and cp <= 0x200A)
      or ID_FORBIDDEN[cp] then return false end
    i = i + len
  end
  return true
end
`

// luaProgressWritable tells whether the claim's XADD into a job's
// progress:<id> stream can succeed: the key is absent, or a stream whose
// last entry id is not the largest there is (XADD * fails on such a
// stream, which only an explicit id or XSETID makes). The claim checks it
// before its first write, as a script that fails half-way keeps what it
// wrote.
const luaProgressWritable = `
local function progress_writable(key)
  local t = redis.call('TYPE', key)['ok']
  if t == 'none' then return true end
  if t ~= 'stream' then return false end
  local info = redis.call('XINFO', 'STREAM', key)
  for i = 1, #info - 1, 2 do
    if info[i] == 'last-generated-id' then
      return info[i + 1] ~= '18446744073709551615-18446744073709551615'
    end
  end
  return true
end
`

// claimScript claims, for a worker, the first job of the window at the top
// of pending that its capabilities match, and writes what findMatchingJob
// writes: the record's status, worker_id and assigned_at (<secs>.<micros>
// from the server's TIME), the job JSON in the worker's active hash (the
// record as it was before the claim, encoded by cjson as the function
// does), the worker's status, the update_job_progress and job_claimed
// messages, and the entry in the progress:<id> stream; and the
// worker_status message the legacy worker publishes after its claim.
//
// Candidates whose record is missing or not a hash are passed over, as
// jobs the matching cannot judge are (see luaMatch); and so is a matching
// job that the claim could not hand over whole: an id the finishing calls
// refuse (see luaValidID), a record whose id field is not its id (the
// worker could not read it), or a progress:<id> key that is not a stream
// (the XADD would fail half-way through the claim's writes). The reply
// lists them all, and the job stays pending for an operator to fix.
//
// It reads of each candidate only what it needs: service_required (a job
// of another service is passed over at once), then the three other fields
// matching reads, and the whole record only for the pick; and it judges
// each distinct combination of those four fields once per call. (So the
// job JSON, the record as cjson encodes it, has the function's members
// and values, but not always in its order: reading a field of a hash
// table that Redis is still rehashing changes the order in which HGETALL
// lists the fields. JSON readers see the same object; the function's own
// order varies the same way with the server's hash seed.) The call's
// token goes into the claimed record's jobstore_op field (see luaTokens),
// the one write the function does not make: a claim sent again after a
// lost reply finds it among the worker's jobs and answers with the job it
// claimed, without a second claim.
//
//	KEYS[1] -> jobs:pending           KEYS[6] -> steps:pending          (mirror)
//	KEYS[2] -> jobs:active:<worker>   KEYS[7] -> steps:active:<worker>  (mirror)
//	KEYS[3] -> worker:<worker>
//	KEYS[4] -> worker:<worker>:heartbeat
//	KEYS[5] -> jobstore:void:<worker>, tokens of claims that must take nothing
//	KEYS[#KEYS] -> jobstore:stage; ARGV[1..3] -> mirror, log, stage (every script: see lua.go)
//	ARGV[4] -> token
//	ARGV[5] -> capabilities JSON
//	ARGV[6] -> worker id
//	ARGV[7] -> window
//	ARGV[8] -> record prefix (job:), a record's key is it and the id
//	ARGV[9] -> mirror record prefix (step:)
//	ARGV[10] -> key prefix of progress streams (progress:)
//	ARGV[11] -> update_job_progress channel, ARGV[12] -> job_claimed channel
//	ARGV[13] -> worker_status channel
//	ARGV[14..] -> tokens of the worker's earlier claims whose replies were lost
//	Reply: OK id {field, value, ...} {passed over...} [{tokens still held...}]
//	       | NONE looked {passed over...} | NOHEARTBEAT | WRONGTYPE detail
//	       | BADCAPS detail
var claimScript = redis.NewScript(newScriptText(luaCore, luaTokens, luaStatus, luaMatch, luaValidID, luaProgressWritable, `
local tok, worker = ARGV[4], ARGV[6]
-- The reads it needs anyway check the types of pending and the active
-- hash; the worker hash gets a probe. All before any write.
local held = redis.pcall('HKEYS', KEYS[2])
if held.err then return done('WRONGTYPE', wrongtype(KEYS[2], 'hash')) end
local ids = redis.pcall('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[7]) - 1)
if ids.err then return done('WRONGTYPE', wrongtype(KEYS[1], 'zset')) end
local bad = wrongtype(KEYS[3], 'hash')
if bad then return done('WRONGTYPE', bad) end
-- A claim whose caller gave up on it, and whose token a later claim of
-- the worker carried and found on no job, runs late: it takes nothing,
-- as no call is left to hand its job over.
local void = redis.pcall('SISMEMBER', KEYS[5], tok)
if type(void) == 'table' and void.err then return done('WRONGTYPE', wrongtype(KEYS[5], 'set')) end
if void == 1 then return done('NONE', 0, {}) end
local ok, caps = pcall(cjson.decode, ARGV[5])
if not ok then return done('BADCAPS', errtext(caps)) end

-- A claim of this call (sent again by go-redis) or of an earlier call of
-- the worker whose reply was lost (ARGV[14..]) may have taken a job: the
-- first still held and not finished is handed over, and the reply lists
-- the tokens of the others, still to hand over. A job found finished (a
-- legacy cancel raced the lost claim) leaves the hash.
local toks = {tok}
for i = 14, #ARGV do toks[#toks + 1] = ARGV[i] end
local first, others = nil, {}
for _, id in ipairs(held) do
  local rec = ARGV[8] .. id
  if redis.call('TYPE', rec)['ok'] == 'hash' then
    for _, t in ipairs(toks) do
      if has_token(rec, t) then
        if FINISHED[redis.call('HGET', rec, 'status') or ''] then
          redis.call('HDEL', KEYS[2], id)
          mirror_field(KEYS[2], KEYS[7], id, false)
        elseif not first then
          first = id
        else
          others[#others + 1] = t
        end
        break
      end
    end
  end
end
-- Every earlier token is voided, found on a job or not: a copy of its
-- claim that go-redis sent again may still be on its way, and when it
-- arrives it must take nothing (see above), though the job the first
-- copy took is handed over now or later (the hand-over looks at the held
-- jobs, not at this set). Kept an hour, far longer than a request can
-- wait in a socket.
for i = 14, #ARGV do redis.call('SADD', KEYS[5], ARGV[i]) end
if #ARGV >= 14 then redis.call('EXPIRE', KEYS[5], 3600) end
if first then
  -- Handed over: the mirror gets the claim again, in case its first run
  -- could not mirror it.
  mirror_key(ARGV[8] .. first, ARGV[9] .. first)
  mirror_member(KEYS[1], KEYS[6], first)
  mirror_field(KEYS[2], KEYS[7], first, false)
  return done('OK', first, redis.call('HGETALL', ARGV[8] .. first), {}, others)
end
if redis.call('EXISTS', KEYS[4]) == 0 then return done('NOHEARTBEAT') end

-- A job whose service the worker does not run never matches, and never
-- makes the function fail (its service check comes before anything that
-- can): such jobs are passed over before anything else is looked at.
local SVC
if type(caps.job_service_required_map) == 'table' then
  SVC = {}
  for _, s in ipairs(caps.job_service_required_map) do SVC[s] = true end
end
local verdicts, passed = {}, {}
local function part(s)
  if s == nil then return '-' end
  return #s .. ':' .. s
end
for _, id in ipairs(ids) do
  local rec = ARGV[8] .. id
  -- The service first, with one HGET: a job of a service the worker does
  -- not run is passed over at once (it never matches, and never makes the
  -- function fail: its service check comes first). The other fields
  -- matching reads come next, and the whole record only for the pick.
  local job
  local svc = redis.pcall('HGET', rec, 'service_required')
  if type(svc) == 'table' and svc.err then
    passed[#passed + 1] = id .. ': ' .. rec .. ' is not a hash'
  elseif not (SVC and svc and not SVC[svc]) then
    local f = redis.call('HMGET', rec, 'requirements', 'workflow_id', 'customer_id')
    if svc or f[1] or f[2] or f[3] or redis.call('EXISTS', rec) == 1 then
      job = {service_required = svc or nil, requirements = f[1] or nil, workflow_id = f[2] or nil, customer_id = f[3] or nil}
    end
  end
  if job then
    local key = part(job.service_required) .. part(job.requirements) .. part(job.workflow_id) .. part(job.customer_id)
    local v = verdicts[key]
    if v == nil then
      local ok, m = pcall(matches, caps, job)
      if ok then v = m and 1 or 0 else v = errtext(m) end
      verdicts[key] = v
    end
    if type(v) == 'string' then
      passed[#passed + 1] = id .. ': matching failed: ' .. v
    elseif v == 1 and not valid_id(id) then
      passed[#passed + 1] = id .. ': an id the finishing calls refuse'
    elseif v == 1 and redis.call('HGET', rec, 'id') ~= id then
      passed[#passed + 1] = id .. ': ' .. rec .. ' has no id field, or another one'
    elseif v == 1 and not progress_writable(ARGV[10] .. id) then
      passed[#passed + 1] = id .. ': ' .. ARGV[10] .. id .. ' is not a stream, or has used up its entry ids'
    elseif v == 1 then
      local h = redis.call('HGETALL', rec)
      local snapshot = {}
      for i = 1, #h, 2 do snapshot[h[i]] = h[i + 1] end
      local json = cjson.encode(snapshot)
      local t = redis.call('TIME')
      local stamp = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
      local ms = tonumber(t[1]) * 1000
      redis.call('ZREM', KEYS[1], id)
      redis.call('HSET', rec, 'status', 'assigned', 'worker_id', worker, 'assigned_at', stamp,
        'jobstore_op', push_token(rec, tok))
      redis.call('HSET', KEYS[2], id, json)
      redis.call('HSET', KEYS[3], 'status', 'busy', 'current_job_id', id, 'last_status_change', stamp)
      -- The messages in the newest function's order (ceb26d4): job_claimed,
      -- then update_job_progress, then the stream entry.
      redis.call('PUBLISH', ARGV[12], cjson.encode({job_id = id, worker_id = worker, status = 'claimed',
        message = 'Job claimed by worker', claimed_at = stamp, timestamp = ms,
        service_required = snapshot.service_required, customer_id = snapshot.customer_id,
        workflow_id = snapshot.workflow_id, step_number = snapshot.step_number, total_steps = snapshot.total_steps}))
      redis.call('PUBLISH', ARGV[11], cjson.encode({job_id = id, worker_id = worker, progress = 0, timestamp = ms}))
      redis.call('XADD', ARGV[10] .. id, '*', 'job_id', id, 'worker_id', worker, 'status', 'assigned',
        'progress', '0', 'message', 'Job assigned to worker', 'assigned_at', stamp)
      redis.call('PUBLISH', ARGV[13], cjson.encode({worker_id = worker, old_status = 'idle', new_status = 'busy',
        current_job_id = id, timestamp = ms}))
      mirror_key(rec, ARGV[9] .. id)
      mirror_member(KEYS[1], KEYS[6], id)
      mirror_field(KEYS[2], KEYS[7], id, false)
      return done('OK', id, redis.call('HGETALL', rec), passed)
    end
  end
end
return done('NONE', #ids, passed)
`))

// ClaimJob gives the worker the first job, in claim order, that its
// capabilities match, exactly as the legacy claim function findMatchingJob
// would pick it from the same Redis: it looks at the window at the top of
// pending (100 jobs by default, see WithClaimWindow) and applies the
// function's matching rules (see Capabilities and the README). It writes
// what the function writes, atomically and in one round trip, and mirrors
// the record, the pending entry and the active entry when the stage
// dual-writes. The job comes back as it is after the claim. When no job of
// the window matches it returns an error wrapping ErrNoJob.
//
// The worker must be registered and alive (RegisterWorker, then Heartbeat
// or KeepAlive): a claim without its heartbeat fails with
// ErrNotRegistered, as recovery would take the job back at once. Where
// findMatchingJob fails on a job it cannot judge, and claims nothing,
// ClaimJob passes over that job, logs it once at level Warn, and goes on;
// so it does with a job it could not hand over whole (see claimScript).
//
// A claim that ends in an error (a deadline, a lost connection) may have
// been applied by Redis all the same. The Store keeps that call's token,
// and the worker's next ClaimJob on it sends the same one: if the lost
// claim took a job, that call answers with it instead of claiming
// another; and its token is voided in Redis (jobstore:void:<worker>), so
// that a copy of it still on its way takes nothing when it arrives. A
// Store keeps the tokens of up to 64 such claims per worker, in memory: a
// worker that restarts finds what it holds with HeldJobs, and a claim of
// the old process that reaches Redis after that holds its job in the
// worker's name (HeldJobs lists it) until the worker's heartbeat lapses
// and recovery takes it back.
func (s *Store) ClaimJob(ctx context.Context, caps Capabilities) (*Job, error) {
	capsJSON, err := caps.validate()
	if err != nil {
		return nil, err
	}
	w := caps.WorkerID
	tok := token()
	earlier := s.takeUnsettled(w)
	r, err := s.run(ctx, func(st Stage) spec {
		mirrorPrefix := ""
		if mns, ok := st.Mirror(); ok {
			mirrorPrefix = s.space(mns).recordPrefix()
		}
		return spec{op: opClaim, script: claimScript,
			keys:   func(k keyspace) []string { return []string{k.pending(), k.active(w)} },
			shared: []string{workerKey(s.prefix, w), heartbeatKey(s.prefix, w), voidKey(s.prefix, w)},
			args: append([]any{tok, capsJSON, w, s.window, s.space(st.Primary()).recordPrefix(), mirrorPrefix,
				progressStreamKey(s.prefix, ""), s.channel(chProgress), s.channel(chJobClaimed), s.channel(chWorkerStatus)},
				earlier...)}
	})
	switch {
	case err != nil:
		// Sending a token again is harmless where its claim was not
		// applied: the script finds no job holding it.
		s.putUnsettled(w, append(earlier, tok)...)
		return nil, err
	case r.status == "OK":
		s.putUnsettled(w, stringsOf(r.list(3))...)
	case r.status == "WRONGTYPE" || r.status == "BADCAPS":
		s.putUnsettled(w, earlier...) // the script stopped before it looked
	}
	return s.decodeClaim(ctx, w, caps.Services, r)
}

// maxUnsettled bounds the tokens of lost claims a Store keeps per worker:
// the oldest go first.
const maxUnsettled = 64

// takeUnsettled removes and returns the worker's tokens of lost claims.
func (s *Store) takeUnsettled(w string) []any {
	s.unsettledMu.Lock()
	defer s.unsettledMu.Unlock()
	toks := s.unsettled[w]
	delete(s.unsettled, w)
	out := make([]any, len(toks))
	for i, t := range toks {
		out[i] = t
	}
	return out
}

// putUnsettled adds tokens of lost claims for the worker.
func (s *Store) putUnsettled(w string, toks ...any) {
	if len(toks) == 0 {
		return
	}
	s.unsettledMu.Lock()
	defer s.unsettledMu.Unlock()
	if s.unsettled == nil {
		s.unsettled = map[string][]string{}
	}
	list := s.unsettled[w]
	for _, t := range toks {
		if str, ok := t.(string); ok && str != "" {
			list = append(list, str)
		}
	}
	if len(list) > maxUnsettled {
		list = list[len(list)-maxUnsettled:]
	}
	s.unsettled[w] = list
}

// stringsOf returns the strings among xs.
func stringsOf(xs []any) []any {
	var out []any
	for _, x := range xs {
		if s, ok := x.(string); ok {
			out = append(out, s)
		}
	}
	return out
}

// HeldJobs returns the ids of the jobs the worker holds (the fields of
// its active hash in the primary namespace), sorted. A
// worker that restarts under the same id calls it to finish or fail what
// it held before.
func (s *Store) HeldJobs(ctx context.Context, worker string) ([]string, error) {
	if err := validateWorker(worker); err != nil {
		return nil, err
	}
	key := s.space(s.Stage().Primary()).active(worker)
	ids, err := s.rdb.HKeys(ctx, key).Result()
	if err != nil {
		if hasErrorPrefix(err, "WRONGTYPE") {
			return nil, fmt.Errorf("%w: %s is not a hash", ErrCorruptRecord, key)
		}
		return nil, redisError("held jobs", worker, err)
	}
	slices.Sort(ids)
	return ids, nil
}

// decodeClaim reads the claim script's reply.
func (s *Store) decodeClaim(ctx context.Context, worker string, services []string, r reply) (*Job, error) {
	switch r.status {
	case "OK":
		s.logPassed(ctx, r.list(2))
		id := r.str(0)
		h, err := pairsToMap(id, r.list(1))
		if err != nil {
			return nil, err
		}
		j, err := decodeJob(id, h)
		if err != nil {
			// The claim stands: the job is the worker's until it fails
			// it, or recovery takes it back.
			return nil, fmt.Errorf("claimed, but cannot read the record: %w", err)
		}
		return j, nil
	case "NONE":
		s.logPassed(ctx, r.list(1))
		return nil, fmt.Errorf("%w: worker=%q services=%q (looked at %d pending)", ErrNoJob, worker, services, r.int(0))
	case "NOHEARTBEAT":
		return nil, fmt.Errorf("%w: worker=%q has no heartbeat; RegisterWorker and keep it alive (KeepAlive)", ErrNotRegistered, worker)
	case "WRONGTYPE":
		return nil, fmt.Errorf("%w: claim worker=%q: %s", ErrCorruptRecord, worker, r.str(0))
	case "BADCAPS":
		return nil, fmt.Errorf("%w: capabilities of worker %q: the claim script cannot decode them: %s", ErrInvalidArgument, worker, r.str(0))
	}
	return nil, unexpected(opClaim, "", r)
}

// maxPassedMemory bounds how many passed-over jobs a Store remembers;
// past it, it forgets them all and may log each once more.
const maxPassedMemory = 10000

// logPassed logs, once per job and Store, each job a claim passed over.
func (s *Store) logPassed(ctx context.Context, notes []any) {
	for _, n := range notes {
		text := fmt.Sprint(n)
		if _, seen := s.passedOver.LoadOrStore(text, true); seen {
			continue
		}
		if s.passedCount.Add(1) > maxPassedMemory {
			s.passedOver.Clear()
			s.passedCount.Store(0)
		}
		s.log.LogAttrs(ctx, slog.LevelWarn, "jobstore: claim passed over a job", slog.String("why", text))
	}
}

func scoreArg(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }
