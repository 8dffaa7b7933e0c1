package aggregate_test

import (
	"testing"

	"github.com/heraldhq/herald/eventstore/memory"
)

// BenchmarkLoad1000 loads a 1,000-event aggregate from the memory store,
// replaying every event and from a snapshot at version 1,000.
func BenchmarkLoad1000(b *testing.B) {
	for _, tc := range []struct {
		name  string
		every uint64
	}{{"replay", 0}, {"snapshot", 1000}} {
		b.Run(tc.name, func(b *testing.B) {
			store := memory.New()
			r, err := newCounters(store, tc.every)
			if err != nil {
				b.Fatal(err)
			}
			a, _ := r.Load(b.Context(), "x")
			for range 1000 {
				if err := a.Record("count.inc.v1", map[string]int{"by": 1}); err != nil {
					b.Fatal(err)
				}
			}
			if err := r.Save(b.Context(), a); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for b.Loop() {
				a, err := r.Load(b.Context(), "x")
				if err != nil || a.State.N != 1000 {
					b.Fatalf("load: %v, %+v", err, a)
				}
			}
		})
	}
}
