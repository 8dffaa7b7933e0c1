package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
)

// Operations on Kafka and RabbitMQ.
//
// When events live on a broker other than JetStream (herald serve
// --broker kafka:// or amqp://), the operations run through the adapter's
// broker.Inspector: topics, groups and their lag come from the broker,
// dead letters are read from the dead-letter topic (a Kafka topic, or the
// RabbitMQ topic log) and republished by redrive, and groups are moved by
// the broker (Kafka offset commits, RabbitMQ queue refills from the topic
// log). Neither log can delete one message, so which dead letters were
// redriven or purged is Herald's own state, kept in the embedded
// JetStream's key-value bucket DLQStateBucket.

// DLQStateBucket holds, per dead-letter topic of a Kafka or RabbitMQ
// broker, which of its messages were redriven or purged.
const DLQStateBucket = "herald_dlq_removed"

// ErrUnsupported wraps errors.ErrUnsupported: the broker events live on
// cannot perform the operation (501).
var ErrUnsupported = errors.ErrUnsupported

// WithEvents makes the service operate on b, the Kafka or RabbitMQ broker
// events live on, instead of JetStream topics; b must implement
// broker.Inspector, and binding is the CloudEvents binding of its headers.
// The JetStream broker given to New still holds Herald's own state.
func WithEvents(b broker.Broker, binding event.Binding) Option {
	return func(s *Service) { s.ev = &events{s: s, b: b, binding: binding} }
}

// events performs the operations on a broker.Inspector.
type events struct {
	s       *Service
	b       broker.Broker
	in      broker.Inspector
	binding event.Binding

	kvOnce sync.Once
	kv     jetstream.KeyValue
	kvErr  error
	mu     sync.Mutex // serialises changes of the removed state
}

func (ev *events) init() error {
	in, ok := ev.b.(broker.Inspector)
	if !ok {
		return fmt.Errorf("admin: broker %T cannot be inspected (no broker.Inspector)", ev.b)
	}
	ev.in = in
	return nil
}

func (ev *events) unsupported(what string) error {
	return fmt.Errorf("admin: %s: %w on %s (it needs JetStream)", what, ErrUnsupported, ev.binding)
}

// removed is which messages of a dead-letter topic are gone: every
// sequence of partition p up to Floor[p], and those listed.
type removed struct {
	Floor map[string]uint64 `json:"floor,omitempty"`
	Seqs  []uint64          `json:"seqs,omitempty"`
}

func partOf(seq uint64) string { return strconv.FormatUint(seq>>48, 10) }

func (r *removed) gone(seq uint64) bool {
	if seq&(1<<48-1) <= r.Floor[partOf(seq)] {
		return true
	}
	_, ok := slices.BinarySearch(r.Seqs, seq)
	return ok
}

func (r *removed) add(seq uint64) {
	if i, ok := slices.BinarySearch(r.Seqs, seq); !ok {
		r.Seqs = slices.Insert(r.Seqs, i, seq)
	}
}

// compact drops the listed sequences under their floor.
func (r *removed) compact() {
	r.Seqs = slices.DeleteFunc(r.Seqs, func(seq uint64) bool { return seq&(1<<48-1) <= r.Floor[partOf(seq)] })
}

func (ev *events) bucket(ctx context.Context) (jetstream.KeyValue, error) {
	ev.kvOnce.Do(func() {
		ev.kv, ev.kvErr = ev.s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket: DLQStateBucket, Description: "Herald: redriven and purged dead letters of Kafka and RabbitMQ topics",
			Replicas: ev.s.b.Replicas(),
		})
	})
	if ev.kvErr != nil {
		return nil, fmt.Errorf("admin: dead-letter state bucket %q: %w", DLQStateBucket, ev.kvErr)
	}
	return ev.kv, nil
}

