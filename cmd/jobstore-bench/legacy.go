package main

import (
	"strconv"
	"time"

	"github.com/jobstep/jobstore"
)

// legacyJob is a job as the legacy API's submitJob writes it
// (/work/shared/legacy/legacy.js, apiSubmitJob): one HMSET of its fields
// and a ZADD to jobs:pending.
type legacyJob struct {
	id, service, requirements, customer, workflow string
	priority                                      int
	created                                       time.Time
	traceID, spanID                               string
}

// fields are the record's fields in the API's order, empty for those absent:
// the 20 that SubmitJob also writes (before its own jobstore_op).
func (j legacyJob) fields() []any {
	return []any{
		"id", j.id, "service_required", j.service, "priority", strconv.Itoa(j.priority),
		"payload", string(payload), "requirements", j.requirements, "customer_id", j.customer,
		"created_at", j.created.UTC().Format("2006-01-02T15:04:05.000Z"), "status", "pending",
		"retry_count", "0", "max_retries", "3", "workflow_id", j.workflow, "workflow_priority", "",
		"workflow_datetime", "", "current_step", "", "total_steps", "",
		"job_trace_id", j.traceID, "job_span_id", j.spanID, "workflow_trace_id", "", "workflow_span_id", "",
		"ctx", "",
	}
}

// score is the API's pending score: priority*1e15 - floor(ms/1000).
func (j legacyJob) score() float64 {
	return jobstore.ScoreAPI.Score(float64(j.priority), j.created.UnixMilli())
}

// typicalLegacy is typicalJob as the legacy API writes it, with a new id
// and trace ids, created now.
func typicalLegacy(id string, now time.Time) legacyJob {
	return legacyJob{id: id, service: "comfyui", priority: 50, requirements: typicalRequirements,
		customer: "cust-42", workflow: "wf-7", created: now, traceID: randomHex(16), spanID: randomHex(8)}
}
