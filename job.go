package jobstore

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Status is the state of a job, stored in the record's status field.
type Status string

// The statuses of the legacy services. jobstore moves jobs through
// pending, assigned, in_progress and one of completed, failed or
// cancelled; it reads the others as other services write them, and keeps
// any status it does not know as it is.
const (
	StatusPending    Status = "pending"
	StatusQueued     Status = "queued"
	StatusAssigned   Status = "assigned"
	StatusAccepted   Status = "accepted"
	StatusInProgress Status = "in_progress"
	StatusCompleted  Status = "completed"
	StatusFailed     Status = "failed"
	StatusCancelled  Status = "cancelled"
	StatusTimeout    Status = "timeout"
	StatusUnworkable Status = "unworkable"
)

// statusRanks orders the statuses by how far a job has moved on: the
// second part of a record's freshness (see freshness.go). It is also the
// list of known statuses, and the Lua tables are generated from it.
var statusRanks = map[Status]int{
	StatusPending: 0, StatusQueued: 0,
	StatusAssigned: 1, StatusAccepted: 1,
	StatusInProgress: 2,
	StatusCompleted:  3, StatusFailed: 3, StatusCancelled: 3, StatusTimeout: 3, StatusUnworkable: 3,
}

// Known reports whether s is one of the statuses above.
func (s Status) Known() bool { _, ok := statusRanks[s]; return ok }

// Finished reports whether s is a final status: nothing moves a job on from
// completed, failed, cancelled, timeout or unworkable.
func (s Status) Finished() bool { return statusRanks[s] == 3 }

// Limits on what a Job may hold. Inputs outside them are refused before
// anything is written.
const (
	MaxIDLength      = 128 // bytes, for job, worker and workflow ids
	MaxServiceLength = 128 // bytes
	MaxPriority      = 1000
	// DefaultPriority is the priority of a job submitted with priority 0,
	// as the legacy API does (priority || 50), and of a record whose
	// priority field is empty or cannot be read.
	DefaultPriority = 50
	// DefaultMaxRetries is the max_retries of a job submitted with 0, and
	// of a record without a readable one, as in the legacy services.
	DefaultMaxRetries = 3
	maxMaxRetries     = 1000
	// DefaultMaxPayloadBytes is the default limit on payload, requirements,
	// result and error text; see WithMaxPayloadBytes.
	DefaultMaxPayloadBytes = 1 << 20
	maxExtraFields         = 256
	maxTextLength          = 1024 // bytes, for customer ids and similar labels
)

