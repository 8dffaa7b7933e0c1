package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
)

// DeadLetterTopicOf returns the dead-letter topic for topic: topic itself
// when it already is one ("orders.dlq"), else topic + ".dlq".
func DeadLetterTopicOf(topic string) string {
	if consumer.IsDeadLetterTopic(topic) {
		return topic
	}
	return consumer.DeadLetterTopic(topic)
}

// FormatEntryID returns the id of the dead letter at seq of dlqTopic.
func FormatEntryID(dlqTopic string, seq uint64) string {
	return dlqTopic + ":" + strconv.FormatUint(seq, 10)
}

// ParseEntryID reads "<topic>:<seq>". The topic may be the dead-letter
// topic ("orders.dlq:42") or its source topic ("orders:42").
func ParseEntryID(id string) (dlqTopic string, seq uint64, err error) {
	i := strings.LastIndexByte(id, ':')
	if i <= 0 {
		return "", 0, fmt.Errorf("%w: dead-letter id %q: want TOPIC:SEQ, for example orders.dlq:42", ErrInvalid, id)
	}
	seq, err = strconv.ParseUint(id[i+1:], 10, 64)
	if err != nil || seq == 0 {
		return "", 0, fmt.Errorf("%w: dead-letter id %q: the sequence after ':' must be a positive integer", ErrInvalid, id)
	}
	topic := id[:i]
	if err := broker.ValidateName("topic", topic); err != nil {
		return "", 0, fmt.Errorf("%w: dead-letter id %q: %w", ErrInvalid, id, err)
	}
	return DeadLetterTopicOf(topic), seq, nil
}

// DLQ summarises one dead-letter topic.
type DLQ struct {
	// Topic is the source topic, DLQTopic where its dead letters go.
	Topic    string `json:"topic"`
	DLQTopic string `json:"dlq_topic"`
	// Depth is the number of dead letters held.
	Depth uint64 `json:"depth"`
	Bytes uint64 `json:"bytes"`
	// Oldest and Newest are when the first and last held dead letter was
	// stored; nil when the queue is empty.
	Oldest *time.Time `json:"oldest,omitempty"`
	Newest *time.Time `json:"newest,omitempty"`
}

// Entry is one dead letter: the failed event and the failure's context.
type Entry struct {
	// ID is "<dead-letter topic>:<sequence>"; DLQTopic and Seq are its parts.
	ID       string    `json:"id"`
	DLQTopic string    `json:"dlq_topic"`
	Seq      uint64    `json:"seq"`
	Stored   time.Time `json:"stored"`
	// Topic and OriginalSeq locate the event where it failed.
	Topic       string `json:"topic"`
	OriginalSeq uint64 `json:"original_seq,omitempty"`
	// Group and Handler failed on it; Error is the last failure.
	Group        string    `json:"group,omitempty"`
	Handler      string    `json:"handler,omitempty"`
	Error        string    `json:"error"`
	Attempts     int       `json:"attempts"`
	FirstFailure time.Time `json:"first_failure,omitzero"`
	LastFailure  time.Time `json:"last_failure,omitzero"`
	// Redrives counts earlier redrives of this event.
	Redrives int `json:"redrives"`
	// The event's attributes (from its CloudEvents headers).
	EventID       string `json:"event_id,omitempty"`
	Type          string `json:"type"`
	Source        string `json:"source,omitempty"`
	Subject       string `json:"subject,omitempty"`
	CorrelationID string `json:"correlation_id,omitempty"`
	Key           string `json:"key,omitempty"`
	Route         string `json:"route"`
	Size          int    `json:"size"`
	// Headers and the payload are filled by DLQEntry only: Data when the
	// payload is JSON, DataBase64 otherwise.
	Headers    map[string]string `json:"headers,omitempty"`
	Data       json.RawMessage   `json:"data,omitempty"`
	DataBase64 []byte            `json:"data_base64,omitempty"`
}

