// Command api is an HTTP API service on jobstore: it submits, reads and
// cancels jobs, and switches dual-write at run time.
//
//	go run ./examples/api                                   # embedded miniredis
//	REDIS_URL=redis://127.0.0.1:6379/0 go run ./examples/api -addr 127.0.0.1:3000
//
//	curl -i -X POST localhost:3000/submit-job -d '{"service_required":"comfyui","payload":{"prompt":"a fox"}}'
//	curl -i localhost:3000/jobs/<id>
//
// It reads REDIS_DUAL_WRITE_STEPS and REDIS_STEP_MIGRATION_STAGE, adopts
// the stage published in Redis at start (Store.Sync) and follows it every
// 5 seconds (Store.FollowStage), and stops gracefully on SIGINT/SIGTERM.
//
// # Endpoints
//
//	POST   /submit-job          submit a job → 201 {"id":...,"created":true,"status":"pending"}
//	GET    /jobs/{id}           the job (jobstore.Job as JSON) → 200, or 404
//	DELETE /jobs/{id}           cancel it (optional ?reason=...) → 204; 409 once finished; 404
//	GET    /jobs?limit=N        pending jobs in claim order, N in 1..1000 (default 100)
//	GET    /admin/dual-write    the stage, the published stage and the dual-write counters
//	PUT    /admin/dual-write    {"enabled":true|false}: turn dual-write on or off in this process
//	GET    /metrics             Prometheus metrics (github.com/jobstep/jobstore/x/prom)
//
// # Submitting
//
// The body is a JSON object with the legacy API's field names, the same
// names GET /jobs/{id} answers with:
//
//	service_required   string, required
//	priority           0..1000; missing (or 0) is 50, the legacy API's default
//	payload            any JSON; missing, null, false, 0 or "" is {}
//	requirements, ctx  any JSON; missing, null, false, 0 or "" is none
//	customer_id, workflow_id                    strings
//	max_retries        missing (or 0) is 3
//	workflow_priority, current_step, total_steps  integers
//	workflow_datetime  Unix milliseconds
//	id                 optional: your own job id (see Retrying)
//
// A field not listed (names are case-sensitive: "Payload" is not
// payload), a field given twice, or anything after the object, gets 400
// with a message saying what. A body over 2 MiB, or a payload, requirements or
// ctx over the store's 1 MiB limit, gets 413.
//
// # Retrying a submit
//
// To retry a POST safely (after a timeout, say), give the job your own id
// and send the same body again. When a job with that id exists and its
// submitted fields (all of the above but id; not created_at, status or
// other fields the job gained since) are the ones sent, compared as the
// store keeps them (a missing priority and 50 are the same, and so are a
// payload false and {}, or a ctx 0 and none), nothing is written and the
// answer is 200 with {"id":...,"created":false,"status":<its status
// now>}: the job was submitted, by the first attempt. A job with that id
// and other fields is a conflict: 409, naming the fields that differ.
// Without an id every POST is a new job.
//
// # Dual-write
//
// PUT /admin/dual-write moves this process between the legacy and
// dual-write stages (Store.SetDualWrite). It answers 409, changing
// nothing, when the flip could not hold: when a stage is published in
// Redis (with `stepmigrate stage set`) that differs from the one asked
// for, since every write runs under the published stage and would undo
// the flip at once (publish the stage for the whole fleet instead); and
// when this process is past dual-write (dual-read or later), where
// SetDualWrite refuses with ErrStageJump.
//
// # Errors
//
// Errors are {"error":"..."} with 400 (invalid input), 404 (no such job),
// 409 (exists, finished, not held, stage refused), 413 (too large), 500
// (a corrupt record, with the library's message, or another failure) or
// 503 (Redis does not answer).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jobstep/jobstore"
	"github.com/jobstep/jobstore/examples/internal/demo"
	"github.com/jobstep/jobstore/x/prom"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
)

// Limits of the API.
const (
	// maxSubmitBody is the largest POST /submit-job body read: room for a
	// payload at the store's limit (jobstore.DefaultMaxPayloadBytes) and
	// the other fields. Larger bodies get 413 unread.
	maxSubmitBody = 2 * jobstore.DefaultMaxPayloadBytes
	// maxAdminBody is the largest PUT /admin/dual-write body read.
	maxAdminBody = 1 << 10
	// maxListLimit is the most jobs GET /jobs lists.
	maxListLimit = 1000
	// stageInterval is how often the service reads the published stage.
	stageInterval = 5 * time.Second
)

