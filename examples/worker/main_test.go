package main

import (
	"bytes"
	"context"
	"encoding/json"
	"go/parser"
	"go/token"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jobstep/jobstore"
	"github.com/jobstep/jobstore/examples/internal/demo"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// logBuf collects log lines, safe for concurrent use.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuf) lines(containing string) []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []string
	for l := range strings.Lines(b.buf.String()) {
		if strings.Contains(l, containing) {
			out = append(out, l)
		}
	}
	return out
}

type env struct {
	mr    *miniredis.Miniredis
	conn  *demo.Conn
	store *jobstore.Store // the API's side, to submit and read
	logs  *logBuf
	log   *slog.Logger
}

func newEnv(t *testing.T) *env {
	mr := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	t.Cleanup(func() { _ = rdb.Close() })
	store, err := jobstore.New(rdb)
	require.NoError(t, err)
	logs := &logBuf{}
	return &env{mr: mr, conn: &demo.Conn{Client: rdb, Embedded: true, Where: "test"}, store: store,
		logs: logs, log: slog.New(slog.NewTextHandler(logs, nil))}
}

// testConfig is a quick worker: the flags' defaults, shorter waits.
func testConfig(t *testing.T, args ...string) config {
	c, err := parseFlags(append([]string{"-id", "w1", "-poll", "10ms", "-work", "20ms", "-seed", "0"}, args...))
	require.NoError(t, err)
	c.exitIdle = true
	return c
}

func (e *env) submit(t *testing.T, j jobstore.Job) string {
	id, err := e.store.SubmitJob(t.Context(), j)
	require.NoError(t, err)
	return id
}

func TestFlags(t *testing.T) {
	c, err := parseFlags(nil)
	require.NoError(t, err)
	require.Zero(t, c.failRate, "no job fails on purpose unless asked")
	require.Equal(t, []string{"comfyui"}, c.caps.Services)
	require.Nil(t, c.caps.Hardware)

	c, err = parseFlags([]string{"-id", "gpu-7", "-services", "comfyui, a1111", "-gpu-memory", "24", "-ram", "64",
		"-gpu-model", "rtx4090", "-models", "comfyui:sdxl,comfyui:flux,a1111:sd15", "-machine-id", "m7"})
	require.NoError(t, err)
	require.Equal(t, jobstore.Capabilities{
		WorkerID: "gpu-7", MachineID: "m7", Services: []string{"comfyui", "a1111"},
		Hardware: &jobstore.Hardware{GPUMemoryGB: 24, RAMGB: 64, GPUModel: "rtx4090"},
		Models:   map[string][]string{"comfyui": {"sdxl", "flux"}, "a1111": {"sd15"}},
	}, c.caps)

	for _, bad := range [][]string{{"-services", ""}, {"-concurrency", "0"}, {"-fail-rate", "2"},
		{"-models", "sdxl"}, {"extra"}} {
		_, err := parseFlags(bad)
		require.Error(t, err, "%q", bad)
	}
}

// The package doc tells -services as it is: defaulting to comfyui (the
// no-flag demo on miniredis runs comfyui jobs), and never empty.
func TestDocServicesFlag(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "main.go", nil, parser.ParseComments|parser.PackageClauseOnly)
	require.NoError(t, err)
	pkgDoc := strings.Join(strings.Fields(f.Doc.Text()), " ")
	require.NotContains(t, pkgDoc, "-services (required)", "it has a default")
	require.Contains(t, pkgDoc, "-services (default comfyui")
	c, err := parseFlags(nil)
	require.NoError(t, err)
	require.Equal(t, []string{"comfyui"}, c.caps.Services)
	_, err = parseFlags([]string{"-services", " , "})
	require.ErrorContains(t, err, "-services: name at least one service")
}

// -fail-rate is a share: anything outside [0, 1], NaN included, is
// refused, with a message naming the flag.
func TestFlagsFailRate(t *testing.T) {
	for _, ok := range []string{"0", "0.5", "1"} {
		c, err := parseFlags([]string{"-fail-rate", ok})
		require.NoError(t, err, ok)
		require.Equal(t, ok == "0", c.failRate == 0, ok)
	}
	for _, bad := range []string{"NaN", "nan", "-0.1", "1.01", "Inf", "-Inf"} {
		_, err := parseFlags([]string{"-fail-rate", bad})
		require.ErrorContains(t, err, "-fail-rate", bad)
		require.ErrorContains(t, err, "between 0 and 1", bad)
	}
}

