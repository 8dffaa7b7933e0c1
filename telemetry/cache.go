package telemetry

import (
	"sync"
	"sync/atomic"
)

// seriesCache maps a label tuple to the metric children made for it, so the
// hot path finds them without building a label slice or hashing label
// values in client_golang. Reads are lock-free and do not allocate: the map
// is copied on write, which is rare because label tuples are bounded.
type seriesCache[K comparable, V any] struct {
	m  atomic.Pointer[map[K]V]
	mu sync.Mutex
}

// load returns the value cached for k.
func (c *seriesCache[K, V]) load(k K) (V, bool) {
	if p := c.m.Load(); p != nil {
		v, ok := (*p)[k]
		return v, ok
	}
	var zero V
	return zero, false
}

// add caches the value made by mk for k, unless another goroutine cached
// one first, and returns the cached value.
func (c *seriesCache[K, V]) add(k K, mk func() V) V {
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.m.Load()
	if old != nil {
		if v, ok := (*old)[k]; ok {
			return v
		}
	}
	n := 1
	if old != nil {
		n += len(*old)
	}
	next := make(map[K]V, n)
	if old != nil {
		for k, v := range *old {
			next[k] = v
		}
	}
	v := mk()
	next[k] = v
	c.m.Store(&next)
	return v
}

// typeLimit bounds the number of distinct event types used as label values:
// types come from the events, so a producer sending random types must not
// make the metrics grow without bound. Types past the limit are counted
// under OtherType.
type typeLimit struct {
	max  int
	mu   sync.Mutex
	seen map[string]struct{}
}

// label returns typ if it is one of the first max distinct types seen, or
// OtherType. It is called only when a label tuple is not cached yet.
func (l *typeLimit) label(typ string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[typ]; ok {
		return typ
	}
	if len(l.seen) >= l.max {
		return OtherType
	}
	l.seen[typ] = struct{}{}
	return typ
}
