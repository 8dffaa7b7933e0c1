package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/heraldhq/herald/idempotency"
)

// Idempotent claims "<group>/<event id>" in store before the handler runs
// and completes it (kept for ttl) after success, so a redelivered or
// republished event is handled once per group. A failure releases the
// claim so the retry can run; a claim whose holder died expires after
// lease. Zero lease or ttl mean 1 minute and 24 hours.
func Idempotent(store idempotency.Store, lease, ttl time.Duration, log *slog.Logger) Middleware {
	if lease <= 0 {
		lease = time.Minute
	}
	if ttl <= 0 {
		ttl = 24 * time.Hour
	}
	if log == nil {
		log = slog.Default()
	}
	return func(next Handler) Handler {
		return func(ctx context.Context, m *Message) error {
			if m.Event == nil {
				return next(ctx, m)
			}
			key := m.Group + "/" + m.Event.ID
			switch err := store.Claim(ctx, key, lease); {
			case errors.Is(err, idempotency.ErrDuplicate):
				m.outcome = OutcomeDuplicate
				return nil
			case errors.Is(err, idempotency.ErrInProgress):
				return RetryAfter(err, lease/2)
			case err != nil:
				return RetryAfter(fmt.Errorf("idempotency claim %q: %w", key, err), time.Second)
			}
			err := next(ctx, m)
			// The handler's context may be ending; the bookkeeping must not.
			bctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
			defer cancel()
			if err != nil {
				if rerr := store.Release(bctx, key); rerr != nil {
					log.Warn("consumer: idempotency release failed; the retry waits for the lease", "key", key, "error", rerr)
				}
				return err
			}
			if cerr := store.Complete(bctx, key, ttl); cerr != nil {
				// The effects happened; acking prevents a redelivery from
				// repeating them while the claim holds.
				log.Warn("consumer: idempotency complete failed", "key", key, "error", cerr)
			}
			return nil
		}
	}
}