// dlqStream returns dlq's stream, or nil when the topic has no dead
// letters yet (its source topic exists, its dead-letter topic does not).
// It returns an error wrapping ErrNotFound when neither exists.
func (s *Service) dlqStream(ctx context.Context, dlq string) (jetstream.Stream, error) {
	_, st, err := s.topic(ctx, dlq)
	if errors.Is(err, ErrNotFound) {
		if _, _, serr := s.topic(ctx, consumer.SourceTopic(dlq)); serr == nil {
			return nil, nil
		}
	}
	return st, err
}

// DLQs summarises every dead-letter topic.
func (s *Service) DLQs(ctx context.Context) ([]DLQ, error) {
	if s.ev != nil {
		return s.ev.dlqs(ctx)
	}
	ts, err := s.topics(ctx)
	if err != nil {
		return nil, err
	}
	out := []DLQ{}
	for _, t := range ts {
		if consumer.IsDeadLetterTopic(t.topic) {
			out = append(out, summarise(t))
		}
	}
	return out, nil
}

func summarise(t topicStream) DLQ {
	st := t.info.State
	d := DLQ{Topic: consumer.SourceTopic(t.topic), DLQTopic: t.topic, Depth: st.Msgs, Bytes: st.Bytes}
	if st.Msgs > 0 {
		first, last := st.FirstTime, st.LastTime
		d.Oldest, d.Newest = &first, &last
	}
	return d
}

// DLQEntries lists up to limit dead letters of topic (a source topic or
// its dead-letter topic) with a sequence above after, oldest first, without
// headers and payloads. next is the after of the following page, 0 when
// there is none.
func (s *Service) DLQEntries(ctx context.Context, topic string, after uint64, limit int) (entries []Entry, next uint64, err error) {
	if limit <= 0 || limit > 10_000 {
		return nil, 0, fmt.Errorf("%w: limit %d: want 1 to 10000", ErrInvalid, limit)
	}
	if s.ev != nil {
		return s.ev.dlqEntries(ctx, topic, after, limit)
	}
	dlq := DeadLetterTopicOf(topic)
	st, err := s.dlqStream(ctx, dlq)
	if err != nil || st == nil {
		return []Entry{}, 0, err
	}
	entries = []Entry{}
	if after == math.MaxUint64 {
		return entries, 0, nil // nothing comes after the last sequence there can be
	}
	last := st.CachedInfo().State.LastSeq
	err = s.scan(ctx, st, after+1, last, func(m *jetstream.RawStreamMsg) bool {
		if len(entries) == limit {
			next = entries[len(entries)-1].Seq
			return false
		}
		entries = append(entries, toEntry(dlq, m, false))
		return true
	})
	if err != nil {
		return nil, 0, fmt.Errorf("admin: list %q: %w", dlq, err)
	}
	return entries, next, nil
}

// DLQEntry returns the dead letter id ("<topic>:<seq>") with its headers
// and payload.
func (s *Service) DLQEntry(ctx context.Context, id string) (*Entry, error) {
	if s.ev != nil {
		return s.ev.dlqEntry(ctx, id)
	}
	dlq, seq, err := ParseEntryID(id)
	if err != nil {
		return nil, err
	}
	_, st, err := s.topic(ctx, dlq)
	if err != nil {
		return nil, err
	}
	m, err := st.GetMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, fmt.Errorf("admin: dead letter %s: %w (redriven or purged?)", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("admin: dead letter %s: %w", id, err)
	}
	e := toEntry(dlq, m, true)
	return &e, nil
}