func (ev *events) loadRemoved(ctx context.Context, dlq string) (*removed, error) {
	kv, err := ev.bucket(ctx)
	if err != nil {
		return nil, err
	}
	r := &removed{Floor: map[string]uint64{}}
	e, err := kv.Get(ctx, dlq)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return r, nil
	}
	if err != nil {
		return nil, fmt.Errorf("admin: dead-letter state of %q: %w", dlq, err)
	}
	if err := json.Unmarshal(e.Value(), r); err != nil {
		return nil, fmt.Errorf("admin: dead-letter state of %q: %w", dlq, err)
	}
	if r.Floor == nil {
		r.Floor = map[string]uint64{}
	}
	return r, nil
}

func (ev *events) saveRemoved(ctx context.Context, dlq string, r *removed) error {
	kv, err := ev.bucket(ctx)
	if err != nil {
		return err
	}
	r.compact()
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if _, err := kv.Put(ctx, dlq, b); err != nil {
		return fmt.Errorf("admin: save dead-letter state of %q: %w", dlq, err)
	}
	return nil
}

// topicSet returns the broker's topics by name.
func (ev *events) topicSet(ctx context.Context) (map[string]broker.TopicState, error) {
	ts, err := ev.in.TopicStates(ctx)
	if err != nil {
		return nil, fmt.Errorf("admin: topics: %w", err)
	}
	out := make(map[string]broker.TopicState, len(ts))
	for _, t := range ts {
		out[t.Topic] = t
	}
	return out, nil
}

// held calls fn with the dead letters of dlq still held, oldest first,
// until fn returns false.
func (ev *events) held(ctx context.Context, dlq string, after uint64, fn func(*broker.StoredMessage) bool) error {
	rm, err := ev.loadRemoved(ctx, dlq)
	if err != nil {
		return err
	}
	err = ev.in.ReadTopic(ctx, dlq, after, func(m *broker.StoredMessage) bool {
		if rm.gone(m.Seq) {
			return true
		}
		return fn(m)
	})
	if errors.Is(err, broker.ErrInvalidTopic) {
		return nil // no dead letters yet
	}
	return err
}

func (ev *events) summarise(ctx context.Context, dlq string, st broker.TopicState) (DLQ, error) {
	d := DLQ{Topic: consumer.SourceTopic(dlq), DLQTopic: dlq}
	err := ev.held(ctx, dlq, 0, func(m *broker.StoredMessage) bool {
		d.Depth++
		d.Bytes += uint64(len(m.Data))
		if d.Oldest == nil {
			t := m.Time
			d.Oldest = &t
		}
		t := m.Time
		d.Newest = &t
		return true
	})
	return d, err
}

func (ev *events) dlqs(ctx context.Context) ([]DLQ, error) {
	ts, err := ev.topicSet(ctx)
	if err != nil {
		return nil, err
	}
	out := []DLQ{}
	for _, name := range slices.Sorted(mapKeys(ts)) {
		if !consumer.IsDeadLetterTopic(name) {
			continue
		}
		d, err := ev.summarise(ctx, name, ts[name])
		if err != nil {
			return nil, fmt.Errorf("admin: dead letters of %q: %w", name, err)
		}
		out = append(out, d)
	}
	return out, nil
}

func mapKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func (ev *events) entry(dlq string, m *broker.StoredMessage, full bool) Entry {
	h := m.Header
	e := Entry{
		ID: FormatEntryID(dlq, m.Seq), DLQTopic: dlq, Seq: m.Seq, Stored: m.Time,
		Topic: h[consumer.HeaderOriginalTopic], Group: h[consumer.HeaderGroup], Handler: h[consumer.HeaderHandler],
		Error: h[consumer.HeaderError], Key: h[consumer.HeaderOriginalKey], Route: m.Route, Size: len(m.Data),
	}
	if ce, err := ev.binding.Decode(h, m.Data); err == nil {
		e.EventID, e.Type, e.Source, e.Subject, e.CorrelationID = ce.ID, ce.Type, ce.Source, ce.Subject, ce.CorrelationID
	}
	if e.Topic == "" {
		e.Topic = consumer.SourceTopic(dlq)
	}
	if e.EventID == "" {
		e.EventID = h[consumer.HeaderOriginalID]
	}
	if e.Key == "" {
		e.Key = m.Key
	}
	if e.Type == "" {
		e.Type = e.Route
	}
	e.OriginalSeq, _ = strconv.ParseUint(h[consumer.HeaderOriginalSequence], 10, 64)
	e.Attempts, _ = strconv.Atoi(h[consumer.HeaderAttempts])
	e.Redrives, _ = strconv.Atoi(h[consumer.HeaderRedrives])
	e.FirstFailure, _ = time.Parse(time.RFC3339Nano, h[consumer.HeaderFirstFailure])
	e.LastFailure, _ = time.Parse(time.RFC3339Nano, h[consumer.HeaderLastFailure])
	if full {
		e.Headers = make(map[string]string, len(h))
		for k, v := range h {
			e.Headers[k] = v
		}
		if json.Valid(m.Data) {
			e.Data = json.RawMessage(m.Data)
		} else {
			e.DataBase64 = m.Data
		}
	}
	return e
}

func (ev *events) dlqEntries(ctx context.Context, topic string, after uint64, limit int) ([]Entry, uint64, error) {
	dlq := DeadLetterTopicOf(topic)
	entries := []Entry{}
	var next uint64
	if after == math.MaxUint64 {
		return entries, 0, nil
	}
	err := ev.held(ctx, dlq, after, func(m *broker.StoredMessage) bool {
		if len(entries) == limit {
			next = entries[len(entries)-1].Seq
			return false
		}
		entries = append(entries, ev.entry(dlq, m, false))
		return true
	})
	if err != nil {
		return nil, 0, fmt.Errorf("admin: list %q: %w", dlq, err)
	}
	return entries, next, nil
}

// find returns the held dead letter at seq of dlq.
func (ev *events) find(ctx context.Context, dlq string, seq uint64) (*broker.StoredMessage, error) {
	var found *broker.StoredMessage
	err := ev.held(ctx, dlq, seq-1, func(m *broker.StoredMessage) bool {
		if m.Seq == seq {
			found = m
		}
		return false
	})
	if err != nil {
		return nil, err
	}
	if found == nil {
		return nil, fmt.Errorf("admin: dead letter %s: %w (redriven or purged?)", FormatEntryID(dlq, seq), ErrNotFound)
	}
	return found, nil
}

func (ev *events) dlqEntry(ctx context.Context, id string) (*Entry, error) {
	dlq, seq, err := ParseEntryID(id)
	if err != nil {
		return nil, err
	}
	m, err := ev.find(ctx, dlq, seq)
	if err != nil {
		return nil, err
	}
	e := ev.entry(dlq, m, true)
	return &e, nil
}

// redriveMessage rebuilds the original message of the dead letter m of
// dlq, as redriveMessage does on JetStream.
func (ev *events) redriveMessage(dlq string, m *broker.StoredMessage) (*broker.Message, error) {
	h := m.Header
	topic := h[consumer.HeaderOriginalTopic]
	if topic == "" {
		return nil, fmt.Errorf("no %s header: not a Herald dead letter", consumer.HeaderOriginalTopic)
	}
	if src := consumer.SourceTopic(dlq); topic != src {
		return nil, fmt.Errorf("%s header names topic %q, but %s collects the dead letters of %q: refused", consumer.HeaderOriginalTopic, topic, dlq, src)
	}
	if err := broker.ValidateRoute(m.Route); err != nil {
		return nil, err
	}
	redrives, _ := strconv.Atoi(h[consumer.HeaderRedrives])
	group := h[consumer.HeaderGroup]
	key := h[consumer.HeaderOriginalKey]
	if key == "" {
		key = m.Key
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		out[k] = v
	}
	for _, k := range failureHeaders {
		delete(out, k)
	}
	out[consumer.HeaderRedrives] = strconv.Itoa(redrives + 1)
	if group != "" {
		out[consumer.HeaderRedriveGroup] = group
	}
	return &broker.Message{Topic: topic, Route: m.Route, Key: key, ID: "redrive:" + dlq + ":" + strconv.FormatUint(m.Seq, 10), Header: out, Data: m.Data}, nil
}

