package prom

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// source is something the Collector reads from Redis: it is read at most
// once per interval, during a scrape, and scrapes in between export what
// it read last. A failed read is not retried before the interval is over
// either, so that a Redis in trouble gets no more calls than a healthy one.
type source[T any] struct {
	name  string // the source label of jobstore_collector_up
	every time.Duration
	read  func(context.Context) (T, error)

	mu     sync.Mutex // held while reading, so concurrent scrapes read once
	readAt time.Time  // the last read, failed or not
	val    T
	ok     bool // the last read succeeded
	errors uint64
}

func newSource[T any](name string, every time.Duration, read func(context.Context) (T, error)) *source[T] {
	return &source[T]{name: name, every: every, read: read}
}

// refresh reads the source if its interval is over.
func (s *source[T]) refresh(ctx context.Context) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if !s.readAt.IsZero() && now.Sub(s.readAt) < s.every {
		return
	}
	s.readAt = now
	v, err := s.read(ctx)
	if err != nil {
		var zero T
		s.val, s.ok = zero, false
		s.errors++
		return
	}
	s.val, s.ok = v, true
}

// collect exports the source's state and, when its last read succeeded,
// its metrics.
func (s *source[T]) collect(ch chan<- prometheus.Metric, export func(chan<- prometheus.Metric, T)) {
	s.mu.Lock()
	v, ok, errs := s.val, s.ok, s.errors
	s.mu.Unlock()
	up := 0.0
	if ok {
		up = 1
	}
	gauge(ch, descCollectorUp, up, s.name)
	counter(ch, descCollectorErrors, errs, s.name)
	if ok {
		export(ch, v)
	}
}
