// Package demo connects the examples to Redis: to the server REDIS_URL
// names, or, when it is unset, to a miniredis embedded in the process, so
// that every example runs on a machine with nothing but Go.
package demo

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"
)

// EnvRedisURL names the server, as redis://host:port/db or rediss://...
const EnvRedisURL = "REDIS_URL"

// Conn is a Redis connection for an example.
type Conn struct {
	Client   *redis.Client
	Embedded bool   // true when it is an in-process miniredis
	Where    string // what to print: the URL's address or "embedded miniredis"
	mr       *miniredis.Miniredis
}

// Connect dials REDIS_URL, checking that the server answers, or starts an
// embedded miniredis when REDIS_URL is unset.
func Connect(ctx context.Context) (*Conn, error) {
	url := os.Getenv(EnvRedisURL)
	if url == "" {
		mr, err := miniredis.Run()
		if err != nil {
			return nil, fmt.Errorf("start embedded miniredis: %w", err)
		}
		return &Conn{
			Client:   redis.NewClient(&redis.Options{Addr: mr.Addr()}),
			Embedded: true, Where: "embedded miniredis (set REDIS_URL to use a real server)", mr: mr,
		}, nil
	}
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, fmt.Errorf("%s=%q: %w (want redis://host:port/db)", EnvRedisURL, url, err)
	}
	rdb := redis.NewClient(opt)
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := rdb.Ping(pctx).Err(); err != nil {
		_ = rdb.Close()
		return nil, fmt.Errorf("%s=%q does not answer: %w (is the server running?)", EnvRedisURL, url, err)
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
