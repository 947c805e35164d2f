package jobstore

import (
	"bytes"
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

// The statuses found in existing records. jobstore itself moves jobs through
// pending, assigned, in_progress and one of completed, failed or cancelled;
// it reads the others as written by older services.
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

var knownStatuses = []Status{
	StatusPending, StatusQueued, StatusAssigned, StatusAccepted, StatusInProgress,
	StatusCompleted, StatusFailed, StatusCancelled, StatusTimeout, StatusUnworkable,
}

// Valid reports whether s is one of the known statuses.
func (s Status) Valid() bool { return slices.Contains(knownStatuses, s) }

// Finished reports whether s is a final status: nothing moves a job on from
// completed, failed, cancelled, timeout or unworkable.
func (s Status) Finished() bool {
	switch s {
	case StatusCompleted, StatusFailed, StatusCancelled, StatusTimeout, StatusUnworkable:
		return true
	}
	return false
}

// Limits on what a Job may hold. Inputs outside them are refused before
// anything is written.
const (
	MaxIDLength      = 128 // bytes, for job, worker and workflow ids
	MaxServiceLength = 128 // bytes
	MinPriority      = 0
	MaxPriority      = 1000
	// DefaultMaxRetries is used when a submitted Job has MaxRetries 0,
	// matching the max_retries default of existing records.
	DefaultMaxRetries = 3
	// MaxMaxRetries bounds MaxRetries.
	MaxMaxRetries = 1000
	// DefaultMaxPayloadBytes is the default limit on payload, requirements,
	// result and error text; see WithMaxPayloadBytes.
	DefaultMaxPayloadBytes = 1 << 20
	maxExtraFields         = 256
	maxTextLength          = 1024 // bytes, for customer id and similar labels
)

// Job is one job record: the hash at job:<id> (or step:<id>).
//
// Timestamps are zero when the record does not have them. Fields of a
// record that Job has no field for are kept in Extra, and jobstore never
// drops them: state changes update single fields and mirroring copies the
// whole hash.
//
// SubmitJob reads the fields above Status and CreatedAt, and ignores the
// lifecycle fields (Status, RetryCount, WorkerID, LastFailedWorker, Error,
// Result and the other timestamps), which only state changes write.
type Job struct {
	ID           string          `json:"id"`                     // SubmitJob generates a UUID when empty
	Service      string          `json:"service_required"`       // the service that must run it
	Priority     int             `json:"priority"`               // MinPriority..MaxPriority; higher is claimed first
	Payload      json.RawMessage `json:"payload,omitempty"`      // JSON; SubmitJob stores {} when empty
	Requirements json.RawMessage `json:"requirements,omitempty"` // JSON, optional
	CustomerID   string          `json:"customer_id,omitempty"`

	WorkflowID string `json:"workflow_id,omitempty"`
	// WorkflowPriority, when not zero, orders the job in place of Priority,
	// so that the steps of a workflow are claimed together.
	WorkflowPriority int `json:"workflow_priority,omitempty"`
	// WorkflowDatetime, when not zero, orders the job in place of
	// CreatedAt. It is stored as Unix milliseconds, as existing records do.
	WorkflowDatetime time.Time `json:"workflow_datetime,omitzero"`
	CurrentStep      int       `json:"current_step,omitempty"`
	TotalSteps       int       `json:"total_steps,omitempty"`

	Status     Status `json:"status"`      // SubmitJob always stores pending
	RetryCount int    `json:"retry_count"` // how many times the job went back to pending
	// MaxRetries is how many times a failed job goes back to pending
	// before it is marked failed. SubmitJob stores DefaultMaxRetries when
	// it is 0.
	MaxRetries       int             `json:"max_retries"`
	WorkerID         string          `json:"worker_id,omitempty"` // worker_id of the worker holding or last holding the job
	LastFailedWorker string          `json:"last_failed_worker,omitempty"`
	Error            string          `json:"error,omitempty"`  // the last failure reason
	Result           json.RawMessage `json:"result,omitempty"` // JSON given to CompleteJob

	CreatedAt   time.Time `json:"created_at,omitzero"`  // SubmitJob sets it when zero
	AssignedAt  time.Time `json:"assigned_at,omitzero"` // when a worker claimed it
	StartedAt   time.Time `json:"started_at,omitzero"`  // when StartJob was called
	CompletedAt time.Time `json:"completed_at,omitzero"`
	FailedAt    time.Time `json:"failed_at,omitzero"` // when it was finally marked failed
	CancelledAt time.Time `json:"cancelled_at,omitzero"`

	// Extra holds the record's fields that Job has no field for, such as
	// trace ids written by other services. SubmitJob writes them as given.
	Extra map[string]string `json:"extra,omitempty"`
}

// Record field names, as existing records spell them.
const (
	fID               = "id"
	fService          = "service_required"
	fPriority         = "priority"
	fPayload          = "payload"
	fRequirements     = "requirements"
	fCustomerID       = "customer_id"
	fWorkflowID       = "workflow_id"
	fWorkflowPriority = "workflow_priority"
	fWorkflowDatetime = "workflow_datetime"
	fCurrentStep      = "current_step"
	fTotalSteps       = "total_steps"
	fStatus           = "status"
	fRetryCount       = "retry_count"
	fMaxRetries       = "max_retries"
	fWorkerID         = "worker_id"
	fLastFailedWorker = "last_failed_worker"
	fError            = "error"
	fResult           = "result"
	fCreatedAt        = "created_at"
	fAssignedAt       = "assigned_at"
	fStartedAt        = "started_at"
	fCompletedAt      = "completed_at"
	fFailedAt         = "failed_at"
	fCancelledAt      = "cancelled_at"
)

var knownFields = map[string]bool{
	fID: true, fService: true, fPriority: true, fPayload: true, fRequirements: true,
	fCustomerID: true, fWorkflowID: true, fWorkflowPriority: true, fWorkflowDatetime: true,
	fCurrentStep: true, fTotalSteps: true, fStatus: true, fRetryCount: true, fMaxRetries: true,
	fWorkerID: true, fLastFailedWorker: true, fError: true, fResult: true, fCreatedAt: true,
	fAssignedAt: true, fStartedAt: true, fCompletedAt: true, fFailedAt: true, fCancelledAt: true,
}

// timeLayout is how jobstore writes timestamps: ISO-8601 in UTC with
// milliseconds, the form JavaScript's Date.toISOString produces.
const timeLayout = "2006-01-02T15:04:05.000Z"

func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// timeLayouts are the forms parseTime accepts besides Unix milliseconds:
// the same set the scripts' parse_ms reads. Fractional seconds are optional.
var timeLayouts = []string{
	"2006-01-02T15:04:05.999999999Z07:00",
	"2006-01-02T15:04:05.999999999Z0700",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02 15:04:05.999999999Z0700",
	"2006-01-02 15:04:05.999999999",
}

// parseTime reads the timestamp forms found in existing records: RFC 3339
// with or without fractional seconds or the colon in the zone, with a
// space for the T, without a zone (read as UTC), and Unix milliseconds as a
// decimal integer.
func parseTime(s string) (time.Time, error) {
	if s != "" && strings.Trim(s, "0123456789") == "" {
		ms, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return time.Time{}, err
		}
		return time.UnixMilli(ms).UTC(), nil
	}
	for _, layout := range timeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, fmt.Errorf("not an ISO-8601 time or Unix milliseconds")
}

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
// bytes of UTF-8, no whitespace or control characters.
func validateName(sentinel error, what, s string, max int) error {
	switch {
	case strings.TrimSpace(s) == "":
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
	}
	return nil
}

