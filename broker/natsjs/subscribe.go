package natsjs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
)

// pinIDHeader is added by the server to deliveries of pinned consumers.
const pinIDHeader = "Nats-Pin-Id"

// ConsumerName returns the durable consumer that holds group's position.
func ConsumerName(group string) string { return strings.ReplaceAll(group, ".", "_") }

// Subscribe joins group opts.Group on topic. The group is a durable pull
// consumer named after it; an existing consumer keeps its position and
// takes the new ack wait, in-flight limit and route filter.
func (b *Broker) Subscribe(ctx context.Context, topic string, opts broker.SubscribeOptions) (broker.Subscription, error) {
	opts, err := opts.WithDefaults()
	if err != nil {
		return nil, err
	}
	si, err := b.stream(ctx, topic)
	if err != nil {
		return nil, err
	}
	if opts.KeyOrder {
		return b.subscribeOrdered(ctx, si, opts)
	}
	cons, err := b.consumer(ctx, si, opts)
	if err != nil {
		return nil, err
	}
	s := &subscription{
		b:       b,
		si:      si,
		confirm: opts.ConfirmAcks,
		ch:      make(chan *delivery, opts.MaxInFlight),
		done:    make(chan struct{}),
		tr:      newTracker(),
	}
	cc, err := cons.Consume(s.receive,
		jetstream.PullMaxMessages(opts.MaxInFlight),
		// Short pulls notice a consumer leader change within seconds.
		jetstream.PullExpiry(5*time.Second),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				b.log.Debug("natsjs: consume", "topic", topic, "group", opts.Group, "error", err)
			}
		}))
	if err != nil {
		return nil, fmt.Errorf("natsjs: topic %q group %q: consume: %w", topic, opts.Group, err)
	}
	s.cc = cc
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		cc.Stop()
		return nil, broker.ErrClosed
	}
	b.subs[s] = struct{}{}
	b.mu.Unlock()
	s.wg.Go(func() { s.tr.keepAlive(opts.AckWait, s.done, nil) })
	return s, nil
}

func (b *Broker) consumer(ctx context.Context, si *streamInfo, o broker.SubscribeOptions) (jetstream.Consumer, error) {
	filters := []string{si.name + ".>"}
	if len(o.Routes) > 1 && !b.modern {
		return nil, fmt.Errorf("natsjs: topic %q group %q: filtering on several routes needs NATS server 2.10 or later (connected to %s)", si.topic, o.Group, b.nc.ConnectedServerVersion())
	}
	if len(o.Routes) > 0 {
		filters = filters[:0]
		for _, r := range o.Routes {
			if err := broker.ValidateRoute(r); err != nil {
				return nil, err
			}
			filters = append(filters, si.name+".*."+r)
		}
	}
	return b.ensureConsumer(ctx, si, ConsumerName(o.Group), o, filters, nil)
}

// ensureConsumer creates the durable consumer name, or updates the
// settings an existing one may change (ack wait, in-flight limit, filter,
// priority settings); an existing consumer keeps its position. extra, if
// set, adjusts the config.
//
// A cluster that is slow to answer (creating a replicated consumer under
// load can take longer than one request's timeout) or electing a leader
// is asked again: every step is safe to repeat.
func (b *Broker) ensureConsumer(ctx context.Context, si *streamInfo, name string, o broker.SubscribeOptions,
	filters []string, extra func(*jetstream.ConsumerConfig)) (jetstream.Consumer, error) {
	var c jetstream.Consumer
	err := Retry(ctx, func(ctx context.Context) (err error) {
		c, err = b.ensureConsumerOnce(ctx, si, name, o, filters, extra)
		return err
	})
	return c, err
}

