package telemetry

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// GroupStats is the broker's view of one consumer group on one topic.
type GroupStats struct {
	// Topic and Group name the subscription.
	Topic, Group string
	// Pending counts the topic's messages the group has not been delivered
	// yet (for JetStream: the consumer's NumPending; for Kafka: the end
	// offset minus the committed offset, summed over partitions, less
	// InFlight).
	Pending uint64
	// InFlight counts messages delivered to the group and neither acked nor
	// terminated yet (JetStream: NumAckPending).
	InFlight uint64
	// LagSeconds is the age of the oldest message the group has not been
	// delivered yet: now minus the time the broker stored the message after
	// the group's delivered position; 0 when Pending is 0.
	LagSeconds float64
}

// TopicStats is the broker's view of one topic.
type TopicStats struct {
	// Topic names the topic.
	Topic string
	// Messages and Bytes are what the topic holds now (after retention).
	Messages, Bytes uint64
	// IsDLQ is true for a dead-letter topic (consumer.DeadLetterTopic's
	// name, or one a router was configured with). Its Messages are
	// exported as herald_dlq_depth_messages too.
	IsDLQ bool
}

// BrokerStats is the source of the broker-side gauges. The server
// implements it on its broker; a scrape calls each method once.
//
// Implementations must be safe for concurrent use (scrapes may overlap),
// should return promptly when ctx is done, and should report each topic,
// and each (topic, group) pair, once: later duplicates are ignored.
type BrokerStats interface {
	// Groups returns the stats of every consumer group of every topic.
	Groups(ctx context.Context) ([]GroupStats, error)
	// Topics returns the stats of every topic, dead-letter topics included.
	Topics(ctx context.Context) ([]TopicStats, error)
}

// BrokerCollectorOption configures a broker collector.
type BrokerCollectorOption func(*BrokerCollector) error

// WithCollectTimeout bounds how long one scrape waits for the BrokerStats.
// Default 5s.
func WithCollectTimeout(d time.Duration) BrokerCollectorOption {
	return func(c *BrokerCollector) error {
		if d <= 0 {
			return fmt.Errorf("WithCollectTimeout %v: must be positive", d)
		}
		c.timeout = d
		return nil
	}
}

// WithCollectLogger sets the logger that reports failed collections.
// Default slog.Default().
func WithCollectLogger(l *slog.Logger) BrokerCollectorOption {
	return func(c *BrokerCollector) error {
		if l == nil {
			return fmt.Errorf("WithCollectLogger: logger is nil")
		}
		c.log = l
		return nil
	}
}

// BrokerCollector is a prometheus.Collector of the broker-side gauges; see
// NewBrokerCollector. It is safe for concurrent use.
type BrokerCollector struct {
	src     BrokerStats
	timeout time.Duration
	log     *slog.Logger

	pending, inFlight, lag *prometheus.Desc
	messages, bytes, dlq   *prometheus.Desc
	up                     *prometheus.Desc
}

// NewBrokerCollector returns a collector that asks src for the broker's
// figures on every scrape and exports them:
//
//	herald_consumer_pending_messages{topic,group}
//	herald_consumer_inflight_messages{topic,group}
//	herald_consumer_lag_seconds{topic,group}
//	herald_topic_messages{topic}
//	herald_topic_bytes{topic}
//	herald_dlq_depth_messages{topic}   (dead-letter topics only)
//	herald_broker_stats_up             (1 if both calls succeeded)
//
// A failing call is logged and reported by herald_broker_stats_up = 0; the
// figures of the other call are still exported, so one slow broker call
// does not fail the whole scrape. Register it with the registry the
// /metrics handler serves.
func NewBrokerCollector(src BrokerStats, opts ...BrokerCollectorOption) (*BrokerCollector, error) {
	if src == nil {
		return nil, fmt.Errorf("telemetry: NewBrokerCollector: source is nil")
	}
	tg := []string{"topic", "group"}
	t := []string{"topic"}
	c := &BrokerCollector{
		src:     src,
		timeout: 5 * time.Second,
		log:     slog.Default(),
		pending: prometheus.NewDesc("herald_consumer_pending_messages",
			"Messages of the topic not yet delivered to the group.", tg, nil),
		inFlight: prometheus.NewDesc("herald_consumer_inflight_messages",
			"Messages delivered to the group and not yet acknowledged.", tg, nil),
		lag: prometheus.NewDesc("herald_consumer_lag_seconds",
			"Age of the oldest message not yet delivered to the group (0 when none is pending).", tg, nil),
		messages: prometheus.NewDesc("herald_topic_messages",
			"Messages the topic holds.", t, nil),
		bytes: prometheus.NewDesc("herald_topic_bytes",
			"Bytes the topic holds.", t, nil),
		dlq: prometheus.NewDesc("herald_dlq_depth_messages",
			"Messages in the dead-letter topic.", t, nil),
		up: prometheus.NewDesc("herald_broker_stats_up",
			"1 if the last collection of broker stats succeeded, 0 if it failed.", nil, nil),
	}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, fmt.Errorf("telemetry: %w", err)
		}
	}
	return c, nil
}

// Describe implements prometheus.Collector.
func (c *BrokerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.pending, c.inFlight, c.lag, c.messages, c.bytes, c.dlq, c.up} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *BrokerCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	up := 1.0

	groups, err := c.src.Groups(ctx)
	if err != nil {
		up = 0
		c.log.Warn("telemetry: collect consumer group stats", "error", err)
	}
	seenGroup := make(map[[2]string]bool, len(groups))
	for _, g := range groups {
		k := [2]string{g.Topic, g.Group}
		if seenGroup[k] {
			continue
		}
		seenGroup[k] = true
		lag := g.LagSeconds
		if lag < 0 {
			lag = 0
		}
		ch <- constMetric(c.pending, prometheus.GaugeValue, float64(g.Pending), g.Topic, g.Group)
		ch <- constMetric(c.inFlight, prometheus.GaugeValue, float64(g.InFlight), g.Topic, g.Group)
		ch <- constMetric(c.lag, prometheus.GaugeValue, lag, g.Topic, g.Group)
	}

	topics, err := c.src.Topics(ctx)
	if err != nil {
		up = 0
		c.log.Warn("telemetry: collect topic stats", "error", err)
	}
	seenTopic := make(map[string]bool, len(topics))
	for _, t := range topics {
		if seenTopic[t.Topic] {
			continue
		}
		seenTopic[t.Topic] = true
		ch <- constMetric(c.messages, prometheus.GaugeValue, float64(t.Messages), t.Topic)
		ch <- constMetric(c.bytes, prometheus.GaugeValue, float64(t.Bytes), t.Topic)
		if t.IsDLQ {
			ch <- constMetric(c.dlq, prometheus.GaugeValue, float64(t.Messages), t.Topic)
		}
	}
	ch <- constMetric(c.up, prometheus.GaugeValue, up)
}