// scan calls fn with the messages of st from sequence from up to last, in
// order, until fn returns false. A range of more than streamFrom
// sequences is read in one pass by an ordered consumer, shorter ones one
// message at a time.
func (s *Service) scan(ctx context.Context, st jetstream.Stream, from, last uint64, fn func(*jetstream.RawStreamMsg) bool) error {
	from = max(from, 1)
	if last < from {
		return nil
	}
	filter := st.CachedInfo().Config.Name + ".>"
	if last-from < streamFrom {
		for seq := from; seq <= last; {
			m, err := st.GetMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				return nil
			}
			if err != nil {
				return err
			}
			if m.Sequence > last || !fn(m) {
				return nil
			}
			seq = m.Sequence + 1
		}
		return nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from,
		InactiveThreshold: 5 * time.Second,
	})
	if err != nil {
		return err
	}
	for {
		// No wait: what the stream holds comes at once, and the pass ends
		// when it is read, deleted sequences or not.
		batch, err := cons.FetchNoWait(int(min(last-from+1, scanBatch)))
		if err != nil {
			return err
		}
		n, done := 0, false
		for m := range batch.Messages() {
			n++
			if done {
				continue // drain the batch
			}
			md, err := m.Metadata()
			if err != nil {
				return err
			}
			seq := md.Sequence.Stream
			if seq > last {
				done = true
				continue
			}
			if !fn(&jetstream.RawStreamMsg{Subject: m.Subject(), Sequence: seq, Header: m.Headers(), Data: m.Data(), Time: md.Timestamp}) ||
				seq == last || md.NumPending == 0 {
				done = true
			}
			from = seq + 1
		}
		if err := batch.Error(); err != nil {
			return err
		}
		if done || n == 0 {
			return nil
		}
	}
}

// scanBatch is how many messages scan asks for at once.
const scanBatch = 1000

func toEntry(dlq string, m *jetstream.RawStreamMsg, full bool) Entry {
	h := m.Header
	e := Entry{
		ID:            FormatEntryID(dlq, m.Sequence),
		DLQTopic:      dlq,
		Seq:           m.Sequence,
		Stored:        m.Time,
		Topic:         h.Get(consumer.HeaderOriginalTopic),
		Group:         h.Get(consumer.HeaderGroup),
		Handler:       h.Get(consumer.HeaderHandler),
		Error:         h.Get(consumer.HeaderError),
		EventID:       h.Get("ce-id"),
		Type:          h.Get("ce-type"),
		Source:        h.Get("ce-source"),
		Subject:       h.Get("ce-subject"),
		CorrelationID: h.Get("ce-correlationid"),
		Key:           h.Get(consumer.HeaderOriginalKey),
		Route:         routeOf(m.Subject),
		Size:          len(m.Data),
	}
	if e.Topic == "" {
		e.Topic = consumer.SourceTopic(dlq)
	}
	if e.EventID == "" {
		e.EventID = h.Get(consumer.HeaderOriginalID)
	}
	if e.Key == "" {
		e.Key = h.Get(natsjs.HeaderKey)
	}
	if e.Type == "" {
		e.Type = e.Route
	}
	e.OriginalSeq, _ = strconv.ParseUint(h.Get(consumer.HeaderOriginalSequence), 10, 64)
	e.Attempts, _ = strconv.Atoi(h.Get(consumer.HeaderAttempts))
	e.Redrives, _ = strconv.Atoi(h.Get(consumer.HeaderRedrives))
	e.FirstFailure, _ = time.Parse(time.RFC3339Nano, h.Get(consumer.HeaderFirstFailure))
	e.LastFailure, _ = time.Parse(time.RFC3339Nano, h.Get(consumer.HeaderLastFailure))
	if full {
		e.Headers = headerMap(h)
		if json.Valid(m.Data) {
			e.Data = json.RawMessage(m.Data)
		} else {
			e.DataBase64 = m.Data
		}
	}
	return e
}

// routeOf returns the route of a message stored on "<stream>.<partition>.<route>".
func routeOf(subject string) string {
	_, rest, _ := strings.Cut(subject, ".")
	_, route, _ := strings.Cut(rest, ".")
	return route
}

// RedriveRequest selects dead letters to republish.
type RedriveRequest struct {
	// Topic is a source topic or its dead-letter topic; empty: every
	// dead-letter topic (IDs name their own).
	Topic string `json:"topic,omitempty"`
	// IDs, when set, redrives these entries only (still subject to Filter).
	IDs []string `json:"ids,omitempty"`
	// Filter, see ParseFilter.
	Filter string `json:"filter,omitempty"`
	// DryRun lists what would be redriven and changes nothing.
	DryRun bool `json:"dry_run,omitempty"`
	// Limit redrives at most this many entries; 0: no limit.
	Limit int `json:"limit,omitempty"`
}

