// Package natsjs is an eventstore.Store on NATS JetStream: the embedded
// server Herald runs by default, or any JetStream cluster.
//
// One JetStream stream (default HERALD_EVENTS) holds every event stream:
// stream "order-42" is the subject "<prefix>.e.order-42" (default prefix
// "herald.es"), and its metadata the last message on
// "<prefix>.m.order-42". A message's JetStream sequence is the event's
// global position; its version travels in the "ce-sequence" header.
//
// Append sends the subject's last sequence as
// Nats-Expected-Last-Subject-Sequence, so of two concurrent appends to one
// stream exactly one is stored; several events go in one JetStream atomic
// batch (all stored or none). Positions are assigned when a message is
// stored, so ReadAll has no gaps to fear.
//
// Limits: an Append carries at most MaxBatch events (the server's atomic
// batch limit). Event ids are deduplicated by JetStream (Nats-Msg-Id) within
// the stream's duplicate window (default 2 minutes); beyond it, a retried
// Append with an Exact or NoStream expectation is still recognised (its
// events are found in the stream), but one expecting Any stores the events
// again.
package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/eventstore"
)

// Defaults.
const (
	DefaultStream = "HERALD_EVENTS"
	DefaultPrefix = "herald.es"
	// MaxBatch is the most events one Append can carry: the JetStream
	// server's default atomic batch limit.
	MaxBatch = 1000
)

// Headers the store writes besides the envelope's.
const (
	hdrTombstone = "Herald-Tombstone"
	hdrMsgID     = "Nats-Msg-Id"
	hdrExpSeq    = "Nats-Expected-Last-Subject-Sequence"
	hdrBatchID   = "Nats-Batch-Id"
	hdrBatchSeq  = "Nats-Batch-Sequence"
	hdrCommit    = "Nats-Batch-Commit"
)

// JetStream error codes the store branches on.
const (
	codeWrongLastSeq      = 10071
	codeWrongLastSeqConst = 10164
	codeBatchIncomplete   = 10176
	codeBatchDuplicate    = 10201
	codeTooManyInflight   = 10210
)

// fetchBatch is the most messages one fetch of a read asks for.
const fetchBatch = 1000

// maxRetries bounds how often Append retries after losing a race it can
// retry (expecting Any or StreamExists).
const maxRetries = 100

// Store is an eventstore.Store on JetStream. It is safe for concurrent use;
// several Stores (in several processes) may share one JetStream stream.
// The connection stays the caller's to close.
type Store struct {
	nc        *nats.Conn
	js        jetstream.JetStream
	st        jetstream.Stream
	name      string
	prefix    string
	replicas  int
	dupWindow time.Duration
	timeout   time.Duration

	mu    sync.Mutex
	heads map[string]head // last message of each stream seen by this Store
}

// head is what a stream's last message says.
type head struct {
	seq     uint64 // JetStream sequence of the last message, 0 if none
	version uint64
	tomb    bool
}

// Option configures a Store.
type Option func(*Store)

// WithStream names the JetStream stream. Default DefaultStream.
func WithStream(name string) Option { return func(s *Store) { s.name = name } }

// WithPrefix sets the subject prefix. Default DefaultPrefix.
func WithPrefix(p string) Option { return func(s *Store) { s.prefix = p } }

// WithReplicas sets the JetStream stream's replicas (1 on a single
// server, 3 on a cluster). Default 1.
func WithReplicas(n int) Option { return func(s *Store) { s.replicas = n } }

// WithDuplicateWindow sets how long JetStream remembers event ids.
// Default 2 minutes; longer costs server memory per event.
func WithDuplicateWindow(d time.Duration) Option { return func(s *Store) { s.dupWindow = d } }

// WithTimeout bounds each request to the server when ctx has no earlier
// deadline. Default 10s.
func WithTimeout(d time.Duration) Option { return func(s *Store) { s.timeout = d } }

var (
	streamNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	prefixRE     = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)
)