// Hardware amounts are GB or cores, 0 (the default) for none: a negative
// one, NaN or infinity is refused, naming the flag, not ignored.
func TestFlagsHardware(t *testing.T) {
	c, err := parseFlags([]string{"-gpu-memory", "0", "-cpu-cores", "8"})
	require.NoError(t, err)
	require.Equal(t, &jobstore.Hardware{CPUCores: 8}, c.caps.Hardware)
	for _, flag := range []string{"-gpu-memory", "-cpu-cores", "-ram"} {
		for _, bad := range []string{"-1", "-0.5", "NaN", "Inf", "-Inf"} {
			_, err := parseFlags([]string{flag, bad})
			require.ErrorContains(t, err, flag+" ", "%s %s", flag, bad)
			require.ErrorContains(t, err, "0 or more", "%s %s", flag, bad)
		}
	}
}

// main exits 2, with the reason on stderr, for flags it refuses, before
// connecting anywhere.
func TestMainBadFlagsExit2(t *testing.T) {
	if args := os.Getenv("WORKER_TEST_MAIN_ARGS"); args != "" {
		os.Args = append([]string{"worker"}, strings.Fields(args)...)
		main()
		os.Exit(0)
	}
	for _, c := range []struct{ args, says string }{
		{"-fail-rate NaN", "-fail-rate"},
		{"-fail-rate 1.5", "-fail-rate"},
		{"-gpu-memory -24", "-gpu-memory"},
		{"-ram -1", "-ram"},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestMainBadFlagsExit2$")
		// Without REDIS_URL: a worker that did start would run on an
		// embedded miniredis, never on a real server.
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, demo.EnvRedisURL+"=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		cmd.Env = append(cmd.Env, "WORKER_TEST_MAIN_ARGS="+c.args)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, "%s: %s", c.args, stderr.String())
		require.Equal(t, 2, exit.ExitCode(), "%s: %s", c.args, stderr.String())
		require.Contains(t, stderr.String(), c.says, c.args)
	}
}

func TestWorkerCompletesJobs(t *testing.T) {
	e := newEnv(t)
	c := testConfig(t, "-concurrency", "3")
	var ids []string
	for i := range 5 {
		ids = append(ids, e.submit(t, jobstore.Job{Service: "comfyui", Payload: json.RawMessage(`{"n":1}`), Priority: 10 + i}))
	}
	require.NoError(t, run(t.Context(), c, e.conn, e.log))

	for _, id := range ids {
		j, err := e.store.GetJob(t.Context(), id)
		require.NoError(t, err)
		require.Equal(t, jobstore.StatusCompleted, j.Status)
		require.JSONEq(t, `{"worker":"w1","payload_bytes":7}`, string(j.Result))
	}
	require.Len(t, e.logs.lines("msg=completed"), 5)
	require.Empty(t, e.logs.lines("level=ERROR"))
	require.Equal(t, "75", e.mr.HGet("job:"+ids[0]+":progress", "progress"), "the last report")
	require.False(t, e.mr.Exists("worker:w1:heartbeat"), "unregistered at the end")
	for _, k := range e.mr.Keys() {
		require.False(t, strings.HasPrefix(k, "jobstore:fleet:"), "checked out of the fleet: %s", k)
	}
}

// With -fail-rate 1 every attempt fails: the log says what FailJob did,
// retried for the first attempts, failed for the last.
func TestWorkerLogsFailOutcome(t *testing.T) {
	e := newEnv(t)
	c := testConfig(t, "-fail-rate", "1", "-concurrency", "1")
	id := e.submit(t, jobstore.Job{Service: "comfyui"})
	require.NoError(t, run(t.Context(), c, e.conn, e.log))

	fails := e.logs.lines("job failed")
	require.Len(t, fails, 3, "max_retries 3: three attempts")
	require.Contains(t, fails[0], "outcome=retried")
	require.Contains(t, fails[0], "back to pending")
	require.Contains(t, fails[1], "outcome=retried")
	require.Contains(t, fails[2], "outcome=failed")
	require.Contains(t, fails[2], "for good")
	j, err := e.store.GetJob(t.Context(), id)
	require.NoError(t, err)
	require.Equal(t, jobstore.StatusFailed, j.Status)
	require.Equal(t, 3, j.RetryCount)
}

