package jobstore

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestKeys(t *testing.T) {
	cases := []struct{ got, want string }{
		{JobKey("abc123"), "job:abc123"},
		{StepKey("abc123"), "step:abc123"},
		{JobsQueueKey(QueuePending), "jobs:pending"},
		{JobsQueueKey(QueueActive), "jobs:active"},
		{JobsQueueKey(QueueCompleted), "jobs:completed"},
		{JobsQueueKey(QueueFailed), "jobs:failed"},
		{StepsQueueKey(QueuePending), "steps:pending"},
		{StepsQueueKey(QueueActive), "steps:active"},
		{StepsQueueKey(QueueCompleted), "steps:completed"},
		{StepsQueueKey(QueueFailed), "steps:failed"},
		{keyspace{prefix: "t:", ns: JobNamespace}.record("1"), "t:job:1"},
		{keyspace{prefix: "t:", ns: StepNamespace}.queue(QueuePending), "t:steps:pending"},
		{keyspace{prefix: "t:", ns: StepNamespace}.recordPattern(), "t:step:*"},
		{SharedStageKey(""), "jobstore:stage"},
		{SharedStageKey("t:"), "t:jobstore:stage"},
		{JobNamespace.String(), "job"},
		{StepNamespace.String(), "step"},
	}
	for _, c := range cases {
		require.Equal(t, c.want, c.got)
	}
}

func TestIDFromRecordKey(t *testing.T) {
	k := keyspace{ns: JobNamespace}
	cases := []struct {
		key string
		id  string
		ok  bool
	}{
		{"job:abc", "abc", true},
		{"job:abc:progress", "", false}, // a sub-key, not a record
		{"job:", "", false},
		{"jobs:pending", "", false},
		{"step:abc", "", false},
		{"xjob:abc", "", false},
	}
	for _, c := range cases {
		id, ok := k.idFromRecordKey(c.key)
		require.Equal(t, c.ok, ok, c.key)
		require.Equal(t, c.id, id, c.key)
	}
	id, ok := keyspace{prefix: "p:", ns: StepNamespace}.idFromRecordKey("p:step:x")
	require.True(t, ok)
	require.Equal(t, "x", id)
}

func TestKeyRefs(t *testing.T) {
	refs := []keyRef{recordRef("7"), queueRef(QueuePending), queueRef(QueueActive)}
	require.Equal(t, []string{"job:7", "jobs:pending", "jobs:active"}, keyspace{ns: JobNamespace}.keys(nil, refs))
	require.Equal(t, []string{"step:7", "steps:pending", "steps:active"}, keyspace{ns: StepNamespace}.keys(nil, refs))
}

func TestQueueAndRecordKeys(t *testing.T) {
	j, st := keyspace{ns: JobNamespace}, keyspace{prefix: "p:", ns: StepNamespace}
	require.Equal(t, []string{
		"jobs:pending", "jobs:active", "jobs:completed", "jobs:failed", "job:a",
		"p:steps:pending", "p:steps:active", "p:steps:completed", "p:steps:failed", "p:step:a",
	}, queueAndRecordKeys(j, st, []string{"a"}))
	require.Len(t, queueAndRecordKeys(j, st, nil), 8)
}