// New returns a Store on nc, creating or updating its JetStream stream.
func New(ctx context.Context, nc *nats.Conn, opts ...Option) (*Store, error) {
	if nc == nil {
		return nil, errors.New("eventstore/natsjs: connection is nil")
	}
	s := &Store{nc: nc, name: DefaultStream, prefix: DefaultPrefix, replicas: 1, dupWindow: 2 * time.Minute, timeout: 10 * time.Second, heads: map[string]head{}}
	for _, o := range opts {
		o(s)
	}
	switch {
	case !streamNameRE.MatchString(s.name):
		return nil, fmt.Errorf("eventstore/natsjs: stream name %q: want 1 to 64 letters, digits, _ or -", s.name)
	case !prefixRE.MatchString(s.prefix):
		return nil, fmt.Errorf("eventstore/natsjs: prefix %q: want dot-separated tokens of letters, digits, _ or -", s.prefix)
	case s.replicas < 1 || s.replicas > 5:
		return nil, fmt.Errorf("eventstore/natsjs: replicas %d: want 1 to 5", s.replicas)
	case s.dupWindow <= 0:
		return nil, fmt.Errorf("eventstore/natsjs: duplicate window %v must be positive", s.dupWindow)
	case s.timeout <= 0:
		return nil, fmt.Errorf("eventstore/natsjs: timeout %v must be positive", s.timeout)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("eventstore/natsjs: %w", err)
	}
	s.js = js
	st, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:               s.name,
		Description:        "Herald event store",
		Subjects:           []string{s.prefix + ".e.>", s.prefix + ".m.>"},
		Storage:            jetstream.FileStorage,
		Replicas:           s.replicas,
		Duplicates:         s.dupWindow,
		AllowDirect:        true,
		AllowAtomicPublish: true,
		DenyDelete:         true,
		DenyPurge:          true,
	})
	if err != nil {
		return nil, fmt.Errorf("eventstore/natsjs: create stream %q: %w", s.name, err)
	}
	s.st = st
	return s, nil
}

// Open returns a Store on the JetStream stream an earlier New created,
// without creating or changing it: for tools that read a store they do
// not own. When the stream does not exist the error wraps
// eventstore.ErrNotFound. WithStream, WithPrefix and WithTimeout apply;
// the other options are the stream's own.
func Open(ctx context.Context, nc *nats.Conn, opts ...Option) (*Store, error) {
	if nc == nil {
		return nil, errors.New("eventstore/natsjs: connection is nil")
	}
	s := &Store{nc: nc, name: DefaultStream, prefix: DefaultPrefix, replicas: 1, dupWindow: 2 * time.Minute, timeout: 10 * time.Second, heads: map[string]head{}}
	for _, o := range opts {
		o(s)
	}
	switch {
	case !streamNameRE.MatchString(s.name):
		return nil, fmt.Errorf("eventstore/natsjs: stream name %q: want 1 to 64 letters, digits, _ or -", s.name)
	case !prefixRE.MatchString(s.prefix):
		return nil, fmt.Errorf("eventstore/natsjs: prefix %q: want dot-separated tokens of letters, digits, _ or -", s.prefix)
	case s.timeout <= 0:
		return nil, fmt.Errorf("eventstore/natsjs: timeout %v must be positive", s.timeout)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("eventstore/natsjs: %w", err)
	}
	s.js = js
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	st, err := js.Stream(ctx, s.name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("eventstore/natsjs: stream %q: %w: no event store was created there", s.name, eventstore.ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("eventstore/natsjs: open stream %q: %w", s.name, err)
	}
	s.st = st
	return s, nil
}

// LastPosition returns the position of the store's last message on an
// event subject (an event, or a tombstone marker, which ReadAll passes
// over), 0 when there is none. A reader whose checkpoint is at it has read
// everything stored so far.
func (s *Store) LastPosition(ctx context.Context) (uint64, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	m, err := s.st.GetLastMsgForSubject(ctx, s.prefix+".e.>")
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("eventstore/natsjs: last position: %w", err)
	}
	return m.Sequence, nil
}

// Stream returns the name of the JetStream stream.
func (s *Store) Stream() string { return s.name }

// Prefix returns the subject prefix.
func (s *Store) Prefix() string { return s.prefix }

var _ eventstore.Store = (*Store)(nil)
var _ eventstore.Positioner = (*Store)(nil)