// Job is one job record: the hash at job:<id> (or step:<id>), with its
// result or error from jobs:completed and jobs:failed.
//
// Times are zero when the record does not have them. Fields of a record
// that Job has no field for are kept in Extra, and jobstore never drops
// them: state changes update single fields and the mirror copies the whole
// hash.
//
// SubmitJob reads the fields up to Ctx and the trace ids; the lifecycle
// fields (Status, RetryCount, WorkerID, ...) are written by state changes
// only.
type Job struct {
	ID      string `json:"id"`               // SubmitJob generates a UUID when empty
	Service string `json:"service_required"` // the service that must run it
	// Priority orders claims, higher first. SubmitJob stores
	// DefaultPriority (50) for 0, as the legacy API does.
	Priority int `json:"priority"`
	// Payload is JSON; SubmitJob stores {} when it is empty, null, false,
	// 0 or "", as the legacy API does (payload || {}).
	Payload json.RawMessage `json:"payload,omitempty"`
	// Requirements is a JSON object matched against worker capabilities
	// (see Capabilities); empty, null, false, 0 or "" mean none.
	Requirements json.RawMessage `json:"requirements,omitempty"`
	CustomerID   string          `json:"customer_id,omitempty"`

	WorkflowID string `json:"workflow_id,omitempty"`
	// WorkflowPriority, when not zero, orders the job in place of Priority,
	// so that the steps of a workflow are claimed together.
	WorkflowPriority int `json:"workflow_priority,omitempty"`
	// WorkflowDatetime, when not zero, orders the job in place of
	// CreatedAt. It is stored as Unix milliseconds, as the legacy API does.
	WorkflowDatetime time.Time       `json:"workflow_datetime,omitzero"`
	CurrentStep      int             `json:"current_step,omitempty"`
	TotalSteps       int             `json:"total_steps,omitempty"`
	Ctx              json.RawMessage `json:"ctx,omitempty"` // JSON context of the workflow; null, false, 0 or "" mean none

	// Trace and span ids, as the legacy API stores them; SubmitJob makes
	// random ones (of OpenTelemetry's sizes) when empty, and the workflow
	// ones only for a job of a workflow.
	TraceID         string `json:"job_trace_id,omitempty"`
	SpanID          string `json:"job_span_id,omitempty"`
	WorkflowTraceID string `json:"workflow_trace_id,omitempty"`
	WorkflowSpanID  string `json:"workflow_span_id,omitempty"`

	Status     Status `json:"status"`      // SubmitJob always stores pending
	RetryCount int    `json:"retry_count"` // failed attempts so far
	// MaxRetries bounds the attempts: a failed job is retried while
	// RetryCount+1 < MaxRetries, the legacy rule. SubmitJob stores
	// DefaultMaxRetries for 0.
	MaxRetries       int    `json:"max_retries"`
	WorkerID         string `json:"worker_id,omitempty"` // the worker holding the job, or that held it last
	LastFailedWorker string `json:"last_failed_worker,omitempty"`
	// Error is the last failure: the error of the job's entry in
	// jobs:failed while that hash keeps it, else the record's error field.
	Error string `json:"error,omitempty"`
	// Result is what the worker passed to CompleteJob, read from the
	// job's entry in jobs:completed (see CompleteJob for its shape); nil
	// when there is none, or once that hash has expired.
	Result json.RawMessage `json:"result,omitempty"`

	CreatedAt   time.Time `json:"created_at,omitzero"`  // SubmitJob sets it when zero
	AssignedAt  time.Time `json:"assigned_at,omitzero"` // when a worker claimed it
	StartedAt   time.Time `json:"started_at,omitzero"`  // when StartJob was called
	CompletedAt time.Time `json:"completed_at,omitzero"`
	FailedAt    time.Time `json:"failed_at,omitzero"` // the last failure
	CancelledAt time.Time `json:"cancelled_at,omitzero"`

	// Extra holds the record's fields that Job has no field for, such as
	// processing_time written by other services. SubmitJob writes them as
	// given.
	Extra map[string]string `json:"extra,omitempty"`
	// Unreadable holds, with their raw values, the fields of the record
	// that Job has a field for but whose value could not be read (a
	// priority of "NaN", a time that is no time, a payload that is not
	// JSON). The Job field then has its default: DefaultPriority for
	// priority, DefaultMaxRetries for max_retries, zero for other numbers
	// and times, nil for JSON.
	Unreadable map[string]string `json:"unreadable,omitempty"`
}

// Record field names, as the legacy services spell them.
const (
	fID               = "id"
	fService          = "service_required"
	fPriority         = "priority"
	fPayload          = "payload"
	fRequirements     = "requirements"
	fCustomerID       = "customer_id"
	fCreatedAt        = "created_at"
	fStatus           = "status"
	fRetryCount       = "retry_count"
	fMaxRetries       = "max_retries"
	fWorkflowID       = "workflow_id"
	fWorkflowPriority = "workflow_priority"
	fWorkflowDatetime = "workflow_datetime"
	fCurrentStep      = "current_step"
	fTotalSteps       = "total_steps"
	fTraceID          = "job_trace_id"
	fSpanID           = "job_span_id"
	fWorkflowTraceID  = "workflow_trace_id"
	fWorkflowSpanID   = "workflow_span_id"
	fCtx              = "ctx"
	fWorkerID         = "worker_id"
	fLastFailedWorker = "last_failed_worker"
	fError            = "error"
	fAssignedAt       = "assigned_at"
	fStartedAt        = "started_at"
	fCompletedAt      = "completed_at"
	fFailedAt         = "failed_at"
	fCancelledAt      = "cancelled_at"
)

