package jobstore

import (
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Defaults of the options.
const (
	DefaultLeaseDuration      = 5 * time.Minute
	DefaultCompletedRetention = 24 * time.Hour
	DefaultFailedRetention    = 7 * 24 * time.Hour
)

// Option configures New. Options are applied in order; a later one wins.
type Option func(*config)

type config struct {
	stage              *Stage
	shadowRatio        float64
	logger             *slog.Logger
	clock              func() time.Time
	lease              time.Duration
	completedRetention time.Duration
	failedRetention    time.Duration
	maxPayload         int
	prefix             string
	lookupEnv          envLookup
}

func defaultConfig() config {
	return config{
		clock:              time.Now,
		lease:              DefaultLeaseDuration,
		completedRetention: DefaultCompletedRetention,
		failedRetention:    DefaultFailedRetention,
		maxPayload:         DefaultMaxPayloadBytes,
	}
}

func (c *config) validate() error {
	switch {
	case c.clock == nil:
		return fmt.Errorf("%w: WithClock(nil)", ErrInvalidConfig)
	case c.lease <= 0:
		return fmt.Errorf("%w: WithLeaseDuration(%v): must be positive", ErrInvalidConfig, c.lease)
	case c.completedRetention < 0 || c.failedRetention < 0:
		return fmt.Errorf("%w: WithRetention(%v, %v): must not be negative", ErrInvalidConfig, c.completedRetention, c.failedRetention)
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

// WithDualWrite is the phase 4.3.1 setting: on is WithStage(StageDualWrite),
// off is WithStage(StageLegacy). Like WithStage, it makes New ignore the
// environment. Without either, New reads REDIS_DUAL_WRITE_STEPS and
// REDIS_STEP_MIGRATION_STAGE (see EnvDualWrite and EnvStage); unset means
// legacy.
func WithDualWrite(on bool) Option {
	st := StageLegacy
	if on {
		st = StageDualWrite
	}
	return WithStage(st)
}

// WithStage sets the migration stage and makes New ignore the environment.
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

// WithLogger sets the logger for mirror failures (level Error), recovered
// queue problems (Warn) and every mirrored key (Debug, as in the report:
// "Dual-write: copied job:abc123 → step:abc123"). Nil, the default, means no
// logs.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// WithClock sets the function that tells the time, for timestamps, scores
// and lease deadlines. The default is time.Now. Tests use it to move time.
func WithClock(now func() time.Time) Option {
	return func(c *config) { c.clock = now }
}

// WithLeaseDuration sets how long a claim holds a job before
// RecoverExpired may give it to another worker, and how far ExtendLease
// moves the deadline by default. The default is DefaultLeaseDuration, 5m.
func WithLeaseDuration(d time.Duration) Option {
	return func(c *config) { c.lease = d }
}

// WithRetention sets how long completed and failed jobs are kept: their
// records expire after it, and TrimRetention removes their queue entries.
// Cancelled jobs are kept as long as failed ones. Zero keeps them forever.
// The defaults are 24h and 7 days.
func WithRetention(completed, failed time.Duration) Option {
	return func(c *config) { c.completedRetention, c.failedRetention = completed, failed }
}

// WithMaxPayloadBytes limits the size of a payload, requirements, result or
// failure reason. The default is DefaultMaxPayloadBytes, 1 MiB.
func WithMaxPayloadBytes(n int) Option {
	return func(c *config) { c.maxPayload = n }
}

// WithKeyPrefix puts every key under a prefix: "<prefix>job:<id>",
// "<prefix>steps:pending" and so on. The default is no prefix, the layout
// existing services use. It must not contain glob characters or whitespace.
func WithKeyPrefix(p string) Option {
	return func(c *config) { c.prefix = p }
}

// withEnv replaces os.LookupEnv, for tests.
func withEnv(lookup envLookup) Option {
	return func(c *config) { c.lookupEnv = lookup }
}
