package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jobstep/jobstore"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// functionFile is the legacy claim function (see findFunction).
var functionFile = findFunction()

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--redis", "redis://127.0.0.1:6379/0"}, "database 0"},
		{[]string{"--redis", "redis://10.1.2.3:6379/15"}, "not on loopback"},
		{[]string{"--redis", "http://x"}, "--redis"},
		{[]string{"--only", "submit,nope"}, `unknown section "nope"`},
		{[]string{"--only", "backfill", "--records", "0"}, "--records"},
		{[]string{"--rounds", "0"}, "must be positive"},
		{[]string{"--claim-cap", "-1"}, "must be positive"},
		{[]string{"--batch", "20000"}, "more than SubmitJobs takes"},
		{[]string{"extra"}, "unexpected argument"},
		{[]string{"--no-such-flag"}, "no-such-flag"},
		{[]string{"--only", "claim", "--function", "/nonexistent/f.lua"}, "--function"},
	} {
		var out, errb bytes.Buffer
		code := run(context.Background(), tc.args, &out, &errb)
		require.Equal(t, 2, code, "%v: %s", tc.args, errb.String())
		require.Contains(t, errb.String(), tc.want, "%v", tc.args)
		require.Empty(t, out.String())
	}
}

// TestHelp: --help and -h exit 0 and print each flag's default once.
func TestHelp(t *testing.T) {
	for _, arg := range []string{"--help", "-h"} {
		var out, errb bytes.Buffer
		require.Equal(t, 0, run(context.Background(), []string{arg}, &out, &errb), errb.String())
		require.Empty(t, errb.String())
		help := out.String()
		require.Contains(t, help, "Usage: jobstore-bench")
		for _, name := range []string{"redis", "duration", "rounds", "workers", "batch", "records", "only", "function", "claim-jobs", "claim-workers", "claim-cap"} {
			require.Contains(t, help, "  -"+name+" ", name)
		}
		// Each flag's text (its line and the indented line under it)
		// holds at most one default.
		for _, flagText := range regexp.MustCompile(`(?m)^  -`).Split(help, -1)[1:] {
			require.LessOrEqual(t, strings.Count(flagText, "(default"), 1, flagText)
		}
		require.Equal(t, 1, strings.Count(help, "(default \"redis://127.0.0.1:6379/15\")")+strings.Count(help, "(default \""+os.Getenv("REDIS_URL")+"\")"))
	}
}

// sharedURL is the server the shared-server sections may use in tests.
func sharedURL(t *testing.T) string {
	url := os.Getenv("JOBSTORE_TEST_REDIS_URL")
	if url == "" {
		if os.Getenv("JOBSTORE_CI") == "1" {
			t.Fatal("JOBSTORE_TEST_REDIS_URL is not set; CI must run this against a real server")
		}
		t.Skip("JOBSTORE_TEST_REDIS_URL is not set")
	}
	return url
}

// needRedisServer skips, or fails in CI, without redis-server and the
// function file, which the claim section needs.
func needRedisServer(t *testing.T) {
	_, err := exec.LookPath("redis-server")
	if err == nil {
		_, err = os.Stat(functionFile)
	}
	if err != nil {
		if os.Getenv("JOBSTORE_CI") == "1" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// TestSmoke runs every shared-server section briefly against the server
// the library's tests use.
func TestSmoke(t *testing.T) {
	url := sharedURL(t)
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--redis", url, "--json", "--only", "submit,batch,worker,memory,backfill",
		"--duration", "50ms", "--rounds", "1", "--batch", "10", "--workers", "2", "--records", "300"}, &out, &errb)
	require.Equal(t, 0, code, errb.String())
	var rep report
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep))
	require.Len(t, rep.Submit, 12)
	require.Len(t, rep.Batch, 4)
	require.Len(t, rep.Worker, 2)
	require.NotNil(t, rep.Memory)
	require.NotNil(t, rep.Backfill)
	require.Zero(t, rep.Backfill.VerifyDiffs)
	require.Positive(t, rep.Backfill.BackfillPerSec)
	require.Nil(t, rep.Claim)
	for _, r := range slices.Concat(rep.Submit, rep.Batch, rep.Worker) {
		require.Positive(t, r.PerSec, r.Name)
	}
	require.True(t, strings.HasPrefix(rep.RedisVer, "7"), rep.RedisVer)

	// Nothing is left under the prefix.
	opt, err := redis.ParseURL(url)
	require.NoError(t, err)
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	keys, _, err := rdb.Scan(context.Background(), 0, keyPrefix+"*", 1000).Result()
	require.NoError(t, err)
	require.Empty(t, keys)
}

// TestLegacyFields: the legacy anchor writes the fields SubmitJob writes
// (less its own jobstore_op), in the API's order.
func TestLegacyFields(t *testing.T) {
	url := sharedURL(t)
	ctx := context.Background()
	opt, err := redis.ParseURL(url)
	require.NoError(t, err)
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	p := keyPrefix + "fields:"
	defer func() { require.NoError(t, unlinkMatching(ctx, rdb, p+"*")) }()
	s, err := jobstore.New(rdb, jobstore.WithKeyPrefix(p), jobstore.WithStage(jobstore.StageLegacy))
	require.NoError(t, err)
	id, err := s.SubmitJob(ctx, typicalJob(""))
	require.NoError(t, err)
	got, err := rdb.HGetAll(ctx, p+"job:"+id).Result()
	require.NoError(t, err)
	delete(got, "jobstore_op")
	f := typicalLegacy(id, time.Now()).fields()
	want := map[string]string{}
	for i := 0; i < len(f); i += 2 {
		want[f[i].(string)] = f[i+1].(string)
	}
	require.Len(t, want, 20)
	for k := range want {
		require.Contains(t, got, k)
	}
	require.Len(t, got, len(want))
	for _, k := range []string{"service_required", "priority", "payload", "requirements", "customer_id", "workflow_id", "status", "max_retries"} {
		require.Equal(t, want[k], got[k], k)
	}
}

