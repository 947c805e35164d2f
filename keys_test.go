package jobstore

import (
	"testing"

	"github.com/stretchr/testify/require"
)

func TestKeys(t *testing.T) {
	j, s := keyspace{ns: JobNamespace}, keyspace{prefix: "t:", ns: StepNamespace}
	cases := []struct{ got, want string }{
		{j.record("abc"), "job:abc"},
		{j.sub("abc", "progress"), "job:abc:progress"},
		{j.progress("abc"), "job:abc:progress"},
		{j.pending(), "jobs:pending"},
		{j.active("w1"), "jobs:active:w1"},
		{j.activePattern(), "jobs:active:*"},
		{j.completed(), "jobs:completed"},
		{j.failed(), "jobs:failed"},
		{j.recordPattern(), "job:*"},
		{j.recordPrefix(), "job:"},
		{s.record("abc"), "t:step:abc"},
		{s.pending(), "t:steps:pending"},
		{s.active("w1"), "t:steps:active:w1"},
		{s.completed(), "t:steps:completed"},
		{s.failed(), "t:steps:failed"},
		{workerKey("", "w1"), "worker:w1"},
		{heartbeatKey("", "w1"), "worker:w1:heartbeat"},
		{heartbeatPattern("t:"), "t:worker:*:heartbeat"},
		{workersActiveKey(""), "workers:active"},
		{progressStreamKey("", "abc"), "progress:abc"},
		{channel("", chJobSubmitted), "job_submitted"},
		{channel("t:", chCompleteJob), "t:complete_job"},
		{stageKey(""), "jobstore:stage"},
		{statsKey("t:"), "t:jobstore:stats"},
		{checkpointKey("", JobNamespace, StepNamespace), "jobstore:backfill:job-to-step"},
		{JobNamespace.String(), "job"},
		{StepNamespace.String(), "step"},
	}
	for _, c := range cases {
		require.Equal(t, c.want, c.got)
	}
}

func TestParseRecordKey(t *testing.T) {
	k := keyspace{ns: JobNamespace}
	cases := []struct {
		key, id, suffix string
		ok              bool
	}{
		{"job:abc", "abc", "", true},
		{"job:abc:progress", "abc", "progress", true},
		{"job:abc:a:b", "abc", "a:b", true},
		{"job:abc:", "", "", false},
		{"job:", "", "", false},
		{"jobs:pending", "", "", false},
		{"jobsummary", "", "", false},
		{"step:abc", "", "", false},
		{"xjob:abc", "", "", false},
		{"job:a b", "", "", false},
	}
	for _, c := range cases {
		id, suffix, ok := k.parseRecordKey(c.key)
		require.Equal(t, c.ok, ok, c.key)
		require.Equal(t, c.id, id, c.key)
		require.Equal(t, c.suffix, suffix, c.key)
	}
	w, ok := k.workerFromActive("jobs:active:w1")
	require.True(t, ok)
	require.Equal(t, "w1", w)
	_, ok = k.workerFromActive("jobs:active:")
	require.False(t, ok)
	_, ok = k.workerFromActive("jobs:activex")
	require.False(t, ok)
}
