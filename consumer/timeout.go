package consumer

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrTimeout wraps the failure of a handler that ran past its timeout.
var ErrTimeout = errors.New("handler timed out")

// Timeout gives each handler run a context that ends after d. A handler that
// returns after that is failed with ErrTimeout (and retried). Handlers must
// watch ctx: Go cannot stop a goroutine from outside.
func Timeout(d time.Duration) Middleware {
	return func(next Handler) Handler {
		return func(ctx context.Context, m *Message) error {
			ctx, cancel := context.WithTimeoutCause(ctx, d, ErrTimeout)
			defer cancel()
			err := next(ctx, m)
			if ctx.Err() != nil && context.Cause(ctx) == ErrTimeout {
				if err == nil {
					err = ctx.Err()
				}
				return fmt.Errorf("%w after %v: %w", ErrTimeout, d, err)
			}
			return err
		}
	}
}
