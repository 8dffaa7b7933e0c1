package telemetry_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heraldhq/herald/telemetry"
)

// fixedStats is a BrokerStats returning fixed figures: a data source for
// the collector, standing in for the broker's numbers.
type fixedStats struct {
	groups            []telemetry.GroupStats
	topics            []telemetry.TopicStats
	groupErr, topErr  error
	blockUntilCtxDone bool
}

func (s *fixedStats) Groups(ctx context.Context) ([]telemetry.GroupStats, error) {
	if s.blockUntilCtxDone {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return s.groups, s.groupErr
}

func (s *fixedStats) Topics(context.Context) ([]telemetry.TopicStats, error) {
	return s.topics, s.topErr
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func TestBrokerCollector(t *testing.T) {
	t.Parallel()
	src := &fixedStats{
		groups: []telemetry.GroupStats{
			{Topic: "orders", Group: "billing", Pending: 12, InFlight: 3, LagSeconds: 4.5},
			{Topic: "orders", Group: "shipping", Pending: 0, InFlight: 0, LagSeconds: -1},
			{Topic: "orders", Group: "billing", Pending: 99}, // duplicate: ignored
		},
		topics: []telemetry.TopicStats{
			{Topic: "orders", Messages: 1000, Bytes: 256000},
			{Topic: "orders.dlq", Messages: 7, Bytes: 7000, IsDLQ: true},
		},
	}
	c, err := telemetry.NewBrokerCollector(src)
	if err != nil {
		t.Fatal(err)
	}
	want := `
# HELP herald_consumer_inflight_messages Messages delivered to the group and not yet acknowledged.
# TYPE herald_consumer_inflight_messages gauge
herald_consumer_inflight_messages{group="billing",topic="orders"} 3
herald_consumer_inflight_messages{group="shipping",topic="orders"} 0
# HELP herald_consumer_lag_seconds Age of the oldest message not yet delivered to the group (0 when none is pending).
# TYPE herald_consumer_lag_seconds gauge
herald_consumer_lag_seconds{group="billing",topic="orders"} 4.5
herald_consumer_lag_seconds{group="shipping",topic="orders"} 0
# HELP herald_consumer_pending_messages Messages of the topic not yet delivered to the group.
# TYPE herald_consumer_pending_messages gauge
herald_consumer_pending_messages{group="billing",topic="orders"} 12
herald_consumer_pending_messages{group="shipping",topic="orders"} 0
# HELP herald_dlq_depth_messages Messages in the dead-letter topic.
# TYPE herald_dlq_depth_messages gauge
herald_dlq_depth_messages{topic="orders.dlq"} 7
# HELP herald_topic_bytes Bytes the topic holds.
# TYPE herald_topic_bytes gauge
herald_topic_bytes{topic="orders"} 256000
herald_topic_bytes{topic="orders.dlq"} 7000
# HELP herald_topic_messages Messages the topic holds.
# TYPE herald_topic_messages gauge
herald_topic_messages{topic="orders"} 1000
herald_topic_messages{topic="orders.dlq"} 7
# HELP herald_broker_stats_up 1 if the last collection of broker stats succeeded, 0 if it failed.
# TYPE herald_broker_stats_up gauge
herald_broker_stats_up 1
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	// The collector is a checked collector: it registers and lints clean.
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(c); err != nil {
		t.Fatalf("register: %v", err)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint %s: %s", p.Metric, p.Text)
	}
}

func TestBrokerCollectorFailures(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name  string
		src   *fixedStats
		opts  []telemetry.BrokerCollectorOption
		names []string // metric families expected besides up
	}{
		{
			name:  "groups fail",
			src:   &fixedStats{groupErr: errors.New("consumer info: timeout"), topics: []telemetry.TopicStats{{Topic: "a", Messages: 1}}},
			names: []string{"herald_topic_messages", "herald_topic_bytes"},
		},
		{
			name:  "topics fail",
			src:   &fixedStats{topErr: errors.New("stream list: timeout"), groups: []telemetry.GroupStats{{Topic: "a", Group: "g"}}},
			names: []string{"herald_consumer_pending_messages", "herald_consumer_inflight_messages", "herald_consumer_lag_seconds"},
		},
		{
			name: "groups time out",
			src:  &fixedStats{blockUntilCtxDone: true},
			opts: []telemetry.BrokerCollectorOption{telemetry.WithCollectTimeout(20 * time.Millisecond)},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, err := telemetry.NewBrokerCollector(tc.src, append(tc.opts, telemetry.WithCollectLogger(quietLogger()))...)
			if err != nil {
				t.Fatal(err)
			}
			down := "# HELP herald_broker_stats_up 1 if the last collection of broker stats succeeded, 0 if it failed.\n# TYPE herald_broker_stats_up gauge\nherald_broker_stats_up 0\n"
			if err := testutil.CollectAndCompare(c, strings.NewReader(down), "herald_broker_stats_up"); err != nil {
				t.Error(err)
			}
			for _, n := range tc.names {
				if got := testutil.CollectAndCount(c, n); got != 1 {
					t.Errorf("%s: %d series, want 1 (the call that worked is still exported)", n, got)
				}
			}
		})
	}
}

func TestNewBrokerCollectorErrors(t *testing.T) {
	t.Parallel()
	if _, err := telemetry.NewBrokerCollector(nil); err == nil {
		t.Error("nil source accepted")
	}
	if _, err := telemetry.NewBrokerCollector(&fixedStats{}, telemetry.WithCollectTimeout(0)); err == nil {
		t.Error("zero timeout accepted")
	}
	if _, err := telemetry.NewBrokerCollector(&fixedStats{}, telemetry.WithCollectLogger(nil)); err == nil {
		t.Error("nil logger accepted")
	}
}

// TestHandler serves a registry with a failing collector beside good
// metrics: the good ones are still served.
func TestHandler(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m, err := telemetry.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	m.BreakerObserver("billing")
	bc, err := telemetry.NewBrokerCollector(&fixedStats{
		groups: []telemetry.GroupStats{{Topic: "orders", Group: "bad\xff"}},
		topics: []telemetry.TopicStats{{Topic: "orders.dlq", Messages: 3, IsDLQ: true}},
	}, telemetry.WithCollectLogger(quietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	reg.MustRegister(bc)
	srv := httptest.NewServer(telemetry.Handler(reg))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	for _, want := range []string{`herald_breaker_state{group="billing"} 0`, `herald_dlq_depth_messages{topic="orders.dlq"} 3`} {
		if !strings.Contains(string(body), want) {
			t.Errorf("response lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(string(body), "bad") {
		t.Errorf("invalid label value served:\n%s", body)
	}
}
