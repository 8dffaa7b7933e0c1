package audit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/time/rate"
)

// metaTopic is the stream metadata key natsjs writes: streams with it hold
// Herald topics and are indexed.
const metaTopic = "herald.topic"

// Indexer reads every Herald topic's stream and writes what it reads to a
// Store. Create it with NewIndexer and call Run once.
type Indexer struct {
	js    jetstream.JetStream
	store Store
	log   *slog.Logger

	batch      int
	flushEvery time.Duration
	poll       time.Duration
	maxPayload int
	// limiter paces indexing while events keep arriving (nil: no limit);
	// lastGrowth is when a reader last saw its topic grow (unix ns).
	limiter    *rate.Limiter
	busyRate   int
	lastGrowth atomic.Int64

	ch   chan item
	kick chan struct{}

	indexed atomic.Uint64
	running atomic.Bool

	mu  sync.Mutex
	pos map[string]Position // what the store holds

	// tr, when set, is a broker other than JetStream whose topics are
	// indexed too (events.go).
	tr        TopicReader
	trName    string
	trBinding event.Binding
}

type item struct {
	stream  string
	created time.Time
	rec     Record
}

// Option configures an Indexer.
type Option func(*Indexer)

// WithLogger sets the logger. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(ix *Indexer) { ix.log = l } }

// WithBatch writes at most n records per transaction, and at least every
// d when fewer arrive. Defaults 500 and 200ms: larger batches cost the
// broker less; d bounds how stale the index is.
func WithBatch(n int, d time.Duration) Option {
	return func(ix *Indexer) { ix.batch, ix.flushEvery = n, d }
}

// WithPollInterval sets how often new topics are looked for. Default 1s.
func WithPollInterval(d time.Duration) Option { return func(ix *Indexer) { ix.poll = d } }

// WithMaxPayload stores payloads up to n bytes in the index; larger ones
// are read back from the stream while it holds them. 0 stores none.
// Default 64 KiB.
func WithMaxPayload(n int) Option { return func(ix *Indexer) { ix.maxPayload = n } }

// WithBusyRate caps indexing at n events per second while events keep
// arriving, so that at peak load the indexer takes a bounded share of the
// CPU the broker needs (each indexed event costs the broker a delivery and
// the process a database write). Once no event arrived for a second, the
// indexer catches up at full speed. Under a sustained load above n events
// per second the index falls behind (see Behind) until the load drops.
// 0 removes the cap. Default 5000.
func WithBusyRate(n int) Option { return func(ix *Indexer) { ix.busyRate = n } }

// busyFor is how long after a topic last grew the indexer stays paced.
const busyFor = time.Second

// NewIndexer returns an indexer reading through js into store. It does not
// close store.
func NewIndexer(js jetstream.JetStream, store Store, opts ...Option) (*Indexer, error) {
	if js == nil || store == nil {
		return nil, errors.New("audit: NewIndexer needs a JetStream context and a store")
	}
	ix := &Indexer{
		js: js, store: store, log: slog.Default(),
		batch: 500, flushEvery: 200 * time.Millisecond, poll: time.Second, maxPayload: 64 << 10, busyRate: 5000,
		kick: make(chan struct{}, 1),
		pos:  map[string]Position{},
	}
	for _, o := range opts {
		o(ix)
	}
	switch {
	case ix.batch < 1:
		return nil, fmt.Errorf("audit: batch size %d must be at least 1", ix.batch)
	case ix.flushEvery <= 0 || ix.poll <= 0:
		return nil, errors.New("audit: flush and poll intervals must be positive")
	case ix.maxPayload < 0:
		return nil, fmt.Errorf("audit: max payload %d must not be negative", ix.maxPayload)
	case ix.tr != nil && ix.trName == "":
		return nil, errors.New("audit: WithTopicReader needs a name")
	case ix.busyRate < 0:
		return nil, fmt.Errorf("audit: busy rate %d must not be negative", ix.busyRate)
	}
	if ix.busyRate > 0 {
		ix.limiter = rate.NewLimiter(rate.Limit(ix.busyRate), max(ix.busyRate/10, 1))
	}
	ix.ch = make(chan item, 4*ix.batch)
	return ix, nil
}