func (s *Store) subject(stream string) string     { return s.prefix + ".e." + stream }
func (s *Store) metaSubject(stream string) string { return s.prefix + ".m." + stream }

func (s *Store) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.timeout)
}

func isCode(err error, codes ...jetstream.ErrorCode) bool {
	var ae *jetstream.APIError
	if !errors.As(err, &ae) {
		return false
	}
	for _, c := range codes {
		if ae.ErrorCode == c {
			return true
		}
	}
	return false
}

// fetchHead reads the stream's last message from the server.
func (s *Store) fetchHead(ctx context.Context, stream string) (head, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	m, err := s.st.GetLastMsgForSubject(ctx, s.subject(stream))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return head{}, nil
	}
	if err != nil {
		return head{}, err
	}
	h := head{seq: m.Sequence}
	if m.Header.Get(hdrTombstone) != "" {
		h.tomb = true
		h.version, _ = strconv.ParseUint(m.Header.Get(hdrTombstone), 10, 64)
		return h, nil
	}
	v, err := strconv.ParseUint(m.Header.Get("ce-sequence"), 10, 64)
	if err != nil {
		return head{}, fmt.Errorf("message %d on %s has no version (ce-sequence %q)", m.Sequence, m.Subject, m.Header.Get("ce-sequence"))
	}
	h.version = v
	return h, nil
}

func (s *Store) cachedHead(ctx context.Context, stream string) (head, error) {
	s.mu.Lock()
	h, ok := s.heads[stream]
	s.mu.Unlock()
	if ok {
		return h, nil
	}
	return s.refreshHead(ctx, stream)
}

func (s *Store) refreshHead(ctx context.Context, stream string) (head, error) {
	h, err := s.fetchHead(ctx, stream)
	if err != nil {
		return h, err
	}
	s.setHead(stream, h)
	return h, nil
}

func (s *Store) setHead(stream string, h head) {
	s.mu.Lock()
	if old, ok := s.heads[stream]; !ok || h.seq >= old.seq {
		s.heads[stream] = h
	}
	s.mu.Unlock()
}

// Append implements eventstore.Store.
func (s *Store) Append(ctx context.Context, stream string, expected eventstore.Expected, events ...*event.Event) (eventstore.AppendResult, error) {
	evs, err := eventstore.Prepare(stream, expected, events)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	if len(evs) > MaxBatch {
		return eventstore.AppendResult{}, fmt.Errorf("%w: stream %q: %d events in one append, at most %d on JetStream", eventstore.ErrInvalid, stream, len(evs), MaxBatch)
	}
	res, err := s.append(ctx, stream, expected, evs)
	if err != nil && !errors.Is(err, eventstore.ErrConflict) && !errors.Is(err, eventstore.ErrDeleted) {
		return res, fmt.Errorf("eventstore/natsjs: append to stream %q: %w", stream, err)
	}
	return res, err
}