// submitFields are the fields the legacy API's submit writes, in its
// order; every one is written, empty when absent.
var submitFields = []string{
	fID, fService, fPriority, fPayload, fRequirements, fCustomerID, fCreatedAt, fStatus,
	fRetryCount, fMaxRetries, fWorkflowID, fWorkflowPriority, fWorkflowDatetime,
	fCurrentStep, fTotalSteps, fTraceID, fSpanID, fWorkflowTraceID, fWorkflowSpanID, fCtx,
}

// knownFields are the fields Job has a field for, and jobstore's own.
var knownFields = func() map[string]bool {
	m := map[string]bool{fOpToken: true}
	for _, f := range submitFields {
		m[f] = true
	}
	for _, f := range []string{fWorkerID, fLastFailedWorker, fError, fAssignedAt, fStartedAt,
		fCompletedAt, fFailedAt, fCancelledAt} {
		m[f] = true
	}
	return m
}()

// isoLayout is how jobstore writes timestamps: ISO-8601 in UTC with
// milliseconds, what JavaScript's Date.toISOString writes.
const isoLayout = "2006-01-02T15:04:05.000Z"

func formatTime(t time.Time) string { return t.UTC().Format(isoLayout) }

// validateID checks a job id; see ErrInvalidID.
func validateID(id string) error {
	switch {
	case id == "":
		return fmt.Errorf("%w: empty", ErrInvalidID)
	case len(id) > MaxIDLength:
		return fmt.Errorf("%w: %d bytes, longer than %d", ErrInvalidID, len(id), MaxIDLength)
	case !utf8.ValidString(id):
		return fmt.Errorf("%w: id=%q is not valid UTF-8", ErrInvalidID, id)
	}
	for _, r := range id {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("%w: id=%q contains whitespace or a control character", ErrInvalidID, id)
		}
		if strings.ContainsRune(`*?[]{}:\`, r) {
			return fmt.Errorf("%w: id=%q contains %q", ErrInvalidID, id, r)
		}
	}
	return nil
}

// validateName checks a service name or worker id: non-empty, at most max
// bytes of UTF-8, no whitespace or control characters, and none of
// forbidden.
func validateName(sentinel error, what, s string, max int, forbidden string) error {
	switch {
	case s == "":
		return fmt.Errorf("%w: %s is empty", sentinel, what)
	case len(s) > max:
		return fmt.Errorf("%w: %s is %d bytes, longer than %d", sentinel, what, len(s), max)
	case !utf8.ValidString(s):
		return fmt.Errorf("%w: %s=%q is not valid UTF-8", sentinel, what, s)
	}
	for _, r := range s {
		if unicode.IsSpace(r) || unicode.IsControl(r) {
			return fmt.Errorf("%w: %s=%q contains whitespace or a control character", sentinel, what, s)
		}
		if strings.ContainsRune(forbidden, r) {
			return fmt.Errorf("%w: %s=%q contains %q", sentinel, what, s, r)
		}
	}
	return nil
}

func validateService(s string) error {
	return validateName(ErrInvalidService, "service", s, MaxServiceLength, "")
}

// validateWorker checks a worker id. It must not contain ':' or glob
// characters, since it ends the key jobs:active:<worker> and is in
// worker:<id>:heartbeat.
func validateWorker(w string) error {
	return validateName(ErrInvalidWorker, "worker id", w, MaxIDLength, `*?[]{}:\`)
}

// validateText checks free text such as a customer id or failure reason.
func validateText(what, s string, max int) error {
	if len(s) > max {
		return fmt.Errorf("%w: %s is %d bytes, longer than %d", ErrInvalidArgument, what, len(s), max)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalidArgument, what)
	}
	return nil
}

// validateJSON checks that raw is one valid JSON value of at most max bytes.
func validateJSON(what string, raw []byte, max int) error {
	if len(raw) > max {
		return fmt.Errorf("%w: %s is %d bytes, limit %d", ErrPayloadTooLarge, what, len(raw), max)
	}
	if !json.Valid(raw) {
		return fmt.Errorf("%w: %s is not valid JSON", ErrInvalidPayload, what)
	}
	return nil
}

func validatePriority(what string, p int) error {
	if p < 0 || p > MaxPriority {
		return fmt.Errorf("%w: %s %d is outside 0..%d", ErrInvalidPriority, what, p, MaxPriority)
	}
	return nil
}

// validateSubmit checks j for submission. It changes nothing.
func validateSubmit(j *Job, maxPayload int) error {
	if err := validateID(j.ID); err != nil {
		return err
	}
	if err := validateService(j.Service); err != nil {
		return err
	}
	if err := validatePriority("priority", j.Priority); err != nil {
		return err
	}
	if err := validatePriority("workflow priority", j.WorkflowPriority); err != nil {
		return err
	}
	if j.MaxRetries < 0 || j.MaxRetries > maxMaxRetries {
		return fmt.Errorf("%w: %d is outside 0..%d", ErrInvalidMaxRetries, j.MaxRetries, maxMaxRetries)
	}
	if j.CurrentStep < 0 || j.TotalSteps < 0 {
		return fmt.Errorf("%w: negative workflow step", ErrInvalidArgument)
	}
	// Readers (GetJob, the legacy services) hold numbers as JavaScript
	// does: integers above 2^53 do not read back.
	if j.CurrentStep > maxSafeInteger || j.TotalSteps > maxSafeInteger {
		return fmt.Errorf("%w: workflow step above 2^53-1", ErrInvalidArgument)
	}
	// Times must be stored in forms that read back: ISO-8601 has
	// four-digit years, and workflow_datetime is unsigned Unix ms.
	if y := j.CreatedAt.UTC().Year(); !j.CreatedAt.IsZero() && (y < 1970 || y > 9999) {
		return fmt.Errorf("%w: created at %v is outside the years 1970..9999", ErrInvalidArgument, j.CreatedAt)
	}
	if !j.WorkflowDatetime.IsZero() && j.WorkflowDatetime.UnixMilli() <= 0 {
		return fmt.Errorf("%w: workflow datetime %v is not after 1970", ErrInvalidArgument, j.WorkflowDatetime)
	}
	// Read back as at most 15 digits of ms (parseTimeMs), and scored
	// exactly only below 2^53 ms.
	if ms := j.WorkflowDatetime.UnixMilli(); !j.WorkflowDatetime.IsZero() && ms >= maxWorkflowMs {
		return fmt.Errorf("%w: workflow datetime %v is too far ahead", ErrInvalidArgument, j.WorkflowDatetime)
	}
	if len(bytes.TrimSpace(j.Payload)) > 0 {
		if err := validateJSON("payload", j.Payload, maxPayload); err != nil {
			return err
		}
	}
	for _, r := range []struct {
		what string
		raw  json.RawMessage
	}{{"requirements", j.Requirements}, {"ctx", j.Ctx}} {
		if len(bytes.TrimSpace(r.raw)) > 0 {
			if err := validateJSON(r.what, r.raw, maxPayload); err != nil {
				return err
			}
		}
	}
	// Requirements other than an object make the legacy claim function
	// fail (a number, a string, true) or never match (a list), blocking
	// the legacy workers' queue: refused.
	if r := bytes.TrimSpace(j.Requirements); len(r) > 0 && r[0] != '{' {
		return fmt.Errorf("%w: requirements must be a JSON object, not %s", ErrInvalidPayload, truncate(string(r), 32))
	}
	if !jsFalsy(j.Requirements) {
		if err := checkRequirements(j.Requirements); err != nil {
			return err
		}
	}
	for _, t := range []struct{ what, v string }{
		{"customer id", j.CustomerID}, {"workflow id", j.WorkflowID}, {"trace id", j.TraceID},
		{"span id", j.SpanID}, {"workflow trace id", j.WorkflowTraceID}, {"workflow span id", j.WorkflowSpanID},
	} {
		if err := validateText(t.what, t.v, maxTextLength); err != nil {
			return err
		}
	}
	if len(j.Extra) > maxExtraFields {
		return fmt.Errorf("%w: %d extra fields, limit %d", ErrInvalidArgument, len(j.Extra), maxExtraFields)
	}
	extraBytes := 0
	for k, v := range j.Extra {
		if extraBytes += len(k) + len(v); extraBytes > maxPayload {
			return fmt.Errorf("%w: extra fields are more than %d bytes together", ErrPayloadTooLarge, maxPayload)
		}
		if knownFields[k] {
			return fmt.Errorf("%w: extra field %q is a known field; set it on Job instead", ErrInvalidArgument, k)
		}
		if err := validateName(ErrInvalidArgument, "extra field name", k, MaxIDLength, ""); err != nil {
			return err
		}
		if err := validateText("extra field "+k, v, maxPayload); err != nil {
			return err
		}
	}
	return nil
}

// maxWorkflowMs bounds workflow_datetime: 15 digits of Unix ms, the
// most parseTimeMs reads (the year 33658).
const maxWorkflowMs = 1e15

// checkRequirements refuses requirements whose shape makes the legacy
// claim function findMatchingJob raise a Lua error, whatever the worker:
// that error fails the whole claim, so while such a job is among the 100
// the function looks at, no legacy worker of its service gets any job.
// The shapes, from the function's code (fixtures/findMatchingJob.*.lua):
// positive_requirements and negative_requirements that are present must
// be objects (it indexes the one and iterates the other); hardware, in
// either, must be an object; and gpu_memory_gb, cpu_cores and ram_gb in
// the positive hardware must be numbers or "all" (it compares them with
// the worker's numbers with <); and models, when a list, must list strings
// or numbers (it concatenates them into a log line). Lua's truth is the test: only an absent
// member or false is skipped; null (cjson.null), 0 and "" count as present.
func checkRequirements(raw json.RawMessage) error {
	var req map[string]json.RawMessage
	if err := json.Unmarshal(raw, &req); err != nil {
		return fmt.Errorf("%w: requirements: %v", ErrInvalidPayload, err)
	}
	object := func(v json.RawMessage) (map[string]json.RawMessage, bool) {
		var m map[string]json.RawMessage
		b := bytes.TrimSpace(v)
		return m, len(b) > 0 && b[0] == '{' && json.Unmarshal(b, &m) == nil
	}
	bad := func(what string, v json.RawMessage) error {
		return fmt.Errorf("%w: requirements: %s must be %s, not %s (the legacy claim function fails on it)",
			ErrInvalidPayload, what, map[bool]string{true: "a number or \"all\"", false: "an object"}[strings.HasPrefix(what, "hardware.")],
			truncate(string(bytes.TrimSpace(v)), 32))
	}
	pos := req
	present := func(v json.RawMessage, ok bool) bool { return ok && string(bytes.TrimSpace(v)) != "false" }
	if v, ok := req["positive_requirements"]; present(v, ok) {
		m, ok := object(v)
		if !ok {
			return bad("positive_requirements", v)
		}
		pos = m
	}
	if v, ok := pos["hardware"]; present(v, ok) {
		hw, ok := object(v)
		if !ok {
			return bad("hardware", v)
		}
		for _, name := range []string{"gpu_memory_gb", "cpu_cores", "ram_gb"} {
			n, ok := hw[name]
			if !present(n, ok) || string(bytes.TrimSpace(n)) == `"all"` {
				continue
			}
			var f float64
			if string(bytes.TrimSpace(n)) == "null" || json.Unmarshal(n, &f) != nil {
				return bad("hardware."+name, n)
			}
		}
	}
	// Each model the worker lacks goes into a log line by concatenation,
	// which fails on anything but a string or a number.
	if v, ok := pos["models"]; ok {
		var models []json.RawMessage
		if b := bytes.TrimSpace(v); len(b) > 0 && b[0] == '[' && json.Unmarshal(b, &models) == nil {
			for _, m := range models {
				var str string
				var f float64
				if string(bytes.TrimSpace(m)) == "null" || (json.Unmarshal(m, &str) != nil && json.Unmarshal(m, &f) != nil) {
					return fmt.Errorf("%w: requirements: every model must be a string or a number, not %s (the legacy claim function fails on it)",
						ErrInvalidPayload, truncate(string(bytes.TrimSpace(m)), 32))
				}
			}
		}
	}
	if v, ok := req["negative_requirements"]; present(v, ok) {
		neg, ok := object(v)
		if !ok {
			return bad("negative_requirements", v)
		}
		// Iterated with pairs whenever the worker has hardware: even
		// false fails there.
		if hw, ok := neg["hardware"]; ok {
			if _, ok := object(hw); !ok {
				return bad("negative_requirements.hardware", hw)
			}
		}
	}
	return nil
}

// randomHex returns n random bytes in hex, as OpenTelemetry ids are.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return hex.EncodeToString(b)
}

// newID returns a random UUID (version 4), the form legacy ids take.
func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b[:])
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}

// withDefaults returns a copy of j with what SubmitJob fills in: the id,
// priority, max retries, created_at, payload, status and trace ids.
func withDefaults(j Job, now time.Time) Job {
	if j.ID == "" {
		j.ID = newID()
	}
	if j.Priority == 0 {
		j.Priority = DefaultPriority
	}
	if j.MaxRetries == 0 {
		j.MaxRetries = DefaultMaxRetries
	}
	if j.CreatedAt.IsZero() {
		j.CreatedAt = now
	}
	j.CreatedAt = j.CreatedAt.UTC().Truncate(time.Millisecond)
	// The legacy API stores payload || {}, and requirements and ctx only
	// when truthy: JSON null, false, 0 and "" are absent.
	if jsFalsy(j.Payload) {
		j.Payload = json.RawMessage("{}")
	}
	if jsFalsy(j.Requirements) {
		j.Requirements = nil
	}
	if jsFalsy(j.Ctx) {
		j.Ctx = nil
	}
	if j.TraceID == "" {
		j.TraceID = randomHex(16)
	}
	if j.SpanID == "" {
		j.SpanID = randomHex(8)
	}
	if j.startsWorkflowSpan() {
		if j.WorkflowTraceID == "" {
			j.WorkflowTraceID = randomHex(16)
		}
		if j.WorkflowSpanID == "" {
			j.WorkflowSpanID = randomHex(8)
		}
	}
	j.Status, j.RetryCount = StatusPending, 0
	return j
}

// jsFalsy reports whether raw is empty or a JSON value that JavaScript
// treats as false: null, false, 0 or "".
func jsFalsy(raw json.RawMessage) bool {
	v := bytes.TrimSpace(raw)
	switch string(v) {
	case "", "null", "false", `""`:
		return true
	}
	if f, err := strconv.ParseFloat(string(v), 64); err == nil && f == 0 {
		return true
	}
	return false
}

// startsWorkflowSpan is the legacy API's test for a job of a workflow:
// workflow id, current step and total steps all set.
func (j *Job) startsWorkflowSpan() bool {
	return j.WorkflowID != "" && j.CurrentStep != 0 && j.TotalSteps != 0
}

// submitRecord returns the fields SubmitJob writes for j (after
// withDefaults), name, value, ...: the legacy API's fields in its order,
// empty for those absent, then Extra in name order.
func submitRecord(j *Job) []any {
	itoa := func(n int) string {
		if n == 0 {
			return ""
		}
		return strconv.Itoa(n)
	}
	wdt := ""
	if !j.WorkflowDatetime.IsZero() {
		wdt = strconv.FormatInt(j.WorkflowDatetime.UnixMilli(), 10)
	}
	values := map[string]string{
		fID: j.ID, fService: j.Service, fPriority: strconv.Itoa(j.Priority),
		fPayload: string(j.Payload), fRequirements: string(j.Requirements),
		fCustomerID: j.CustomerID, fCreatedAt: formatTime(j.CreatedAt), fStatus: string(StatusPending),
		fRetryCount: "0", fMaxRetries: strconv.Itoa(j.MaxRetries),
		fWorkflowID: j.WorkflowID, fWorkflowPriority: itoa(j.WorkflowPriority), fWorkflowDatetime: wdt,
		fCurrentStep: itoa(j.CurrentStep), fTotalSteps: itoa(j.TotalSteps),
		fTraceID: j.TraceID, fSpanID: j.SpanID, fWorkflowTraceID: j.WorkflowTraceID,
		fWorkflowSpanID: j.WorkflowSpanID, fCtx: string(j.Ctx),
	}
	f := make([]any, 0, 2*(len(submitFields)+len(j.Extra)))
	for _, name := range submitFields {
		f = append(f, name, values[name])
	}
	for _, k := range slices.Sorted(maps.Keys(j.Extra)) {
		f = append(f, k, j.Extra[k])
	}
	return f
}

// decodeJob turns the fields of a record hash into a Job. It never fails
// on a field's value: what cannot be read gets its documented default and
// is listed in Unreadable. It fails, wrapping ErrCorruptRecord, only for a
// record that is no job record: one without an id field (legacy readers
// treat it as absent) or whose id is not its key's.
func decodeJob(id string, h map[string]string) (*Job, error) {
	switch v, ok := h[fID]; {
	case !ok || v == "":
		return nil, fmt.Errorf("%w: id=%q: the record has no id field (legacy readers treat it as missing)", ErrCorruptRecord, id)
	case v != id:
		return nil, fmt.Errorf("%w: id=%q: its id field is %q", ErrCorruptRecord, id, truncate(v, 64))
	}
	j := &Job{
		ID: id, Service: h[fService], CustomerID: h[fCustomerID], WorkflowID: h[fWorkflowID],
		Status: Status(h[fStatus]), WorkerID: h[fWorkerID], LastFailedWorker: h[fLastFailedWorker],
		Error: h[fError], TraceID: h[fTraceID], SpanID: h[fSpanID],
		WorkflowTraceID: h[fWorkflowTraceID], WorkflowSpanID: h[fWorkflowSpanID],
	}
	if j.Status == "" {
		j.Status = StatusPending // the legacy API's default
	}
	bad := func(name string) {
		if j.Unreadable == nil {
			j.Unreadable = map[string]string{}
		}
		j.Unreadable[name] = h[name]
	}
	for _, f := range []struct {
		name string
		dst  *int
		def  int
	}{
		{fPriority, &j.Priority, DefaultPriority}, {fWorkflowPriority, &j.WorkflowPriority, 0},
		{fCurrentStep, &j.CurrentStep, 0}, {fTotalSteps, &j.TotalSteps, 0},
		{fRetryCount, &j.RetryCount, 0}, {fMaxRetries, &j.MaxRetries, DefaultMaxRetries},
	} {
		*f.dst = f.def
		v := h[f.name]
		if v == "" {
			continue
		}
		if n, ok := parseIntField(v); ok {
			*f.dst = n
		} else {
			bad(f.name)
		}
	}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{
		{fCreatedAt, &j.CreatedAt}, {fAssignedAt, &j.AssignedAt}, {fStartedAt, &j.StartedAt},
		{fCompletedAt, &j.CompletedAt}, {fFailedAt, &j.FailedAt}, {fCancelledAt, &j.CancelledAt},
		{fWorkflowDatetime, &j.WorkflowDatetime},
	} {
		v := h[f.name]
		if v == "" {
			continue
		}
		if ms, ok := parseTimeMs(v); ok {
			*f.dst = time.UnixMilli(ms).UTC()
		} else {
			bad(f.name)
		}
	}
	for _, f := range []struct {
		name string
		dst  *json.RawMessage
	}{{fPayload, &j.Payload}, {fRequirements, &j.Requirements}, {fCtx, &j.Ctx}} {
		v := h[f.name]
		if v == "" {
			continue
		}
		if json.Valid([]byte(v)) {
			*f.dst = json.RawMessage(v)
		} else {
			bad(f.name)
		}
	}
	for k, v := range h {
		if !knownFields[k] {
			if j.Extra == nil {
				j.Extra = make(map[string]string)
			}
			j.Extra[k] = v
		}
	}
	return j, nil
}

// parseIntField reads an integer field as the legacy services' parseInt
// does: leading white space, an optional sign and decimal digits, anything
// after them ignored ("50.5" is 50). It fails where parseInt gives NaN,
// and for values that do not fit an int.
func parseIntField(s string) (int, bool) {
	f, ok := parseIntJS(s)
	if !ok {
		return 0, false
	}
	return int(f), true
}

// addResult completes j with its entries in the completed and failed
// hashes, raw JSON or "" when it has none.
func (j *Job) addResult(completed, failed string) {
	if completed != "" && json.Valid([]byte(completed)) {
		j.Result = unwrapResult(json.RawMessage(completed))
	} else if completed != "" {
		j.addUnreadable("jobs:completed", completed)
	}
	if failed == "" {
		return
	}
	var f struct {
		Error    any    `json:"error"`
		Message  string `json:"error_message"`
		FailedAt string `json:"failed_at"`
	}
	if json.Unmarshal([]byte(failed), &f) != nil {
		j.addUnreadable("jobs:failed", failed)
		return
	}
	// The entry is written by a final failure or a cancel, the last
	// thing to happen to the job, and the legacy worker's failJob writes
	// no error field in the record: the entry's error is the newer one.
	switch e := f.Error.(type) {
	case string:
		j.Error = e
	case nil:
		if f.Message != "" {
			j.Error = f.Message
		}
	default:
		b, _ := json.Marshal(e)
		j.Error = string(b)
	}
	if j.FailedAt.IsZero() && f.FailedAt != "" {
		if ms, ok := parseTimeMs(f.FailedAt); ok {
			j.FailedAt = time.UnixMilli(ms).UTC()
		}
	}
}

func (j *Job) addUnreadable(name, v string) {
	if j.Unreadable == nil {
		j.Unreadable = map[string]string{}
	}
	j.Unreadable[name] = truncate(v, 256)
}

// unwrapResult returns the result a worker gave from an entry of
// jobs:completed. The legacy worker (and jobstore) store
// {"success":true,"data":<result>,"completed_at":"..."}; the legacy
// RedisService stores the result itself. An object with a boolean
// success, a completed_at and no other keys but data is the first form.
func unwrapResult(raw json.RawMessage) json.RawMessage {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return raw
	}
	s, okS := m["success"]
	_, okC := m["completed_at"]
	if !okS || !okC || (string(s) != "true" && string(s) != "false") {
		return raw
	}
	for k := range m {
		if k != "success" && k != "data" && k != "completed_at" {
			return raw
		}
	}
	if d, ok := m["data"]; ok {
		return d
	}
	return nil
}

// pairsToMap turns a flat name, value, ... reply into a map.
func pairsToMap(id string, pairs []any) (map[string]string, error) {
	h := make(map[string]string, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		k, ok1 := pairs[i].(string)
		v, ok2 := pairs[i+1].(string)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%w: id=%q: unexpected field types in reply", ErrCorruptRecord, id)
		}
		h[k] = v
	}
	return h, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
