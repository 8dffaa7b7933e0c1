package idempotency_test

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/idempotency"
)

// BenchmarkClaimComplete measures one Claim plus one Complete of a new
// key, the cost the consumer runtime adds to each handled event. The raw
// baseline is the same two writes to a mutex-guarded map.
func BenchmarkClaimComplete(b *testing.B) {
	b.Run("raw-map", func(b *testing.B) {
		var mu sync.Mutex
		m := map[string]time.Time{}
		for i := range b.N {
			k := "bench/" + strconv.Itoa(i)
			mu.Lock()
			if _, ok := m[k]; !ok {
				m[k] = time.Now().Add(time.Minute)
			}
			mu.Unlock()
			mu.Lock()
			m[k] = time.Now().Add(time.Hour)
			mu.Unlock()
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
	b.Run("memory", func(b *testing.B) {
		s := idempotency.NewMemory()
		ctx := b.Context()
		for i := range b.N {
			k := "bench/" + strconv.Itoa(i)
			if err := s.Claim(ctx, k, time.Minute); err != nil {
				b.Fatal(err)
			}
			if err := s.Complete(ctx, k, time.Hour); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	})
}
