// Package redisstore is an idempotency.Store on Redis (7.0 or later, or a
// compatible server such as Valkey).
//
// Each key is one Redis string under a prefix: "c:<owner>" while claimed,
// "d" once done. Redis expires both on its own (PX), so a crashed holder's
// claim disappears when its lease ends and a completion when its TTL ends;
// nothing needs purging. Claim is one SET NX PX GET, Complete one SET PX,
// Release a Lua script that deletes the key only if it still holds this
// store's claim.
//
//	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
//	store := redisstore.New(rdb, redisstore.WithPrefix("billing:idem:"))
//	err := store.Claim(ctx, "billing/"+eventID, 30*time.Second)
package redisstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/idempotency"
)

// DefaultPrefix is prepended to every key unless WithPrefix says otherwise.
const DefaultPrefix = "herald:idempotency:"

const (
	claimedTag = "c:"
	doneValue  = "d"
)

// Store is an idempotency.Store on Redis. It is safe for concurrent use.
// Each Store has its own owner identity: its Release drops only claims it
// made, never one another Store took over after this one's lease ran out.
// The client stays the caller's to close.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	claim  string // the value this store writes when it claims a key
}

// Option configures a Store.
type Option func(*Store)

// WithPrefix sets the prefix of the Redis keys the store writes, so
// several applications can share one Redis database. Default
// DefaultPrefix.
func WithPrefix(prefix string) Option { return func(s *Store) { s.prefix = prefix } }

// New returns a Store that keeps its records in rdb. It does no I/O.
func New(rdb redis.UniversalClient, opts ...Option) (*Store, error) {
	if rdb == nil {
		return nil, errors.New("redisstore: client is nil")
	}
	s := &Store{rdb: rdb, prefix: DefaultPrefix, claim: claimedTag + rand.Text()}
	for _, o := range opts {
		o(s)
	}
	return s, nil
}

var _ idempotency.Store = (*Store)(nil)

// Claim implements idempotency.Store with one SET NX PX GET: it sets the
// key only if absent and returns what was there, so deciding between a
// win, ErrDuplicate and ErrInProgress takes one round trip. Leases are
// rounded up to whole milliseconds.
func (s *Store) Claim(ctx context.Context, key string, lease time.Duration) error {
	if err := check(ctx, "claim", key, "lease", lease); err != nil {
		return err
	}
	old, err := s.rdb.Do(ctx, "set", s.prefix+key, s.claim, "px", millis(lease), "nx", "get").Text()
	switch {
	case errors.Is(err, redis.Nil):
		return nil
	case err != nil:
		return fmt.Errorf("redisstore: claim %q: %w", key, err)
	case old == doneValue:
		return idempotency.ErrDuplicate
	default:
		return idempotency.ErrInProgress
	}
}

// Complete implements idempotency.Store. It records the key as done
// whatever it held, even when this store's claim had expired or another
// store had taken it over: the work is done, and recording it keeps the
// next redelivery from repeating it.
func (s *Store) Complete(ctx context.Context, key string, ttl time.Duration) error {
	if err := check(ctx, "complete", key, "ttl", ttl); err != nil {
		return err
	}
	if err := s.rdb.Do(ctx, "set", s.prefix+key, doneValue, "px", millis(ttl)).Err(); err != nil {
		return fmt.Errorf("redisstore: complete %q: %w", key, err)
	}
	return nil
}

// releaseScript deletes KEYS[1] only while it holds ARGV[1], this store's
// claim: a completed key, or a claim another store took over, stays.
var releaseScript = redis.NewScript(`
if redis.call("GET", KEYS[1]) == ARGV[1] then
	return redis.call("DEL", KEYS[1])
end
return 0
`)

// Release implements idempotency.Store. It drops the key only while it
// holds this store's claim.
func (s *Store) Release(ctx context.Context, key string) error {
	if err := check(ctx, "release", key, "", 0); err != nil {
		return err
	}
	if err := releaseScript.Run(ctx, s.rdb, []string{s.prefix + key}, s.claim).Err(); err != nil {
		return fmt.Errorf("redisstore: release %q: %w", key, err)
	}
	return nil
}

// millis rounds d up to whole milliseconds, Redis's finest expiry.
func millis(d time.Duration) string {
	return strconv.FormatInt(int64((d+time.Millisecond-1)/time.Millisecond), 10)
}

// check validates the arguments: a non-empty key, a positive duration
// (unless name is ""), a live context.
func check(ctx context.Context, op, key, name string, d time.Duration) error {
	if key == "" {
		return fmt.Errorf("redisstore: %s: empty key", op)
	}
	if name != "" && d <= 0 {
		return fmt.Errorf("redisstore: %s %q: %s %v must be positive", op, key, name, d)
	}
	return ctx.Err()
}
