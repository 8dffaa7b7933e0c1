package admin

import (
	"context"

	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/telemetry"
)

// BrokerStats is the JetStream source of telemetry's broker gauges
// (herald_consumer_pending_messages, herald_consumer_inflight_messages,
// herald_consumer_lag_seconds, herald_topic_messages, herald_topic_bytes,
// herald_dlq_depth_messages): register
// telemetry.NewBrokerCollector(admin.BrokerStats{Service: svc}).
type BrokerStats struct {
	Service *Service
}

var _ telemetry.BrokerStats = BrokerStats{}

// Groups implements telemetry.BrokerStats: one row per group and topic,
// the partition consumers of a key-ordered group summed.
func (b BrokerStats) Groups(ctx context.Context) ([]telemetry.GroupStats, error) {
	lags, err := b.Service.Lag(ctx, "", "")
	if err != nil {
		return nil, err
	}
	out := make([]telemetry.GroupStats, len(lags))
	for i, g := range lags {
		out[i] = telemetry.GroupStats{Topic: g.Topic, Group: g.Group, Pending: g.Pending, InFlight: g.InFlight, LagSeconds: g.LagSeconds}
	}
	return out, nil
}

// Topics implements telemetry.BrokerStats.
func (b BrokerStats) Topics(ctx context.Context) ([]telemetry.TopicStats, error) {
	if b.Service.ev != nil {
		ts, err := b.Service.ev.topicsInfo(ctx)
		if err != nil {
			return nil, err
		}
		out := make([]telemetry.TopicStats, len(ts))
		for i, t := range ts {
			out[i] = telemetry.TopicStats{Topic: t.Topic, Messages: t.Messages, Bytes: t.Bytes, IsDLQ: t.DeadLetter}
		}
		return out, nil
	}
	ts, err := b.Service.topics(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]telemetry.TopicStats, len(ts))
	for i, t := range ts {
		st := t.info.State
		out[i] = telemetry.TopicStats{Topic: t.topic, Messages: st.Msgs, Bytes: st.Bytes, IsDLQ: consumer.IsDeadLetterTopic(t.topic)}
	}
	return out, nil
}
