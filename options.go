package jobstore

import (
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Defaults of the options.
const (
	// DefaultClaimWindow is how many pending jobs a claim looks at, from
	// the top of the queue, the window the legacy claim function uses.
	DefaultClaimWindow = 100
	// DefaultCompletedTTL and DefaultFailedTTL are the TTLs the legacy
	// services put on the whole jobs:completed and jobs:failed hashes,
	// renewed by every write.
	DefaultCompletedTTL = 24 * time.Hour
	DefaultFailedTTL    = 7 * 24 * time.Hour
)

// Option configures New. Options are applied in order; a later one wins.
type Option func(*config)

type config struct {
	stage           *Stage
	shadowRatio     float64
	logger          *slog.Logger
	clock           func() time.Time
	formula         ScoreFormula
	window          int
	completedTTL    time.Duration
	failedTTL       time.Duration
	recordRetention time.Duration
	maxPayload      int
	prefix          string
	observe         func(op, outcome string, d time.Duration)
	lookupEnv       envLookup
}

func defaultConfig() config {
	return config{
		clock:        time.Now,
		window:       DefaultClaimWindow,
		completedTTL: DefaultCompletedTTL,
		failedTTL:    DefaultFailedTTL,
		maxPayload:   DefaultMaxPayloadBytes,
	}
}

func (c *config) validate() error {
	switch {
	case c.clock == nil:
		return fmt.Errorf("%w: WithClock(nil)", ErrInvalidConfig)
	case !c.formula.valid():
		return fmt.Errorf("%w: WithScoreFormula(%d): not a formula", ErrInvalidConfig, int(c.formula))
	case c.window < 1 || c.window > 100_000:
		return fmt.Errorf("%w: WithClaimWindow(%d): must be 1..100000", ErrInvalidConfig, c.window)
	case c.completedTTL < time.Second || c.failedTTL < time.Second:
		return fmt.Errorf("%w: WithResultTTL(%v, %v): must be at least a second", ErrInvalidConfig, c.completedTTL, c.failedTTL)
	case c.recordRetention < 0 || (c.recordRetention > 0 && c.recordRetention < time.Millisecond):
		return fmt.Errorf("%w: WithRecordRetention(%v): must be 0 (keep forever) or at least 1ms", ErrInvalidConfig, c.recordRetention)
	case c.maxPayload <= 0:
		return fmt.Errorf("%w: WithMaxPayloadBytes(%d): must be positive", ErrInvalidConfig, c.maxPayload)
	case c.stage != nil && !c.stage.valid():
		return fmt.Errorf("%w: WithStage(%d): not a stage", ErrInvalidConfig, int(*c.stage))
	case c.shadowRatio < 0 || c.shadowRatio > 1:
		return fmt.Errorf("%w: WithShadowReads(%v): must be between 0 and 1", ErrInvalidConfig, c.shadowRatio)
	case strings.ContainsAny(c.prefix, "*?[]\\ \t\r\n"):
		return fmt.Errorf("%w: WithKeyPrefix(%q): must not contain glob characters or whitespace", ErrInvalidConfig, c.prefix)
	}
	return nil
}

// WithDualWrite is the report's setting: on is WithStage(StageDualWrite),
// off is WithStage(StageLegacy). Like WithStage, it makes New ignore the
// environment.
func WithDualWrite(on bool) Option {
	st := StageLegacy
	if on {
		st = StageDualWrite
	}
	return WithStage(st)
}

// WithStage sets the migration stage and makes New ignore the environment.
// A stage published in Redis still wins once read (see Store.Sync).
func WithStage(st Stage) Option {
	return func(c *config) { c.stage = &st }
}

// WithShadowReads checks a sampled share (0 to 1) of plain reads against
// the other namespace, in the stages that write both: the record read is
// compared field by field with its copy, and mismatches are counted
// (ReadStats) and logged at level Warn. What the read returns never
// changes. The default is 0, no checks.
func WithShadowReads(ratio float64) Option {
	return func(c *config) { c.shadowRatio = ratio }
}

// WithLogger sets the logger for mirror failures (level Error), jobs a
// claim passes over and other recovered problems (Warn), and every mirrored
// key (Debug: "Dual-write: copied job:abc123 → step:abc123"). Nil, the
// default, means no logs.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// WithClock sets the function that tells the time, for timestamps and
// scores. The default is time.Now. Tests use it to move time. (The claim
// stamps assigned_at with the server's TIME, as the legacy claim does.)
func WithClock(now func() time.Time) Option {
	return func(c *config) { c.clock = now }
}

// WithScoreFormula sets the formula of pending scores, for submits and
// retries. The default is ScoreAPI, the legacy API's; use ScoreService if
// the legacy RedisService writes your queue. Every writer of a queue must
// use the same one.
func WithScoreFormula(f ScoreFormula) Option {
	return func(c *config) { c.formula = f }
}

// WithClaimWindow sets how many pending jobs, from the top of the queue, a
// claim looks at for one the worker can run; the default is
// DefaultClaimWindow, 100, as the legacy claim function. A worker whose
// jobs all sit below the window finds none and starves while the jobs
// above it wait for other workers. A wider window lets it reach them, at
// the cost of a longer script when few jobs match: Redis runs nothing
// else meanwhile, about 1 µs per job looked at beyond the first.
func WithClaimWindow(n int) Option {
	return func(c *config) { c.window = n }
}

// WithResultTTL sets the TTL that each completion and failure renews on
// the whole jobs:completed and jobs:failed hashes. The defaults,
// DefaultCompletedTTL and DefaultFailedTTL (24 hours and 7 days), are the
// legacy services'.
func WithResultTTL(completed, failed time.Duration) Option {
	return func(c *config) { c.completedTTL, c.failedTTL = completed, failed }
}

// WithRecordRetention makes records of finished jobs expire: completing,
// failing for good or cancelling a job sets this TTL on its record and its
// progress hash. The default, 0, keeps them forever, as the legacy
// services do, which never expire a record.
func WithRecordRetention(d time.Duration) Option {
	return func(c *config) { c.recordRetention = d }
}

// WithMaxPayloadBytes limits the size of a payload, requirements, result or
// failure reason. The default is DefaultMaxPayloadBytes, 1 MiB.
func WithMaxPayloadBytes(n int) Option {
	return func(c *config) { c.maxPayload = n }
}

// WithKeyPrefix puts every key and channel under a prefix:
// "<prefix>job:<id>", "<prefix>steps:pending", "<prefix>job_submitted" and
// so on. The default is no prefix, the layout of the legacy services. It
// must not contain glob characters or whitespace.
func WithKeyPrefix(p string) Option {
	return func(c *config) { c.prefix = p }
}

// WithOpObserver calls fn after every write operation with its name
// (submit, claim, start, progress, complete, fail, cancel, recover), its
// outcome ("ok", "error", or a status such as "none", "notheld",
// "notfound", "exists") and how long it took, for metrics. fn must be
// fast and safe for concurrent use.
func WithOpObserver(fn func(op, outcome string, d time.Duration)) Option {
	return func(c *config) { c.observe = fn }
}

// withEnv replaces os.LookupEnv, for tests.
func withEnv(lookup envLookup) Option {
	return func(c *config) { c.lookupEnv = lookup }
}
