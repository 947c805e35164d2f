package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/jobstep/jobstore"
	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

var ctx = context.Background()

// The tests that set no environment variable run in parallel, after
// those that do (t.Setenv): the command reads the environment.

// scanCount is the COUNT of the tests' own scans: large, as the shared
// server's database may hold many keys of others.
const scanCount = 5000

// envMainArgs, when set (to the JSON of an argument list), makes the test
// binary run the command's main with those arguments instead of the
// tests, so that a test can check what the built binary does: its exit
// status, what it writes to the real stderr, how it takes a signal.
const envMainArgs = "STEPMIGRATE_TEST_MAIN_ARGS"

func TestMain(m *testing.M) {
	if raw := os.Getenv(envMainArgs); raw != "" {
		var args []string
		if err := json.Unmarshal([]byte(raw), &args); err != nil {
			fmt.Fprintln(os.Stderr, "bad", envMainArgs, err)
			os.Exit(99)
		}
		os.Args = append([]string{"stepmigrate"}, args...)
		main()
		return
	}
	os.Exit(m.Run())
}

// binary returns a command that runs this test binary as stepmigrate.
func binary(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	raw, err := json.Marshal(args)
	require.NoError(t, err)
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), envMainArgs+"="+string(raw))
	return cmd
}

// env is one Redis the command runs against: miniredis, and the real
// server named by JOBSTORE_TEST_REDIS_URL (under a prefix of its own,
// deleted afterwards), as in the library's tests.
type env struct {
	url, prefix string
	rdb         *redis.Client
	mr          *miniredis.Miniredis // nil on a real server
}

func eachEnv(t *testing.T, fn func(t *testing.T, e *env)) { eachEnvAt(t, false, fn) }

// eachEnvAt runs fn on miniredis and, when JOBSTORE_TEST_REDIS_URL is set,
// on that server under a prefix of its own, deleted at the end. With
// realTime, miniredis's clock is set to now, so that TTLs read as
// PEXPIRETIME stand still between two snapshots.
func eachEnvAt(t *testing.T, realTime bool, fn func(t *testing.T, e *env)) {
	t.Run("miniredis", func(t *testing.T) {
		mr := miniredis.RunT(t)
		if realTime {
			mr.SetTime(time.Now())
		}
		e := &env{url: "redis://" + mr.Addr() + "/0", rdb: redis.NewClient(&redis.Options{Addr: mr.Addr()}), mr: mr}
		t.Cleanup(func() { _ = e.rdb.Close() })
		fn(t, e)
	})
	url := os.Getenv("JOBSTORE_TEST_REDIS_URL")
	if url == "" {
		return
	}
	t.Run("redis", func(t *testing.T) {
		e := realEnv(t, url)
		fn(t, e)
	})
}

// realEnv is the server at url under a prefix of its own, whose keys are
// deleted when the test ends.
func realEnv(t *testing.T, url string) *env {
	t.Helper()
	opt, err := redis.ParseURL(url)
	require.NoError(t, err)
	require.NotZero(t, opt.DB, "tests never use DB 0")
	e := &env{url: url, prefix: fmt.Sprintf("stepmigrate-test:%x:", rand.Uint64()), rdb: redis.NewClient(opt)}
	t.Cleanup(func() {
		iter := e.rdb.Scan(ctx, 0, e.prefix+"*", scanCount).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		for c := range slices.Chunk(keys, 500) {
			e.rdb.Unlink(ctx, c...)
		}
		_ = e.rdb.Close()
	})
	require.NoError(t, e.rdb.Ping(ctx).Err(), "the server at %s does not answer", url)
	return e
}

func (e *env) key(k string) string { return e.prefix + k }

// args puts --redis and --prefix for e before args.
func (e *env) args(args ...string) []string {
	return append([]string{"--redis", e.url, "--prefix", e.prefix}, args...)
}

// run runs the command with --redis and --prefix for e.
func (e *env) run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	return runArgs(e.args(args...)...)
}

// runCtx runs the command under ctx.
func (e *env) runCtx(ctx context.Context, stdout, stderr *syncBuffer, args ...string) int {
	return run(ctx, e.args(args...), stdout, stderr)
}