func main() {
	addr := flag.String("addr", "127.0.0.1:3000", "address to listen on")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(ctx, *addr, log); err != nil {
		log.Error("api failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr string, log *slog.Logger) error {
	conn, err := demo.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	store, mig, metrics, err := build(conn.Client, log)
	if err != nil {
		return err
	}
	// Take the published stage before serving reads, then follow it.
	if err := store.Sync(ctx); err != nil {
		return fmt.Errorf("read the published stage: %w", err)
	}
	bg, stopBg := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	wg.Go(func() { _ = store.FollowStage(bg, stageInterval) })
	defer func() {
		stopBg() // FollowStage checks out of the fleet and returns
		wg.Wait()
	}()

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	api := newServer(store, mig, log)
	api.metrics = metrics
	srv := &http.Server{
		Handler:           api.routes(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("api listening", "addr", ln.Addr().String(), "redis", conn.Where, "stage", store.Stage().String())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing the requests in flight")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// build makes the Store, the Migrator that reads the published stage
// (with the same options, so the same keys), and the /metrics handler:
// the collector times every write (WithOpObserver) and reads the Store's
// counters and both namespaces' queue sizes at each scrape.
func build(rdb redis.UniversalClient, log *slog.Logger) (*jobstore.Store, *jobstore.Migrator, http.Handler, error) {
	opts := []jobstore.Option{jobstore.WithLogger(log)}
	collector := prom.NewCollector(nil, prom.WithQueueSizes(30*time.Second))
	store, err := jobstore.New(rdb, append(opts, jobstore.WithOpObserver(collector.Observer()))...)
	if err != nil {
		return nil, nil, nil, err
	}
	collector.SetStore(store)
	mig, err := jobstore.NewMigrator(rdb, opts...)
	if err != nil {
		return nil, nil, nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return store, mig, promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), nil
}

// server holds what the handlers use.
type server struct {
	store *jobstore.Store
	mig   *jobstore.Migrator // reads the published stage
	log   *slog.Logger
	// metrics, when set, is served at GET /metrics (run sets it);
	// nothing is served there until then.
	metrics http.Handler
}

func newServer(store *jobstore.Store, mig *jobstore.Migrator, log *slog.Logger) *server {
	return &server{store: store, mig: mig, log: log}
}

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /submit-job", s.submit)
	mux.HandleFunc("GET /jobs/{id}", s.getJob)
	mux.HandleFunc("DELETE /jobs/{id}", s.cancelJob)
	mux.HandleFunc("GET /jobs", s.listPending)
	mux.HandleFunc("GET /admin/dual-write", s.getDualWrite)
	mux.HandleFunc("PUT /admin/dual-write", s.putDualWrite)
	if s.metrics != nil {
		mux.Handle("GET /metrics", s.metrics)
	}
	return mux
}

// submitRequest is the body of POST /submit-job: the legacy API's
// request fields (see apiSubmitJob in the legacy services), and id.
type submitRequest struct {
	ID               string          `json:"id"`
	Service          string          `json:"service_required"`
	Priority         int             `json:"priority"`
	Payload          json.RawMessage `json:"payload"`
	Requirements     json.RawMessage `json:"requirements"`
	CustomerID       string          `json:"customer_id"`
	MaxRetries       int             `json:"max_retries"`
	WorkflowID       string          `json:"workflow_id"`
	WorkflowPriority int             `json:"workflow_priority"`
	WorkflowDatetime int64           `json:"workflow_datetime"` // Unix ms
	CurrentStep      int             `json:"current_step"`
	TotalSteps       int             `json:"total_steps"`
	Ctx              json.RawMessage `json:"ctx"`
}

// job returns the job to submit, normalised as the store stores it:
// priority and max retries 0 (missing) are 50 and 3, as in the legacy
// API; a payload that is missing or JavaScript-falsy (null, false, 0, ""
// in any spelling) is {}; requirements and ctx that are missing or falsy
// are none. The store would apply the same rules to the raw values
// (jobstore.Job, withDefaults); applying them here, once, makes the job
// submitted and the job compared with a stored one on a retry (see
// submittedDiff) the same.
func (r *submitRequest) job() jobstore.Job {
	j := jobstore.Job{
		ID: r.ID, Service: r.Service, Priority: r.Priority,
		Payload: r.Payload, Requirements: noneIfFalsy(r.Requirements), Ctx: noneIfFalsy(r.Ctx),
		CustomerID: r.CustomerID, MaxRetries: r.MaxRetries,
		WorkflowID: r.WorkflowID, WorkflowPriority: r.WorkflowPriority,
		CurrentStep: r.CurrentStep, TotalSteps: r.TotalSteps,
	}
	if j.Priority == 0 {
		j.Priority = jobstore.DefaultPriority
	}
	if j.MaxRetries == 0 {
		j.MaxRetries = jobstore.DefaultMaxRetries
	}
	if jsFalsy(j.Payload) {
		j.Payload = json.RawMessage("{}")
	}
	if r.WorkflowDatetime != 0 {
		j.WorkflowDatetime = time.UnixMilli(r.WorkflowDatetime)
	}
	return j
}

// noneIfFalsy treats a falsy JSON value as a missing field.
func noneIfFalsy(raw json.RawMessage) json.RawMessage {
	if jsFalsy(raw) {
		return nil
	}
	return raw
}

// jsFalsy reports whether raw is missing or a JSON value JavaScript
// treats as false: null, false, "" or a number equal to 0 (0, -0, 0.0,
// 0e5...). It is the store's own test (jobstore's jsFalsy, unexported),
// which decides what a submit stores; TestSafeRetryFalsyValues checks
// that the two agree.
func jsFalsy(raw json.RawMessage) bool {
	v := bytes.TrimSpace(raw)
	switch string(v) {
	case "", "null", "false", `""`:
		return true
	}
	f, err := strconv.ParseFloat(string(v), 64)
	return err == nil && f == 0
}

// submitResponse answers POST /submit-job.
type submitResponse struct {
	ID      string          `json:"id"`
	Created bool            `json:"created"` // false: the job existed with these fields; nothing was written
	Status  jobstore.Status `json:"status"`
	Message string          `json:"message,omitempty"`
}

func (s *server) submit(w http.ResponseWriter, r *http.Request) {
	var req submitRequest
	if !s.decode(w, r, maxSubmitBody, &req) {
		return
	}
	job := req.job()
	id, err := s.store.SubmitJob(r.Context(), job)
	switch {
	case err == nil:
		w.Header().Set("Location", "/jobs/"+id)
		writeJSON(w, http.StatusCreated, submitResponse{ID: id, Created: true, Status: jobstore.StatusPending})
	case errors.Is(err, jobstore.ErrJobExists) && req.ID != "":
		s.resubmitted(w, r, job, err)
	case id != "" && statusOf(err) >= 500 && r.Context().Err() == nil:
		// The job may have been stored: give the client its id, so that
		// it retries with it (a 200 or 409 then tells what happened).
		s.log.Error("submit outcome unknown", "id", id, "error", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": err.Error(), "id": id,
			"retry": "the job may have been stored; send it again with this id"})
	default:
		s.storeError(w, r, err)
	}
}

// resubmitted answers a submit whose id exists: 200 when the job there
// has the submitted fields of this one (a retry), else 409.
func (s *server) resubmitted(w http.ResponseWriter, r *http.Request, job jobstore.Job, existsErr error) {
	got, err := s.store.GetJob(r.Context(), job.ID)
	if errors.Is(err, jobstore.ErrJobNotFound) { // gone again meanwhile
		s.storeError(w, r, existsErr)
		return
	}
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if diff := submittedDiff(job, got); len(diff) > 0 {
		writeError(w, http.StatusConflict, fmt.Sprintf(
			"job %q exists with other submitted fields (%s); a retry must send the same fields, a new job needs a new id",
			job.ID, strings.Join(diff, ", ")))
		return
	}
	w.Header().Set("Location", "/jobs/"+got.ID)
	writeJSON(w, http.StatusOK, submitResponse{ID: got.ID, Created: false, Status: got.Status,
		Message: "a job with this id and these fields exists (an earlier attempt submitted it); nothing was written"})
}

// submittedDiff names the submitted fields in which the stored job got
// differs from job, normalised as the store stores it (submitRequest.job).
func submittedDiff(job jobstore.Job, got *jobstore.Job) []string {
	checks := []struct {
		field string
		same  bool
	}{
		{"service_required", job.Service == got.Service},
		{"priority", job.Priority == got.Priority},
		{"payload", sameJSON(job.Payload, got.Payload)},
		{"requirements", sameJSON(job.Requirements, got.Requirements)},
		{"customer_id", job.CustomerID == got.CustomerID},
		{"max_retries", job.MaxRetries == got.MaxRetries},
		{"workflow_id", job.WorkflowID == got.WorkflowID},
		{"workflow_priority", job.WorkflowPriority == got.WorkflowPriority},
		{"workflow_datetime", job.WorkflowDatetime.UnixMilli() == got.WorkflowDatetime.UnixMilli()},
		{"current_step", job.CurrentStep == got.CurrentStep},
		{"total_steps", job.TotalSteps == got.TotalSteps},
		{"ctx", sameJSON(job.Ctx, got.Ctx)},
	}
	var diff []string
	for _, c := range checks {
		if _, unreadable := got.Unreadable[c.field]; !c.same || unreadable {
			diff = append(diff, c.field)
		}
	}
	return diff
}

// sameJSON reports whether a and b are the same JSON value, whatever
// their spacing and key order; both absent counts as the same.
func sameJSON(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	decode := func(raw json.RawMessage) (any, bool) {
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		var v any
		return v, d.Decode(&v) == nil
	}
	x, okA := decode(a)
	y, okB := decode(b)
	return okA && okB && reflect.DeepEqual(x, y)
}

func (s *server) getJob(w http.ResponseWriter, r *http.Request) {
	job, err := s.store.GetJob(r.Context(), r.PathValue("id"))
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, job)
}

func (s *server) cancelJob(w http.ResponseWriter, r *http.Request) {
	if err := s.store.CancelJob(r.Context(), r.PathValue("id"), r.URL.Query().Get("reason")); err != nil {
		s.storeError(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *server) listPending(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxListLimit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("limit=%q: want a number from 1 to %d", v, maxListLimit))
			return
		}
		limit = n
	}
	jobs, err := s.store.GetPendingJobs(r.Context(), limit)
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if jobs == nil {
		jobs = []*jobstore.Job{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"jobs": jobs, "count": len(jobs)})
}

// dualWriteState answers GET and PUT /admin/dual-write.
type dualWriteState struct {
	Enabled bool           `json:"enabled"` // writes are mirrored to the other namespace
	Stage   jobstore.Stage `json:"stage"`   // this process's stage
	// Published is the stage published in Redis for the whole fleet,
	// which every write runs under; absent when none is.
	Published   *jobstore.Stage   `json:"published_stage,omitempty"`
	Attempted   uint64            `json:"attempted"`
	Failed      uint64            `json:"failed"`
	Panics      uint64            `json:"panics"`
	FailedByOp  map[string]uint64 `json:"failed_by_op,omitempty"`
	SuccessRate float64           `json:"success_rate"`
}

func (s *server) dualWriteState(published *jobstore.Stage) dualWriteState {
	st := s.store.DualWriteStats()
	return dualWriteState{
		Enabled: s.store.DualWrite(), Stage: s.store.Stage(), Published: published,
		Attempted: st.Attempted, Failed: st.Failed, Panics: st.Panics, FailedByOp: st.FailedByOp,
		SuccessRate: st.SuccessRate(),
	}
}

// publishedStage reads the stage published in Redis, nil when none is.
func (s *server) publishedStage(ctx context.Context) (*jobstore.Stage, error) {
	st, ok, err := s.mig.SharedStage(ctx)
	if err != nil || !ok {
		return nil, err
	}
	return &st, nil
}

func (s *server) getDualWrite(w http.ResponseWriter, r *http.Request) {
	published, err := s.publishedStage(r.Context())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s.dualWriteState(published))
}

