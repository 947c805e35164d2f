package jobstore

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Records as the legacy services write them (see legacy.js).
var (
	apiRecord = map[string]string{
		"id": "a1", "service_required": "comfyui", "priority": "60", "payload": `{"prompt":"x"}`,
		"requirements": "", "customer_id": "", "created_at": "2026-11-29T23:00:00.123Z", "status": "pending",
		"retry_count": "0", "max_retries": "3", "workflow_id": "", "workflow_priority": "", "workflow_datetime": "",
		"current_step": "", "total_steps": "", "job_trace_id": "0123456789abcdef0123456789abcdef",
		"job_span_id": "0123456789abcdef", "workflow_trace_id": "", "workflow_span_id": "", "ctx": "",
	}
	svcRecord = map[string]string{
		"id": "s1", "service_required": "comfyui", "priority": "5", "payload": `{}`, "requirements": `{"hardware":{"gpu_memory_gb":8}}`,
		"customer_id": "c1", "created_at": "2026-11-29T23:00:00.000Z", "status": "pending", "retry_count": "0", "max_retries": "3",
	}
)

func TestDecodeLegacyRecords(t *testing.T) {
	j, err := decodeJob("a1", apiRecord)
	require.NoError(t, err)
	require.Equal(t, 60, j.Priority)
	require.Equal(t, "comfyui", j.Service)
	require.Equal(t, time.Date(2026, 11, 29, 23, 0, 0, 123e6, time.UTC), j.CreatedAt)
	require.Nil(t, j.Requirements, "'' is absent")
	require.Zero(t, j.WorkflowPriority)
	require.True(t, j.WorkflowDatetime.IsZero())
	require.Equal(t, "0123456789abcdef0123456789abcdef", j.TraceID)
	require.Empty(t, j.Extra)
	require.Empty(t, j.Unreadable)

	j, err = decodeJob("s1", svcRecord)
	require.NoError(t, err)
	require.JSONEq(t, `{"hardware":{"gpu_memory_gb":8}}`, string(j.Requirements))
	require.Equal(t, "c1", j.CustomerID)

	// After the legacy claim function: assigned_at is <secs>.<micros>.
	claimed := map[string]string{"id": "c", "service_required": "s", "status": "assigned", "worker_id": "w",
		"assigned_at": "1764457200.654321", "processing_time": "12"}
	j, err = decodeJob("c", claimed)
	require.NoError(t, err)
	require.Equal(t, time.UnixMilli(1764457200654).UTC(), j.AssignedAt)
	require.Equal(t, map[string]string{"processing_time": "12"}, j.Extra)
	require.Equal(t, DefaultPriority, j.Priority, "no priority field: the API's default")
	require.Equal(t, DefaultMaxRetries, j.MaxRetries)
}

func TestDecodeJunk(t *testing.T) {
	h := map[string]string{
		"id": "j", "service_required": "s", "status": "", "priority": "NaN", "retry_count": "undefined",
		"max_retries": "three", "current_step": "2.5", "created_at": "yesterday", "payload": "{oops",
		"workflow_datetime": "1764457200000", "requirements": "[1,2]", "jobstore_op": "abc",
	}
	j, err := decodeJob("j", h)
	require.NoError(t, err, "junk never makes a record unreadable")
	require.Equal(t, StatusPending, j.Status, "no status reads as pending, as the legacy API does")
	require.Equal(t, DefaultPriority, j.Priority)
	require.Equal(t, 0, j.RetryCount)
	require.Equal(t, DefaultMaxRetries, j.MaxRetries)
	require.Equal(t, 2, j.CurrentStep, "parseInt reads 2.5 as 2")
	require.True(t, j.CreatedAt.IsZero())
	require.Nil(t, j.Payload)
	require.Equal(t, time.UnixMilli(1764457200000).UTC(), j.WorkflowDatetime)
	require.Equal(t, map[string]string{
		"priority": "NaN", "retry_count": "undefined", "max_retries": "three", "created_at": "yesterday", "payload": "{oops",
	}, j.Unreadable)
	require.NotContains(t, j.Extra, "jobstore_op", "jobstore's own field is not the caller's")
}

func TestResults(t *testing.T) {
	j := &Job{}
	j.addResult(`{"success":true,"data":{"url":"u"},"completed_at":"2026-11-29T23:00:00.000Z"}`, "")
	require.JSONEq(t, `{"url":"u"}`, string(j.Result), "the legacy worker's wrapper is unwrapped")
	j = &Job{}
	j.addResult(`{"url":"u","success":true}`, "")
	require.JSONEq(t, `{"url":"u","success":true}`, string(j.Result), "RedisService stores the result itself")
	j = &Job{}
	j.addResult(`{"success":true,"completed_at":"x"}`, "")
	require.Nil(t, j.Result, "a completion without a result")
	j = &Job{}
	j.addResult("", `{"error":"Job cancelled by user","failed_at":"2026-11-29T23:00:00.000Z","cancelled":true}`)
	require.Equal(t, "Job cancelled by user", j.Error)
	require.Equal(t, time.Date(2026, 11, 29, 23, 0, 0, 0, time.UTC), j.FailedAt)
	j = &Job{Error: "from the record"}
	j.addResult("", `{"error":"from the hash"}`)
	require.Equal(t, "from the hash", j.Error, "the entry is written by the final failure")
	j = &Job{}
	j.addResult("not json", "{")
	require.Equal(t, map[string]string{"jobs:completed": "not json", "jobs:failed": "{"}, j.Unreadable)
}

func TestSubmitRecordIsTheAPIs(t *testing.T) {
	now := time.Date(2026, 11, 29, 23, 0, 0, 123456789, time.UTC)
	j := withDefaults(Job{Service: "comfyui", Payload: json.RawMessage(`{"a":1}`), Extra: map[string]string{"z": "1", "b": "2"}}, now)
	f := submitRecord(&j)
	var names []string
	for i := 0; i < len(f); i += 2 {
		names = append(names, f[i].(string))
	}
	require.Equal(t, append(append([]string{}, submitFields...), "b", "z"), names, "the API's fields in its order, then Extra")
	h := map[string]string{}
	for i := 0; i < len(f); i += 2 {
		h[f[i].(string)] = f[i+1].(string)
	}
	require.Equal(t, "50", h["priority"], "priority 0 is the API's 50")
	require.Equal(t, "2026-11-29T23:00:00.123Z", h["created_at"])
	require.Equal(t, "", h["workflow_trace_id"], "workflow spans only for workflows")
	require.Len(t, h["job_trace_id"], 32)
	require.Len(t, h["job_span_id"], 16)
	back, err := decodeJob(j.ID, h)
	require.NoError(t, err)
	require.Equal(t, j.CreatedAt, back.CreatedAt)
	require.Empty(t, back.Unreadable)
}