func (b *Broker) ensureConsumerOnce(ctx context.Context, si *streamInfo, name string, o broker.SubscribeOptions,
	filters []string, extra func(*jetstream.ConsumerConfig)) (jetstream.Consumer, error) {
	apply := func(c *jetstream.ConsumerConfig) {
		c.AckWait = o.AckWait
		c.MaxAckPending = o.MaxInFlight
		c.InactiveThreshold = o.InactiveAfter
		c.FilterSubject = ""
		c.FilterSubjects = filters
		if len(filters) == 1 {
			c.FilterSubject, c.FilterSubjects = filters[0], nil
		}
		if extra != nil {
			extra(c)
		}
	}
	existing, err := b.js.Consumer(ctx, si.name, name)
	if err == nil {
		cfg := existing.CachedInfo().Config
		apply(&cfg)
		c, err := b.js.UpdateConsumer(ctx, si.name, cfg)
		if err != nil {
			return nil, fmt.Errorf("natsjs: topic %q group %q: update consumer %q: %w", si.topic, o.Group, name, err)
		}
		return c, nil
	}
	if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("natsjs: topic %q group %q: %w", si.topic, o.Group, err)
	}
	cfg := jetstream.ConsumerConfig{
		Durable:     name,
		Description: "Herald group " + o.Group,
		AckPolicy:   jetstream.AckExplicitPolicy,
		MaxDeliver:  -1,
		Metadata:    map[string]string{"herald.group": o.Group},
	}
	switch o.Start.Kind {
	case broker.StartFirst:
		cfg.DeliverPolicy = jetstream.DeliverAllPolicy
	case broker.StartSequence:
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, o.Start.Seq
	case broker.StartTime:
		t := o.Start.Time
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &t
	default:
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	apply(&cfg)
	if n := b.stallCreates.Load(); n > 0 && b.stallCreates.CompareAndSwap(n, n-1) {
		<-ctx.Done() // as a cluster too busy to answer in time
		return nil, ctx.Err()
	}
	c, err := b.js.CreateOrUpdateConsumer(ctx, si.name, cfg)
	if err == nil {
		err = waitLeader(ctx, func(ctx context.Context) (*jetstream.ClusterInfo, error) {
			info, err := c.Info(ctx)
			if err != nil {
				return nil, err
			}
			return info.Cluster, nil
		})
	}
	if err != nil {
		return nil, fmt.Errorf("natsjs: topic %q group %q: create consumer %q: %w", si.topic, o.Group, name, err)
	}
	return c, nil
}

type subscription struct {
	b       *Broker
	si      *streamInfo
	cc      jetstream.ConsumeContext
	confirm bool
	ch      chan *delivery
	done    chan struct{}
	once    sync.Once
	tr      *tracker
	wg      sync.WaitGroup
}

// receive runs on the consume goroutine. The channel holds MaxInFlight
// deliveries, the consumer's MaxAckPending, so it only blocks when another
// client raised that limit.
func (s *subscription) receive(m jetstream.Msg) {
	d := newDelivery(m, s.b, s.si, s.confirm, s.tr, nil)
	s.tr.add(d)
	select {
	case s.ch <- d:
	case <-s.done:
		_ = m.Nak()
	}
}

