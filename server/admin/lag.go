package admin

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
)

// GroupLag is how far a group is behind on one topic. The consumers of a
// key-ordered group (one per partition) are summed into one row.
type GroupLag struct {
	Topic string `json:"topic"`
	Group string `json:"group"`
	// KeyOrdered groups have one consumer per partition.
	KeyOrdered bool `json:"key_ordered"`
	Consumers  int  `json:"consumers"`
	// Pending messages are stored and not yet delivered to the group.
	Pending uint64 `json:"pending"`
	// InFlight messages were delivered and are not yet acknowledged.
	InFlight uint64 `json:"in_flight"`
	// Redelivered counts in-flight messages delivered more than once.
	Redelivered uint64 `json:"redelivered"`
	// LagSeconds is the age of the oldest message not yet delivered to
	// the group (the first one after its delivered position): 0 when
	// Pending is 0. It is herald_consumer_lag_seconds.
	LagSeconds float64 `json:"lag_seconds"`
	// OldestUnacked is when the oldest message the group has not
	// acknowledged (pending or in flight: the first one after its ack
	// floor) was stored, and UnackedSeconds its age; it grows while a
	// handler holds a message, which LagSeconds does not show. Absent and
	// 0 when nothing is pending or in flight.
	OldestUnacked  *time.Time `json:"oldest_unacked,omitempty"`
	UnackedSeconds float64    `json:"unacked_seconds"`
	// Paused is set while any of the group's consumers is paused.
	Paused bool `json:"paused,omitempty"`
	// DLQDepth is the number of dead letters of the topic (of every group:
	// dead letters are per topic).
	DLQDepth uint64 `json:"dlq_depth"`
}

// TopicInfo describes a topic: its size and retention.
type TopicInfo struct {
	Topic      string `json:"topic"`
	Stream     string `json:"stream"`
	Partitions int    `json:"partitions"`
	DeadLetter bool   `json:"dead_letter"`
	Messages   uint64 `json:"messages"`
	Bytes      uint64 `json:"bytes"`
	FirstSeq   uint64 `json:"first_seq"`
	LastSeq    uint64 `json:"last_seq"`
	// DLQDepth is the message count of the topic's dead-letter topic.
	DLQDepth  uint64          `json:"dlq_depth"`
	Retention RetentionConfig `json:"retention"`
}

// RetentionConfig is a topic's retention as stored.
type RetentionConfig struct {
	// MaxAge is a Go duration, or "unlimited".
	MaxAge string `json:"max_age"`
	// MaxBytes and MaxMsgs are -1 when unlimited.
	MaxBytes int64 `json:"max_bytes"`
	MaxMsgs  int64 `json:"max_msgs"`
}

func topicInfo(t topicStream, dlqDepth uint64) TopicInfo {
	c, st := t.info.Config, t.info.State
	r := RetentionConfig{MaxAge: "unlimited", MaxBytes: c.MaxBytes, MaxMsgs: c.MaxMsgs}
	if c.MaxAge > 0 {
		r.MaxAge = c.MaxAge.String()
	}
	if r.MaxBytes <= 0 {
		r.MaxBytes = -1
	}
	if r.MaxMsgs <= 0 {
		r.MaxMsgs = -1
	}
	return TopicInfo{
		Topic: t.topic, Stream: t.stream, Partitions: t.partitions, DeadLetter: consumer.IsDeadLetterTopic(t.topic),
		Messages: st.Msgs, Bytes: st.Bytes, FirstSeq: st.FirstSeq, LastSeq: st.LastSeq, DLQDepth: dlqDepth, Retention: r,
	}
}

// Topics describes every topic, dead-letter topics included, by name.
func (s *Service) Topics(ctx context.Context) ([]TopicInfo, error) {
	if s.ev != nil {
		return s.ev.topicsInfo(ctx)
	}
	ts, err := s.topics(ctx)
	if err != nil {
		return nil, err
	}
	depth := dlqDepths(ts)
	out := make([]TopicInfo, 0, len(ts))
	for _, t := range ts {
		out = append(out, topicInfo(t, depth[t.topic]))
	}
	slices.SortFunc(out, func(a, b TopicInfo) int { return strings.Compare(a.Topic, b.Topic) })
	return out, nil
}

// dlqDepths maps each source topic to its dead-letter topic's depth.
func dlqDepths(ts []topicStream) map[string]uint64 {
	out := map[string]uint64{}
	for _, t := range ts {
		if consumer.IsDeadLetterTopic(t.topic) {
			out[consumer.SourceTopic(t.topic)] = t.info.State.Msgs
		}
	}
	return out
}

// groupOf returns the group a durable consumer belongs to, or "" for
// consumers that are not a Herald group (ephemeral readers).
func groupOf(ci *jetstream.ConsumerInfo) (group string, partitioned bool) {
	if ci.Config.Durable == "" {
		return "", false
	}
	g, ok := ci.Config.Metadata[metaGroup]
	if !ok {
		g = ci.Name
		if i := strings.LastIndex(g, "_p"); i > 0 && partitionSuffix.MatchString(g[i:]) {
			return g[:i], true
		}
		return g, false
	}
	return g, ci.Name != natsjs.ConsumerName(g)
}

