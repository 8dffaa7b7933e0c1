package consumer

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// Backoff computes exponential delays with jitter: attempt 1 waits about
// Initial, each next attempt Multiplier times longer, capped at Max, each
// delay moved by up to ±Jitter of itself at random so that retries of many
// events do not arrive together.
type Backoff struct {
	Initial    time.Duration
	Max        time.Duration
	Multiplier float64
	// Jitter is a fraction in [0, 1).
	Jitter float64
}

// Delay returns the delay before the redelivery that follows attempt.
func (b Backoff) Delay(attempt int) time.Duration {
	d := b.Base(attempt)
	if b.Jitter > 0 {
		d = time.Duration(float64(d) * (1 + b.Jitter*(2*rand.Float64()-1)))
	}
	return d
}

// Base returns the delay after attempt without jitter.
func (b Backoff) Base(attempt int) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := float64(b.Initial)
	for i := 1; i < attempt && d < float64(b.Max); i++ {
		d *= b.Multiplier
	}
	return min(time.Duration(d), b.Max)
}

// RetryPolicy says how often and how fast failures are retried.
type RetryPolicy struct {
	// MaxAttempts counts deliveries, the first included; after the last
	// failed attempt the event is dead-lettered.
	MaxAttempts int
	Backoff     Backoff
}

// DefaultRetryPolicy: 5 attempts, waiting about 1s, 2s, 4s and 8s
// (±20%) between them.
var DefaultRetryPolicy = RetryPolicy{
	MaxAttempts: 5,
	Backoff:     Backoff{Initial: time.Second, Max: time.Minute, Multiplier: 2, Jitter: 0.2},
}

func (p RetryPolicy) validate() error {
	b := p.Backoff
	switch {
	case p.MaxAttempts < 1:
		return fmt.Errorf("retry: MaxAttempts %d must be at least 1", p.MaxAttempts)
	case b.Initial <= 0 || b.Max < b.Initial:
		return fmt.Errorf("retry: want 0 < Initial <= Max, got Initial %v Max %v", b.Initial, b.Max)
	case b.Multiplier < 1:
		return fmt.Errorf("retry: Multiplier %v must be at least 1", b.Multiplier)
	case b.Jitter < 0 || b.Jitter >= 1:
		return fmt.Errorf("retry: Jitter %v must be in [0, 1)", b.Jitter)
	}
	return nil
}

// ErrRetriesExhausted wraps the last failure of an event that used all
// its attempts.
var ErrRetriesExhausted = errors.New("retries exhausted")

// Retry turns a handler failure into a delayed redelivery through the
// broker (no goroutine waits), until MaxAttempts; then into a permanent
// failure for the dead-letter queue. Failures that already carry an
// outcome (RetryAfter, Permanent, Drop) pass unchanged. Under AtMostOnce
// nothing is retried.
func Retry(p RetryPolicy) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, m *Message) error {
			err := next(ctx, m)
			if err == nil || isOutcome(err) {
				return err
			}
			if m.Mode == AtMostOnce {
				return Permanent(err)
			}
			if m.Attempt >= p.MaxAttempts {
				return Permanent(fmt.Errorf("%w after %d attempts: %w", ErrRetriesExhausted, m.Attempt, err))
			}
			return RetryAfter(err, p.Backoff.Delay(m.Attempt))
		}
	}
}