func validateService(s string) error {
	return validateName(ErrInvalidService, "service", s, MaxServiceLength)
}

func validateWorker(w string) error {
	return validateName(ErrInvalidWorker, "worker id", w, MaxIDLength)
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
	if p < MinPriority || p > MaxPriority {
		return fmt.Errorf("%w: %s %d is outside %d..%d", ErrInvalidPriority, what, p, MinPriority, MaxPriority)
	}
	return nil
}

// newRecord validates j for submission and returns the fields to write,
// as name/value pairs in a fixed order, ready to be command arguments. It
// fills in defaults: the status, created_at, max_retries and an empty
// payload.
func newRecord(j *Job, now time.Time, maxPayload int) ([]any, error) {
	if err := validateID(j.ID); err != nil {
		return nil, err
	}
	if err := validateService(j.Service); err != nil {
		return nil, err
	}
	if err := validatePriority("priority", j.Priority); err != nil {
		return nil, err
	}
	if err := validatePriority("workflow priority", j.WorkflowPriority); err != nil {
		return nil, err
	}
	if j.MaxRetries < 0 || j.MaxRetries > MaxMaxRetries {
		return nil, fmt.Errorf("%w: %d is outside 0..%d", ErrInvalidMaxRetries, j.MaxRetries, MaxMaxRetries)
	}
	if j.CurrentStep < 0 || j.TotalSteps < 0 {
		return nil, fmt.Errorf("%w: negative workflow step", ErrInvalidArgument)
	}
	// Times must be stored in forms that parseTime (and the scripts'
	// parse_ms) read back: ISO-8601 has four-digit years, and
	// workflow_datetime is written as unsigned Unix milliseconds.
	if y := j.CreatedAt.UTC().Year(); !j.CreatedAt.IsZero() && (y < 0 || y > 9999) {
		return nil, fmt.Errorf("%w: created at %v is outside the years 0000..9999", ErrInvalidArgument, j.CreatedAt)
	}
	if !j.WorkflowDatetime.IsZero() && j.WorkflowDatetime.UnixMilli() < 0 {
		return nil, fmt.Errorf("%w: workflow datetime %v is before 1970", ErrInvalidArgument, j.WorkflowDatetime)
	}
	payload := j.Payload
	if len(bytes.TrimSpace(payload)) == 0 {
		payload = json.RawMessage("{}")
	}
	if err := validateJSON("payload", payload, maxPayload); err != nil {
		return nil, err
	}
	if len(j.Requirements) > 0 {
		if err := validateJSON("requirements", j.Requirements, maxPayload); err != nil {
			return nil, err
		}
	}
	if err := validateText("customer id", j.CustomerID, maxTextLength); err != nil {
		return nil, err
	}
	if err := validateText("workflow id", j.WorkflowID, maxTextLength); err != nil {
		return nil, err
	}
	if len(j.Extra) > maxExtraFields {
		return nil, fmt.Errorf("%w: %d extra fields, limit %d", ErrInvalidArgument, len(j.Extra), maxExtraFields)
	}
	var extra []string
	if len(j.Extra) > 0 {
		extra = slices.Sorted(maps.Keys(j.Extra))
	}
	for _, k := range extra {
		if knownFields[k] {
			return nil, fmt.Errorf("%w: extra field %q is a known field; set it on Job instead", ErrInvalidArgument, k)
		}
		if err := validateName(ErrInvalidArgument, "extra field name", k, MaxIDLength); err != nil {
			return nil, err
		}
		if err := validateText("extra field "+k, j.Extra[k], maxPayload); err != nil {
			return nil, err
		}
	}

	created := j.CreatedAt
	if created.IsZero() {
		created = now
	}
	maxRetries := j.MaxRetries
	if maxRetries == 0 {
		maxRetries = DefaultMaxRetries
	}
	f := make([]any, 0, 22+2*len(extra))
	f = append(f,
		fID, j.ID,
		fService, j.Service,
		fPriority, strconv.Itoa(j.Priority),
		fPayload, string(payload),
		fStatus, string(StatusPending),
		fRetryCount, "0",
		fMaxRetries, strconv.Itoa(maxRetries),
		fCreatedAt, formatTime(created),
	)
	add := func(name, v string) {
		if v != "" {
			f = append(f, name, v)
		}
	}
	add(fRequirements, string(j.Requirements))
	add(fCustomerID, j.CustomerID)
	add(fWorkflowID, j.WorkflowID)
	if j.WorkflowPriority != 0 {
		add(fWorkflowPriority, strconv.Itoa(j.WorkflowPriority))
	}
	if !j.WorkflowDatetime.IsZero() {
		add(fWorkflowDatetime, strconv.FormatInt(j.WorkflowDatetime.UnixMilli(), 10))
	}
	if j.CurrentStep != 0 {
		add(fCurrentStep, strconv.Itoa(j.CurrentStep))
	}
	if j.TotalSteps != 0 {
		add(fTotalSteps, strconv.Itoa(j.TotalSteps))
	}
	for _, k := range extra {
		f = append(f, k, j.Extra[k])
	}
	return f, nil
}

