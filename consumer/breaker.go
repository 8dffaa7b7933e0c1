package consumer

import (
	"context"
	"errors"
	"sync"
	"time"
)

// ErrBreakerOpen is the failure of events held back while the breaker is
// open; they are redelivered when it may have closed.
var ErrBreakerOpen = errors.New("circuit breaker open")

// BreakerState is the state of a circuit breaker.
type BreakerState int

// Breaker states.
const (
	// BreakerClosed: handlers run normally.
	BreakerClosed BreakerState = iota
	// BreakerOpen: consumption is paused; events are held back.
	BreakerOpen
	// BreakerHalfOpen: one probe runs to see whether the downstream is back.
	BreakerHalfOpen
)

// String returns closed, open or half-open.
func (s BreakerState) String() string {
	switch s {
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	default:
		return "closed"
	}
}

// BreakerConfig configures a circuit breaker.
type BreakerConfig struct {
	// Failures in a row that open the breaker. Default 5.
	Failures int
	// OpenFor is how long the breaker stays open before a probe. Default 10s.
	OpenFor time.Duration
	// OnChange, if set, is called (outside the breaker's lock) on every
	// state change.
	OnChange func(from, to BreakerState)
}

// Breaker is a circuit breaker around handlers. After Failures failures
// in a row it opens: the router stops fetching and held events are
// redelivered later. After OpenFor one probe event runs (half-open); its
// success closes the breaker, its failure opens it again.
// It is safe for concurrent use.
type Breaker struct {
	cfg BreakerConfig

	mu        sync.Mutex
	state     BreakerState
	fails     int
	openUntil time.Time
	probing   bool
	since     time.Time     // when the state last changed (zero: never)
	changed   chan struct{} // closed and replaced on every state change
}

// NewBreaker returns a closed breaker.
func NewBreaker(cfg BreakerConfig) *Breaker {
	if cfg.Failures <= 0 {
		cfg.Failures = 5
	}
	if cfg.OpenFor <= 0 {
		cfg.OpenFor = 10 * time.Second
	}
	return &Breaker{cfg: cfg, changed: make(chan struct{})}
}

// State returns the current state.
func (b *Breaker) State() BreakerState {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.stateLocked(time.Now())
}

func (b *Breaker) stateLocked(now time.Time) BreakerState {
	if b.state == BreakerOpen && !now.Before(b.openUntil) {
		return BreakerHalfOpen
	}
	return b.state
}

// snapshot returns the recorded state (open stays open past its period,
// with openUntil saying when a probe may run), when it was entered, and a
// channel closed at the next change.
func (b *Breaker) snapshot() (st BreakerState, since, openUntil time.Time, changed <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state, b.since, b.openUntil, b.changed
}

// Wait blocks while the breaker is open, until a probe may run; the router
// calls it before fetching. It returns ctx.Err() if ctx ends first.
func (b *Breaker) Wait(ctx context.Context) error {
	for {
		b.mu.Lock()
		now := time.Now()
		st := b.stateLocked(now)
		wait := b.openUntil.Sub(now)
		ch := b.changed
		b.mu.Unlock()
		if st != BreakerOpen {
			return nil
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-ch:
		case <-t.C:
		}
		t.Stop()
	}
}

// admit decides whether a handler may run now; if not it returns how long
// to hold the event back. In the half-open state one probe runs at a time.
func (b *Breaker) admit() (probe bool, holdFor time.Duration) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	switch b.stateLocked(now) {
	case BreakerClosed:
		return false, 0
	case BreakerOpen:
		return false, b.openUntil.Sub(now)
	}
	if b.probing {
		return false, b.cfg.OpenFor
	}
	b.probing = true
	return true, 0
}

// record counts the result of a handler run. Only a probe's result moves
// an open breaker; in the closed state, failures in a row open it and a
// success resets the count.
func (b *Breaker) record(probe bool, failed bool) {
	b.mu.Lock()
	now := time.Now()
	from := b.stateLocked(now)
	to := from
	if probe {
		b.probing = false
	}
	switch {
	case failed && (probe || b.state == BreakerClosed && b.fails+1 >= b.cfg.Failures):
		b.fails = 0
		b.state, b.openUntil, to = BreakerOpen, now.Add(b.cfg.OpenFor), BreakerOpen
	case failed:
		if b.state == BreakerClosed {
			b.fails++
		}
	case probe || b.state == BreakerClosed:
		b.fails = 0
		b.state, to = BreakerClosed, BreakerClosed
	}
	if to != from {
		b.since = now
		close(b.changed) // wake Wait: the deadline or the state moved
		b.changed = make(chan struct{})
	}
	b.mu.Unlock()
	if to != from && b.cfg.OnChange != nil {
		b.cfg.OnChange(from, to)
	}
}

// Middleware returns the breaker as middleware: while open, events are
// held back (redelivered after the open period) without running the
// handler; handler failures count towards opening it. Failures that are
// Drop outcomes do not count: they are about the event, not the
// downstream.
func (b *Breaker) Middleware() Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, m *Message) error {
			probe, hold := b.admit()
			if hold > 0 {
				return RetryAfter(ErrBreakerOpen, hold+time.Duration(m.Sequence%100)*time.Millisecond)
			}
			err := next(ctx, m)
			b.record(probe, err != nil && !errors.Is(err, ErrDrop))
			return err
		}
	}
}
