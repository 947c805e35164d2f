package jobstore

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// The legacy services, driven from Go. legacy.js (in ../shared/legacy/)
// replays the Redis commands of the TypeScript API, RedisService and
// worker with their own client library; in `serve` mode it reads one JSON
// request a line, {"op": name, "args": [...]}, and answers one JSON line,
// {"ok": true, "result": ...} or {"ok": false, "error": "..."}.
// testdata/legacy_orphans.js serves the same protocol with more operations
// (orphan and stuck-job recovery, worker registration), and
// testdata/interop_load.js with a fleet of legacy workers on top.

// The scripts a legacyNode can run. testdata's are relative to the package
// directory, where go test runs; the legacy services' own come from the
// shared directory (see findLegacyDir).
const (
	legacyOrphansJS = "testdata/legacy_orphans.js"
	legacyLoadJS    = "testdata/interop_load.js"
)

var (
	legacyDirPath  = findLegacyDir()
	legacyJS       = filepath.Join(legacyDirPath, "legacy.js")
	legacyFixtures = filepath.Join(legacyDirPath, "fixtures")
)

// findLegacyDir locates the legacy services' directory (legacy.js,
// fixtures/, node_modules/): $JOBSTORE_LEGACY_DIR when set; else
// shared/legacy beside the repository's root or beside any directory
// above it (a clone may sit deeper than the checkout); else
// /work/shared/legacy, where these machines keep it. The first that holds
// legacy.js wins; tests that need it fail under JOBSTORE_CI=1 when none
// does.
func findLegacyDir() string {
	if d := os.Getenv(envLegacyDir); d != "" {
		return d
	}
	var candidates []string
	if wd, err := os.Getwd(); err == nil {
		for dir := filepath.Dir(wd); ; dir = filepath.Dir(dir) {
			candidates = append(candidates, filepath.Join(dir, "shared", "legacy"))
			if filepath.Dir(dir) == dir {
				break
			}
		}
	}
	candidates = append(candidates, "/work/shared/legacy")
	for _, c := range candidates {
		if _, err := os.Stat(filepath.Join(c, "legacy.js")); err == nil {
			return c
		}
	}
	return filepath.Join("..", "shared", "legacy")
}

// legacyCallTimeout bounds one request; the load op gets longer.
const legacyCallTimeout = 30 * time.Second

// legacyNode is a test's handle on a legacy process: the typed helpers fail
// the test t. with gives a handle for a subtest on the same process.
type legacyNode struct {
	t testing.TB
	*legacyProc
}

func (n *legacyNode) with(t testing.TB) *legacyNode {
	return &legacyNode{t: t, legacyProc: n.legacyProc}
}

// legacyProc is one long-lived node process serving the line protocol. Its
// calls are serialised: one request, then its reply. It is stopped when the
// test that started it ends: stdin is closed, so the serve loop ends and
// node closes its Redis connection and exits; it is killed if it has not
// within 5 s.
type legacyProc struct {
	script string
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string   // stdout, one reply a line; closed at EOF
	exited chan struct{} // closed once the process has been waited for
	stderr string        // path of the file that gets node's stderr

	mu sync.Mutex // one request at a time
}

// startLegacy starts `node <script> serve` against the Redis at redisURL,
// with env (NAME=value) added to the environment. REDIS_DUAL_WRITE_STEPS
// is "false" unless env sets it, so that the runner's environment does not
// decide what the RedisService writes. Without node, or without the legacy
// replay next to the repository, the test is skipped (failed under
// JOBSTORE_CI=1).
func startLegacy(t testing.TB, script, redisURL string, env ...string) *legacyNode {
	t.Helper()
	node := requireLegacy(t, script)
	errFile := filepath.Join(t.TempDir(), "node-stderr.log")
	stderr, err := os.Create(errFile)
	require.NoError(t, err)
	defer stderr.Close() // the child has its own copy

	// stdout through a pipe of our own: exec's StdoutPipe is closed by
	// Wait, which could cut off the last reply while it is being read.
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	cmd := exec.Command(node, script, "serve")
	cmd.Env = append(os.Environ(), "LEGACY_REDIS_URL="+redisURL, "REDIS_DUAL_WRITE_STEPS=false",
		envLegacyDir+"="+absPath(legacyDirPath))
	cmd.Env = append(cmd.Env, env...)
	cmd.Stdout, cmd.Stderr = pw, stderr
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	if err := cmd.Start(); err != nil {
		_ = pr.Close()
		_ = pw.Close()
		t.Fatalf("start node %s: %v", script, err)
	}
	_ = pw.Close()

	n := &legacyNode{t: t, legacyProc: &legacyProc{script: script, cmd: cmd, stdin: stdin,
		lines: make(chan string, 1), exited: make(chan struct{}), stderr: errFile}}
	go n.read(pr)
	go func() {
		_ = cmd.Wait()
		close(n.exited)
	}()
	t.Cleanup(n.stop)
	return n
}