func (s *subscription) Next(ctx context.Context) (broker.Delivery, error) {
	select {
	case <-s.done:
		return nil, broker.ErrClosed
	default:
	}
	select {
	case d := <-s.ch:
		return d, nil
	case <-s.done:
		return nil, broker.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Close stops fetching and hands buffered, never-returned deliveries back
// to the group at once.
func (s *subscription) Close() error {
	s.once.Do(func() {
		close(s.done)
		s.wg.Wait()
		if s.cc != nil {
			// Drain passes what the client already pulled to receive,
			// which hands it back to the group now rather than after
			// its ack wait.
			s.cc.Drain()
			<-s.cc.Closed()
		}
		for {
			select {
			case d := <-s.ch:
				_ = d.Nack(context.Background(), 0)
			default:
				s.b.mu.Lock()
				delete(s.b.subs, s)
				s.b.mu.Unlock()
				return
			}
		}
	})
	return nil
}

type delivery struct {
	m       jetstream.Msg
	b       *Broker
	si      *streamInfo
	confirm bool
	md      *jetstream.MsgMetadata
	msg     *broker.Message
	// tr tracks the delivery until it is settled; part is its partition
	// in a key-ordered subscription (nil otherwise).
	tr      *tracker
	part    *partition
	settled atomic.Bool
	// state is queued, claimed or revoked (key-ordered deliveries only).
	state atomic.Int32
	// prev and next link the delivery into its tracker; guarded by the
	// tracker's mutex.
	prev, next *delivery
}

// Revocation states of a key-ordered delivery (see broker.Revocable).
const (
	queued int32 = iota
	claimed
	revoked
)

// Claim implements broker.Revocable.
func (d *delivery) Claim() bool {
	if d.part == nil {
		return true
	}
	if d.part.released.Load() {
		// Not claimed before its partition was given up: it goes back
		// with the others, unless it was claimed just now.
		d.revoke()
	}
	return d.state.CompareAndSwap(queued, claimed) || d.state.Load() == claimed
}

// revoke takes d back unless it was claimed; it reports whether d is
// revoked.
func (d *delivery) revoke() bool {
	return d.state.CompareAndSwap(queued, revoked) || d.state.Load() == revoked
}

// done records that the delivery was settled (once).
func (d *delivery) done() {
	if d.settled.CompareAndSwap(false, true) && d.tr != nil {
		d.tr.remove(d)
	}
}

// newDelivery wraps m, parsing its metadata once: it is read from several
// goroutines (the handler's, the keepalive's).
func newDelivery(m jetstream.Msg, b *Broker, si *streamInfo, confirm bool, tr *tracker, part *partition) *delivery {
	md, err := m.Metadata()
	if err != nil {
		md = &jetstream.MsgMetadata{NumDelivered: 1}
	}
	return &delivery{m: m, b: b, si: si, confirm: confirm, md: md, tr: tr, part: part}
}

func (d *delivery) meta() *jetstream.MsgMetadata { return d.md }

func (d *delivery) Message() *broker.Message {
	if d.msg != nil {
		return d.msg
	}
	m := &broker.Message{Topic: d.si.topic, Data: d.m.Data()}
	// The subject is "<stream>.<partition>.<route>"; a publisher that
	// does not use Herald may leave the partition out.
	subj := d.m.Subject()
	if rest, ok := strings.CutPrefix(subj, d.si.name+"."); ok {
		if i := strings.IndexByte(rest, '.'); i >= 0 && isPartition(rest[:i]) {
			m.Route = rest[i+1:]
		} else if i >= 0 || !isPartition(rest) {
			m.Route = rest
		}
	}
	hdr := d.m.Headers()
	if len(hdr) > 0 {
		// Size the map for what it keeps: a map of up to 8 entries is one
		// allocation group, and most events have 7 attribute headers.
		n := len(hdr)
		for _, k := range [...]string{jetstream.MsgIDHeader, HeaderKey, pinIDHeader, batchIDHeader, batchSeqHeader, batchCommitHeader} {
			if _, ok := hdr[k]; ok {
				n--
			}
		}
		m.Header = make(map[string]string, n)
		for k, v := range hdr {
			if len(v) == 0 {
				continue
			}
			switch k {
			case jetstream.MsgIDHeader:
				m.ID = v[0]
			case HeaderKey:
				m.Key = v[0]
			case pinIDHeader, batchIDHeader, batchSeqHeader, batchCommitHeader:
				// Delivery metadata of pinned consumers and the group
				// commit's batch (groupcommit.go), not the message's.
			default:
				m.Header[k] = v[0]
			}
		}
	}
	d.b.adopt(m, d.Sequence(), d.Timestamp())
	d.msg = m
	return m
}

// isPartition reports whether a subject token is a partition number.
func isPartition(tok string) bool {
	if tok == "" {
		return false
	}
	for i := 0; i < len(tok); i++ {
		if tok[i] < '0' || tok[i] > '9' {
			return false
		}
	}
	return true
}

func (d *delivery) Attempt() int         { return int(d.meta().NumDelivered) }
func (d *delivery) Sequence() uint64     { return d.meta().Sequence.Stream }
func (d *delivery) Timestamp() time.Time { return d.meta().Timestamp }

func (d *delivery) Ack(ctx context.Context) error {
	if !d.Claim() {
		return fmt.Errorf("natsjs: ack: %w", broker.ErrRevoked)
	}
	defer d.done()
	var err error
	if d.confirm {
		err = d.m.DoubleAck(ctx)
	} else {
		err = d.m.Ack()
	}
	return wrapAckErr("ack", err)
}

func (d *delivery) Nack(ctx context.Context, delay time.Duration) error {
	if !d.Claim() {
		return fmt.Errorf("natsjs: nack: %w", broker.ErrRevoked)
	}
	defer d.done()
	if d.part != nil {
		// Its redelivery is a retry, not a stale copy (see admission).
		d.part.adm.noteNack(d.Sequence())
	}
	if d.part != nil && d.part.released.Load() {
		// The partition is being handed over: the events after this one
		// go back at once and in order, so this one must too, or the
		// next owner would get them before it.
		delay = 0
	}
	if delay <= 0 {
		return wrapAckErr("nack", d.m.Nak())
	}
	return wrapAckErr("nack", d.m.NakWithDelay(delay))
}

func (d *delivery) Term(ctx context.Context, reason string) error {
	if !d.Claim() {
		return fmt.Errorf("natsjs: term: %w", broker.ErrRevoked)
	}
	defer d.done()
	if reason == "" || !d.b.termReason {
		return wrapAckErr("term", d.m.Term())
	}
	return wrapAckErr("term", d.m.TermWithReason(reason))
}

func (d *delivery) InProgress(ctx context.Context) error {
	return wrapAckErr("in progress", d.m.InProgress())
}

func wrapAckErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, nats.ErrConnectionClosed) {
		err = fmt.Errorf("%w: %w", broker.ErrClosed, err)
	}
	return fmt.Errorf("natsjs: %s: %w", op, err)
}

// DeleteGroup removes group's consumer from topic: its position and
// pending deliveries are gone. Deleting a group that does not exist is not
// an error.
func (b *Broker) DeleteGroup(ctx context.Context, topic, group string) error {
	// Look the stream up without creating it: a topic that does not
	// exist has no groups.
	st, err := b.js.Stream(ctx, StreamName(topic))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("natsjs: delete group %q of topic %q: %w", group, topic, err)
	}
	names := []string{ConsumerName(group)}
	for p := range partitionsOf(st.CachedInfo().Config) {
		names = append(names, PartitionConsumerName(group, p))
	}
	for _, name := range names {
		err := st.DeleteConsumer(ctx, name)
		if err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return fmt.Errorf("natsjs: delete group %q of topic %q: %w", group, topic, err)
		}
	}
	return nil
}
