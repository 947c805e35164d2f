// Package demo connects the examples to Redis: to the server REDIS_URL
// names, or, when it is unset, to a miniredis embedded in the process, so
// that every example runs on a machine with nothing but Go.
package demo

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// EnvRedisURL names the server, as redis://[user:password@]host:port/db or
// rediss://... for TLS.
const EnvRedisURL = "REDIS_URL"

// Conn is a Redis connection for an example.
type Conn struct {
	Client   *redis.Client
	Embedded bool   // true when it is an in-process miniredis
	Where    string // what to print: the server's address and db, or "embedded miniredis"
	mr       *miniredis.Miniredis
}

// Connect dials REDIS_URL and checks that the server answers, or starts
// an embedded miniredis when REDIS_URL is unset.
//
// It silences go-redis's own logger (see QuietRedisLogs): the error
// Connect returns, and those the examples log, already say what went
// wrong.
func Connect(ctx context.Context) (*Conn, error) {
	QuietRedisLogs()
	raw := os.Getenv(EnvRedisURL)
	if raw == "" {
		mr, err := miniredis.Run()
		if err != nil {
			return nil, fmt.Errorf("start embedded miniredis: %w", err)
		}
		return &Conn{
			Client:   redis.NewClient(&redis.Options{Addr: mr.Addr()}),
			Embedded: true, Where: "embedded miniredis (set REDIS_URL to use a real server)", mr: mr,
		}, nil
	}
	shown := redact(raw)
	opt, err := redis.ParseURL(raw)
	if err != nil {
		return nil, fmt.Errorf("%s=%s: %w (want redis://host:port/db)", EnvRedisURL, shown, err)
	}
	rdb := redis.NewClient(opt)
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		if ctx.Err() != nil { // interrupted, not unanswered
			return nil, fmt.Errorf("connect to Redis at %s: %w", opt.Addr, context.Cause(ctx))
		}
		return nil, fmt.Errorf("Redis at %s=%s does not answer: %w (is the server running, and is the address right?)",
			EnvRedisURL, shown, err)
	}
	return &Conn{Client: rdb, Where: fmt.Sprintf("%s db %d", opt.Addr, opt.DB)}, nil
}

// Close closes the client and stops the embedded server, if any.
func (c *Conn) Close() {
	_ = c.Client.Close()
	if c.mr != nil {
		c.mr.Close()
	}
}

// QuietRedisLogs turns off go-redis's internal logger, which otherwise
// prints lines such as "redis: ... pool.go:770: redis: connection pool:
// failed to dial after 5 attempts: ..." to stderr, ahead of (and
// repeating) the error the caller gets and reports. It is process-wide. A
// service that wants those lines gives redis.SetLogger a logger of its
// own (any type with Printf(ctx, format, args...)) instead.
func QuietRedisLogs() { redis.SetLogger(quiet{}) }

type quiet struct{}

func (quiet) Printf(context.Context, string, ...any) {}

// redact returns the URL with its password replaced by "xxxxx", for
// messages. A URL that does not parse is shown as <unparseable URL>.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "<unparseable URL>"
	}
	return fmt.Sprintf("%q", u.Redacted())
}
