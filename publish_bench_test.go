package herald_test

import (
	"context"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/event"
)

// discard is a broker.Publisher that confirms at once, so the benchmark
// measures the SDK's own publish work (attributes, validation, header
// encoding) and nothing of a broker.
type discard struct{ broker.Broker }

func (discard) Publish(context.Context, ...*broker.Message) error { return nil }

// BenchmarkClientPublish is the SDK's CPU and allocations per published
// event, for one event per call (the many-publishers pattern) and 100.
//
//	go test -run '^$' -bench ClientPublish -benchmem .
func BenchmarkClientPublish(b *testing.B) {
	c, err := herald.Connect(context.Background(), herald.Config{Broker: discard{}, Source: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 256)
	for _, n := range []int{1, 100} {
		b.Run("events-"+map[int]string{1: "1", 100: "100"}[n], func(b *testing.B) {
			events := make([]*event.Event, n)
			b.ReportAllocs()
			for b.Loop() {
				for i := range events {
					e := event.New("", "bench.v1", data)
					e.Subject = "k"
					events[i] = e
				}
				if err := c.PublishTo(context.Background(), "bench", events...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
