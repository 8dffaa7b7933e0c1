package outbox_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/outbox"
)

// benchEvents builds n events over 100 keys.
func benchEvents(n int) []*event.Event {
	es := make([]*event.Event, n)
	for i := range es {
		es[i] = newEvent("k"+strconv.Itoa(i%100), uint64(i/100+1))
	}
	return es
}

// BenchmarkRelay measures the relay from committed rows to broker
// confirmations (rows are added before the timer starts), beside the same
// events published straight through the client: the raw baseline.
func BenchmarkRelay(b *testing.B) {
	const batch = 500
	b.Run("relay", func(b *testing.B) {
		p := testenv.PGPool(b, 8)
		o := newOutbox(b, p, outbox.WithoutNotify())
		topic := testenv.SQLName("outbox_bench_")
		c, _ := natsClient(b, topic)
		r, err := outbox.NewRelay(b.Context(), p, c, outbox.WithOutbox(o), outbox.WithBatch(batch))
		if err != nil {
			b.Fatal(err)
		}
		es := benchEvents(b.N)
		for i := 0; i < len(es); i += outbox.MaxEventsPerAdd {
			chunk := es[i:min(i+outbox.MaxEventsPerAdd, len(es))]
			if err := pgx.BeginFunc(b.Context(), p, func(tx pgx.Tx) error { return o.Add(b.Context(), tx, chunk...) }); err != nil {
				b.Fatal(err)
			}
		}
		b.ResetTimer()
		start := time.Now()
		for done := 0; done < b.N; {
			n, err := r.Step(b.Context())
			if err != nil {
				b.Fatal(err)
			}
			done += n
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	})
	b.Run("raw-publish", func(b *testing.B) {
		topic := testenv.SQLName("outbox_bench_")
		c, _ := natsClient(b, topic)
		es := benchEvents(b.N)
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < len(es); i += batch {
			if err := c.Publish(b.Context(), es[i:min(i+batch, len(es))]...); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	})
	b.Run("add", func(b *testing.B) {
		p := testenv.PGPool(b, 8)
		o := newOutbox(b, p)
		es := benchEvents(b.N)
		b.ResetTimer()
		start := time.Now()
		for i := 0; i < len(es); i += 100 {
			chunk := es[i:min(i+100, len(es))]
			if err := pgx.BeginFunc(b.Context(), p, func(tx pgx.Tx) error { return o.Add(b.Context(), tx, chunk...) }); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
	})
}
