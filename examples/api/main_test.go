package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/alicebob/miniredis/v2"
	"github.com/jobstep/jobstore"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

type env struct {
	t       *testing.T
	mr      *miniredis.Miniredis
	store   *jobstore.Store
	mig     *jobstore.Migrator
	handler http.Handler
}

// newEnv makes the API's handler on a miniredis, its Store and Migrator
// made with opts.
func newEnv(t *testing.T, opts ...jobstore.Option) *env {
	t.Helper()
	mr := miniredis.RunT(t)
	// No retries: the test of a server that does not answer is quick.
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr(), MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { _ = rdb.Close() })
	store, err := jobstore.New(rdb, opts...)
	require.NoError(t, err)
	mig, err := jobstore.NewMigrator(rdb, opts...)
	require.NoError(t, err)
	h := newServer(store, mig, slog.New(slog.DiscardHandler)).routes()
	return &env{t: t, mr: mr, store: store, mig: mig, handler: h}
}

// do serves a request and returns the status and the decoded JSON body.
func (e *env) do(method, path string, body io.Reader) (int, map[string]any) {
	e.t.Helper()
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, httptest.NewRequest(method, path, body))
	var out map[string]any
	if rec.Code != http.StatusNoContent {
		require.Equal(e.t, "application/json", rec.Header().Get("Content-Type"), "%s %s", method, path)
		require.NoError(e.t, json.Unmarshal(rec.Body.Bytes(), &out), "%s %s: %d", method, path, rec.Code)
	}
	return rec.Code, out
}

func (e *env) post(body string) (int, map[string]any) {
	return e.do("POST", "/submit-job", strings.NewReader(body))
}

func TestSubmitAndGet(t *testing.T) {
	e := newEnv(t, jobstore.WithDualWrite(true))
	code, out := e.post(`{"service_required": "comfyui", "payload": {"prompt": "x"}, "customer_id": "c1"}`)
	require.Equal(t, http.StatusCreated, code, out)
	require.Equal(t, true, out["created"])
	id := out["id"].(string)
	require.True(t, e.mr.Exists("job:"+id))
	require.True(t, e.mr.Exists("step:"+id), "dual-write is on")

	code, out = e.do("GET", "/jobs/"+id, nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "pending", out["status"])
	require.Equal(t, "comfyui", out["service_required"], "requests and responses use one name")
	require.Equal(t, map[string]any{"prompt": "x"}, out["payload"])

	code, out = e.do("GET", "/jobs?limit=10", nil)
	require.Equal(t, http.StatusOK, code)
	require.EqualValues(t, 1, out["count"])
	for _, bad := range []string{"0", "-1", "abc", "1001"} {
		code, out = e.do("GET", "/jobs?limit="+bad, nil)
		require.Equal(t, http.StatusBadRequest, code, bad)
		require.Contains(t, out["error"], "limit")
	}
}

// A missing priority, or 0, is stored as 50, the legacy API's default.
func TestPriorityDefault(t *testing.T) {
	e := newEnv(t)
	for _, body := range []string{`{"service_required": "comfyui"}`, `{"service_required": "comfyui", "priority": 0}`,
		`{"service_required": "comfyui", "priority": null}`} {
		code, out := e.post(body)
		require.Equal(t, http.StatusCreated, code, out)
		require.Equal(t, "50", e.mr.HGet("job:"+out["id"].(string), "priority"), body)
		require.Equal(t, "3", e.mr.HGet("job:"+out["id"].(string), "max_retries"), body)
		require.Equal(t, "{}", e.mr.HGet("job:"+out["id"].(string), "payload"), body)
	}
	code, out := e.post(`{"service_required": "comfyui", "priority": 70}`)
	require.Equal(t, http.StatusCreated, code, out)
	require.Equal(t, "70", e.mr.HGet("job:"+out["id"].(string), "priority"))
}