func runArgs(args ...string) (int, string, string) {
	var out, errOut bytes.Buffer
	code := run(ctx, args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// runJSON runs the command with --json and decodes its one object.
func (e *env) runJSON(t *testing.T, wantCode int, args ...string) map[string]any {
	t.Helper()
	code, out, errOut := e.run(t, append([]string{"--json"}, args...)...)
	require.Equal(t, wantCode, code, "stdout: %s\nstderr: %s", out, errOut)
	var m map[string]any
	dec := json.NewDecoder(strings.NewReader(out))
	require.NoError(t, dec.Decode(&m), "stdout: %s", out)
	require.False(t, dec.More(), "one JSON object, got: %s", out)
	return m
}

func (e *env) store(t *testing.T, st jobstore.Stage, opts ...jobstore.Option) *jobstore.Store {
	t.Helper()
	s, err := jobstore.New(e.rdb, append([]jobstore.Option{jobstore.WithKeyPrefix(e.prefix), jobstore.WithStage(st)}, opts...)...)
	require.NoError(t, err)
	return s
}

func (e *env) migrator(t *testing.T, st jobstore.Stage) *jobstore.Migrator {
	t.Helper()
	m, err := jobstore.NewMigrator(e.rdb, jobstore.WithKeyPrefix(e.prefix), jobstore.WithStage(st))
	require.NoError(t, err)
	return m
}

// publish publishes st for e, forced.
func (e *env) publish(t *testing.T, st jobstore.Stage) {
	t.Helper()
	require.NoError(t, e.migrator(t, st).PublishStage(ctx, st, jobstore.PublishOptions{Force: true}))
}

// submit submits n jobs id0..id<n-1> with a Store in stage st.
func (e *env) submit(t *testing.T, st jobstore.Stage, id string, n int) {
	t.Helper()
	s := e.store(t, st)
	for i := range n {
		_, err := s.SubmitJob(ctx, jobstore.Job{ID: fmt.Sprint(id, i), Service: "s", Priority: 1 + i%10})
		require.NoError(t, err)
	}
}

// keys lists the keys under e's prefix that match pattern.
func (e *env) keys(t *testing.T, pattern string) []string {
	t.Helper()
	var out []string
	iter := e.rdb.Scan(ctx, 0, e.key(pattern), scanCount).Iterator()
	for iter.Next(ctx) {
		out = append(out, iter.Val())
	}
	require.NoError(t, iter.Err())
	slices.Sort(out)
	return slices.Compact(out)
}

// syncBuffer is a buffer safe for the command's goroutines and the
// test's; when it holds cancelOn, it calls cancel (once).
type syncBuffer struct {
	mu       sync.Mutex
	b        bytes.Buffer
	cancelOn string
	cancel   func()
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.b.Write(p)
	if s.cancel != nil && s.cancelOn != "" && strings.Contains(s.b.String(), s.cancelOn) {
		s.cancel()
		s.cancel = nil
	}
	return n, err
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testServer is a redis-server this package's tests start for
// themselves, on a free loopback port, for what the shared server must
// not be used for: turning keyspace notifications on. It keeps nothing on
// disk and is killed when the test ends. Without redis-server on PATH
// the test is skipped.
type testServer struct {
	port int
	cmd  *exec.Cmd
	done chan struct{}
}

func startTestServer(t *testing.T) *testServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not on PATH")
	}
	dir := t.TempDir()
	for attempt := 0; ; attempt++ {
		s := &testServer{port: freePort(t), done: make(chan struct{})}
		s.cmd = exec.Command(bin, "--port", strconv.Itoa(s.port), "--bind", "127.0.0.1", "--save", "",
			"--appendonly", "no", "--dir", dir, "--logfile", filepath.Join(dir, "redis.log"), "--daemonize", "no")
		require.NoError(t, s.cmd.Start())
		go func() { _ = s.cmd.Wait(); close(s.done) }()
		t.Cleanup(s.kill)
		if err := s.ready(); err == nil {
			return s
		} else if attempt == 2 {
			log, _ := os.ReadFile(filepath.Join(dir, "redis.log"))
			t.Fatalf("redis-server did not start: %v\n%s", err, log)
		}
		s.kill()
	}
}

// ready waits until the server answers PING, or has exited.
func (s *testServer) ready() error {
	rdb := redis.NewClient(&redis.Options{Addr: s.addr(), MaxRetries: -1, DialTimeout: time.Second})
	defer rdb.Close()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); {
		if rdb.Ping(ctx).Err() == nil {
			return nil
		}
		select {
		case <-s.done:
			return errors.New("redis-server exited")
		case <-time.After(20 * time.Millisecond):
		}
	}
	return errors.New("redis-server did not answer PING within 20s")
}

func (s *testServer) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

func (s *testServer) kill() {
	if s.cmd.Process != nil {
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// env is the server's DB 1 with no prefix (the server is the test's own).
func (s *testServer) env(t *testing.T) *env {
	e := &env{url: "redis://" + s.addr() + "/1", rdb: redis.NewClient(&redis.Options{Addr: s.addr(), DB: 1})}
	t.Cleanup(func() { _ = e.rdb.Close() })
	return e
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}