func (ev *events) redrive(ctx context.Context, req RedriveRequest, f Filter) (*RedriveResult, error) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	res := &RedriveResult{DryRun: req.DryRun, Items: []RedriveItem{}}
	picked := map[string]map[uint64]bool{} // dlq -> seqs, when IDs are given
	var dlqs []string
	switch {
	case len(req.IDs) > 0:
		for _, id := range req.IDs {
			dlq, seq, _ := ParseEntryID(id)
			if req.Topic != "" && DeadLetterTopicOf(req.Topic) != dlq {
				return nil, fmt.Errorf("%w: dead letter %s is not in topic %q", ErrInvalid, id, req.Topic)
			}
			if picked[dlq] == nil {
				picked[dlq] = map[uint64]bool{}
				dlqs = append(dlqs, dlq)
			}
			picked[dlq][seq] = true
		}
	case req.Topic != "":
		dlqs = []string{DeadLetterTopicOf(req.Topic)}
	default:
		all, err := ev.dlqs(ctx)
		if err != nil {
			return nil, err
		}
		for _, d := range all {
			dlqs = append(dlqs, d.DLQTopic)
		}
	}
	full := func() bool { return req.Limit > 0 && res.Matched >= req.Limit }
	for _, dlq := range dlqs {
		if full() {
			break
		}
		rm, err := ev.loadRemoved(ctx, dlq)
		if err != nil {
			return res, err
		}
		var msgs []*broker.Message
		var seqs []uint64
		var items []int
		err = ev.held(ctx, dlq, 0, func(m *broker.StoredMessage) bool {
			if full() {
				return false
			}
			if picked[dlq] != nil && !picked[dlq][m.Seq] {
				return true
			}
			e := ev.entry(dlq, m, false)
			if !f.Match(&e) {
				return true
			}
			res.Matched++
			item := -1
			if len(res.Items) < maxRedriveItems {
				item = len(res.Items)
				res.Items = append(res.Items, RedriveItem{ID: e.ID, Topic: e.Topic, Type: e.Type, EventID: e.EventID, Group: e.Group, Error: e.Error})
			} else {
				res.Truncated = true
			}
			msg, err := ev.redriveMessage(dlq, m)
			if err != nil {
				res.Failed++
				if item >= 0 {
					res.Items[item].Failed = err.Error()
				}
				return true
			}
			if !req.DryRun {
				msgs, seqs, items = append(msgs, msg), append(seqs, m.Seq), append(items, item)
			}
			return true
		})
		if err != nil {
			return res, fmt.Errorf("admin: redrive %q: %w", dlq, err)
		}
		for start := 0; start < len(msgs); start += redriveBatch {
			end := min(start+redriveBatch, len(msgs))
			err := ev.b.Publish(ctx, msgs[start:end]...)
			var perr *broker.PublishError
			if err != nil && !errors.As(err, &perr) {
				return res, errors.Join(fmt.Errorf("admin: redrive %q: %w", dlq, err), ev.saveRemoved(ctx, dlq, rm))
			}
			for i := start; i < end; i++ {
				if perr != nil {
					if e := perr.Failed(i - start); e != nil {
						res.Failed++
						if items[i] >= 0 {
							res.Items[items[i]].Failed = "republish: " + e.Error()
						}
						continue
					}
				}
				rm.add(seqs[i])
				res.Redriven++
			}
		}
		if len(msgs) > 0 {
			if err := ev.saveRemoved(ctx, dlq, rm); err != nil {
				return res, err
			}
		}
	}
	return res, nil
}

