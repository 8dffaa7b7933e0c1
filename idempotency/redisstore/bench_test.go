package redisstore_test

import (
	"crypto/rand"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkClaimComplete measures one Claim plus one Complete of a new
// key on the local Redis, the cost the consumer runtime adds to each
// handled event. The raw baseline is the same two commands through
// go-redis: SET NX PX, then SET PX.
func BenchmarkClaimComplete(b *testing.B) {
	rdb, prefix := client(b)
	s := newStore(b, rdb, prefix+"store:")
	if err := rdb.Ping(b.Context()).Err(); err != nil { // dial before timing
		b.Fatal(err)
	}
	for _, mode := range []string{"serial", "parallel"} {
		b.Run("raw-go-redis/"+mode, func(b *testing.B) {
			run(b, mode, func(k string) {
				k = prefix + "raw:" + k
				if err := rdb.SetNX(b.Context(), k, "c", time.Minute).Err(); err != nil {
					b.Fatal(err)
				}
				if err := rdb.Set(b.Context(), k, "d", time.Hour).Err(); err != nil {
					b.Fatal(err)
				}
			})
		})
		b.Run("redisstore/"+mode, func(b *testing.B) {
			run(b, mode, func(k string) {
				if err := s.Claim(b.Context(), k, time.Minute); err != nil {
					b.Fatal(err)
				}
				if err := s.Complete(b.Context(), k, time.Hour); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// run calls op with a new key b.N times, on one goroutine or on
// GOMAXPROCS*4 of them, and reports ops/s.
func run(b *testing.B, mode string, op func(key string)) {
	var n atomic.Int64
	runID := rand.Text() // b.Run calls run more than once: keys must stay new
	next := func() string { return "bench/" + runID + "/" + mode + "/" + strconv.FormatInt(n.Add(1), 10) }
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
