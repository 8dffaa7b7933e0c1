package redisstore_test

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/idempotency"
	"github.com/heraldhq/herald/idempotency/redisstore"
	"github.com/heraldhq/herald/idempotency/storetest"
	"github.com/heraldhq/herald/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// client connects to the local Redis (skipping, or failing in CI, when it
// is unreachable) and returns it with a prefix no other test uses; the
// keys under the prefix are deleted when the test ends.
func client(t testing.TB) (*redis.Client, string) {
	t.Helper()
	testenv.Need(t, "Redis", testenv.RedisAddr)
	rdb := redis.NewClient(&redis.Options{Addr: testenv.RedisAddr})
	prefix := "herald-test:idempotency:" + rand.Text() + ":"
	t.Cleanup(func() {
		defer rdb.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		iter := rdb.Scan(ctx, 0, prefix+"*", 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Errorf("scan %s*: %v", prefix, err)
			return
		}
		for len(keys) > 0 {
			n := min(len(keys), 1000)
			if err := rdb.Unlink(ctx, keys[:n]...).Err(); err != nil {
				t.Errorf("unlink %s*: %v", prefix, err)
				return
			}
			keys = keys[n:]
		}
	})
	return rdb, prefix
}

func newStore(t testing.TB, rdb *redis.Client, prefix string) *redisstore.Store {
	t.Helper()
	s, err := redisstore.New(rdb, redisstore.WithPrefix(prefix))
	if err != nil {
		t.Fatalf("new store: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	rdb, prefix := client(t)
	storetest.Run(t, func(t *testing.T) idempotency.Store { return newStore(t, rdb, prefix) })
}

func TestLayout(t *testing.T) {
	t.Parallel()
	rdb, prefix := client(t)
	s := newStore(t, rdb, prefix)
	ctx := t.Context()
	key := "orders/42"

	if err := s.Claim(ctx, key, 10*time.Second); err != nil {
		t.Fatalf("claim: %v", err)
	}
	ttl, err := rdb.PTTL(ctx, prefix+key).Result()
	if err != nil || ttl <= 9*time.Second || ttl > 10*time.Second {
		t.Fatalf("claimed key %q: PTTL %v, %v; want about the 10s lease", prefix+key, ttl, err)
	}
	if err := s.Complete(ctx, key, time.Hour); err != nil {
		t.Fatalf("complete: %v", err)
	}
	ttl, err = rdb.PTTL(ctx, prefix+key).Result()
	if err != nil || ttl <= 59*time.Minute || ttl > time.Hour {
		t.Fatalf("completed key %q: PTTL %v, %v; want about the 1h TTL", prefix+key, ttl, err)
	}
	if n, err := rdb.Exists(ctx, key).Result(); err != nil || n != 0 {
		t.Fatalf("key %q without the prefix exists (%d, %v): the prefix was not applied", key, n, err)
	}

	// A sub-millisecond lease is rounded up, not down to "no expiry" or an error.
	if err := s.Claim(ctx, "tiny", time.Microsecond); err != nil {
		t.Fatalf("claim with a 1µs lease: %v", err)
	}
}

func TestNilClient(t *testing.T) {
	t.Parallel()
	if _, err := redisstore.New(nil); err == nil {
		t.Fatal("New(nil) returned no error")
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	// A port nobody listens on: errors must come back wrapped, not as outcomes.
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", MaxRetries: -1, DialTimeout: time.Second})
	t.Cleanup(func() { _ = rdb.Close() })
	s, err := redisstore.New(rdb)
	if err != nil {
		t.Fatal(err)
	}
	err = s.Claim(t.Context(), "k", time.Second)
	if err == nil || errors.Is(err, idempotency.ErrDuplicate) || errors.Is(err, idempotency.ErrInProgress) {
		t.Fatalf("claim against a closed port: got %v, want a connection error", err)
	}
}
