package natsjs

import (
	"context"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// apiTry bounds one JetStream API request inside Retry.
const apiTry = 5 * time.Second

// errCodeUnavailable is JetStream's "system temporarily unavailable",
// answered while a cluster has no meta leader.
const errCodeUnavailable jetstream.ErrorCode = 10008

// Retry calls f until it succeeds, fails for a reason other than the
// cluster being busy, or ctx ends. Each call gets a context bounded to a
// few seconds: in a JetStream cluster that is forming or electing
// leaders, a request can go unanswered (a stream with no leader yet has
// nobody to answer its info request), and one such request must not use
// up the caller's whole wait. f must be safe to repeat (creating what
// exists with the same config, reading).
func Retry(ctx context.Context, f func(context.Context) error) error {
	for {
		tctx, cancel := context.WithTimeout(ctx, apiTry)
		err := f(tctx)
		timedOut := tctx.Err() != nil
		cancel()
		if err == nil || ctx.Err() != nil || !retryable(err, timedOut) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func retryable(err error, timedOut bool) bool {
	if timedOut && (errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout)) {
		return true
	}
	if errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == errCodeUnavailable
}