func (ev *events) purge(ctx context.Context, dlq string) (uint64, error) {
	ev.mu.Lock()
	defer ev.mu.Unlock()
	rm, err := ev.loadRemoved(ctx, dlq)
	if err != nil {
		return 0, err
	}
	var n uint64
	err = ev.held(ctx, dlq, 0, func(m *broker.StoredMessage) bool {
		n++
		p := partOf(m.Seq)
		rm.Floor[p] = max(rm.Floor[p], m.Seq&(1<<48-1))
		return true
	})
	if err != nil {
		return 0, fmt.Errorf("admin: purge %q: %w", dlq, err)
	}
	if n > 0 {
		if err := ev.saveRemoved(ctx, dlq, rm); err != nil {
			return 0, err
		}
	}
	ev.s.log.Info("dead letters purged", "topic", dlq, "count", n)
	return n, nil
}

func (ev *events) lag(ctx context.Context, topic, group string) ([]GroupLag, error) {
	gs, err := ev.in.GroupStates(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("admin: groups: %w", err)
	}
	depth := map[string]uint64{}
	out := []GroupLag{}
	for _, g := range gs {
		if group != "" && g.Group != group || consumer.IsDeadLetterTopic(g.Topic) {
			continue
		}
		d, ok := depth[g.Topic]
		if !ok {
			s, err := ev.summarise(ctx, DeadLetterTopicOf(g.Topic), broker.TopicState{})
			if err != nil {
				return nil, err
			}
			d, depth[g.Topic] = s.Depth, s.Depth
		}
		out = append(out, GroupLag{Topic: g.Topic, Group: g.Group, Consumers: g.Members, Pending: g.Pending, InFlight: g.InFlight, DLQDepth: d})
	}
	return out, nil
}

func (ev *events) topicsInfo(ctx context.Context) ([]TopicInfo, error) {
	ts, err := ev.in.TopicStates(ctx)
	if err != nil {
		return nil, fmt.Errorf("admin: topics: %w", err)
	}
	depth := map[string]uint64{}
	for _, t := range ts {
		if consumer.IsDeadLetterTopic(t.Topic) {
			d, err := ev.summarise(ctx, t.Topic, t)
			if err != nil {
				return nil, err
			}
			depth[t.Topic] = d.Depth
		}
	}
	out := make([]TopicInfo, 0, len(ts))
	for _, t := range ts {
		r := RetentionConfig{MaxAge: "unlimited", MaxBytes: -1, MaxMsgs: -1}
		if t.Retention.MaxAge > 0 {
			r.MaxAge = t.Retention.MaxAge.String()
		}
		if t.Retention.MaxBytes > 0 {
			r.MaxBytes = t.Retention.MaxBytes
		}
		msgs := t.Messages
		if d, ok := depth[t.Topic]; ok {
			msgs = d
		}
		out = append(out, TopicInfo{
			Topic: t.Topic, Stream: t.Topic, Partitions: t.Partitions, DeadLetter: consumer.IsDeadLetterTopic(t.Topic),
			Messages: msgs, Bytes: t.Bytes, FirstSeq: t.FirstSeq, LastSeq: t.LastSeq,
			DLQDepth: depth[DeadLetterTopicOf(t.Topic)], Retention: r,
		})
	}
	slices.SortFunc(out, func(a, b TopicInfo) int { return strings.Compare(a.Topic, b.Topic) })
	return out, nil
}

