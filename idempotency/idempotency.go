// Package idempotency makes consumers handle each event once per group:
// before a handler runs, the event's key (group + event id) is claimed in a
// Store; on success the claim becomes a completion kept for a TTL, on
// failure it is released so a redelivery can try again.
//
// Stores: Memory (tests, one process), a JetStream KV bucket (the embedded
// default, package natskv), Redis (redisstore) and PostgreSQL (pgstore).
// The PostgreSQL store is an inbox table a handler can share a transaction
// with, so the business write and the completion commit or roll back
// together. Every store passes the conformance suite in storetest; see
// docs/idempotency.md for choosing one, the lease and the TTL.
package idempotency

import (
	"context"
	"errors"
	"time"
)

// Errors a Store returns from Claim.
var (
	// ErrDuplicate means the key was completed before: skip the event.
	ErrDuplicate = errors.New("idempotency: already processed")
	// ErrInProgress means another claim on the key is live: someone else is
	// processing the event right now. Retry later.
	ErrInProgress = errors.New("idempotency: being processed elsewhere")
)

// Store records which keys are being processed and which are done.
// Implementations are safe for concurrent use by several processes.
// Keys are non-empty strings of any content; lease and ttl must be
// positive. Invalid arguments return an error that is neither
// ErrDuplicate nor ErrInProgress.
type Store interface {
	// Claim takes the key for lease. It returns ErrDuplicate if the key was
	// completed, ErrInProgress if another live claim holds it. An expired
	// claim (its holder died) can be taken again; of several callers
	// taking over one expired claim, exactly one succeeds.
	Claim(ctx context.Context, key string, lease time.Duration) error
	// Complete marks a claimed key done and keeps it for ttl, during which
	// Claim returns ErrDuplicate. It records the key as done even if the
	// claim had expired or was never made: the work is done.
	Complete(ctx context.Context, key string, ttl time.Duration) error
	// Release drops a claim, so the key can be claimed again at once.
	// Releasing a completed key does nothing. Stores that tell their
	// callers apart (every one but Memory) drop only a claim made through
	// the same Store value, never one another took over after its lease
	// ran out.
	Release(ctx context.Context, key string) error
}