func TestSubmitRejectsBadBodies(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct{ body, says string }{
		{`{"service_required": "comfyui", "colour": "blue"}`, `unknown field "colour"`},
		{`{"service": "comfyui"}`, `unknown field "service": the service is "service_required"`},
		{`{"service_required": "comfyui"} trailing garbage`, "unexpected data after the JSON object"},
		{`{"service_required": "comfyui"}{"service_required": "comfyui"}`, "unexpected data after the JSON object"},
		{`{"service_required": "comfyui"}]`, "unexpected data after the JSON object"},
		{``, "empty body"},
		{`not json`, "invalid JSON"},
		{`{"service_required": "comfyui"`, "invalid JSON"},
		{`[1, 2]`, "want an object"},
		{`{"service_required": "comfyui", "priority": "high"}`, "field priority"},
		{`{"service_required": ""}`, "service"},
		{`{"service_required": "s", "priority": 5000}`, "priority"},
		{`{"service_required": "s", "id": "a:b"}`, "id"},
		{`{"service_required": "s", "payload": {"a": }}`, "invalid JSON"},
		{`{"service_required": "s", "max_retries": -1}`, "max retries"},
	} {
		code, out := e.post(c.body)
		require.Equal(t, http.StatusBadRequest, code, "%s: %v", c.body, out)
		require.Contains(t, out["error"], c.says, c.body)
	}
	require.Empty(t, e.mr.Keys(), "nothing was written")
}

// Field names are matched exactly, as in GET /jobs/{id}: encoding/json
// alone would take "SERVICE_REQUIRED" for service_required, and let the
// last of two spellings of one field win.
func TestSubmitFieldNamesExact(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct{ body, says string }{
		{`{"SERVICE_REQUIRED": "comfyui"}`, `unknown field "SERVICE_REQUIRED": field names are case-sensitive; did you mean "service_required"?`},
		{`{"service_required": "comfyui", "Service_Required": "x"}`, `unknown field "Service_Required": field names are case-sensitive; did you mean "service_required"?`},
		{`{"Service_Required": "x", "service_required": "comfyui"}`, `unknown field "Service_Required"`},
		{`{"service_required": "comfyui", "Payload": {"a": 1}}`, `unknown field "Payload"`},
		{`{"service_required": "comfyui", "service_required": "x"}`, `field "service_required" appears more than once`},
		{`{"service_required": "comfyui", "priority": 1, "priority": 2}`, `field "priority" appears more than once`},
		{`{"service_required": "comfyui", "service\u005frequired": "x"}`, `field "service_required" appears more than once`},
		{`{"service_required": "comfyui", "PRIORITY": "high"}`, `unknown field "PRIORITY"`},
		// A bad name in a body that is no valid JSON: the JSON error.
		{`{"SERVICE_REQUIRED": "comfyui", "payload": {"a": }}`, "invalid JSON"},
	} {
		code, out := e.post(c.body)
		require.Equal(t, http.StatusBadRequest, code, "%s: %v", c.body, out)
		require.Contains(t, out["error"], c.says, c.body)
	}
	require.Empty(t, e.mr.Keys(), "nothing was written")

	// Names inside payload, requirements and ctx are the client's.
	code, out := e.post(`{"service_required": "comfyui", "payload": {"A": 1, "a": 2, "a": 3}, "ctx": {"ID": 1}}`)
	require.Equal(t, http.StatusCreated, code, out)
	// An escaped name is the name.
	code, out = e.post(`{"service\u005frequired": "comfyui"}`)
	require.Equal(t, http.StatusCreated, code, out)

	// The same for PUT /admin/dual-write.
	for _, body := range []string{`{"Enabled": true}`, `{"enabled": false, "enabled": true}`} {
		code, out = e.do("PUT", "/admin/dual-write", strings.NewReader(body))
		require.Equal(t, http.StatusBadRequest, code, "%s: %v", body, out)
		require.Contains(t, out["error"], "field", body)
	}
	require.False(t, e.store.DualWrite())
}

// Oversized bodies all get 413: a payload over the store's 1 MiB limit,
// and a body over the API's 2 MiB, which is not read.
func TestOversizedBodies(t *testing.T) {
	e := newEnv(t)
	for _, size := range []int{1 << 20 * 3 / 2, 3 << 20} {
		body := `{"service_required": "comfyui", "payload": {"blob": "` + strings.Repeat("x", size) + `"}}`
		code, out := e.post(body)
		require.Equal(t, http.StatusRequestEntityTooLarge, code, "%d bytes: %v", size, out)
		require.NotEmpty(t, out["error"])
	}
	require.Empty(t, e.mr.Keys())
}