func (s *server) putDualWrite(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Enabled *bool `json:"enabled"`
	}
	if !s.decode(w, r, maxAdminBody, &req) {
		return
	}
	if req.Enabled == nil {
		writeError(w, http.StatusBadRequest, `want {"enabled": true} or {"enabled": false}`)
		return
	}
	want := jobstore.StageLegacy
	if *req.Enabled {
		want = jobstore.StageDualWrite
	}
	published, err := s.publishedStage(r.Context())
	if err != nil {
		s.storeError(w, r, err)
		return
	}
	if published != nil && *published != want {
		// Every write checks the published stage and runs under it, so
		// a local flip would be undone by the next write.
		writeError(w, http.StatusConflict, fmt.Sprintf(
			"stage %s is published in Redis for the whole fleet, and every write runs under it: "+
				"a flip of this process to %s would be undone at its next write. "+
				"Change the stage for every process with `stepmigrate stage set %s`",
			*published, want, want))
		return
	}
	if published != nil {
		// It asks for the published stage: make sure this process has it.
		if err := s.store.Sync(r.Context()); err != nil {
			s.storeError(w, r, err)
			return
		}
	} else if err := s.store.SetDualWrite(*req.Enabled); err != nil {
		if errors.Is(err, jobstore.ErrStageJump) {
			writeError(w, http.StatusConflict, fmt.Sprintf(
				"this process is in stage %s, past dual-write, where dual-write is not a switch (%v); "+
					"stages after dual-write change for the whole fleet with `stepmigrate stage set`",
				s.store.Stage(), err))
			return
		}
		s.storeError(w, r, err)
		return
	}
	s.log.Info("dual-write switched", "enabled", s.store.DualWrite(), "stage", s.store.Stage().String())
	writeJSON(w, http.StatusOK, s.dualWriteState(published))
}