// RedriveItem is one entry a redrive selected.
type RedriveItem struct {
	ID      string `json:"id"`
	Topic   string `json:"topic"`
	Type    string `json:"type"`
	EventID string `json:"event_id,omitempty"`
	Group   string `json:"group,omitempty"`
	Error   string `json:"error"`
	// Failed says why this entry was not redriven; empty on success.
	Failed string `json:"failed,omitempty"`
}

// RedriveResult says what a redrive did.
type RedriveResult struct {
	DryRun bool `json:"dry_run"`
	// Matched entries were selected; Redriven of them were republished
	// and removed from their dead-letter topic; Failed were not.
	Matched  int `json:"matched"`
	Redriven int `json:"redriven"`
	Failed   int `json:"failed"`
	// Items lists the first 1000 selected entries; Truncated says there
	// were more.
	Items     []RedriveItem `json:"items"`
	Truncated bool          `json:"truncated,omitempty"`
}

const maxRedriveItems = 1000

// Redrive republishes the selected dead letters to their original topics
// and removes them from the dead-letter topic. The republished message has
// the original route, key, CloudEvents headers and payload, none of the
// failure headers, Herald-Redrives one higher, and the broker message id
// "redrive:<dead-letter stream>:<sequence>": a redrive that is repeated,
// or resumed after a crash between publishing and removing, is
// deduplicated by the topic's dedup window (default 2 minutes). Every
// group of the topic receives the event again; handlers of groups that
// had handled it see a duplicate (idempotent consumers drop it).
//
// A redrive stops at the entries present when it began, so events that
// fail again meanwhile wait for the next redrive.
func (s *Service) Redrive(ctx context.Context, req RedriveRequest) (*RedriveResult, error) {
	f, err := req.check()
	if err != nil {
		return nil, err
	}
	if s.ev != nil {
		return s.ev.redrive(ctx, req, f)
	}
	rd := &redriver{s: s, f: f, req: req, res: &RedriveResult{DryRun: req.DryRun, Items: []RedriveItem{}}}
	if len(req.IDs) > 0 {
		return rd.res, rd.ids(ctx)
	}
	var dlqs []string
	if req.Topic != "" {
		dlqs = []string{DeadLetterTopicOf(req.Topic)}
	} else {
		all, err := s.DLQs(ctx)
		if err != nil {
			return nil, err
		}
		for _, d := range all {
			dlqs = append(dlqs, d.DLQTopic)
		}
	}
	for _, dlq := range dlqs {
		if err := rd.topic(ctx, dlq); err != nil {
			return rd.res, err
		}
	}
	return rd.res, nil
}