// A client retries safely by sending its own id: the same fields again
// answer 200 with the id, other fields 409.
func TestSafeRetry(t *testing.T) {
	e := newEnv(t)
	body := `{"id": "client-42", "service_required": "comfyui", "payload": {"a": 1, "b": [1, 2]}}`
	code, out := e.post(body)
	require.Equal(t, http.StatusCreated, code, out)
	require.Equal(t, "client-42", out["id"])
	created := e.mr.HGet("job:client-42", "created_at")

	// The same body again, or the same fields spelt otherwise.
	for _, again := range []string{body,
		`{"payload": {"b": [1,2], "a": 1}, "service_required": "comfyui", "id": "client-42", "priority": 50}`} {
		code, out = e.post(again)
		require.Equal(t, http.StatusOK, code, out)
		require.Equal(t, "client-42", out["id"])
		require.Equal(t, false, out["created"])
		require.Equal(t, "pending", out["status"])
		require.Contains(t, out["message"], "nothing was written")
	}
	require.Equal(t, created, e.mr.HGet("job:client-42", "created_at"), "the record is the first attempt's")

	// Still a retry once a worker has claimed it: 200, with its status now.
	caps := jobstore.Capabilities{WorkerID: "w1", Services: []string{"comfyui"}}
	require.NoError(t, e.store.RegisterWorker(t.Context(), caps))
	_, err := e.store.ClaimJob(t.Context(), caps)
	require.NoError(t, err)
	code, out = e.post(body)
	require.Equal(t, http.StatusOK, code, out)
	require.Equal(t, "assigned", out["status"])

	// Another job with that id is a conflict, naming what differs.
	code, out = e.post(`{"id": "client-42", "service_required": "comfyui", "payload": {"a": 2, "b": [1, 2]}, "priority": 60}`)
	require.Equal(t, http.StatusConflict, code, out)
	require.Contains(t, out["error"], "(priority, payload)")
}

// A resent body whose payload, requirements or ctx is a value the store
// keeps as {} or as none (null, false, 0, "", however spelt) is a retry:
// the comparison is with what the submit stored, not with the raw value.
func TestSafeRetryFalsyValues(t *testing.T) {
	e := newEnv(t)
	falsy := []string{`null`, `false`, `0`, `""`, `0.0`, `-0`, `0e5`}
	for _, field := range []string{"payload", "requirements", "ctx"} {
		for i, v := range falsy {
			id := fmt.Sprintf("rv-%s-%d", field, i)
			body := fmt.Sprintf(`{"id": %q, "service_required": "comfyui", %q: %s}`, id, field, v)
			code, out := e.post(body)
			require.Equal(t, http.StatusCreated, code, "%s: %v", body, out)
			// What the store kept is what the API compares with.
			stored, want := e.mr.HGet("job:"+id, field), ""
			if field == "payload" {
				want = "{}"
			}
			require.Equal(t, want, stored, body)
			code, out = e.post(body)
			require.Equal(t, http.StatusOK, code, "%s resent: %v", body, out)
			require.Equal(t, false, out["created"], body)
			// Every spelling the store keeps the same way is the same
			// field, and so is leaving it out.
			for _, other := range append(falsy, "") {
				again := fmt.Sprintf(`{"id": %q, "service_required": "comfyui"}`, id)
				if other != "" {
					again = fmt.Sprintf(`{"id": %q, "service_required": "comfyui", %q: %s}`, id, field, other)
				}
				code, out = e.post(again)
				require.Equal(t, http.StatusOK, code, "%s after %s: %v", again, body, out)
			}
		}
	}
	// payload false is stored as {}: {} is the same, [] is not.
	code, out := e.post(`{"id": "rv-p", "service_required": "comfyui", "payload": false}`)
	require.Equal(t, http.StatusCreated, code, out)
	require.Equal(t, "{}", e.mr.HGet("job:rv-p", "payload"))
	code, out = e.post(`{"id": "rv-p", "service_required": "comfyui", "payload": {}}`)
	require.Equal(t, http.StatusOK, code, out)
	code, out = e.post(`{"id": "rv-p", "service_required": "comfyui", "payload": []}`)
	require.Equal(t, http.StatusConflict, code, out)
	require.Contains(t, out["error"], "(payload)")
	// ctx 0 is stored as none: a ctx that is something is another job.
	code, out = e.post(`{"id": "rv-c", "service_required": "comfyui", "ctx": 0}`)
	require.Equal(t, http.StatusCreated, code, out)
	require.Equal(t, "", e.mr.HGet("job:rv-c", "ctx"))
	code, out = e.post(`{"id": "rv-c", "service_required": "comfyui", "ctx": 1}`)
	require.Equal(t, http.StatusConflict, code, out)
	require.Contains(t, out["error"], "(ctx)")
}