// decode reads a JSON object from the body into v, strictly: field names
// must be v's (its json tags) exactly, each at most once; anything after
// the object is an error, and so is a body over max bytes. It answers the
// error itself (400 or 413) and reports whether v was read.
func (s *server) decode(w http.ResponseWriter, r *http.Request, max int64, v any) bool {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, max))
	if err == nil {
		// encoding/json matches names case-insensitively, even with
		// DisallowUnknownFields, and lets the last of two spellings win:
		// check the names first.
		err = checkFieldNames(body, jsonNames(v))
	}
	if err == nil {
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.DisallowUnknownFields()
		err = dec.Decode(v)
		// Exactly one value: what follows it must be white space.
		if _, terr := dec.Token(); err == nil && terr != io.EOF {
			err = errTrailing
		}
	}
	if err == nil {
		return true
	}
	status, msg := http.StatusBadRequest, ""
	var (
		tooBig  *http.MaxBytesError
		syntax  *json.SyntaxError
		typeErr *json.UnmarshalTypeError
		nameErr *fieldNameError
	)
	switch {
	case errors.As(err, &nameErr):
		msg = nameErr.Error()
	case errors.As(err, &tooBig):
		status, msg = http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than the limit, %d bytes", tooBig.Limit)
	case errors.Is(err, io.EOF):
		msg = "empty body: want a JSON object"
	case errors.Is(err, errTrailing):
		msg = "unexpected data after the JSON object: send exactly one object"
	case errors.As(err, &syntax):
		msg = fmt.Sprintf("invalid JSON at byte %d: %v", syntax.Offset, err)
	case errors.Is(err, io.ErrUnexpectedEOF):
		msg = "invalid JSON: the body ends inside a value"
	case errors.As(err, &typeErr) && typeErr.Field != "":
		msg = fmt.Sprintf("field %s: a JSON %s cannot be a %s", typeErr.Field, typeErr.Value, typeErr.Type)
	case errors.As(err, &typeErr):
		msg = fmt.Sprintf("the body is a JSON %s: want an object", typeErr.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// checkFieldNames finds these first; encoding/json has no type
		// for this error.
		msg = "unknown field " + strings.TrimPrefix(err.Error(), "json: unknown field ")
	default:
		msg = "cannot read the body: " + err.Error()
	}
	writeError(w, status, msg)
	return false
}