// TestClaimSmoke runs the claim section briefly; it starts its own
// redis-server.
func TestClaimSmoke(t *testing.T) {
	needRedisServer(t)
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--json", "--only", "claim", "--function", functionFile,
		"--duration", "100ms", "--rounds", "1", "--claim-jobs", "300", "--claim-cap", "40", "--claim-workers", "3"}, &out, &errb)
	require.Equal(t, 0, code, errb.String())
	var rep report
	require.NoError(t, json.Unmarshal(out.Bytes(), &rep))
	require.Empty(t, rep.Redis, "the claim section does not use --redis")
	c := rep.Claim
	require.NotNil(t, c)
	require.True(t, strings.HasPrefix(c.RedisVersion, "7"), c.RedisVersion)
	require.Len(t, c.Claim, 4)
	require.Len(t, c.Cycle, 4)
	for _, r := range slices.Concat(c.Claim, c.Cycle) {
		require.Positive(t, r.Ops, r.Name)
		require.LessOrEqual(t, r.Ops, int64(40), r.Name)
		require.Contains(t, c.Commands, r.Name)
	}
	require.Contains(t, c.Commands["findMatchingJob (FCALL)"], "fcall")
	require.Contains(t, c.Commands["ClaimJob, dual-write on"], "evalsha")
	require.Len(t, c.Fleet, 10)
	require.NotNil(t, c.Profile)
	require.Positive(t, c.Profile.FunctionPerJobUs)
	require.Positive(t, c.Profile.ScriptPerJobUs)
	require.InDelta(t, 1.0/3, c.WithReqs, 0.1)
	require.Len(t, rep.Targets, 3)

	// The private server is gone.
	rdb := redis.NewClient(&redis.Options{Addr: c.Server, MaxRetries: -1, DialTimeout: time.Second})
	defer rdb.Close()
	require.Error(t, rdb.Ping(context.Background()).Err())
}

// TestClaimData checks the claim data against the real function and
// ClaimJob: with a window over the whole queue, a worker of each kind
// claims exactly the jobs the data says it matches, no more, no less.
func TestClaimData(t *testing.T) {
	needRedisServer(t)
	ctx := context.Background()
	priv, err := startPrivateRedis(ctx)
	require.NoError(t, err)
	defer priv.Stop()
	code, err := os.ReadFile(functionFile)
	require.NoError(t, err)
	require.NoError(t, priv.rdb.FunctionLoad(ctx, string(code)).Err())
	const n = 400
	reg, err := jobstore.New(priv.rdb, jobstore.WithStage(jobstore.StageLegacy))
	require.NoError(t, err)
	cs := &claimSetup{priv: priv, jobs: claimData(n, time.Now()), reg: reg}
	wide, err := jobstore.New(priv.rdb, jobstore.WithStage(jobstore.StageDualWrite), jobstore.WithClaimWindow(n))
	require.NoError(t, err)

	for _, m := range []fleetMember{claimFleet[0], claimFleet[1], claimFleet[7]} {
		want := 0
		for _, j := range cs.jobs {
			if j.matchedBy(m) {
				want++
			}
		}
		require.Positive(t, want)
		var workers []jobstore.Capabilities
		for k := range want + 1 {
			workers = append(workers, m.caps("t-"+strconv.Itoa(k)))
		}

		require.NoError(t, cs.refill(ctx, workers))
		got := 0
		for _, c := range workers {
			js, err := json.Marshal(c)
			require.NoError(t, err)
			err = priv.rdb.FCall(ctx, "findMatchingJob", nil, string(js), strconv.Itoa(n)).Err()
			if errors.Is(err, redis.Nil) {
				break
			}
			require.NoError(t, err)
			got++
		}
		require.Equal(t, want, got, "findMatchingJob, %s", m)

		require.NoError(t, cs.refill(ctx, workers))
		got = 0
		for _, c := range workers {
			_, err := wide.ClaimJob(ctx, c)
			if errors.Is(err, jobstore.ErrNoJob) {
				break
			}
			require.NoError(t, err)
			got++
		}
		require.Equal(t, want, got, "ClaimJob, %s", m)
		require.NoError(t, checkPending(ctx, priv.rdb, n, int64(want)))
	}
}

func TestCommandStats(t *testing.T) {
	before := map[string]cmdStat{"fcall": {10, 100}, "info": {1, 1}}
	after := map[string]cmdStat{"fcall": {14, 180}, "hgetall": {40, 80}, "info": {3, 9}, "ping": {5, 5}}
	sum := addStats(nil, before, after)
	require.Equal(t, map[string]cmdStat{"fcall": {4, 80}, "hgetall": {40, 80}, "ping": {5, 5}}, sum)
	require.Equal(t, cmdStat{1, 20}, perOp(sum, 4)["fcall"])
}
