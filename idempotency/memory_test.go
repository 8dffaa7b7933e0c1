package idempotency_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald/idempotency"
	"github.com/heraldhq/herald/idempotency/storetest"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestMemoryConformance(t *testing.T) {
	m := idempotency.NewMemory()
	storetest.Run(t, func(*testing.T) idempotency.Store { return m },
		storetest.Skip(storetest.TestReleaseAfterTakeover, "one Memory is one owner: it cannot tell a late Release from its own"))
}

// clock is a settable time source for WithNow.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func TestMemoryExpiryByClock(t *testing.T) {
	t.Parallel()
	c := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	m := idempotency.NewMemory(idempotency.WithNow(c.Now))
	ctx := t.Context()
	tests := []struct {
		name    string
		advance time.Duration
		wantErr error
	}{
		{"just before the lease ends", 59 * time.Second, idempotency.ErrInProgress},
		{"when the lease ends", 60 * time.Second, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			key := "lease/" + tc.name
			if err := m.Claim(ctx, key, time.Minute); err != nil {
				t.Fatalf("claim: %v", err)
			}
			c.Add(tc.advance)
			if err := m.Claim(ctx, key, time.Minute); !errors.Is(err, tc.wantErr) {
				t.Fatalf("claim after %v: got %v, want %v", tc.advance, err, tc.wantErr)
			}
		})
	}

	key := "ttl"
	if err := m.Complete(ctx, key, time.Hour); err != nil {
		t.Fatalf("complete: %v", err)
	}
	c.Add(time.Hour - time.Nanosecond)
	if err := m.Claim(ctx, key, time.Minute); !errors.Is(err, idempotency.ErrDuplicate) {
		t.Fatalf("claim 1ns before the TTL ends: got %v, want ErrDuplicate", err)
	}
	c.Add(time.Nanosecond)
	if err := m.Claim(ctx, key, time.Minute); err != nil {
		t.Fatalf("claim when the TTL ends: %v", err)
	}
}

func TestMemoryPurgeAndSweep(t *testing.T) {
	t.Parallel()
	c := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	m := idempotency.NewMemory(idempotency.WithNow(c.Now))
	ctx := t.Context()
	for i := range 10 {
		if err := m.Complete(ctx, fmt.Sprint("short-", i), time.Second); err != nil {
			t.Fatal(err)
		}
		if err := m.Complete(ctx, fmt.Sprint("long-", i), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	c.Add(time.Second)
	n, err := m.Purge(ctx)
	if err != nil || n != 10 {
		t.Fatalf("purge: got %d, %v; want 10 expired records dropped", n, err)
	}
	if got := m.Len(); got != 10 {
		t.Fatalf("after purge: %d records, want the 10 live ones", got)
	}

	// Writes sweep expired records on their own, so a long-running Memory
	// holds about as many records as are live, not every key it ever saw.
	for i := range 100_000 {
		if err := m.Complete(ctx, fmt.Sprint("churn-", i), time.Second); err != nil {
			t.Fatal(err)
		}
		c.Add(time.Millisecond)
	}
	if got := m.Len(); got > 4*1000+10 {
		t.Fatalf("after 100000 writes with ~1000 live at a time: %d records held", got)
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := m.Purge(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("purge with a canceled context: got %v", err)
	}
}

func TestMemoryWithNilNow(t *testing.T) {
	t.Parallel()
	m := idempotency.NewMemory(idempotency.WithNow(nil))
	if err := m.Claim(t.Context(), "k", time.Minute); err != nil {
		t.Fatalf("claim with the default clock kept: %v", err)
	}
}