var errTrailing = errors.New("data after the JSON value")

// fieldNameError is a field name of the body that is not one of the
// request's, or one given twice.
type fieldNameError struct {
	name  string // as sent (unescaped)
	known string // the request's field it differs from only in case, if any
	twice bool
}

func (e *fieldNameError) Error() string {
	switch {
	case e.twice:
		return fmt.Sprintf("field %q appears more than once: send each field once", e.name)
	case e.known != "":
		return fmt.Sprintf("unknown field %q: field names are case-sensitive; did you mean %q?", e.name, e.known)
	case e.name == "service":
		return `unknown field "service": the service is "service_required", as in the legacy API and in GET /jobs/{id}`
	}
	return fmt.Sprintf("unknown field %q", e.name)
}

// checkFieldNames checks the names of the object in body against names,
// exactly: a name not among them, or one given twice, is a
// *fieldNameError. Only the object's own names are checked, not those in
// its values. A body that is no well-formed JSON object passes, for the
// decoder to report what it is.
func checkFieldNames(body []byte, names map[string]bool) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	var first error // the first bad name; reported once the object is known to be well-formed
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil
		}
		name, _ := tok.(string)
		if first == nil {
			first = badFieldName(name, names, seen)
		}
		seen[name] = true
		var value json.RawMessage // skipped
		if err := dec.Decode(&value); err != nil {
			return nil
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil
	}
	return first
}