// requireLegacy returns the path of node, after checking that script and
// legacy.js exist; it skips the test otherwise (fails it under JOBSTORE_CI=1).
func requireLegacy(t testing.TB, script string) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		requireDependency(t, "node is not on PATH")
	}
	for _, f := range []string{legacyJS, script} {
		if _, err := os.Stat(f); err != nil {
			requireDependency(t, fmt.Sprintf("the legacy replay is missing: %v", err))
		}
	}
	return node
}

// absPath is p made absolute, or p when that fails.
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}

// read passes stdout's lines to n.lines until EOF.
func (n *legacyProc) read(r *os.File) {
	defer close(n.lines)
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<16), 64<<20)
	for sc.Scan() {
		n.lines <- sc.Text()
	}
}

// stop ends the process and waits for it and for the reader.
func (n *legacyProc) stop() {
	_ = n.stdin.Close()
	select {
	case <-n.exited:
	case <-time.After(5 * time.Second):
		_ = n.cmd.Process.Kill()
		<-n.exited
	}
	for range n.lines { // drain, so the reader can end
	}
}

// stderrTail is the end of what node wrote to stderr, for failures.
func (n *legacyProc) stderrTail() string {
	b, _ := os.ReadFile(n.stderr)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(bytes.TrimSpace(b))
}

// errLegacy wraps the errors a legacy operation itself reported.
var errLegacy = errors.New("legacy op failed")