// check validates req without touching the broker and returns its filter.
func (req RedriveRequest) check() (Filter, error) {
	f, err := ParseFilter(req.Filter)
	if err != nil {
		return Filter{}, err
	}
	if req.Limit < 0 {
		return Filter{}, fmt.Errorf("%w: limit %d must not be negative", ErrInvalid, req.Limit)
	}
	if req.Topic != "" {
		if err := broker.ValidateName("topic", req.Topic); err != nil {
			return Filter{}, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	if len(req.IDs) > 100_000 {
		return Filter{}, fmt.Errorf("%w: %d ids: at most 100000 per redrive", ErrInvalid, len(req.IDs))
	}
	for _, id := range req.IDs {
		if _, _, err := ParseEntryID(id); err != nil {
			return Filter{}, err
		}
	}
	return f, nil
}

type redriver struct {
	s     *Service
	f     Filter
	req   RedriveRequest
	res   *RedriveResult
	batch []redriveMsg
}

type redriveMsg struct {
	st   jetstream.Stream
	item int // index in res.Items, -1 when not listed
	seq  uint64
	msg  *broker.Message
}

const redriveBatch = 256

func (rd *redriver) full() bool { return rd.req.Limit > 0 && rd.res.Matched >= rd.req.Limit }

func (rd *redriver) topic(ctx context.Context, dlq string) error {
	st, err := rd.s.dlqStream(ctx, dlq)
	if err != nil || st == nil {
		return err
	}
	last := st.CachedInfo().State.LastSeq
	var addErr error
	err = rd.s.scan(ctx, st, 1, last, func(m *jetstream.RawStreamMsg) bool {
		if rd.full() {
			return false
		}
		addErr = rd.add(ctx, st, dlq, m)
		return addErr == nil
	})
	if err == nil {
		err = addErr
	}
	if err == nil {
		err = rd.flush(ctx)
	}
	if err != nil {
		return fmt.Errorf("admin: redrive %q: %w", dlq, err)
	}
	return nil
}

func (rd *redriver) ids(ctx context.Context) error {
	streams := map[string]jetstream.Stream{}
	for _, id := range rd.req.IDs {
		if rd.full() {
			break
		}
		dlq, seq, err := ParseEntryID(id)
		if err != nil {
			return err
		}
		if rd.req.Topic != "" && DeadLetterTopicOf(rd.req.Topic) != dlq {
			return fmt.Errorf("%w: dead letter %s is not in topic %q", ErrInvalid, id, rd.req.Topic)
		}
		st := streams[dlq]
		if st == nil {
			if _, st, err = rd.s.topic(ctx, dlq); err != nil {
				return err
			}
			streams[dlq] = st
		}
		m, err := st.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return fmt.Errorf("admin: dead letter %s: %w (redriven or purged?)", id, ErrNotFound)
		}
		if err != nil {
			return fmt.Errorf("admin: dead letter %s: %w", id, err)
		}
		if err := rd.add(ctx, st, dlq, m); err != nil {
			return err
		}
	}
	return rd.flush(ctx)
}

func (rd *redriver) add(ctx context.Context, st jetstream.Stream, dlq string, m *jetstream.RawStreamMsg) error {
	e := toEntry(dlq, m, false)
	if !rd.f.Match(&e) {
		return nil
	}
	rd.res.Matched++
	item := -1
	if len(rd.res.Items) < maxRedriveItems {
		item = len(rd.res.Items)
		rd.res.Items = append(rd.res.Items, RedriveItem{ID: e.ID, Topic: e.Topic, Type: e.Type, EventID: e.EventID, Group: e.Group, Error: e.Error})
	} else {
		rd.res.Truncated = true
	}
	msg, err := redriveMessage(dlq, st.CachedInfo().Config.Name, m)
	if err != nil {
		rd.fail(item, err.Error())
		return nil
	}
	if rd.req.DryRun {
		return nil
	}
	rd.batch = append(rd.batch, redriveMsg{st: st, item: item, seq: m.Sequence, msg: msg})
	if len(rd.batch) >= redriveBatch {
		return rd.flush(ctx)
	}
	return nil
}

func (rd *redriver) fail(item int, why string) {
	rd.res.Failed++
	if item >= 0 {
		rd.res.Items[item].Failed = why
	}
}

// flush publishes the batch, then removes each confirmed message from its
// dead-letter topic.
func (rd *redriver) flush(ctx context.Context) error {
	if len(rd.batch) == 0 {
		return nil
	}
	msgs := make([]*broker.Message, len(rd.batch))
	for i, b := range rd.batch {
		msgs[i] = b.msg
	}
	err := rd.s.b.Publish(ctx, msgs...)
	var perr *broker.PublishError
	if err != nil && !errors.As(err, &perr) {
		return err
	}
	for i, b := range rd.batch {
		if perr != nil {
			if e := perr.Failed(i); e != nil {
				rd.fail(b.item, "republish: "+e.Error())
				continue
			}
		}
		if err := b.st.DeleteMsg(ctx, b.seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			// Republished; a redrive run again is deduplicated.
			rd.fail(b.item, "republished, but not removed from the dead-letter topic (redrive again to remove it): "+err.Error())
			continue
		}
		rd.res.Redriven++
	}
	rd.batch = rd.batch[:0]
	return ctx.Err()
}

// failureHeaders are removed from a redriven message; the last three are
// then set again (redrive count, redrive group, key).
var failureHeaders = []string{
	consumer.HeaderError, consumer.HeaderAttempts, consumer.HeaderFirstFailure, consumer.HeaderLastFailure,
	consumer.HeaderHandler, consumer.HeaderGroup, consumer.HeaderOriginalTopic, consumer.HeaderOriginalSequence,
	consumer.HeaderOriginalID, consumer.HeaderOriginalKey, consumer.HeaderRedrives, consumer.HeaderRedriveGroup, natsjs.HeaderKey,
}

// redriveMessage rebuilds the original message of the dead letter m of
// dead-letter topic dlq, held in stream. A dead letter goes back only to
// the topic its dead-letter topic collects for: whoever could publish into
// the dead-letter topic must not be able to steer a redrive into another
// service's topic by naming it in a header.
func redriveMessage(dlq, stream string, m *jetstream.RawStreamMsg) (*broker.Message, error) {
	h := m.Header
	topic := h.Get(consumer.HeaderOriginalTopic)
	if topic == "" {
		return nil, fmt.Errorf("no %s header: not a Herald dead letter", consumer.HeaderOriginalTopic)
	}
	if err := broker.ValidateName("topic", topic); err != nil {
		return nil, fmt.Errorf("%s header: %w", consumer.HeaderOriginalTopic, err)
	}
	if src := consumer.SourceTopic(dlq); topic != src {
		return nil, fmt.Errorf("%s header names topic %q, but %s collects the dead letters of %q: refused", consumer.HeaderOriginalTopic, topic, dlq, src)
	}
	route := routeOf(m.Subject)
	if err := broker.ValidateRoute(route); err != nil {
		return nil, fmt.Errorf("subject %q: %w", m.Subject, err)
	}
	redrives, _ := strconv.Atoi(h.Get(consumer.HeaderRedrives))
	group := h.Get(consumer.HeaderGroup)
	key := h.Get(consumer.HeaderOriginalKey)
	if key == "" {
		key = h.Get(natsjs.HeaderKey)
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		if len(v) == 0 || strings.HasPrefix(k, "Nats-") {
			continue
		}
		out[k] = v[0]
	}
	for _, k := range failureHeaders {
		delete(out, k)
	}
	out[consumer.HeaderRedrives] = strconv.Itoa(redrives + 1)
	if group != "" {
		// Only the group that failed handles it again; the topic's other
		// groups acknowledge and skip it.
		out[consumer.HeaderRedriveGroup] = group
	}
	return &broker.Message{
		Topic:  topic,
		Route:  route,
		Key:    key,
		ID:     "redrive:" + stream + ":" + strconv.FormatUint(m.Sequence, 10),
		Header: out,
		Data:   m.Data,
	}, nil
}

// PurgeDLQ removes every dead letter of topic (a source topic or its
// dead-letter topic). confirm must repeat topic, or name the dead-letter
// topic. It returns how many were removed.
func (s *Service) PurgeDLQ(ctx context.Context, topic, confirm string) (uint64, error) {
	dlq := DeadLetterTopicOf(topic)
	if confirm != topic && confirm != dlq {
		return 0, fmt.Errorf("%w: purge %q: confirm with the topic name (got %q)", ErrInvalid, dlq, confirm)
	}
	if s.ev != nil {
		return s.ev.purge(ctx, dlq)
	}
	st, err := s.dlqStream(ctx, dlq)
	if err != nil || st == nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("admin: purge %q: %w", dlq, err)
	}
	// Purge up to the last sequence seen, so dead letters arriving meanwhile
	// stay.
	last := info.State.LastSeq
	if err := st.Purge(ctx, jetstream.WithPurgeSequence(last+1)); err != nil {
		return 0, fmt.Errorf("admin: purge %q: %w", dlq, err)
	}
	s.log.Info("dead letters purged", "topic", dlq, "count", info.State.Msgs)
	return info.State.Msgs, nil
}

// headerMap copies h's first values.
func headerMap(h nats.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, v := range h {
		if len(v) > 0 {
			out[k] = v[0]
		}
	}
	return out
}