// badFieldName returns the error for the field name, or nil when it is
// one of names not in seen.
func badFieldName(name string, names, seen map[string]bool) error {
	switch {
	case !names[name]:
		e := &fieldNameError{name: name}
		for known := range names {
			if strings.EqualFold(name, known) {
				e.known = known
			}
		}
		return e
	case seen[name]:
		return &fieldNameError{name: name, twice: true}
	}
	return nil
}

// jsonNames returns the JSON field names of the struct v points to, from
// its json tags (or Go names). The request types are flat structs: an
// embedded struct's fields are not looked into, so they would be refused
// as unknown.
func jsonNames(v any) map[string]bool {
	t := reflect.TypeOf(v)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	names := make(map[string]bool)
	if t.Kind() != reflect.Struct {
		return names
	}
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		names[name] = true
	}
	return names
}

// statusOf maps an error of the store to an HTTP status. Every sentinel
// error of jobstore is here.
func statusOf(err error) int {
	for _, m := range []struct {
		err    error
		status int
	}{
		{jobstore.ErrJobNotFound, http.StatusNotFound},
		{jobstore.ErrNoJob, http.StatusNotFound},
		{jobstore.ErrPayloadTooLarge, http.StatusRequestEntityTooLarge},
		{jobstore.ErrInvalidID, http.StatusBadRequest},
		{jobstore.ErrInvalidService, http.StatusBadRequest},
		{jobstore.ErrInvalidPriority, http.StatusBadRequest},
		{jobstore.ErrInvalidPayload, http.StatusBadRequest},
		{jobstore.ErrInvalidMaxRetries, http.StatusBadRequest},
		{jobstore.ErrInvalidWorker, http.StatusBadRequest},
		{jobstore.ErrInvalidArgument, http.StatusBadRequest},
		{jobstore.ErrJobExists, http.StatusConflict},
		{jobstore.ErrJobFinished, http.StatusConflict},
		{jobstore.ErrNotHeld, http.StatusConflict},
		{jobstore.ErrNotRegistered, http.StatusConflict},
		{jobstore.ErrStageJump, http.StatusConflict},
		{jobstore.ErrLegacyAlive, http.StatusConflict},
		{jobstore.ErrNamespaceInUse, http.StatusConflict},
		{jobstore.ErrCleanupRefused, http.StatusConflict},
		{jobstore.ErrCorruptRecord, http.StatusInternalServerError},
		{jobstore.ErrInvalidConfig, http.StatusInternalServerError},
		{jobstore.ErrClusterUnsupported, http.StatusInternalServerError},
	} {
		if errors.Is(err, m.err) {
			return m.status
		}
	}
	var netErr net.Error
	if errors.As(err, &netErr) || errors.Is(err, context.DeadlineExceeded) ||
		errors.Is(err, redis.ErrPoolTimeout) || errors.Is(err, redis.ErrClosed) {
		return http.StatusServiceUnavailable // Redis does not answer
	}
	return http.StatusInternalServerError
}

// storeError answers an error of the store, with its message, and logs
// those that are the server's fault.
func (s *server) storeError(w http.ResponseWriter, r *http.Request, err error) {
	status := statusOf(err)
	if r.Context().Err() != nil {
		return // the client has gone
	}
	if status >= 500 {
		s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "status", status, "error", err)
	}
	writeError(w, status, err.Error())
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