// reader is the goroutine reading one stream.
type reader struct {
	created time.Time
	cancel  context.CancelFunc
}

// Run indexes until ctx is cancelled, then writes what it read and
// returns. It returns an error only when it cannot start (the store does
// not answer). Run may be called once.
func (ix *Indexer) Run(ctx context.Context) error {
	if !ix.running.CompareAndSwap(false, true) {
		return errors.New("audit: Run called twice")
	}
	pos, err := ix.store.Positions(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil // stopped before it began: not a failure
		}
		return err
	}
	if pos == nil {
		pos = map[string]Position{}
	}
	ix.mu.Lock()
	ix.pos = pos
	ix.mu.Unlock()

	var writer, readersWG sync.WaitGroup
	writer.Go(ix.write)
	readers := map[string]*reader{}
	if ix.tr != nil {
		readersWG.Go(func() { ix.pollTopics(ctx) })
	}
	defer func() {
		for _, r := range readers {
			r.cancel()
		}
		readersWG.Wait()
		close(ix.ch)
		writer.Wait()
	}()
	t := time.NewTicker(ix.poll)
	defer t.Stop()
	for {
		if err := ix.discover(ctx, readers, &readersWG); err != nil && ctx.Err() == nil {
			ix.log.Warn("audit: list topics", "error", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-ix.kick:
		}
	}
}

// discover starts a reader for each new stream (or new incarnation of
// one) and stops those of deleted streams.
func (ix *Indexer) discover(ctx context.Context, readers map[string]*reader, wg *sync.WaitGroup) error {
	l := ix.js.ListStreams(ctx)
	live := map[string]bool{}
	for si := range l.Info() {
		topic, ok := si.Config.Metadata[metaTopic]
		if !ok {
			continue
		}
		name := si.Config.Name
		live[name] = true
		created := si.Created.UTC()
		if r := readers[name]; r != nil {
			if r.created.Equal(created) {
				continue
			}
			r.cancel()
		}
		from := ix.startSeq(name, created, si.State)
		rctx, cancel := context.WithCancel(ctx)
		readers[name] = &reader{created: created, cancel: cancel}
		wg.Go(func() { ix.read(rctx, name, topic, created, from) })
	}
	if err := l.Err(); err != nil {
		return err
	}
	for name, r := range readers {
		if !live[name] {
			r.cancel()
			delete(readers, name)
		}
	}
	return nil
}

// startSeq is where reading stream resumes.
func (ix *Indexer) startSeq(stream string, created time.Time, st jetstream.StreamState) uint64 {
	ix.mu.Lock()
	p, ok := ix.pos[stream]
	ix.mu.Unlock()
	from := uint64(1)
	if ok && p.Created.Equal(created) {
		from = p.Seq + 1
	} else if ok {
		ix.log.Info("audit: topic stream was recreated; indexing it from its start", "stream", stream,
			"was_created", p.Created, "created", created)
	}
	if st.Msgs > 0 && from < st.FirstSeq {
		if ok {
			ix.log.Warn("audit: messages expired before they were indexed", "stream", stream,
				"from_seq", from, "to_seq", st.FirstSeq-1)
		}
		from = st.FirstSeq
	}
	return from
}

