package admin

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
)

// Message is one message stored in a topic, with the CloudEvents
// attributes read from its headers (NATS binding).
type Message struct {
	Topic  string    `json:"topic"`
	Seq    uint64    `json:"seq"`
	Stored time.Time `json:"stored"`
	Route  string    `json:"route"`
	// The event's attributes; for a message that is not a CloudEvent, ID
	// is its broker message id and Type its route.
	ID            string    `json:"id"`
	Type          string    `json:"type"`
	Source        string    `json:"source,omitempty"`
	Subject       string    `json:"subject,omitempty"`
	CorrelationID string    `json:"correlation_id,omitempty"`
	CausationID   string    `json:"causation_id,omitempty"`
	DataSchema    string    `json:"dataschema,omitempty"`
	ContentType   string    `json:"content_type,omitempty"`
	Time          time.Time `json:"time"`
	// Headers holds every header (first value of each).
	Headers map[string]string `json:"headers,omitempty"`
	Data    []byte            `json:"data,omitempty"`
}

func toMessage(topic string, m *jetstream.RawStreamMsg) Message {
	h := m.Header
	msg := Message{
		Topic: topic, Seq: m.Sequence, Stored: m.Time.UTC(), Route: routeOf(m.Subject),
		ID: h.Get("ce-id"), Type: h.Get("ce-type"), Source: h.Get("ce-source"), Subject: h.Get("ce-subject"),
		CorrelationID: h.Get("ce-correlationid"), CausationID: h.Get("ce-causationid"),
		DataSchema: h.Get("ce-dataschema"), ContentType: h.Get("ce-datacontenttype"),
		Headers: headerMap(h), Data: m.Data,
	}
	if msg.ContentType == "" {
		msg.ContentType = h.Get("content-type")
	}
	if msg.ID == "" {
		msg.ID = h.Get(jetstream.MsgIDHeader)
	}
	if msg.Type == "" {
		msg.Type = msg.Route
	}
	msg.Time = msg.Stored
	if t, err := time.Parse(time.RFC3339Nano, h.Get("ce-time")); err == nil {
		msg.Time = t.UTC()
	}
	return msg
}

// Messages returns up to limit messages of topic with a sequence at or
// below before (0: from the newest), newest first, and the before of the
// next page (0 when there is none). A page of more than 100 is read in
// one pass over the last limit sequences, so it holds fewer messages when
// some of them were deleted.
func (s *Service) Messages(ctx context.Context, topic string, before uint64, limit int) ([]Message, uint64, error) {
	if s.ev != nil {
		return nil, 0, s.ev.unsupported("browse a topic")
	}
	if err := broker.ValidateName("topic", topic); err != nil {
		return nil, 0, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if limit <= 0 || limit > 10_000 {
		return nil, 0, fmt.Errorf("%w: limit %d: want 1 to 10000", ErrInvalid, limit)
	}
	_, st, err := s.topic(ctx, topic)
	if err != nil {
		return nil, 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("admin: topic %q: %w", topic, err)
	}
	first, seq := max(info.State.FirstSeq, 1), info.State.LastSeq
	if before > 0 && before < seq {
		seq = before
	}
	if limit > streamFrom {
		return s.readBack(ctx, st, topic, first, seq, limit)
	}
	out := []Message{}
	for ; seq >= first && seq > 0; seq-- {
		if len(out) == limit {
			return out, seq, nil
		}
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted: acked on a work queue, or redriven
		}
		if err != nil {
			return nil, 0, fmt.Errorf("admin: topic %q: message %d: %w", topic, seq, err)
		}
		out = append(out, toMessage(topic, m))
	}
	return out, 0, nil
}

// streamFrom is the page size above which Messages streams the range with
// an ordered consumer rather than getting the messages one by one.
const streamFrom = 100

