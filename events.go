package jobstore

import (
	"encoding/json"
	"time"
)

// The payloads jobstore publishes, field for field those of the legacy
// services (see ../shared/legacy/legacy.js and the README's event table).
// They are published by the script that makes the change, so a message is
// sent exactly when, and only if, the change is applied. Payloads whose
// content the script decides (job_failed, cancel_job, job_claimed) are
// built in Lua; the others here.

// submittedEvent is the legacy API's job_submitted message.
type submittedEvent struct {
	JobID            string          `json:"job_id"`
	Service          string          `json:"service_required"`
	Priority         int             `json:"priority"`
	Payload          json.RawMessage `json:"payload"`
	Requirements     json.RawMessage `json:"requirements,omitempty"`
	CustomerID       string          `json:"customer_id,omitempty"`
	CreatedAt        string          `json:"created_at"`
	Status           Status          `json:"status"`
	Timestamp        int64           `json:"timestamp"`
	WorkflowID       string          `json:"workflow_id,omitempty"`
	WorkflowPriority int             `json:"workflow_priority,omitempty"`
	WorkflowDatetime int64           `json:"workflow_datetime,omitempty"`
	CurrentStep      int             `json:"current_step,omitempty"`
	TotalSteps       int             `json:"total_steps,omitempty"`
}

// workflowEvent is the legacy API's workflow_submitted message, sent for
// the first step of a workflow.
type workflowEvent struct {
	WorkflowID       string `json:"workflow_id"`
	FirstJobID       string `json:"first_job_id"`
	TotalSteps       int    `json:"total_steps"`
	WorkflowPriority int    `json:"workflow_priority"`
	WorkflowDatetime int64  `json:"workflow_datetime"`
	CustomerID       string `json:"customer_id,omitempty"`
	Service          string `json:"service_required"`
	Timestamp        int64  `json:"timestamp"`
	WorkflowType     string `json:"workflow_type"`
	Message          string `json:"message"`
}

func submitEvents(j *Job, now time.Time) (submitted, workflow []byte) {
	e := submittedEvent{
		JobID: j.ID, Service: j.Service, Priority: j.Priority, Payload: j.Payload,
		Requirements: j.Requirements, CustomerID: j.CustomerID, CreatedAt: formatTime(j.CreatedAt),
		Status: StatusPending, Timestamp: nowMs(now), WorkflowID: j.WorkflowID,
		WorkflowPriority: j.WorkflowPriority, CurrentStep: j.CurrentStep, TotalSteps: j.TotalSteps,
	}
	if !j.WorkflowDatetime.IsZero() {
		e.WorkflowDatetime = j.WorkflowDatetime.UnixMilli()
	}
	submitted, _ = json.Marshal(e)
	// The API's test: a workflow's step 1 (step 0 never gets here, as 0
	// is false in JavaScript).
	if j.startsWorkflowSpan() && j.CurrentStep == 1 {
		w := workflowEvent{
			WorkflowID: j.WorkflowID, FirstJobID: j.ID, TotalSteps: j.TotalSteps,
			WorkflowPriority: j.WorkflowPriority, WorkflowDatetime: e.WorkflowDatetime,
			CustomerID: j.CustomerID, Service: j.Service, Timestamp: nowMs(now),
			WorkflowType: j.Service, Message: "Workflow started with first job submission",
		}
		if w.WorkflowPriority == 0 {
			w.WorkflowPriority = j.Priority
		}
		if w.WorkflowDatetime == 0 {
			w.WorkflowDatetime = nowMs(now)
		}
		workflow, _ = json.Marshal(w)
	}
	return submitted, workflow
}

// progressEvent is the legacy worker's update_job_progress message.
type progressEvent struct {
	JobID               string  `json:"job_id"`
	WorkerID            string  `json:"worker_id"`
	Progress            float64 `json:"progress"`
	Status              string  `json:"status"`
	Message             string  `json:"message"`
	CurrentStep         string  `json:"current_step"`
	TotalSteps          int     `json:"total_steps"`
	EstimatedCompletion string  `json:"estimated_completion"`
	Timestamp           int64   `json:"timestamp"`
}

// completeEvent is the legacy worker's complete_job message.
type completeEvent struct {
	JobID     string          `json:"job_id"`
	WorkerID  string          `json:"worker_id"`
	Status    Status          `json:"status"`
	Result    json.RawMessage `json:"result,omitempty"`
	Timestamp int64           `json:"timestamp"`
}

// completedEntry is the legacy worker's value in jobs:completed.
type completedEntry struct {
	Success     bool            `json:"success"`
	Data        json.RawMessage `json:"data,omitempty"`
	CompletedAt string          `json:"completed_at"`
}

// cancelledEvent is the legacy RedisService's job_cancelled message.
type cancelledEvent struct {
	JobID       string `json:"job_id"`
	Reason      string `json:"reason"`
	CancelledAt string `json:"cancelled_at"`
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }
