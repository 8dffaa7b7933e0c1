package aggregate_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/eventstore"
	"github.com/heraldhq/herald/eventstore/memory"
	esnats "github.com/heraldhq/herald/eventstore/natsjs"
	"github.com/heraldhq/herald/eventstore/postgres"
	"github.com/heraldhq/herald/internal/testenv"
)

// BenchmarkLoad1000 loads a 1,000-event aggregate, replaying every event
// and from a snapshot at version 1,000, from each store: memory, the
// embedded JetStream (fast durability, in-process connection) and the
// local PostgreSQL.
func BenchmarkLoad1000(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B) eventstore.Store
	}{
		{"memory", func(*testing.B) eventstore.Store { return memory.New() }},
		{"jetstream", benchJetStream},
		{"postgres", benchPostgres},
	}
	for _, st := range stores {
		for _, tc := range []struct {
			name  string
			every uint64
		}{{"replay", 0}, {"snapshot", 1000}} {
			b.Run(st.name+"/"+tc.name, func(b *testing.B) {
				r, err := newCounters(st.open(b), tc.every)
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
}

func benchJetStream(b *testing.B) eventstore.Store {
	e, err := natsjs.RunEmbedded(b.Context(), natsjs.EmbeddedConfig{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Shutdown)
	nc, err := e.Connect()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	s, err := esnats.New(b.Context(), nc)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

func benchPostgres(b *testing.B) eventstore.Store {
	p := testenv.PGPool(b, 4)
	prefix := testenv.SQLName("es_bench_")[:24]
	b.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for _, q := range []string{"DROP TABLE IF EXISTS %s_events", "DROP TABLE IF EXISTS %s_streams", "DROP SEQUENCE IF EXISTS %s_position"} {
			if _, err := p.Exec(ctx, fmt.Sprintf(q, prefix)); err != nil {
				b.Errorf("%s: %v", fmt.Sprintf(q, prefix), err)
			}
		}
	})
	s, err := postgres.New(b.Context(), p, postgres.WithPrefix(prefix), postgres.WithMigrate())
	if err != nil {
		b.Fatal(err)
	}
	return s
}