func (s *Store) append(ctx context.Context, stream string, expected eventstore.Expected, evs []*event.Event) (eventstore.AppendResult, error) {
	h, err := s.cachedHead(ctx, stream)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	fresh := false // whether h comes from the server since the last failure
	for attempt := 0; ; attempt++ {
		if attempt > maxRetries {
			return eventstore.AppendResult{}, fmt.Errorf("gave up after %d attempts lost to concurrent appends", attempt)
		}
		if h.tomb {
			return eventstore.AppendResult{}, fmt.Errorf("append to stream %q: %w", stream, eventstore.ErrDeleted)
		}
		if cerr := expected.Check(stream, h.version); cerr != nil {
			if !fresh {
				if h, err = s.refreshHead(ctx, stream); err != nil {
					return eventstore.AppendResult{}, err
				}
				fresh = true
				continue
			}
			// A retry of an append that was stored is no conflict.
			if n, ok := expected.Version(); ok && len(evs) > 0 && h.version > n {
				stored, err := s.storedIDs(ctx, stream, n)
				if err != nil {
					return eventstore.AppendResult{}, err
				}
				if all(stored, evs) {
					return eventstore.AppendResult{Version: h.version}, nil
				}
			}
			return eventstore.AppendResult{}, cerr
		}
		if len(evs) == 0 {
			return eventstore.AppendResult{Version: h.version}, nil
		}
		res, err := s.publish(ctx, stream, h, evs)
		if err == nil {
			return res, nil
		}
		switch {
		case isCode(err, codeWrongLastSeq, codeWrongLastSeqConst, codeBatchIncomplete, codeTooManyInflight):
			// Another append won, or one is in flight on this stream.
		case isCode(err, codeBatchDuplicate):
			stored, serr := s.storedIDs(ctx, stream, 0)
			if serr != nil {
				return eventstore.AppendResult{}, serr
			}
			kept := evs[:0]
			for _, e := range evs {
				if _, dup := stored[e.ID]; !dup {
					kept = append(kept, e)
				}
			}
			if len(kept) == len(evs) {
				return eventstore.AppendResult{}, err
			}
			if len(kept) == 0 {
				h, herr := s.refreshHead(ctx, stream)
				return eventstore.AppendResult{Version: h.version}, herr
			}
			evs = kept
		default:
			return eventstore.AppendResult{}, err
		}
		if h, err = s.refreshHead(ctx, stream); err != nil {
			return eventstore.AppendResult{}, err
		}
		fresh = true
	}
}

func all(stored map[string]struct{}, evs []*event.Event) bool {
	for _, e := range evs {
		if _, ok := stored[e.ID]; !ok {
			return false
		}
	}
	return true
}

// storedIDs returns the ids of the stream's events after version after.
func (s *Store) storedIDs(ctx context.Context, stream string, after uint64) (map[string]struct{}, error) {
	ids := map[string]struct{}{}
	for r, err := range s.scan(ctx, s.subject(stream), 0, 0) {
		if err != nil {
			return nil, err
		}
		if r.Version > after {
			ids[r.Event.ID] = struct{}{}
		}
	}
	return ids, nil
}

func (s *Store) msg(subject string, e *event.Event) *nats.Msg {
	m := nats.NewMsg(subject)
	hdr := make(map[string]string, event.NATS.HeaderCount(e)+4)
	event.NATS.Encode(e, hdr)
	for k, v := range hdr {
		m.Header[k] = []string{v}
	}
	m.Header[hdrMsgID] = []string{subject + "/" + e.ID}
	m.Data = e.Data
	return m
}

// publish writes evs after head h, atomically.
func (s *Store) publish(ctx context.Context, stream string, h head, evs []*event.Event) (eventstore.AppendResult, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	subj := s.subject(stream)
	v := h.version
	msgs := make([]*nats.Msg, len(evs))
	for i, e := range evs {
		v++
		e.Sequence = v
		msgs[i] = s.msg(subj, e)
	}
	msgs[0].Header[hdrExpSeq] = []string{strconv.FormatUint(h.seq, 10)}
	var ack *jetstream.PubAck
	var err error
	if len(msgs) == 1 {
		ack, err = s.js.PublishMsg(ctx, msgs[0])
		if err == nil && ack.Duplicate {
			// The id was stored moments ago by an earlier attempt.
			nh, herr := s.refreshHead(ctx, stream)
			return eventstore.AppendResult{Version: nh.version}, herr
		}
	} else {
		ack, err = s.publishBatch(ctx, msgs)
	}
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	s.setHead(stream, head{seq: ack.Sequence, version: v})
	return eventstore.AppendResult{Version: v, Position: ack.Sequence, Written: len(evs)}, nil
}