// Claims use the capabilities from the flags: a job needing more GPU
// memory, or another service, stays pending.
func TestWorkerClaimsByCapabilities(t *testing.T) {
	e := newEnv(t)
	c := testConfig(t, "-services", "comfyui", "-gpu-memory", "24")
	fits := e.submit(t, jobstore.Job{Service: "comfyui", Requirements: json.RawMessage(`{"hardware":{"gpu_memory_gb":16}}`)})
	tooBig := e.submit(t, jobstore.Job{Service: "comfyui", Requirements: json.RawMessage(`{"hardware":{"gpu_memory_gb":48}}`)})
	other := e.submit(t, jobstore.Job{Service: "a1111"})
	require.NoError(t, run(t.Context(), c, e.conn, e.log))
	for id, want := range map[string]jobstore.Status{fits: jobstore.StatusCompleted,
		tooBig: jobstore.StatusPending, other: jobstore.StatusPending} {
		j, err := e.store.GetJob(t.Context(), id)
		require.NoError(t, err)
		require.Equal(t, want, j.Status, id)
	}
}

// The worker takes the stage published in Redis at start.
func TestWorkerFollowsPublishedStage(t *testing.T) {
	e := newEnv(t)
	mig, err := jobstore.NewMigrator(e.conn.Client)
	require.NoError(t, err)
	require.NoError(t, mig.PublishStage(t.Context(), jobstore.StageDualWrite, jobstore.PublishOptions{}))
	c := testConfig(t, "-seed", "1")
	require.NoError(t, run(t.Context(), c, e.conn, e.log))
	require.Len(t, e.logs.lines("stage=dual-write"), 1)
	keys, err := e.mr.HKeys("steps:completed")
	require.NoError(t, err)
	require.Len(t, keys, 1, "mirrored")
}

// On a signal the worker stops claiming, finishes the job in hand and
// unregisters; a job it could not finish within -drain goes back to
// pending.
func TestWorkerGracefulShutdown(t *testing.T) {
	for _, tc := range []struct {
		drain string
		want  jobstore.Status
	}{{"10s", jobstore.StatusCompleted}, {"0s", jobstore.StatusPending}} {
		t.Run("drain="+tc.drain, func(t *testing.T) {
			e := newEnv(t)
			c := testConfig(t, "-concurrency", "1", "-work", "300ms", "-drain", tc.drain)
			c.exitIdle = false
			first := e.submit(t, jobstore.Job{Service: "comfyui", Priority: 90})
			second := e.submit(t, jobstore.Job{Service: "comfyui", Priority: 10})
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan error, 1)
			go func() { done <- run(ctx, c, e.conn, e.log) }()
			require.Eventually(t, func() bool { return len(e.logs.lines("msg=claimed")) == 1 }, 5*time.Second, 5*time.Millisecond)
			cancel() // SIGINT
			select {
			case err := <-done:
				require.NoError(t, err)
			case <-time.After(5 * time.Second):
				t.Fatal("the worker did not stop")
			}
			j, err := e.store.GetJob(t.Context(), first)
			require.NoError(t, err)
			require.Equal(t, tc.want, j.Status)
			j, err = e.store.GetJob(t.Context(), second)
			require.NoError(t, err)
			require.Equal(t, jobstore.StatusPending, j.Status, "not claimed after the signal")
			require.False(t, e.mr.Exists("worker:w1:heartbeat"), "unregistered")
			require.Len(t, e.logs.lines("stopping: no new claims"), 1)
		})
	}
}

// A worker that cannot register stops, with the reason.
func TestWorkerCannotRegister(t *testing.T) {
	e := newEnv(t)
	c := testConfig(t, "-id", "bad:id")
	c.exitIdle = false
	err := run(t.Context(), c, e.conn, e.log)
	require.ErrorIs(t, err, jobstore.ErrInvalidWorker)
	require.ErrorContains(t, err, "register the worker")
}
