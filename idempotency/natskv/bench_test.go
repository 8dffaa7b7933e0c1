package natskv_test

import (
	"crypto/rand"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/idempotency/natskv"
)

// BenchmarkClaimComplete measures one Claim plus one Complete of a new
// key on the embedded server (in-process connection, file storage), the
// cost the consumer runtime adds to each handled event. The raw baseline
// is the same two writes with nats.go's KV: Create, then Put.
func BenchmarkClaimComplete(b *testing.B) {
	js := jetStream(b)
	raw := func(b *testing.B, kv jetstream.KeyValue, k string) {
		if _, err := kv.Create(b.Context(), natskv.Key(k), []byte("claimed")); err != nil {
			b.Fatal(err)
		}
		if _, err := kv.Put(b.Context(), natskv.Key(k), []byte("done")); err != nil {
			b.Fatal(err)
		}
	}
	store := func(b *testing.B, s *natskv.Store, k string) {
		if err := s.Claim(b.Context(), k, time.Minute); err != nil {
			b.Fatal(err)
		}
		if err := s.Complete(b.Context(), k, time.Hour); err != nil {
			b.Fatal(err)
		}
	}
	for _, mode := range []string{"serial", "parallel"} {
		b.Run("raw-kv/"+mode, func(b *testing.B) {
			kv, err := js.CreateKeyValue(b.Context(), jetstream.KeyValueConfig{Bucket: bucketName(), History: 1})
			if err != nil {
				b.Fatal(err)
			}
			run(b, mode, func(k string) { raw(b, kv, k) })
		})
		b.Run("natskv/"+mode, func(b *testing.B) {
			s := newStore(b, js, bucketName())
			run(b, mode, func(k string) { store(b, s, k) })
		})
	}
}

// run calls op with a new key b.N times, on one goroutine or on
// GOMAXPROCS*4 of them, and reports ops/s.
func run(b *testing.B, mode string, op func(key string)) {
	var n atomic.Int64
	runID := rand.Text() // b.Run calls run more than once: keys must stay new
	next := func() string { return "bench/" + runID + "/" + strconv.FormatInt(n.Add(1), 10) }
	b.ResetTimer()
	if mode == "serial" {
		for range b.N {
			op(next())
		}
	} else {
		b.SetParallelism(4)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				op(next())
			}
		})
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