func TestCancel(t *testing.T) {
	e := newEnv(t)
	code, out := e.post(`{"service_required": "comfyui"}`)
	require.Equal(t, http.StatusCreated, code, out)
	id := out["id"].(string)
	code, _ = e.do("DELETE", "/jobs/"+id+"?reason=changed+my+mind", nil)
	require.Equal(t, http.StatusNoContent, code)
	code, out = e.do("GET", "/jobs/"+id, nil)
	require.Equal(t, http.StatusOK, code)
	require.Equal(t, "cancelled", out["status"])
	require.Equal(t, "changed my mind", out["error"])
	code, out = e.do("DELETE", "/jobs/"+id, nil)
	require.Equal(t, http.StatusConflict, code)
	require.Contains(t, out["error"], "already finished")
}

func TestNotFoundAndErrors(t *testing.T) {
	e := newEnv(t)
	code, out := e.do("GET", "/jobs/nope", nil)
	require.Equal(t, http.StatusNotFound, code)
	require.Contains(t, out["error"], "not found")
	code, _ = e.do("DELETE", "/jobs/nope", nil)
	require.Equal(t, http.StatusNotFound, code)
	code, _ = e.do("GET", "/jobs/a:b", nil)
	require.Equal(t, http.StatusBadRequest, code)

	// A record that is no job record: 500, with the library's message.
	require.NoError(t, e.mr.Set("job:broken", "a string, not a hash"))
	code, out = e.do("GET", "/jobs/broken", nil)
	require.Equal(t, http.StatusInternalServerError, code)
	require.Contains(t, out["error"], "corrupt record")
	e.mr.HSet("job:other", "id", "not-other")
	code, out = e.do("GET", "/jobs/other", nil)
	require.Equal(t, http.StatusInternalServerError, code)
	require.Contains(t, out["error"], `its id field is "not-other"`)

	// Redis gone: 503; a submit's answer carries the id it may have
	// stored the job under, for the client's retry.
	e.mr.Close()
	code, out = e.do("GET", "/jobs/x", nil)
	require.Equal(t, http.StatusServiceUnavailable, code, out)
	code, out = e.post(`{"service_required": "comfyui"}`)
	require.Equal(t, http.StatusServiceUnavailable, code, out)
	require.NotEmpty(t, out["id"], out)
}

func TestStatusOfEverySentinel(t *testing.T) {
	for err, want := range map[error]int{
		jobstore.ErrJobNotFound: 404, jobstore.ErrNoJob: 404,
		jobstore.ErrJobExists: 409, jobstore.ErrJobFinished: 409, jobstore.ErrNotHeld: 409,
		jobstore.ErrNotRegistered: 409, jobstore.ErrStageJump: 409, jobstore.ErrLegacyAlive: 409,
		jobstore.ErrNamespaceInUse: 409, jobstore.ErrCleanupRefused: 409,
		jobstore.ErrInvalidID: 400, jobstore.ErrInvalidService: 400, jobstore.ErrInvalidPriority: 400,
		jobstore.ErrInvalidPayload: 400, jobstore.ErrInvalidMaxRetries: 400, jobstore.ErrInvalidWorker: 400,
		jobstore.ErrInvalidArgument: 400, jobstore.ErrPayloadTooLarge: 413,
		jobstore.ErrCorruptRecord: 500, jobstore.ErrInvalidConfig: 500, jobstore.ErrClusterUnsupported: 500,
		errors.New("something else"): 500,
	} {
		require.Equal(t, want, statusOf(fmt.Errorf("wrapped: %w", err)), "%v", err)
	}
}

func (e *env) putDualWrite(on bool) (int, map[string]any) {
	return e.do("PUT", "/admin/dual-write", strings.NewReader(fmt.Sprintf(`{"enabled": %t}`, on)))
}