// decodeJob turns the fields of a record hash into a Job. It never panics:
// a record that lacks status or service_required, has an id field that
// disagrees with its key, or has a field that does not parse gives an error
// wrapping ErrCorruptRecord.
func decodeJob(id string, h map[string]string) (*Job, error) {
	corrupt := func(field, value string, why string) error {
		return fmt.Errorf("%w: id=%q field %s=%q: %s", ErrCorruptRecord, id, field, value, why)
	}
	j := &Job{ID: id}
	if v, ok := h[fID]; ok && v != id {
		return nil, corrupt(fID, v, "does not match the key")
	}
	for _, name := range []string{fStatus, fService} {
		if h[name] == "" {
			return nil, corrupt(name, "", "required field is missing")
		}
	}
	j.Status = Status(h[fStatus])
	if !j.Status.Valid() {
		return nil, corrupt(fStatus, h[fStatus], "unknown status")
	}
	j.Service = h[fService]
	j.CustomerID = h[fCustomerID]
	j.WorkflowID = h[fWorkflowID]
	j.WorkerID = h[fWorkerID]
	j.LastFailedWorker = h[fLastFailedWorker]
	j.Error = h[fError]
	j.MaxRetries = DefaultMaxRetries

	ints := []struct {
		name string
		dst  *int
	}{
		{fPriority, &j.Priority}, {fWorkflowPriority, &j.WorkflowPriority},
		{fCurrentStep, &j.CurrentStep}, {fTotalSteps, &j.TotalSteps},
		{fRetryCount, &j.RetryCount}, {fMaxRetries, &j.MaxRetries},
	}
	for _, f := range ints {
		v, ok := h[f.name]
		if !ok || v == "" {
			continue
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, corrupt(f.name, v, "not an integer")
		}
		*f.dst = n
	}

	times := []struct {
		name string
		dst  *time.Time
	}{
		{fCreatedAt, &j.CreatedAt}, {fAssignedAt, &j.AssignedAt}, {fStartedAt, &j.StartedAt},
		{fCompletedAt, &j.CompletedAt}, {fFailedAt, &j.FailedAt}, {fCancelledAt, &j.CancelledAt},
		{fWorkflowDatetime, &j.WorkflowDatetime},
	}
	for _, f := range times {
		v, ok := h[f.name]
		if !ok || v == "" {
			continue
		}
		t, err := parseTime(v)
		if err != nil {
			return nil, corrupt(f.name, v, err.Error())
		}
		*f.dst = t
	}

	raws := []struct {
		name string
		dst  *json.RawMessage
	}{
		{fPayload, &j.Payload}, {fRequirements, &j.Requirements}, {fResult, &j.Result},
	}
	for _, f := range raws {
		v, ok := h[f.name]
		if !ok || v == "" {
			continue
		}
		if !json.Valid([]byte(v)) {
			return nil, corrupt(f.name, truncate(v, 64), "not valid JSON")
		}
		*f.dst = json.RawMessage(v)
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

// decodePairs is decodeJob for a flat name, value, name, value... list, as
// HGETALL returns inside a script reply.
func decodePairs(id string, pairs []any) (*Job, error) {
	h := make(map[string]string, len(pairs)/2)
	for i := 0; i+1 < len(pairs); i += 2 {
		k, ok1 := pairs[i].(string)
		v, ok2 := pairs[i+1].(string)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%w: id=%q: unexpected field types in reply", ErrCorruptRecord, id)
		}
		h[k] = v
	}
	return decodeJob(id, h)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}
