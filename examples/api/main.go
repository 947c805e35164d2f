// Command api is an API service on jobstore, with the endpoints of the
// report's integration test:
//
//	POST   /submit-job          {"service":"comfyui","priority":50,"payload":{...}} -> 201 {"id":...}
//	GET    /jobs/{id}           the job, or 404
//	DELETE /jobs/{id}           cancel it
//	GET    /jobs?limit=N        pending jobs in claim order
//	GET    /admin/dual-write    the flag and the dual-write counters
//	PUT    /admin/dual-write    {"enabled":true} flips the flag without a restart
//
// It uses the server REDIS_URL names, or an embedded miniredis when unset,
// and reads REDIS_DUAL_WRITE_STEPS. It stops gracefully on SIGINT/SIGTERM.
//
//	go run ./examples/api -addr 127.0.0.1:3000
//	curl -X POST http://127.0.0.1:3000/submit-job -d '{"service": "comfyui"}'
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/jobstep/jobstore"
	"github.com/jobstep/jobstore/examples/internal/demo"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:3000", "address to listen on")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *addr); err != nil {
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, addr string) error {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	conn, err := demo.Connect(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	store, err := jobstore.New(conn.Client, jobstore.WithLogger(log))
	if err != nil {
		return err
	}
	srv := &http.Server{Addr: addr, Handler: newHandler(store), ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	log.Info("api listening", "addr", addr, "redis", conn.Where, "dual_write", store.DualWrite())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// submitRequest is the body of POST /submit-job.
type submitRequest struct {
	ID           string            `json:"id"`
	Service      string            `json:"service"`
	Priority     int               `json:"priority"`
	Payload      json.RawMessage   `json:"payload"`
	Requirements json.RawMessage   `json:"requirements"`
	CustomerID   string            `json:"customer_id"`
	WorkflowID   string            `json:"workflow_id"`
	MaxRetries   int               `json:"max_retries"`
	Extra        map[string]string `json:"extra"`
}

func newHandler(store *jobstore.Store) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /submit-job", func(w http.ResponseWriter, r *http.Request) {
		var req submitRequest
		body := http.MaxBytesReader(w, r.Body, 2*jobstore.DefaultMaxPayloadBytes)
		if err := json.NewDecoder(body).Decode(&req); err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("read the JSON body: %w", err))
			return
		}
		id, err := store.SubmitJob(r.Context(), jobstore.Job{
			ID: req.ID, Service: req.Service, Priority: req.Priority, Payload: req.Payload,
			Requirements: req.Requirements, CustomerID: req.CustomerID, WorkflowID: req.WorkflowID,
			MaxRetries: req.MaxRetries, Extra: req.Extra,
		})
		if err != nil {
			writeStoreError(w, err)
			return
		}
		writeJSON(w, http.StatusCreated, map[string]string{"id": id})
	})
	mux.HandleFunc("GET /jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		job, err := store.GetJob(r.Context(), r.PathValue("id"))
		if err != nil {
			writeStoreError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, job)
	})
	mux.HandleFunc("DELETE /jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		if err := store.CancelJob(r.Context(), r.PathValue("id")); err != nil {
			writeStoreError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /jobs", func(w http.ResponseWriter, r *http.Request) {
		limit := 100
		if v := r.URL.Query().Get("limit"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				writeError(w, http.StatusBadRequest, fmt.Errorf("limit=%q is not a number", v))
				return
			}
			limit = n
		}
		jobs, err := store.GetPendingJobs(r.Context(), limit)
		if err != nil {
			writeStoreError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, jobs)
	})
	mux.HandleFunc("GET /admin/dual-write", func(w http.ResponseWriter, r *http.Request) {
		st := store.DualWriteStats()
		writeJSON(w, http.StatusOK, map[string]any{
			"enabled": store.DualWrite(), "attempted": st.Attempted, "failed": st.Failed,
			"panics": st.Panics, "success_rate": st.SuccessRate(),
		})
	})
	mux.HandleFunc("PUT /admin/dual-write", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Enabled *bool `json:"enabled"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1024)).Decode(&req); err != nil || req.Enabled == nil {
			writeError(w, http.StatusBadRequest, errors.New(`want {"enabled": true|false}`))
			return
		}
		store.SetDualWrite(*req.Enabled)
		writeJSON(w, http.StatusOK, map[string]bool{"enabled": store.DualWrite()})
	})
	return mux
}

// writeStoreError maps jobstore's sentinel errors to HTTP statuses.
func writeStoreError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, jobstore.ErrJobNotFound):
		status = http.StatusNotFound
	case errors.Is(err, jobstore.ErrJobExists), errors.Is(err, jobstore.ErrJobFinished):
		status = http.StatusConflict
	case errors.Is(err, jobstore.ErrPayloadTooLarge):
		status = http.StatusRequestEntityTooLarge
	case errors.Is(err, jobstore.ErrInvalidID), errors.Is(err, jobstore.ErrInvalidService),
		errors.Is(err, jobstore.ErrInvalidPriority), errors.Is(err, jobstore.ErrInvalidPayload),
		errors.Is(err, jobstore.ErrInvalidMaxRetries), errors.Is(err, jobstore.ErrInvalidArgument):
		status = http.StatusBadRequest
	}
	writeError(w, status, err)
}

func writeError(w http.ResponseWriter, status int, err error) {
	writeJSON(w, status, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
