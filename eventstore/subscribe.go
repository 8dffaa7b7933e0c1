package eventstore

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Handler handles one record of a subscription. An error stops the
// subscription and is returned by Subscribe.
type Handler func(ctx context.Context, rec *Record) error

// SubscribeOption tunes Subscribe.
type SubscribeOption func(*subscribeConfig)

type subscribeConfig struct {
	poll     time.Duration
	caughtUp func(position uint64)
}

// WithPollInterval sets how often Subscribe looks for new events on a
// store that is not a Waiter. Default 50ms; shorter costs a query each.
func WithPollInterval(d time.Duration) SubscribeOption {
	return func(c *subscribeConfig) { c.poll = d }
}

// WithCaughtUp calls fn, once, when the subscription has handled every
// event that existed when it started and is about to wait for new ones,
// with the position of the last event handled (or the start position).
func WithCaughtUp(fn func(position uint64)) SubscribeOption {
	return func(c *subscribeConfig) { c.caughtUp = fn }
}

// Subscribe hands h every event of s with a position greater than after,
// in position order: first those already stored (catch-up), then new ones
// as they are appended (live). It runs until ctx ends, returning nil, or
// until h or the store fails, returning that error.
func Subscribe(ctx context.Context, s Store, after uint64, h Handler, opts ...SubscribeOption) error {
	cfg := subscribeConfig{poll: 50 * time.Millisecond}
	for _, o := range opts {
		o(&cfg)
	}
	if cfg.poll <= 0 {
		return fmt.Errorf("%w: poll interval %v must be positive", ErrInvalid, cfg.poll)
	}
	pos := after
	caughtUp := false
	var ticker *time.Ticker
	w, canWait := s.(Waiter)
	for {
		for rec, err := range s.ReadAll(ctx, pos) {
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("eventstore: subscribe after position %d: %w", pos, err)
			}
			if err := h(ctx, rec); err != nil {
				if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
					return nil
				}
				return err
			}
			pos = rec.Position
		}
		if ctx.Err() != nil {
			return nil
		}
		if !caughtUp {
			caughtUp = true
			if cfg.caughtUp != nil {
				cfg.caughtUp(pos)
			}
		}
		if canWait {
			if err := w.Wait(ctx, pos); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("eventstore: subscribe: wait after position %d: %w", pos, err)
			}
			continue
		}
		if ticker == nil {
			ticker = time.NewTicker(cfg.poll)
			defer ticker.Stop()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}