// Lag reports every group's lag, optionally only on topic and/or of
// group, sorted by topic then group.
func (s *Service) Lag(ctx context.Context, topic, group string) ([]GroupLag, error) {
	if s.ev != nil {
		return s.ev.lag(ctx, topic, group)
	}
	ts, err := s.topics(ctx)
	if err != nil {
		return nil, err
	}
	depth := dlqDepths(ts)
	now := s.now()
	out := []GroupLag{}
	for _, t := range ts {
		if topic != "" && t.topic != topic {
			continue
		}
		if t.info.State.Consumers == 0 {
			continue
		}
		rows, err := s.topicLag(ctx, t, group, depth[t.topic], now)
		if err != nil {
			if topic == "" && streamGone(err) {
				continue // deleted since it was listed
			}
			return nil, err
		}
		out = append(out, rows...)
	}
	slices.SortFunc(out, func(a, b GroupLag) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return strings.Compare(a.Group, b.Group)
	})
	return out, nil
}

// topicLag reports the lag of group (every group when empty) on topic t.
func (s *Service) topicLag(ctx context.Context, t topicStream, group string, dlqDepth uint64, now time.Time) ([]GroupLag, error) {
	st, err := s.js.Stream(ctx, t.stream)
	if err != nil {
		return nil, fmt.Errorf("admin: topic %q: %w", t.topic, err)
	}
	rows := map[string]*lagRow{}
	l := st.ListConsumers(ctx)
	for ci := range l.Info() {
		g, partitioned := groupOf(ci)
		if g == "" || group != "" && g != group {
			continue
		}
		row := rows[g]
		if row == nil {
			row = &lagRow{GroupLag: GroupLag{Topic: t.topic, Group: g, DLQDepth: dlqDepth}}
			rows[g] = row
		}
		row.Consumers++
		row.KeyOrdered = row.KeyOrdered || partitioned
		row.Pending += ci.NumPending
		row.InFlight += uint64(max(ci.NumAckPending, 0))
		row.Redelivered += uint64(max(ci.NumRedelivered, 0))
		row.Paused = row.Paused || ci.Paused
		if err := s.consumerAges(ctx, t.stream, ci, row); err != nil {
			return nil, fmt.Errorf("admin: lag of group %q on topic %q: %w", g, t.topic, err)
		}
	}
	if err := l.Err(); err != nil {
		return nil, fmt.Errorf("admin: topic %q: list consumers: %w", t.topic, err)
	}
	out := make([]GroupLag, 0, len(rows))
	for _, r := range rows {
		if r.OldestUnacked != nil {
			r.UnackedSeconds = max(now.Sub(*r.OldestUnacked).Seconds(), 0)
		}
		if r.oldestPending != nil {
			r.LagSeconds = max(now.Sub(*r.oldestPending).Seconds(), 0)
		}
		out = append(out, r.GroupLag)
	}
	return out, nil
}

type lagRow struct {
	GroupLag
	oldestPending *time.Time
}

// consumerAges folds the store times of ci's oldest undelivered and
// oldest unacknowledged messages into row.
func (s *Service) consumerAges(ctx context.Context, stream string, ci *jetstream.ConsumerInfo, row *lagRow) error {
	if ci.NumPending == 0 && ci.NumAckPending == 0 {
		return nil
	}
	filters := ci.Config.FilterSubjects
	if ci.Config.FilterSubject != "" {
		filters = []string{ci.Config.FilterSubject}
	}
	if len(filters) == 0 {
		filters = []string{stream + ".>"}
	}
	oldest := func(after uint64, into **time.Time) error {
		for _, f := range filters {
			t, ok, err := s.msgTime(ctx, stream, after+1, f)
			if err != nil {
				return err
			}
			if ok && (*into == nil || t.Before(**into)) {
				*into = &t
			}
		}
		return nil
	}
	if err := oldest(ci.AckFloor.Stream, &row.OldestUnacked); err != nil {
		return err
	}
	if ci.NumPending > 0 {
		return oldest(ci.Delivered.Stream, &row.oldestPending)
	}
	return nil
}

// msgTime returns the store time of the first message of stream at or
// after seq on subject filter. Only the time is wanted: the request asks
// for no headers, and the payload is decoded and dropped.
func (s *Service) msgTime(ctx context.Context, stream string, seq uint64, filter string) (time.Time, bool, error) {
	req := fmt.Sprintf(`{"seq":%d,"next_by_subj":%q,"no_hdr":true}`, seq, filter)
	var resp struct {
		Message *struct {
			Time time.Time `json:"time"`
		} `json:"message"`
		Error *struct {
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := s.request(ctx, "$JS.API.STREAM.MSG.GET."+stream, []byte(req), &resp); err != nil {
		return time.Time{}, false, err
	}
	if resp.Error != nil {
		switch resp.Error.ErrCode {
		case int(jetstream.JSErrCodeMessageNotFound):
			return time.Time{}, false, nil
		case int(jetstream.JSErrCodeStreamNotFound):
			// Deleted meanwhile: callers listing every topic skip it.
			return time.Time{}, false, fmt.Errorf("stream %q message %d: %w", stream, seq, jetstream.ErrStreamNotFound)
		}
		return time.Time{}, false, fmt.Errorf("stream %q message %d: %s", stream, seq, resp.Error.Description)
	}
	if resp.Message == nil {
		return time.Time{}, false, nil
	}
	return resp.Message.Time, true, nil
}
