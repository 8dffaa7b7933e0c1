package e2ebench

import (
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/heraldhq/herald/internal/testenv"
)

// TestRunOnKafkaAndRabbitMQ runs the plain raw loop and Herald briefly
// on an in-process Kafka cluster (kfake) and on the local RabbitMQ: every
// published event is handled once on each side, and the like-for-like raw
// loop (NATS only) is not run.
func TestRunOnKafkaAndRabbitMQ(t *testing.T) {
	t.Run("kafka", func(t *testing.T) {
		t.Parallel()
		kc, err := kfake.NewCluster(kfake.NumBrokers(1))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(kc.Close)
		checkBrokerRun(t, "kafka://"+strings.Join(kc.ListenAddrs(), ","), "kafka")
	})
	t.Run("rabbitmq", func(t *testing.T) {
		t.Parallel()
		testenv.Need(t, "RabbitMQ", testenv.HostPort(testenv.RabbitURL))
		checkBrokerRun(t, testenv.RabbitURL, "amqp")
	})
}

func checkBrokerRun(t *testing.T, url, kind string) {
	t.Helper()
	res, err := Run(t.Context(), Config{URL: url, Duration: 500 * time.Millisecond, Rate: 1000, Publishers: 4, Batch: 10, Keys: 16})
	if err != nil {
		t.Fatal(err)
	}
	if res.Broker != kind {
		t.Errorf("broker %q, want %q", res.Broker, kind)
	}
	checkSides(t, map[string]Side{"plain": res.Plain, "herald": res.Herald})
	if res.Raw.Published != 0 || res.RawMsgsPerS != 0 || res.Ratio != 0 {
		t.Errorf("the like-for-like raw loop ran on %s: %+v", kind, res.Raw)
	}
	if res.PlainRatio != res.Herald.MsgsPerS/res.Plain.MsgsPerS {
		t.Errorf("ratio %v does not match the sides %+v / %+v", res.PlainRatio, res.Herald, res.Plain)
	}
}

func TestSchemeErrors(t *testing.T) {
	_, err := Run(t.Context(), Config{URL: "redis://127.0.0.1:6379"})
	if err == nil || !strings.Contains(err.Error(), "kafka://") {
		t.Fatalf("err = %v, want it to list the URLs it takes", err)
	}
}

// BenchmarkE2E runs the whole comparison on each broker: the embedded
// NATS server, an in-process Kafka (kfake) and the local RabbitMQ. Each
// iteration is one full run (5 s of publishing per side); run it with
// -benchtime 1x:
//
//	go test -run '^$' -bench E2E -benchtime 1x ./internal/e2ebench
func BenchmarkE2E(b *testing.B) {
	for _, tc := range []struct {
		name string
		url  func(b *testing.B) string
	}{
		{"nats", func(*testing.B) string { return "" }},
		{"kafka", func(b *testing.B) string {
			kc, err := kfake.NewCluster(kfake.NumBrokers(1))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(kc.Close)
			return "kafka://" + strings.Join(kc.ListenAddrs(), ",")
		}},
		{"rabbitmq", func(b *testing.B) string {
			testenv.Need(b, "RabbitMQ", testenv.HostPort(testenv.RabbitURL))
			return testenv.RabbitURL
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			url := tc.url(b)
			var res Result
			for b.Loop() {
				var err error
				if res, err = Run(b.Context(), Config{URL: url, Duration: 5 * time.Second}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(res.Herald.MsgsPerS, "herald-msgs/s")
			b.ReportMetric(res.Plain.MsgsPerS, "plain-msgs/s")
			b.ReportMetric(res.PlainRatio, "herald/plain")
			b.ReportMetric(res.Herald.CPUus, "herald-cpu-µs/ev")
			b.ReportMetric(res.Plain.CPUus, "plain-cpu-µs/ev")
			if res.Lost+res.PlainLost+res.RawLost != 0 {
				b.Fatalf("lost events: herald %d, plain %d, raw %d", res.Lost, res.PlainLost, res.RawLost)
			}
		})
	}
}
