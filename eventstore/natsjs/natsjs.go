// Package natsjs is an eventstore.Store on NATS JetStream: the embedded
// server Herald runs by default, or any JetStream cluster.
//
// One JetStream stream (default HERALD_EVENTS) holds every event stream:
// stream "order-42" is the subject "<prefix>.e.order-42" (default prefix
// "herald.es"), and its metadata the last message on
// "<prefix>.m.order-42". An Append is one message: an event in binary-mode
// CloudEvents headers, or several events packed into one body (see
// packed.go); only an Append larger than the server's maximum payload is
// sent as a JetStream atomic batch of one message per event. An event's
// global position is its message's JetStream sequence shifted left by 10
// bits plus its index in the message; its version travels in the
// "ce-sequence" header.
//
// Append sends the subject's last sequence as
// Nats-Expected-Last-Subject-Sequence, so of two concurrent appends to one
// stream exactly one is stored, all its events or none. Positions are
// assigned when a message is stored, so ReadAll has no gaps to fear.
//
// Limits: an Append carries at most MaxBatch events. Event ids are
// deduplicated three ways: an event of the stream's last append is always
// recognised; JetStream (Nats-Msg-Id) recognises, within the stream's
// duplicate window (default 2 minutes), an event appended alone and the
// first event of a multi-event append; and a retried Append with an Exact
// or NoStream expectation is recognised whenever (its events are found in
// the stream). Past those, an Append expecting Any or StreamExists stores
// an event again.
package natsjs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"regexp"
	"slices"
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
	// server's default atomic batch limit, which an Append too large for
	// one message falls back to.
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
	// ids are the ids of the events of the stream's last append, when
	// idsKnown: reading them costs a packed message's decoding, which only
	// appends that cannot rely on their expected version need.
	ids      []string
	idsKnown bool
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
	return position(m.Sequence, max(packedCount(m.Header), 1)-1), nil
}

// packedCount returns how many events a packed message holds, 0 for a
// message that is not packed.
func packedCount(h nats.Header) int {
	n, err := strconv.Atoi(h.Get(hdrEvents))
	if err != nil || n < 0 {
		return 0
	}
	return n
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

// fetchHead reads the stream's last message from the server, with the ids
// of its events when withIDs.
func (s *Store) fetchHead(ctx context.Context, stream string, withIDs bool) (head, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	m, err := s.st.GetLastMsgForSubject(ctx, s.subject(stream))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return head{idsKnown: true}, nil
	}
	if err != nil {
		return head{}, err
	}
	h := head{seq: m.Sequence, idsKnown: true}
	if m.Header.Get(hdrTombstone) != "" {
		h.tomb = true
		h.version, _ = strconv.ParseUint(m.Header.Get(hdrTombstone), 10, 64)
		return h, nil
	}
	if packedCount(m.Header) > 0 {
		v, err := strconv.ParseUint(m.Header.Get(hdrVersion), 10, 64)
		if err != nil {
			return head{}, fmt.Errorf("message %d on %s has no version (%s %q)", m.Sequence, m.Subject, hdrVersion, m.Header.Get(hdrVersion))
		}
		h.version, h.idsKnown = v, withIDs
		if withIDs {
			if h.ids, err = packedIDs(m.Data); err != nil {
				return head{}, fmt.Errorf("message %d on %s: %w", m.Sequence, m.Subject, err)
			}
		}
		return h, nil
	}
	v, err := strconv.ParseUint(m.Header.Get("ce-sequence"), 10, 64)
	if err != nil {
		return head{}, fmt.Errorf("message %d on %s has no version (ce-sequence %q)", m.Sequence, m.Subject, m.Header.Get("ce-sequence"))
	}
	h.version = v
	if id := m.Header.Get("ce-id"); id != "" {
		h.ids = []string{id}
	}
	return h, nil
}

// cachedHead returns what this Store last saw of the stream's head, with
// its ids when withIDs, asking the server when it saw nothing.
func (s *Store) cachedHead(ctx context.Context, stream string, withIDs bool) (head, error) {
	s.mu.Lock()
	h, ok := s.heads[stream]
	s.mu.Unlock()
	if ok && (h.idsKnown || !withIDs) {
		return h, nil
	}
	return s.refreshHeadIDs(ctx, stream, withIDs)
}

// refreshHead reads the stream's head from the server, without the ids
// of its last append.
func (s *Store) refreshHead(ctx context.Context, stream string) (head, error) {
	return s.refreshHeadIDs(ctx, stream, false)
}

