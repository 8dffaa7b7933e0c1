package storetest

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/eventstore"
)

// BenchAppend measures appends of batch events at a time to 100 streams,
// from b's parallel goroutines, and reports events/s.
func BenchAppend(b *testing.B, s eventstore.Store, batch int) {
	b.Helper()
	const streams = 100
	var next atomic.Int64
	prefix := fmt.Sprintf("bench-%d-%d-", batch, time.Now().UnixNano())
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			stream := fmt.Sprintf("%s%d", prefix, next.Add(1)%streams)
			if _, err := s.Append(b.Context(), stream, eventstore.Any, Events("bench.v1", batch)...); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N*batch)/time.Since(start).Seconds(), "events/s")
}

// BenchLoad measures loading a stream of n events, written in appends of
// 100 events.
func BenchLoad(b *testing.B, s eventstore.Store, n int) { benchLoad(b, s, n, 100) }

// BenchLoadSingle measures loading a stream of n events, written one
// event per append.
func BenchLoadSingle(b *testing.B, s eventstore.Store, n int) { benchLoad(b, s, n, 1) }

func benchLoad(b *testing.B, s eventstore.Store, n, per int) {
	b.Helper()
	stream := fmt.Sprintf("bench-load-%d", time.Now().UnixNano())
	for i := 0; i < n; i += per {
		if _, err := s.Append(b.Context(), stream, eventstore.Any, Events("bench.v1", min(per, n-i))...); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		got := 0
		for _, err := range s.Load(b.Context(), stream, 0) {
			if err != nil {
				b.Fatal(err)
			}
			got++
		}
		if got != n {
			b.Fatalf("loaded %d events, want %d", got, n)
		}
	}
}
