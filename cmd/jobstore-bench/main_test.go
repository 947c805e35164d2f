package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--redis", "redis://127.0.0.1:6379/0"}, "database 0"},
		{[]string{"--redis", "redis://10.1.2.3:6379/15"}, "not on loopback"},
		{[]string{"--redis", "http://x"}, "--redis"},
		{[]string{"--only", "submit,nope"}, `unknown section "nope"`},
		{[]string{"--rounds", "0"}, "must be positive"},
		{[]string{"extra"}, "unexpected argument"},
		{[]string{"--no-such-flag"}, "no-such-flag"},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errb)
		require.Equal(t, 2, code, "%v: %s", tc.args, errb.String())
		require.Contains(t, errb.String(), tc.want, "%v", tc.args)
		require.Empty(t, out.String())
	}
}

// TestSmoke runs every section briefly against the server the library's
// tests use, when one is named.
func TestSmoke(t *testing.T) {
	url := os.Getenv("JOBSTORE_TEST_REDIS_URL")
	if url == "" {
		if os.Getenv("JOBSTORE_CI") == "1" {
			t.Fatal("JOBSTORE_TEST_REDIS_URL is not set; CI must run this against a real server")
		}
		t.Skip("JOBSTORE_TEST_REDIS_URL is not set")
	}
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--redis", url, "--json", "--duration", "50ms", "--rounds", "1",
		"--records", "2000", "--batch", "10", "--workers", "2"}, &out, &errb)
	require.Equal(t, 0, code, errb.String())
	var rep report
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep))
	require.Len(t, rep.Submit, 12)
	require.NotEmpty(t, rep.Batch)
	require.Len(t, rep.Worker, 2)
	require.NotNil(t, rep.Memory)
	require.NotNil(t, rep.Backfill)
	require.Zero(t, rep.Backfill.VerifyDiffs)
	for _, r := range rep.Submit {
		require.Positive(t, r.PerSec, r.Name)
	}
	require.True(t, strings.HasPrefix(rep.RedisVer, "7"), rep.RedisVer)
}
