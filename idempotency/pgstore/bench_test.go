package pgstore_test

import (
	"crypto/rand"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testenv"
	"github.com/jackc/pgx/v5"
)

// BenchmarkClaimComplete measures one Claim plus one Complete of a new
// key on the local PostgreSQL, the cost the consumer runtime adds to each
// handled event, and Once with an empty fn, the cost of the transactional
// form. The raw baseline is the same two writes through pgx: an INSERT
// ... ON CONFLICT DO NOTHING, then an UPDATE.
func BenchmarkClaimComplete(b *testing.B) {
	p := testenv.PGPool(b, 8)
	s := newStore(b, p)
	table := pgx.Identifier{s.Table()}.Sanitize()
	insert := "INSERT INTO " + table + " (key, state, expires_at) VALUES ($1, 'claimed', now() + interval '1 minute') ON CONFLICT (key) DO NOTHING"
	update := "UPDATE " + table + " SET state = 'done', expires_at = now() + interval '1 hour', completed_at = now() WHERE key = $1"
	if err := p.Ping(b.Context()); err != nil { // dial before timing
		b.Fatal(err)
	}
	for _, mode := range []string{"serial", "parallel"} {
		b.Run("raw-pgx/"+mode, func(b *testing.B) {
			run(b, mode, "raw", func(k string) {
				if _, err := p.Exec(b.Context(), insert, k); err != nil {
					b.Fatal(err)
				}
				if _, err := p.Exec(b.Context(), update, k); err != nil {
					b.Fatal(err)
				}
			})
		})
		b.Run("pgstore/"+mode, func(b *testing.B) {
			run(b, mode, "store", func(k string) {
				if err := s.Claim(b.Context(), k, time.Minute); err != nil {
					b.Fatal(err)
				}
				if err := s.Complete(b.Context(), k, time.Hour); err != nil {
					b.Fatal(err)
				}
			})
		})
		b.Run("pgstore-once/"+mode, func(b *testing.B) {
			run(b, mode, "once", func(k string) {
				if err := s.Once(b.Context(), k, time.Hour, func(pgx.Tx) error { return nil }); err != nil {
					b.Fatal(err)
				}
			})
		})
	}
}

// run calls op with a new key b.N times, on one goroutine or on
// GOMAXPROCS*4 of them, and reports ops/s.
func run(b *testing.B, mode, name string, op func(key string)) {
	var n atomic.Int64
	runID := rand.Text() // b.Run calls run more than once: keys must stay new
	next := func() string {
		return "bench/" + runID + "/" + name + "/" + mode + "/" + strconv.FormatInt(n.Add(1), 10)
	}
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