// readBack returns the messages of the last limit sequences up to last
// (at or above first), newest first, read in one pass by an ordered
// consumer. Deleted sequences count towards limit, so a page can hold
// fewer messages.
func (s *Service) readBack(ctx context.Context, st jetstream.Stream, topic string, first, last uint64, limit int) ([]Message, uint64, error) {
	from := first
	if last >= uint64(limit) && last-uint64(limit)+1 > first {
		from = last - uint64(limit) + 1
	}
	out := []Message{}
	if last < from || last == 0 {
		return out, 0, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from, InactiveThreshold: 5 * time.Second,
	})
	if err != nil {
		return nil, 0, fmt.Errorf("admin: topic %q: read: %w", topic, err)
	}
	for done := false; !done; {
		batch, err := cons.Fetch(min(int(last-from+1), 1000), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return nil, 0, fmt.Errorf("admin: topic %q: read: %w", topic, err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			md, err := m.Metadata()
			if err != nil {
				continue
			}
			if md.Sequence.Stream > last {
				done = true
				continue
			}
			out = append(out, toMessage(topic, &jetstream.RawStreamMsg{
				Subject: m.Subject(), Sequence: md.Sequence.Stream, Header: m.Headers(), Data: m.Data(), Time: md.Timestamp,
			}))
			if md.Sequence.Stream == last {
				done = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, 0, fmt.Errorf("admin: topic %q: read: %w", topic, err)
		}
		if n == 0 {
			done = true
		}
	}
	slices.Reverse(out)
	next := uint64(0)
	if from > first {
		next = from - 1
	}
	return out, next, nil
}

// Message returns the message at seq of topic, or an error wrapping
// ErrNotFound.
func (s *Service) Message(ctx context.Context, topic string, seq uint64) (*Message, error) {
	if s.ev != nil {
		return nil, s.ev.unsupported("show a message")
	}
	if err := broker.ValidateName("topic", topic); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	_, st, err := s.topic(ctx, topic)
	if err != nil {
		return nil, err
	}
	m, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("admin: topic %q has no message %d (removed by retention, acked on a work queue, redriven or purged): %w", topic, seq, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("admin: topic %q: message %d: %w", topic, seq, err)
	}
	msg := toMessage(topic, m)
	return &msg, nil
}

// Traffic counts the messages topic stored in each of n windows of width
// d, the last ending now, oldest first. It reads the stream's index by
// time (n+1 lookups), not the messages.
func (s *Service) Traffic(ctx context.Context, topic string, n int, d time.Duration) ([]uint64, error) {
	if s.ev != nil {
		return nil, s.ev.unsupported("topic traffic")
	}
	if n < 1 || n > 1000 || d <= 0 {
		return nil, fmt.Errorf("%w: traffic of %d windows of %v: want 1 to 1000 windows of a positive width", ErrInvalid, n, d)
	}
	_, st, err := s.topic(ctx, topic)
	if err != nil {
		return nil, err
	}
	if st.CachedInfo().State.Msgs == 0 {
		return make([]uint64, n), nil
	}
	now := s.now()
	seqs := make([]uint64, n+1)
	for i := range n {
		if seqs[i], err = s.seqForTime(ctx, st, now.Add(-time.Duration(n-i)*d)); err != nil {
			return nil, fmt.Errorf("admin: traffic of topic %q: %w", topic, err)
		}
	}
	seqs[n] = st.CachedInfo().State.LastSeq + 1
	out := make([]uint64, n)
	for i := range n {
		if seqs[i+1] > seqs[i] {
			out[i] = seqs[i+1] - seqs[i]
		}
	}
	return out, nil
}

// Topology is who publishes and who consumes what, as seen in the
// traffic: publications come from a sample of the newest messages of each
// topic, consumptions from the groups' consumers.
type Topology struct {
	Publications []Publication `json:"publications"`
	Consumptions []Consumption `json:"consumptions"`
	// Sampled is how many messages the publications were read from.
	Sampled int `json:"sampled"`
	// Topics lists every topic (dead-letter topics left out).
	Topics []string `json:"topics"`
}

// Publication is a service (the events' source) publishing a type on a
// topic.
type Publication struct {
	Source string `json:"source"`
	Topic  string `json:"topic"`
	Type   string `json:"type"`
	// DataSchema is the schema reference the newest sampled event carried.
	DataSchema  string `json:"dataschema,omitempty"`
	ContentType string `json:"content_type,omitempty"`
	// Count is how many sampled messages it covers; Last when the newest
	// was stored.
	Count int       `json:"count"`
	Last  time.Time `json:"last"`
}

// Consumption is a consumer group reading a topic.
type Consumption struct {
	Group      string `json:"group"`
	Topic      string `json:"topic"`
	KeyOrdered bool   `json:"key_ordered"`
	Pending    uint64 `json:"pending"`
}

// Topology reads up to sample of the newest messages of every topic
// (dead-letter topics left out) and every group's consumers.
func (s *Service) Topology(ctx context.Context, sample int) (*Topology, error) {
	if s.ev != nil {
		return nil, s.ev.unsupported("topology")
	}
	if sample < 1 || sample > 10_000 {
		return nil, fmt.Errorf("%w: sample %d: want 1 to 10000", ErrInvalid, sample)
	}
	ts, err := s.topics(ctx)
	if err != nil {
		return nil, err
	}
	topo := &Topology{Publications: []Publication{}, Consumptions: []Consumption{}, Topics: []string{}}
	type key struct{ source, topic, typ string }
	pubs := map[key]*Publication{}
	for _, t := range ts {
		if consumer.IsDeadLetterTopic(t.topic) {
			continue
		}
		topo.Topics = append(topo.Topics, t.topic)
		msgs, _, err := s.Messages(ctx, t.topic, 0, sample)
		if err != nil {
			if errors.Is(err, ErrNotFound) || streamGone(err) {
				continue // deleted since it was listed
			}
			return nil, err
		}
		topo.Sampled += len(msgs)
		for _, m := range msgs {
			k := key{m.Source, t.topic, m.Type}
			p := pubs[k]
			if p == nil {
				p = &Publication{Source: m.Source, Topic: t.topic, Type: m.Type, DataSchema: m.DataSchema, ContentType: m.ContentType, Last: m.Stored}
				pubs[k] = p
			}
			p.Count++
		}
	}
	for _, p := range pubs {
		topo.Publications = append(topo.Publications, *p)
	}
	slices.SortFunc(topo.Publications, func(a, b Publication) int {
		return strings.Compare(a.Source+"\x00"+a.Topic+"\x00"+a.Type, b.Source+"\x00"+b.Topic+"\x00"+b.Type)
	})
	slices.Sort(topo.Topics)
	lags, err := s.Lag(ctx, "", "")
	if err != nil {
		return nil, err
	}
	for _, l := range lags {
		if consumer.IsDeadLetterTopic(l.Topic) {
			continue
		}
		topo.Consumptions = append(topo.Consumptions, Consumption{Group: l.Group, Topic: l.Topic, KeyOrdered: l.KeyOrdered, Pending: l.Pending})
	}
	return topo, nil
}