func (s *Store) refreshHeadIDs(ctx context.Context, stream string, withIDs bool) (head, error) {
	h, err := s.fetchHead(ctx, stream, withIDs)
	if err != nil {
		return h, err
	}
	s.setHead(stream, h)
	return h, nil
}

// currentHead returns the stream's head. When this Store has seen it, it
// only asks the server whether a message came after it, which is one
// small request instead of reading the head (a packed message can be
// large).
func (s *Store) currentHead(ctx context.Context, stream string) (head, error) {
	s.mu.Lock()
	h, ok := s.heads[stream]
	s.mu.Unlock()
	if !ok {
		return s.refreshHead(ctx, stream)
	}
	gctx, cancel := s.ctx(ctx)
	defer cancel()
	_, err := s.st.GetMsg(gctx, h.seq+1, jetstream.WithGetMsgSubject(s.subject(stream)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return h, nil
	}
	if err != nil {
		return head{}, err
	}
	return s.refreshHead(ctx, stream)
}

func (s *Store) setHead(stream string, h head) {
	s.mu.Lock()
	if old, ok := s.heads[stream]; !ok || h.seq > old.seq || h.seq == old.seq && !old.idsKnown {
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
	// An append expecting an exact version recognises its own retry by
	// that version; one expecting Any or StreamExists checks the ids of
	// the stream's last append.
	_, exact := expected.Version()
	withIDs := !exact && len(evs) > 0
	h, err := s.cachedHead(ctx, stream, withIDs)
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
		// Events of the stream's last append are stored: a retry skips them.
		if kept := unstored(evs, h.ids); len(kept) < len(evs) {
			evs = kept
			if len(evs) == 0 {
				if !fresh {
					if h, err = s.refreshHead(ctx, stream); err != nil {
						return eventstore.AppendResult{}, err
					}
				}
				return eventstore.AppendResult{Version: h.version}, nil
			}
		}
		if cerr := expected.Check(stream, h.version); cerr != nil {
			if !fresh {
				if h, err = s.refreshHeadIDs(ctx, stream, withIDs); err != nil {
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
		case isCode(err, codeBatchDuplicate), errors.Is(err, errDuplicate):
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
		if h, err = s.refreshHeadIDs(ctx, stream, withIDs); err != nil {
			return eventstore.AppendResult{}, err
		}
		fresh = true
	}
}

// unstored returns evs without the events whose id is in ids: evs itself
// when none is.
func unstored(evs []*event.Event, ids []string) []*event.Event {
	var kept []*event.Event
	for i, e := range evs {
		if slices.Contains(ids, e.ID) {
			if kept == nil {
				kept = append(make([]*event.Event, 0, len(evs)), evs[:i]...)
			}
			continue
		}
		if kept != nil {
			kept = append(kept, e)
		}
	}
	if kept == nil {
		return evs
	}
	return kept
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
	for r, err := range s.scan(ctx, s.subject(stream), 0, 0, after+1) {
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

// errDuplicate says JetStream took a packed message's first event for
// one it stored before: which of the others are stored is to be found out.
var errDuplicate = errors.New("the first event is stored already")

// publish writes evs after head h, atomically: one message, packed when
// there are several events, or an atomic batch when the packed message
// would exceed the server's maximum payload.
func (s *Store) publish(ctx context.Context, stream string, h head, evs []*event.Event) (eventstore.AppendResult, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	subj := s.subject(stream)
	v := h.version
	ids := make([]string, len(evs))
	for i, e := range evs {
		v++
		e.Sequence = v
		ids[i] = e.ID
	}
	expSeq := strconv.FormatUint(h.seq, 10)
	var m *nats.Msg
	if len(evs) == 1 {
		m = s.msg(subj, evs[0])
	} else if body := pack(evs); int64(len(body)) <= s.nc.MaxPayload()-headroom {
		m = nats.NewMsg(subj)
		m.Header[hdrEvents] = []string{strconv.Itoa(len(evs))}
		m.Header[hdrVersion] = []string{strconv.FormatUint(v, 10)}
		m.Header[hdrMsgID] = []string{subj + "/" + evs[0].ID}
		m.Data = body
	}
	if m == nil {
		msgs := make([]*nats.Msg, len(evs))
		for i, e := range evs {
			msgs[i] = s.msg(subj, e)
		}
		msgs[0].Header[hdrExpSeq] = []string{expSeq}
		ack, err := s.publishBatch(ctx, msgs)
		if err != nil {
			return eventstore.AppendResult{}, err
		}
		s.setHead(stream, head{seq: ack.Sequence, version: v, ids: ids})
		return eventstore.AppendResult{Version: v, Position: position(ack.Sequence, 0), Written: len(evs)}, nil
	}
	m.Header[hdrExpSeq] = []string{expSeq}
	ack, err := s.js.PublishMsg(ctx, m)
	if err != nil {
		return eventstore.AppendResult{}, err
	}
	if ack.Duplicate {
		if len(evs) > 1 {
			return eventstore.AppendResult{}, errDuplicate
		}
		// The id was stored moments ago by an earlier attempt.
		nh, herr := s.refreshHead(ctx, stream)
		return eventstore.AppendResult{Version: nh.version}, herr
	}
	s.setHead(stream, head{seq: ack.Sequence, version: v, ids: ids})
	return eventstore.AppendResult{Version: v, Position: position(ack.Sequence, len(evs)-1), Written: len(evs)}, nil
}

// headroom is what a packed message leaves of the server's maximum
// payload for its headers.
const headroom = 4 << 10

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
// message at the time of the call). Tombstone markers are skipped, and so
// are, without being decoded, messages whose events all have a version
// below from.
func (s *Store) scan(ctx context.Context, subject string, start, upTo, from uint64) iter.Seq2[*eventstore.Record, error] {
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
				if hdr := m.Headers(); hdr.Get(hdrTombstone) == "" && !below(hdr, from) {
					recs, err := s.records(m.Subject(), meta.Sequence.Stream, meta.Timestamp, hdr, m.Data())
					if err != nil {
						yield(nil, err)
						return
					}
					for _, r := range recs {
						if !yield(r, nil) {
							return
						}
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

// below reports whether every event of the message with headers hdr has a
// version below from.
func below(hdr nats.Header, from uint64) bool {
	if from <= 1 {
		return false
	}
	k := "ce-sequence"
	if packedCount(hdr) > 0 {
		k = hdrVersion
	}
	v, err := strconv.ParseUint(hdr.Get(k), 10, 64)
	return err == nil && v < from
}

// records decodes the events of the message at sequence seq.
func (s *Store) records(subject string, seq uint64, recorded time.Time, hdr nats.Header, data []byte) ([]*eventstore.Record, error) {
	stream := subject[len(s.prefix)+3:]
	n := packedCount(hdr)
	if n == 0 {
		r, err := s.record(stream, seq, recorded, hdr, data)
		if err != nil {
			return nil, err
		}
		return []*eventstore.Record{r}, nil
	}
	evs, err := unpack(data, n)
	if err != nil {
		return nil, fmt.Errorf("eventstore/natsjs: stream %q position %d: stored events do not decode: %w", stream, position(seq, 0), err)
	}
	recs := make([]*eventstore.Record, len(evs))
	for i, e := range evs {
		recs[i] = &eventstore.Record{Stream: stream, Version: e.Sequence, Position: position(seq, i), Recorded: recorded, Event: e}
	}
	return recs, nil
}

// record decodes a message holding one event in its headers.
func (s *Store) record(stream string, seq uint64, recorded time.Time, hdr nats.Header, data []byte) (*eventstore.Record, error) {
	h := make(map[string]string, len(hdr))
	for k, v := range hdr {
		// The envelope is in the ce- headers and content-type; the
		// server's own (Nats-Msg-Id, the expected sequence, the batch's)
		// are not part of it.
		if len(v) > 0 && !strings.HasPrefix(k, "Nats-") {
			h[k] = v[0]
		}
	}
	e, err := event.NATS.Decode(h, data)
	if err != nil {
		return nil, fmt.Errorf("eventstore/natsjs: stream %q position %d: stored event does not decode: %w", stream, position(seq, 0), err)
	}
	return &eventstore.Record{Stream: stream, Version: e.Sequence, Position: position(seq, 0), Recorded: recorded, Event: e}, nil
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
		for r, err := range s.scan(ctx, s.subject(stream), 0, h.seq, from) {
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
		// The message holding position after may hold later events too.
		for r, err := range s.scan(ctx, s.prefix+".e.>", max(seqOf(after), 1), 0, 0) {
			if err != nil {
				yield(nil, fmt.Errorf("eventstore/natsjs: read all after %d: %w", after, err))
				return
			}
			if r.Position <= after {
				continue
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
	recs, err := s.records(m.Subject, m.Sequence, m.Time, m.Header, m.Data)
	if err != nil {
		return nil, err
	}
	r := recs[len(recs)-1]
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
	h, err := s.currentHead(ctx, stream)
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
