package consumer_test

import (
	"context"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/e2ebench"
)

// BenchmarkEndToEnd publishes 256-byte events with the SDK to a router
// (at-least-once, retry + dead-letter middleware) that acknowledges them,
// beside the raw nats.go JetStream client doing the same loop (plain and
// like for like), in the same run, over TCP loopback to an embedded server; the -keyorder cases add
// per-key order across instances.
//
//	go test -run '^$' -bench EndToEnd -benchtime 1x ./consumer
func BenchmarkEndToEnd(b *testing.B) {
	for _, tc := range []struct {
		name     string
		rate     int
		keyOrder bool
	}{{"max", 0, false}, {"rate5000", 5000, false}, {"max-keyorder", 0, true}, {"rate5000-keyorder", 5000, true}} {
		b.Run(tc.name, func(b *testing.B) {
			for range b.N {
				res, err := e2ebench.Run(context.Background(), e2ebench.Config{Duration: 10 * time.Second, Rate: tc.rate, KeyOrder: tc.keyOrder})
				if err != nil {
					b.Fatal(err)
				}
				if res.Lost != 0 || res.RawLost != 0 || res.PlainLost != 0 {
					b.Fatalf("lost events: herald %d, raw %d, plain %d", res.Lost, res.RawLost, res.PlainLost)
				}
				b.ReportMetric(res.HeraldMsgsPerS, "herald-msgs/s")
				b.ReportMetric(res.RawMsgsPerS, "raw-msgs/s")
				b.ReportMetric(res.Ratio, "ratio")
				b.ReportMetric(res.PlainMsgsPerS, "plain-msgs/s")
				b.ReportMetric(res.PlainRatio, "plain-ratio")
				b.ReportMetric(res.P50us, "p50-µs")
				b.ReportMetric(res.P99us, "p99-µs")
				b.ReportMetric(res.RawP99us, "raw-p99-µs")
				b.ReportMetric(res.Herald.CPUus, "cpu-µs/event")
				b.ReportMetric(res.Raw.CPUus, "raw-cpu-µs/event")
			}
		})
	}
}