// move maps the broker's group errors to the service's sentinels.
func (ev *events) move(ctx context.Context, topic, group string, to broker.Start, create bool) (uint64, error) {
	seq, err := ev.in.MoveGroup(ctx, topic, group, to, create)
	switch {
	case errors.Is(err, broker.ErrGroupBusy):
		return 0, fmt.Errorf("admin: %w: %w; stop the group's members and run it again", ErrConflict, err)
	case errors.Is(err, broker.ErrGroupExists):
		return 0, fmt.Errorf("admin: %w: %w; rewind it with `herald replay --group %s --to ...`, or choose a new name", ErrConflict, err, group)
	case errors.Is(err, broker.ErrGroupNotFound):
		return 0, fmt.Errorf("admin: %w: %w", ErrNotFound, err)
	case errors.Is(err, broker.ErrInvalidTopic):
		return 0, fmt.Errorf("admin: %w: %w", ErrInvalid, err)
	}
	return seq, err
}

func (ev *events) rewind(ctx context.Context, group, topic string, to broker.Start) (*ReplayResult, error) {
	var topics []string
	if topic != "" {
		topics = []string{topic}
	} else {
		gs, err := ev.in.GroupStates(ctx, "")
		if err != nil {
			return nil, fmt.Errorf("admin: groups: %w", err)
		}
		for _, g := range gs {
			if g.Group == group && !g.Foreign {
				topics = append(topics, g.Topic)
			}
		}
		if len(topics) == 0 {
			return nil, fmt.Errorf("admin: group %q has no consumers on any topic: %w", group, ErrNotFound)
		}
	}
	res := &ReplayResult{Group: group}
	for _, t := range topics {
		seq, err := ev.move(ctx, t, group, to, false)
		if err != nil {
			return nil, fmt.Errorf("admin: rewind group %q on topic %q: %w", group, t, err)
		}
		res.Topics = append(res.Topics, ReplayTopic{Topic: t, Seq: seq})
		ev.s.log.Info("group rewound", "group", group, "topic", t, "to", to.String(), "broker", ev.binding.String())
	}
	return res, nil
}

func (ev *events) replayInto(ctx context.Context, req ReplayIntoRequest) (*ReplayResult, error) {
	seq, err := ev.move(ctx, req.Topic, req.Group, req.From, true)
	if err != nil {
		return nil, fmt.Errorf("admin: replay topic %q into group %q: %w", req.Topic, req.Group, err)
	}
	ev.s.log.Info("group created for replay", "group", req.Group, "topic", req.Topic, "from", req.From.String(), "broker", ev.binding.String())
	return &ReplayResult{Group: req.Group, Topics: []ReplayTopic{{Topic: req.Topic, Seq: seq}}}, nil
}

func (ev *events) setRetention(ctx context.Context, topic string, r Retention) (*TopicInfo, error) {
	tm, ok := ev.b.(broker.TopicManager)
	if !ok {
		return nil, ev.unsupported("set retention")
	}
	if r.MaxMsgs != nil && *r.MaxMsgs > 0 {
		return nil, fmt.Errorf("%w: retention by message count: %s keeps by age and size", ErrInvalid, ev.binding)
	}
	var cfg broker.TopicConfig
	ts, err := ev.in.TopicStates(ctx)
	if err != nil {
		return nil, fmt.Errorf("admin: topics: %w", err)
	}
	for _, t := range ts {
		if t.Topic == topic {
			cfg = t.Retention
			cfg.Partitions = t.Partitions
		}
	}
	if r.MaxAge != nil {
		cfg.MaxAge = max(*r.MaxAge, 0)
	}
	if r.MaxBytes != nil {
		cfg.MaxBytes = max(*r.MaxBytes, 0)
	}
	if err := tm.EnsureTopic(ctx, topic, cfg); err != nil {
		return nil, fmt.Errorf("admin: set retention of %q: %w", topic, err)
	}
	infos, err := ev.topicsInfo(ctx)
	if err != nil {
		return nil, err
	}
	for _, t := range infos {
		if t.Topic == topic {
			return &t, nil
		}
	}
	return nil, fmt.Errorf("admin: topic %q: %w", topic, ErrNotFound)
}
