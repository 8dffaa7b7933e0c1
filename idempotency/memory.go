package idempotency

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// Memory is a Store kept in this process's memory, for tests and for
// single-process programs that accept losing their records on restart.
// It is safe for concurrent use. The zero value is not usable; call
// NewMemory.
//
// Expired records are ignored when read and dropped in amortised sweeps
// (whenever the map has doubled since the last sweep) or by Purge; Memory
// starts no goroutine.
type Memory struct {
	now func() time.Time

	mu        sync.Mutex
	records   map[string]memRecord
	nextSweep int
}

type memRecord struct {
	done     bool
	deadline time.Time // end of the lease, or of the completion's TTL
}

// MemoryOption configures a Memory store.
type MemoryOption func(*Memory)

// WithNow sets the clock Memory reads to decide whether a lease or a
// completion has expired. Default time.Now. Tests use it to move time
// without waiting.
func WithNow(now func() time.Time) MemoryOption {
	return func(m *Memory) {
		if now != nil {
			m.now = now
		}
	}
}

// minSweep is the map size below which Memory does not sweep.
const minSweep = 1024

// NewMemory returns an empty in-memory Store.
func NewMemory(opts ...MemoryOption) *Memory {
	m := &Memory{now: time.Now, records: make(map[string]memRecord), nextSweep: minSweep}
	for _, o := range opts {
		o(m)
	}
	return m
}

var _ Store = (*Memory)(nil)

// Claim implements Store.
func (m *Memory) Claim(ctx context.Context, key string, lease time.Duration) error {
	if err := checkArgs(ctx, "claim", key, "lease", lease); err != nil {
		return err
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.records[key]; ok && now.Before(r.deadline) {
		if r.done {
			return ErrDuplicate
		}
		return ErrInProgress
	}
	m.records[key] = memRecord{deadline: now.Add(lease)}
	m.maybeSweep(now)
	return nil
}

// Complete implements Store. It records the key as done even when the
// claim had expired or was never made: the work it stands for is done.
func (m *Memory) Complete(ctx context.Context, key string, ttl time.Duration) error {
	if err := checkArgs(ctx, "complete", key, "ttl", ttl); err != nil {
		return err
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.records[key] = memRecord{done: true, deadline: now.Add(ttl)}
	m.maybeSweep(now)
	return nil
}

// Release implements Store.
func (m *Memory) Release(ctx context.Context, key string) error {
	if err := checkKey(ctx, "release", key); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if r, ok := m.records[key]; ok && !r.done {
		delete(m.records, key)
	}
	return nil
}

// Purge drops every expired record and returns how many it dropped.
func (m *Memory) Purge(ctx context.Context) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	now := m.now()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sweep(now), nil
}

// Len returns how many records Memory holds, expired ones included until
// they are swept.
func (m *Memory) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.records)
}

// maybeSweep keeps the map from growing without bound at an amortised
// O(1) cost per write. m.mu is held.
func (m *Memory) maybeSweep(now time.Time) {
	if len(m.records) < m.nextSweep {
		return
	}
	m.sweep(now)
	m.nextSweep = max(2*len(m.records), minSweep)
}

func (m *Memory) sweep(now time.Time) int {
	n := 0
	for k, r := range m.records {
		if !now.Before(r.deadline) {
			delete(m.records, k)
			n++
		}
	}
	return n
}

// checkKey validates the key every Store method takes.
func checkKey(ctx context.Context, op, key string) error {
	if key == "" {
		return fmt.Errorf("idempotency: %s: %w", op, errEmptyKey)
	}
	return ctx.Err()
}

// checkArgs validates a key and the lease or TTL that comes with it.
func checkArgs(ctx context.Context, op, key, name string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("idempotency: %s %q: %s %v must be positive", op, key, name, d)
	}
	return checkKey(ctx, op, key)
}

var errEmptyKey = errors.New("empty key")