// publishBatch sends msgs as one JetStream atomic batch: every message but
// the last without waiting, the last with the commit header, whose
// acknowledgement says whether the whole batch was stored.
func (s *Store) publishBatch(ctx context.Context, msgs []*nats.Msg) (*jetstream.PubAck, error) {
	id := nats.NewInbox()[len(nats.InboxPrefix):]
	for i, m := range msgs {
		m.Header[hdrBatchID] = []string{id}
		m.Header[hdrBatchSeq] = []string{strconv.Itoa(i + 1)}
	}
	last := msgs[len(msgs)-1]
	last.Header[hdrCommit] = []string{"1"}
	for _, m := range msgs[:len(msgs)-1] {
		if err := s.nc.PublishMsg(m); err != nil {
			return nil, err
		}
	}
	resp, err := s.nc.RequestMsgWithContext(ctx, last)
	if err != nil {
		return nil, err
	}
	var r struct {
		jetstream.PubAck
		Error *jetstream.APIError `json:"error,omitempty"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return nil, fmt.Errorf("batch commit: bad acknowledgement %q: %w", resp.Data, err)
	}
	if r.Error != nil {
		return nil, r.Error
	}
	return &r.PubAck, nil
}

// scan yields the events on subject (every stream's when it has a
// wildcard) from sequence start, up to sequence upTo (0: the stream's last
// message at the time of the call). Tombstone markers are skipped.
func (s *Store) scan(ctx context.Context, subject string, start, upTo uint64) iter.Seq2[*eventstore.Record, error] {
	return func(yield func(*eventstore.Record, error) bool) {
		lastSeq := upTo
		if lastSeq == 0 {
			ictx, cancel := s.ctx(ctx)
			info, err := s.st.Info(ictx)
			cancel()
			if err != nil {
				yield(nil, err)
				return
			}
			lastSeq = info.State.LastSeq
		}
		if lastSeq < max(start, 1) {
			return
		}
		cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}, DeliverPolicy: jetstream.DeliverAllPolicy}
		if start > 1 {
			cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
			cfg.OptStartSeq = start
		}
		cctx, cancel := s.ctx(ctx)
		defer cancel()
		cons, err := s.st.OrderedConsumer(cctx, cfg)
		if err != nil {
			yield(nil, err)
			return
		}
		defer func() {
			dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), s.timeout)
			_ = s.st.DeleteConsumer(dctx, cons.CachedInfo().Name)
			dcancel()
		}()
		// A consumer with nothing to deliver would wait forever: ask.
		pending := cons.CachedInfo().NumPending
		if pending == 0 {
			return
		}
		for {
			if err := ctx.Err(); err != nil {
				yield(nil, err)
				return
			}
			// Ask for no more than is pending: a fetch for more waits out
			// its max wait for messages that do not exist, and keeps its
			// goroutine that long after an iteration stopped early.
			batch, err := cons.Fetch(int(min(pending, fetchBatch)), jetstream.FetchMaxWait(s.timeout))
			if err != nil {
				yield(nil, err)
				return
			}
			n := 0
			for m := range batch.Messages() {
				n++
				meta, err := m.Metadata()
				if err != nil {
					yield(nil, err)
					return
				}
				if m.Headers().Get(hdrTombstone) == "" {
					r, err := s.record(m.Subject(), meta, m.Headers(), m.Data())
					if !yield(r, err) || err != nil {
						return
					}
				}
				if meta.Sequence.Stream >= lastSeq || meta.NumPending == 0 {
					return
				}
				pending = meta.NumPending
			}
			if err := batch.Error(); err != nil {
				yield(nil, err)
				return
			}
			if n == 0 {
				yield(nil, fmt.Errorf("no message in %v before sequence %d", s.timeout, lastSeq))
				return
			}
		}
	}
}

func (s *Store) record(subject string, meta *jetstream.MsgMetadata, hdr nats.Header, data []byte) (*eventstore.Record, error) {
	h := make(map[string]string, len(hdr))
	for k, v := range hdr {
		// The envelope is in the ce- headers and content-type; the
		// server's own (Nats-Msg-Id, the expected sequence, the batch's)
		// are not part of it.
		if len(v) > 0 && !strings.HasPrefix(k, "Nats-") {
			h[k] = v[0]
		}
	}
	stream := subject[len(s.prefix)+3:]
	e, err := event.NATS.Decode(h, data)
	if err != nil {
		return nil, fmt.Errorf("eventstore/natsjs: stream %q position %d: stored event does not decode: %w", stream, meta.Sequence.Stream, err)
	}
	return &eventstore.Record{Stream: stream, Version: e.Sequence, Position: meta.Sequence.Stream, Recorded: meta.Timestamp, Event: e}, nil
}

// Load implements eventstore.Store. It reads the stream's subject from its
// first message: JetStream has no index by version, so loading the tail
// of a long stream costs as much as loading all of it.
func (s *Store) Load(ctx context.Context, stream string, after uint64) iter.Seq2[*eventstore.Record, error] {
	return func(yield func(*eventstore.Record, error) bool) {
		if err := eventstore.ValidateStream(stream); err != nil {
			yield(nil, err)
			return
		}
		info, h, err := s.info(ctx, stream)
		if err != nil {
			yield(nil, err)
			return
		}
		if info.Metadata.Tombstoned {
			yield(nil, fmt.Errorf("load stream %q: %w", stream, eventstore.ErrDeleted))
			return
		}
		if info.Version == 0 || info.Version <= after {
			return
		}
		from := max(after+1, info.Metadata.FirstVisible(info.Version))
		now := time.Now()
		// The stream's last message (an event or its tombstone) bounds
		// the read: no need to ask the stream for its last sequence.
		for r, err := range s.scan(ctx, s.subject(stream), 0, h.seq) {
			if err != nil {
				yield(nil, fmt.Errorf("eventstore/natsjs: load stream %q: %w", stream, err))
				return
			}
			if r.Version < from || !info.Metadata.Visible(r.Version, r.Recorded, info.Version, now) {
				continue
			}
			if !yield(r, nil) {
				return
			}
			if r.Version >= info.Version {
				return
			}
		}
	}
}

// ReadAll implements eventstore.Store. It returns the events stored before
// it was called.
func (s *Store) ReadAll(ctx context.Context, after uint64) iter.Seq2[*eventstore.Record, error] {
	return func(yield func(*eventstore.Record, error) bool) {
		for r, err := range s.scan(ctx, s.prefix+".e.>", after+1, 0) {
			if err != nil {
				yield(nil, fmt.Errorf("eventstore/natsjs: read all after %d: %w", after, err))
				return
			}
			if !yield(r, nil) {
				return
			}
		}
	}
}

// Last implements eventstore.Store.
func (s *Store) Last(ctx context.Context, stream string) (*eventstore.Record, error) {
	info, err := s.Info(ctx, stream)
	if err != nil {
		return nil, err
	}
	if info.Metadata.Tombstoned {
		return nil, fmt.Errorf("last event of stream %q: %w", stream, eventstore.ErrDeleted)
	}
	if info.Version == 0 {
		return nil, fmt.Errorf("last event of stream %q: %w", stream, eventstore.ErrNotFound)
	}
	gctx, cancel := s.ctx(ctx)
	defer cancel()
	m, err := s.st.GetLastMsgForSubject(gctx, s.subject(stream))
	if err != nil {
		return nil, fmt.Errorf("eventstore/natsjs: last event of stream %q: %w", stream, err)
	}
	r, err := s.record(m.Subject, &jetstream.MsgMetadata{Sequence: jetstream.SequencePair{Stream: m.Sequence}, Timestamp: m.Time}, m.Header, m.Data)
	if err != nil {
		return nil, err
	}
	if !info.Metadata.Visible(r.Version, r.Recorded, info.Version, time.Now()) {
		return nil, fmt.Errorf("last event of stream %q: %w", stream, eventstore.ErrNotFound)
	}
	return r, nil
}

// Info implements eventstore.Store.
func (s *Store) Info(ctx context.Context, stream string) (eventstore.StreamInfo, error) {
	info, _, err := s.info(ctx, stream)
	return info, err
}

// info returns the stream's info and what its last message says.
func (s *Store) info(ctx context.Context, stream string) (eventstore.StreamInfo, head, error) {
	if err := eventstore.ValidateStream(stream); err != nil {
		return eventstore.StreamInfo{}, head{}, err
	}
	h, err := s.refreshHead(ctx, stream)
	if err != nil {
		return eventstore.StreamInfo{}, head{}, fmt.Errorf("eventstore/natsjs: info of stream %q: %w", stream, err)
	}
	meta, err := s.meta(ctx, stream)
	if err != nil {
		return eventstore.StreamInfo{}, head{}, err
	}
	meta.Tombstoned = h.tomb
	return eventstore.StreamInfo{Stream: stream, Version: h.version, Metadata: meta}, h, nil
}

func (s *Store) meta(ctx context.Context, stream string) (eventstore.Metadata, error) {
	gctx, cancel := s.ctx(ctx)
	defer cancel()
	var meta eventstore.Metadata
	m, err := s.st.GetLastMsgForSubject(gctx, s.metaSubject(stream))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return meta, nil
	}
	if err != nil {
		return meta, fmt.Errorf("eventstore/natsjs: metadata of stream %q: %w", stream, err)
	}
	if err := json.Unmarshal(m.Data, &meta); err != nil {
		return meta, fmt.Errorf("eventstore/natsjs: metadata of stream %q at position %d does not decode: %w", stream, m.Sequence, err)
	}
	return meta, nil
}

// SetMetadata implements eventstore.Store.
func (s *Store) SetMetadata(ctx context.Context, stream string, meta eventstore.Metadata) error {
	if err := eventstore.ValidateStream(stream); err != nil {
		return err
	}
	if meta.Tombstoned {
		return fmt.Errorf("%w: set metadata of stream %q: use Tombstone to tombstone a stream", eventstore.ErrInvalid, stream)
	}
	if err := meta.Validate(); err != nil {
		return err
	}
	return s.putMeta(ctx, stream, func(eventstore.Metadata, head) eventstore.Metadata { return meta })
}

// Delete implements eventstore.Store.
func (s *Store) Delete(ctx context.Context, stream string) error {
	if err := eventstore.ValidateStream(stream); err != nil {
		return err
	}
	return s.putMeta(ctx, stream, func(m eventstore.Metadata, h head) eventstore.Metadata {
		m.TruncateBefore = h.version + 1
		return m
	})
}

func (s *Store) putMeta(ctx context.Context, stream string, fn func(eventstore.Metadata, head) eventstore.Metadata) error {
	h, err := s.refreshHead(ctx, stream)
	if err != nil {
		return fmt.Errorf("eventstore/natsjs: stream %q: %w", stream, err)
	}
	if h.tomb {
		return fmt.Errorf("stream %q: %w", stream, eventstore.ErrDeleted)
	}
	old, err := s.meta(ctx, stream)
	if err != nil {
		return err
	}
	b, err := json.Marshal(fn(old, h))
	if err != nil {
		return err
	}
	pctx, cancel := s.ctx(ctx)
	defer cancel()
	if _, err := s.js.Publish(pctx, s.metaSubject(stream), b); err != nil {
		return fmt.Errorf("eventstore/natsjs: write metadata of stream %q: %w", stream, err)
	}
	return nil
}

// Tombstone implements eventstore.Store: a marker after the stream's last
// event, written with the same expected-sequence check as an append, so no
// append lands after it.
func (s *Store) Tombstone(ctx context.Context, stream string) error {
	if err := eventstore.ValidateStream(stream); err != nil {
		return err
	}
	for attempt := 0; attempt <= maxRetries; attempt++ {
		h, err := s.refreshHead(ctx, stream)
		if err != nil {
			return fmt.Errorf("eventstore/natsjs: tombstone stream %q: %w", stream, err)
		}
		if h.tomb {
			return nil
		}
		m := nats.NewMsg(s.subject(stream))
		m.Header.Set(hdrTombstone, strconv.FormatUint(h.version, 10))
		m.Header.Set(hdrExpSeq, strconv.FormatUint(h.seq, 10))
		pctx, cancel := s.ctx(ctx)
		ack, err := s.js.PublishMsg(pctx, m)
		cancel()
		if isCode(err, codeWrongLastSeq, codeWrongLastSeqConst) {
			continue
		}
		if err != nil {
			return fmt.Errorf("eventstore/natsjs: tombstone stream %q: %w", stream, err)
		}
		s.setHead(stream, head{seq: ack.Sequence, version: h.version, tomb: true})
		return nil
	}
	return fmt.Errorf("eventstore/natsjs: tombstone stream %q: gave up after %d attempts lost to concurrent appends", stream, maxRetries)
}