func TestDualWriteSwitch(t *testing.T) {
	e := newEnv(t, jobstore.WithDualWrite(false))
	code, out := e.putDualWrite(true)
	require.Equal(t, http.StatusOK, code, out)
	require.Equal(t, true, out["enabled"])
	require.Equal(t, "dual-write", out["stage"])
	code, out = e.post(`{"service_required": "comfyui"}`)
	require.Equal(t, http.StatusCreated, code, out)
	require.True(t, e.mr.Exists("step:"+out["id"].(string)))

	code, out = e.do("GET", "/admin/dual-write", nil)
	require.Equal(t, http.StatusOK, code)
	require.EqualValues(t, 1, out["attempted"])
	require.NotContains(t, out, "published_stage")

	code, out = e.putDualWrite(false)
	require.Equal(t, http.StatusOK, code, out)
	require.Equal(t, false, out["enabled"])

	for _, body := range []string{`{}`, `{"enabled": "yes"}`, `{"enabled": true, "force": true}`, `{"enabled": true} x`} {
		code, out = e.do("PUT", "/admin/dual-write", strings.NewReader(body))
		require.Equal(t, http.StatusBadRequest, code, body)
		require.NotEmpty(t, out["error"])
	}
	code, _ = e.do("PUT", "/admin/dual-write", bytes.NewReader(bytes.Repeat([]byte(" "), 2<<10)))
	require.Equal(t, http.StatusRequestEntityTooLarge, code)
}

// Past dual-write, SetDualWrite refuses (ErrStageJump): 409, and the
// stage stays.
func TestDualWriteSwitchPastDualWrite(t *testing.T) {
	e := newEnv(t, jobstore.WithStage(jobstore.StageDualRead))
	for _, on := range []bool{false, true} {
		code, out := e.putDualWrite(on)
		require.Equal(t, http.StatusConflict, code, out)
		require.Contains(t, out["error"], "in stage dual-read, past dual-write")
		require.Contains(t, out["error"], "stepmigrate stage set")
		require.Equal(t, jobstore.StageDualRead, e.store.Stage())
	}
}

// With a stage published in Redis, a flip away from it would be undone
// by the next write: 409 naming the stage. Asking for the published
// stage itself is fine.
func TestDualWriteSwitchWithPublishedStage(t *testing.T) {
	e := newEnv(t, jobstore.WithDualWrite(true))
	require.NoError(t, e.mig.PublishStage(t.Context(), jobstore.StageDualWrite, jobstore.PublishOptions{}))

	code, out := e.putDualWrite(false)
	require.Equal(t, http.StatusConflict, code, out)
	require.Contains(t, out["error"], "stage dual-write is published in Redis")
	require.Contains(t, out["error"], "`stepmigrate stage set legacy`")
	require.True(t, e.store.DualWrite(), "nothing changed")

	code, out = e.putDualWrite(true)
	require.Equal(t, http.StatusOK, code, out)
	require.Equal(t, "dual-write", out["published_stage"])

	// Published legacy, this process in dual-write: turning it on is
	// refused, off is taken.
	require.NoError(t, e.mig.PublishStage(t.Context(), jobstore.StageLegacy, jobstore.PublishOptions{}))
	code, out = e.putDualWrite(true)
	require.Equal(t, http.StatusConflict, code, out)
	require.Contains(t, out["error"], "stage legacy is published")
	code, out = e.putDualWrite(false)
	require.Equal(t, http.StatusOK, code, out)
	require.Equal(t, false, out["enabled"])
	require.Equal(t, "legacy", out["stage"])
}

// The hook for /metrics serves what it is given, and nothing without.
func TestMetricsHook(t *testing.T) {
	e := newEnv(t)
	code, _ := e.do("GET", "/jobs", nil)
	require.Equal(t, http.StatusOK, code)

	s := newServer(e.store, e.mig, slog.New(slog.DiscardHandler))
	rec := httptest.NewRecorder()
	s.routes().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, http.StatusNotFound, rec.Code)
	s.metrics = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "jobstore_up 1\n") })
	rec = httptest.NewRecorder()
	s.routes().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, "jobstore_up 1\n", rec.Body.String())
}

// TestMetrics: the handler run serves (build) exports the collector's
// metrics, with the latency of the writes the API made.
func TestMetrics(t *testing.T) {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	store, mig, metrics, err := build(rdb, slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	s := newServer(store, mig, slog.New(slog.DiscardHandler))
	s.metrics = metrics
	h := s.routes()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("POST", "/submit-job", strings.NewReader(`{"service_required":"comfyui"}`)))
	require.Equal(t, http.StatusCreated, rec.Code, rec.Body.String())
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	require.Equal(t, http.StatusOK, rec.Code)
	body := rec.Body.String()
	require.Contains(t, body, `jobstore_operation_duration_seconds_count{op="submit",outcome="ok"} 1`)
	require.Contains(t, body, `jobstore_queue_jobs{namespace="job",queue="pending"} 1`)
	require.Contains(t, body, `jobstore_stage{stage="legacy"} 1`)
}