// call runs one op and returns its raw result. An error the operation
// reported wraps errLegacy; any other error means the process is broken.
// It is safe to call from any goroutine.
func (n *legacyProc) call(timeout time.Duration, op string, args ...any) (json.RawMessage, error) {
	if args == nil {
		args = []any{}
	}
	req, err := json.Marshal(map[string]any{"op": op, "args": args})
	if err != nil {
		return nil, fmt.Errorf("%s: encode request: %w", op, err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, err := n.stdin.Write(append(req, '\n')); err != nil {
		return nil, fmt.Errorf("%s: write to node: %w; stderr: %s", op, err, n.stderrTail())
	}
	var line string
	select {
	case l, ok := <-n.lines:
		if !ok {
			return nil, fmt.Errorf("%s: node exited; stderr: %s", op, n.stderrTail())
		}
		line = l
	case <-time.After(timeout):
		return nil, fmt.Errorf("%s: no reply within %v; stderr: %s", op, timeout, n.stderrTail())
	}
	var rep struct {
		OK     bool            `json:"ok"`
		Result json.RawMessage `json:"result"`
		Error  string          `json:"error"`
	}
	if err := json.Unmarshal([]byte(line), &rep); err != nil {
		return nil, fmt.Errorf("%s: reply %q: %w", op, truncate(line, 200), err)
	}
	if !rep.OK {
		return nil, fmt.Errorf("%w: %s: %s", errLegacy, op, rep.Error)
	}
	return rep.Result, nil
}

// do runs op and decodes its result into out (unless out is nil), failing
// the test on any error. Only for the test's own goroutine.
func (n *legacyNode) do(out any, op string, args ...any) {
	n.t.Helper()
	raw, err := n.call(legacyCallTimeout, op, args...)
	require.NoError(n.t, err)
	if out != nil {
		d := json.NewDecoder(bytes.NewReader(raw))
		d.UseNumber()
		require.NoError(n.t, d.Decode(out), "%s result %s", op, truncate(string(raw), 300))
	}
}

// A legacy reader's view of a job: JSON as the TypeScript returns it,
// numbers kept as json.Number.
type legacyView = map[string]any

// Typed operations of legacy.js. Capabilities are passed as the Go value,
// which encodes as the JSON a legacy worker sends.

// loadFunction loads a findMatchingJob fixture as the installer does
// (FUNCTION DELETE, FUNCTION LOAD REPLACE) and returns the library name.
func (n *legacyNode) loadFunction(fixture string) string {
	var lib string
	n.do(&lib, "loadFunction", filepath.Join(legacyFixtures, fixture))
	return lib
}

type legacySubmitted struct {
	ID    string  `json:"id"`
	Score float64 `json:"score"`
}

// apiSubmitJob submits as the live API does (the API's score formula).
func (n *legacyNode) apiSubmitJob(data map[string]any) legacySubmitted {
	n.t.Helper()
	var r struct {
		ID    string      `json:"id"`
		Score json.Number `json:"score"`
	}
	n.do(&r, "apiSubmitJob", data)
	return legacySubmitted{ID: r.ID, Score: mustFloat(n.t, r.Score)}
}

// svcSubmitJob submits as the RedisService does (its own score formula).
func (n *legacyNode) svcSubmitJob(data map[string]any) legacySubmitted {
	n.t.Helper()
	var r struct {
		ID    string      `json:"id"`
		Score json.Number `json:"score"`
	}
	n.do(&r, "svcSubmitJob", data)
	return legacySubmitted{ID: r.ID, Score: mustFloat(n.t, r.Score)}
}

func mustFloat(t testing.TB, n json.Number) float64 {
	f, err := n.Float64()
	require.NoError(t, err)
	return f
}

// apiGetJobStatus is the API's view of a job, nil when it has none.
func (n *legacyNode) apiGetJobStatus(id string) legacyView {
	var v legacyView
	n.do(&v, "apiGetJobStatus", id)
	return v
}

// svcGetJob is the RedisService's view of a job, nil when it has none.
func (n *legacyNode) svcGetJob(id string) legacyView {
	var v legacyView
	n.do(&v, "svcGetJob", id)
	return v
}

// svcList runs one of the RedisService's list reads (svcGetCompletedJobs,
// svcGetFailedJobs, svcGetActiveJobs, svcGetPendingJobs).
func (n *legacyNode) svcList(op string, args ...any) []legacyView {
	var v []legacyView
	n.do(&v, op, args...)
	return v
}

// byID indexes a list read by id, failing on an id listed twice.
func byID(t testing.TB, list []legacyView) map[string]legacyView {
	t.Helper()
	m := make(map[string]legacyView, len(list))
	for _, v := range list {
		id, _ := v["id"].(string)
		require.NotContains(t, m, id, "id listed twice")
		m[id] = v
	}
	return m
}

// apiCancelJob cancels as the API does; it returns the status before.
func (n *legacyNode) apiCancelJob(id string) string {
	var s string
	n.do(&s, "apiCancelJob", id)
	return s
}

func (n *legacyNode) svcCompleteJob(id string, result any) string {
	var s string
	n.do(&s, "svcCompleteJob", id, result)
	return s
}

func (n *legacyNode) svcFailJob(id, reason string, canRetry bool) string {
	var s string
	n.do(&s, "svcFailJob", id, reason, canRetry)
	return s
}

func (n *legacyNode) svcCancelJob(id, reason string) string {
	var s string
	n.do(&s, "svcCancelJob", id, reason)
	return s
}

// workerRequestJob claims as a legacy worker does (FCALL findMatchingJob);
// it returns the job's id and the record as the claim read it, or "" and
// nil when nothing matched.
func (n *legacyNode) workerRequestJob(caps Capabilities) (string, map[string]string) {
	n.t.Helper()
	var r *struct {
		JobID string            `json:"jobId"`
		Job   map[string]string `json:"job"`
	}
	n.do(&r, "workerRequestJob", caps)
	if r == nil {
		return "", nil
	}
	return r.JobID, r.Job
}

func (n *legacyNode) workerStartJob(worker, id string) { n.do(nil, "workerStartJob", worker, id) }

func (n *legacyNode) workerSendProgress(worker, id string, progress float64, msg string) {
	n.do(nil, "workerSendProgress", worker, id, progress, msg)
}

func (n *legacyNode) workerCompleteJob(worker, id string, result any) {
	n.do(nil, "workerCompleteJob", worker, id, result)
}

func (n *legacyNode) workerFailJob(worker, id, reason string, canRetry bool) string {
	var s string
	n.do(&s, "workerFailJob", worker, id, reason, canRetry)
	return s
}

type baseCompleteOutcome struct {
	Completed     bool   `json:"completed"`
	CompleteError string `json:"completeError"`
	FailOutcome   string `json:"failOutcome"`
}

// baseWorkerCompleteJob completes as the base worker does: on an error of
// the completion it fails the job with canRetry.
func (n *legacyNode) baseWorkerCompleteJob(worker, id string, result any) baseCompleteOutcome {
	var o baseCompleteOutcome
	n.do(&o, "baseWorkerCompleteJob", worker, id, result)
	return o
}

// The operations of testdata/legacy_orphans.js.

type legacySweep struct {
	Fixed  int      `json:"fixed"`
	Errors []string `json:"errors"`
}

// detectAndFixOrphanedJobs runs the RedisService's orphan sweep.
func (n *legacyNode) detectAndFixOrphanedJobs() legacySweep {
	var s legacySweep
	n.do(&s, "detectAndFixOrphanedJobs")
	return s
}

// detectStuckJobs runs the RedisService's stuck-job sweep alone.
func (n *legacyNode) detectStuckJobs() int {
	var s legacySweep
	n.do(&s, "detectStuckJobs")
	return s.Fixed
}

// releaseStuckJob releases one job given as a legacy reader returned it.
func (n *legacyNode) releaseStuckJob(job legacyView, reason string) string {
	var s string
	n.do(&s, "releaseStuckJob", job, reason)
	return s
}

func (n *legacyNode) workerRegister(caps Capabilities) {
	n.do(nil, "workerRegister", caps.WorkerID, caps)
}

func (n *legacyNode) workerHeartbeat(worker string) { n.do(nil, "workerHeartbeat", worker) }

func (n *legacyNode) workerDisconnect(worker string) { n.do(nil, "workerDisconnect", worker) }
