package jobstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

// envCI, when "1", turns every skip for a missing dependency of the
// reliability tests (redis-server, JOBSTORE_TEST_REDIS_URL) into a failure:
// in CI those tests must run. .ci/run sets it.
const envCI = "JOBSTORE_CI"

// requireDependency skips the test with why, or fails it when envCI is set.
func requireDependency(t testing.TB, why string) {
	t.Helper()
	if os.Getenv(envCI) == "1" {
		t.Fatalf("%s, and %s=1 forbids skipping", why, envCI)
	}
	t.Skip(why)
}

// testServer is a redis-server process a test starts for itself, on a free
// loopback port, for faults that must not touch the shared server: OOM
// under a low maxmemory, a kill and restart, SCRIPT FLUSH in a loop. It
// keeps nothing on disk unless the test asks for persistence, and it is
// killed when the test ends.
type testServer struct {
	t    testing.TB
	bin  string
	port int
	dir  string // working directory: the log, and any RDB or AOF files
	args []string
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited and been waited for
}

// envServerBin names the server binary that tests start for themselves:
// redis-server by default; .ci/run sets valkey-server for its Valkey pass.
const envServerBin = "JOBSTORE_TEST_SERVER_BIN"

// startTestServer starts redis-server (or the binary envServerBin names)
// with args added to a configuration that listens on 127.0.0.1 only and
// keeps no data on disk. Later args win, so a test can turn persistence
// back on. Without the binary on PATH the test is skipped, or failed under
// envCI.
func startTestServer(t testing.TB, args ...string) *testServer {
	t.Helper()
	name := os.Getenv(envServerBin)
	if name == "" {
		name = "redis-server"
	}
	bin, err := exec.LookPath(name)
	if err != nil {
		requireDependency(t, name+" is not on PATH")
	}
	s := &testServer{t: t, bin: bin, dir: t.TempDir(), args: args}
	t.Cleanup(s.Kill)
	// The free port found is free only until someone else takes it; try
	// again with another one if the server cannot bind it.
	for attempt := 0; ; attempt++ {
		s.port = freePort(t)
		if err := s.start(); err == nil {
			return s
		} else if attempt == 2 {
			t.Fatalf("redis-server did not start: %v\n%s", err, s.logTail())
		}
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	port := ln.Addr().(*net.TCPAddr).Port
	require.NoError(t, ln.Close())
	return port
}

// Addr is the server's host:port.
func (s *testServer) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.port)) }

// Client returns a client of the server that is closed when the test ends.
func (s *testServer) Client(opt *redis.Options) *redis.Client {
	if opt == nil {
		opt = &redis.Options{}
	}
	opt.Addr = s.Addr()
	rdb := redis.NewClient(opt)
	s.t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// Backend returns a backend on the server, for the helpers that take one.
func (s *testServer) Backend(opt *redis.Options) *backend {
	return &backend{name: "redis-server:" + strconv.Itoa(s.port), rdb: s.Client(opt),
		prefix: "jobstore-test:", clock: newFakeClock()}
}

func (s *testServer) start() error {
	args := []string{
		"--port", strconv.Itoa(s.port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no",
		"--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log"),
		"--daemonize", "no",
	}
	s.cmd = exec.Command(s.bin, append(args, s.args...)...)
	if err := s.cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	s.done = done
	cmd := s.cmd
	go func() {
		_ = cmd.Wait()
		close(done)
	}()

	// Ready when it answers PING; gone if it exits first.
	rdb := redis.NewClient(&redis.Options{Addr: s.Addr(), MaxRetries: -1, DialTimeout: time.Second})
	defer rdb.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("redis-server exited: %v", cmd.ProcessState)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Kill()
			return errors.New("redis-server did not answer PING within 20s")
		}
	}
}

// Kill stops the server with SIGKILL, as a crash or an OOM killer would:
// nothing is saved on the way down. It returns when the process is gone.
func (s *testServer) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.done
	s.cmd = nil
}

// Restart starts the server again on the same port and directory, after a
// Kill. With persistence on, it loads what it had written to disk.
func (s *testServer) Restart() {
	s.t.Helper()
	s.Kill()
	if err := s.start(); err != nil {
		s.t.Fatalf("redis-server did not restart: %v\n%s", err, s.logTail())
	}
}

func (s *testServer) logTail() string {
	b, _ := os.ReadFile(filepath.Join(s.dir, "redis.log"))
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// realRedisURL returns JOBSTORE_TEST_REDIS_URL, skipping the test when it
// is unset (failing under envCI).
func realRedisURL(t testing.TB) string {
	t.Helper()
	url := os.Getenv(envTestRedis)
	if url == "" {
		requireDependency(t, envTestRedis+" is not set")
	}
	return url
}