// read feeds the messages of stream from sequence from to the writer.
func (ix *Indexer) read(ctx context.Context, stream, topic string, created time.Time, from uint64) {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 1 {
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, from
	}
	dlq := consumer.IsDeadLetterTopic(topic)
	var it jetstream.MessagesContext
	for it == nil {
		cons, err := ix.js.OrderedConsumer(ctx, stream, cfg)
		if err == nil {
			it, err = cons.Messages(jetstream.PullMaxMessages(ix.batch))
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			ix.log.Warn("audit: read topic", "stream", stream, "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer func() {
		if stop() {
			it.Stop()
		}
	}()
	var end uint64 // the stream's last sequence, as last seen
	failures := 0
	for {
		m, err := it.Next()
		if err != nil {
			if errors.Is(err, jetstream.ErrMsgIteratorClosed) || ctx.Err() != nil {
				return
			}
			// Heartbeat misses and the like: the ordered consumer
			// recreates itself where it left off. A deleted stream fails
			// until discover stops this reader.
			failures++
			ix.log.Debug("audit: read topic", "stream", stream, "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(min(time.Duration(failures)*50*time.Millisecond, time.Second)):
			}
			continue
		}
		failures = 0
		md, err := m.Metadata()
		if err != nil {
			ix.log.Warn("audit: skipping unreadable message", "stream", stream, "error", err)
			continue
		}
		if ix.limiter != nil {
			now := time.Now()
			if e := md.Sequence.Stream + md.NumPending; e > end {
				if end != 0 {
					ix.lastGrowth.Store(now.UnixNano())
				}
				end = e
			}
			if now.UnixNano()-ix.lastGrowth.Load() < int64(busyFor) {
				if err := ix.limiter.Wait(ctx); err != nil {
					return
				}
			}
		}
		rec := ix.record(topic, dlq, m, md)
		select {
		case ix.ch <- item{stream: stream, created: created, rec: rec}:
		case <-ctx.Done():
			return
		}
	}
}

func first(h nats.Header, k string) string {
	if v := h[k]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// record reads m's attributes from its CloudEvents headers (NATS binding).
func (ix *Indexer) record(topic string, dlq bool, m jetstream.Msg, md *jetstream.MsgMetadata) Record {
	h := m.Headers()
	data := m.Data()
	r := Record{
		Topic:         topic,
		Seq:           md.Sequence.Stream,
		Stored:        md.Timestamp.UTC(),
		ID:            first(h, "ce-id"),
		Type:          first(h, "ce-type"),
		Source:        first(h, "ce-source"),
		Subject:       first(h, "ce-subject"),
		CorrelationID: first(h, "ce-correlationid"),
		CausationID:   first(h, "ce-causationid"),
		ContentType:   first(h, "ce-datacontenttype"),
		DeadLetter:    dlq,
		PayloadSize:   len(data),
	}
	if r.ContentType == "" {
		r.ContentType = first(h, "content-type")
	}
	if r.ID == "" {
		r.ID = first(h, jetstream.MsgIDHeader)
	}
	if r.Type == "" {
		r.Type = routeOf(m.Subject())
	}
	if v := first(h, "Herald-Redrives"); v != "" {
		r.Redrives, _ = strconv.Atoi(v)
	}
	r.Time = r.Stored
	if v := first(h, "ce-time"); v != "" {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			r.Time = t.UTC()
		}
	}
	if len(data) <= ix.maxPayload {
		r.Payload = data
		if r.Payload == nil {
			r.Payload = []byte{}
		}
	}
	return r
}

// routeOf returns the route of a message on "<stream>.<partition>.<route>".
func routeOf(subject string) string {
	_, rest, _ := strings.Cut(subject, ".")
	_, route, _ := strings.Cut(rest, ".")
	return route
}

// write batches what the readers send into the store until the channel
// closes.
func (ix *Indexer) write() {
	batch := make([]Record, 0, ix.batch)
	pos := map[string]Position{}
	t := time.NewTicker(ix.flushEvery)
	defer t.Stop()
	flush := func(closing bool) {
		if len(batch) == 0 {
			return
		}
		ps := make([]Position, 0, len(pos))
		for _, p := range pos {
			ps = append(ps, p)
		}
		for attempt := 1; ; attempt++ {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			err := ix.store.Write(ctx, batch, ps)
			cancel()
			if err == nil {
				break
			}
			if closing && attempt >= 3 {
				// Positions did not move: the next start reads these again.
				ix.log.Error("audit: giving up writing a batch at shutdown; it is indexed on the next start", "records", len(batch), "error", err)
				return
			}
			ix.log.Warn("audit: write failed; retrying", "records", len(batch), "attempt", attempt, "error", err)
			time.Sleep(min(time.Duration(attempt)*200*time.Millisecond, 5*time.Second))
		}
		ix.indexed.Add(uint64(len(batch)))
		ix.mu.Lock()
		for _, p := range ps {
			ix.pos[p.Stream] = p
		}
		ix.mu.Unlock()
		batch = batch[:0]
		clear(pos)
	}
	for {
		select {
		case it, ok := <-ix.ch:
			if !ok {
				flush(true)
				return
			}
			batch = append(batch, it.rec)
			pos[it.stream] = Position{Stream: it.stream, Created: it.created, Seq: it.rec.Seq}
			if len(batch) >= ix.batch {
				flush(false)
			}
		case <-t.C:
			flush(false)
		}
	}
}

// Indexed returns how many records this indexer wrote since it started.
func (ix *Indexer) Indexed() uint64 { return ix.indexed.Load() }

// Behind returns how many stored messages the index does not hold yet,
// summed over the topics.
func (ix *Indexer) Behind(ctx context.Context) (uint64, error) {
	last, err := ix.lastSeqs(ctx)
	if err != nil {
		return 0, err
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	var n uint64
	for name, s := range last {
		p := ix.pos[name]
		if !p.Created.Equal(s.created) {
			n += s.msgs
		} else if s.last > p.Seq {
			n += min(s.last-p.Seq, s.msgs)
		}
	}
	return n, nil
}

type streamEnd struct {
	created    time.Time
	last, msgs uint64
}

func (ix *Indexer) lastSeqs(ctx context.Context) (map[string]streamEnd, error) {
	out := map[string]streamEnd{}
	l := ix.js.ListStreams(ctx)
	for si := range l.Info() {
		if _, ok := si.Config.Metadata[metaTopic]; ok {
			out[si.Config.Name] = streamEnd{created: si.Created.UTC(), last: si.State.LastSeq, msgs: si.State.Msgs}
		}
	}
	return out, l.Err()
}

// Sync waits until the index holds every message stored in a topic before
// Sync was called, or ctx is done. Topics deleted (or deleted and created
// again) meanwhile are not waited for.
func (ix *Indexer) Sync(ctx context.Context) error {
	select {
	case ix.kick <- struct{}{}:
	default:
	}
	want, err := ix.lastSeqs(ctx)
	if err != nil {
		return fmt.Errorf("audit: sync: %w", err)
	}
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for i := 1; ; i++ {
		if i%20 == 0 {
			// Forget the topics that went away.
			now, err := ix.lastSeqs(ctx)
			if err != nil {
				return fmt.Errorf("audit: sync: %w", err)
			}
			for name, s := range want {
				if n, ok := now[name]; !ok || !n.created.Equal(s.created) {
					delete(want, name)
				}
			}
		}
		ix.mu.Lock()
		done := true
		for name, s := range want {
			p := ix.pos[name]
			if s.msgs > 0 && (!p.Created.Equal(s.created) || p.Seq < s.last) {
				done = false
				break
			}
		}
		ix.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("audit: sync: the index did not catch up: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// Query returns the records q selects. Payloads the index did not keep
// (larger than the payload limit) are read from their stream while it
// still holds them.
func (ix *Indexer) Query(ctx context.Context, q Query) ([]Record, error) {
	recs, err := ix.store.Query(ctx, q)
	if err != nil || q.NoPayload {
		return recs, err
	}
	streams := map[string]jetstream.Stream{}
	for i := range recs {
		r := &recs[i]
		if r.Payload != nil || r.PayloadSize == 0 {
			continue
		}
		name := natsjs.StreamName(r.Topic)
		st, ok := streams[name]
		if !ok {
			st, _ = ix.js.Stream(ctx, name)
			streams[name] = st
		}
		if st == nil {
			continue
		}
		m, err := st.GetMsg(ctx, r.Seq)
		if err != nil {
			continue // expired or deleted: the payload is gone
		}
		if id := first(m.Header, "ce-id"); id == r.ID || id == "" && first(m.Header, jetstream.MsgIDHeader) == r.ID {
			r.Payload = m.Data
		}
	}
	return recs, nil
}
