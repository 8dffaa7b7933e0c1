package rabbitmq

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/heraldhq/herald/broker"
)

// Subscribe joins opts.Group on topic. A new group gets its quorum
// queue(s) bound to the topic exchange; with opts.Start other than
// StartNew (and the topic log on) it is first filled from the log, see
// the package documentation for the one window where order can differ.
// An existing group keeps its queue and position.
//
// Prefetch is opts.MaxInFlight (split over the partitions of a
// partitioned group). A delivery not settled within opts.AckWait is
// requeued by the adapter. opts.ConfirmAcks makes Ack wait for a round
// trip on the channel after the ack, so the broker's channel has
// processed it.
func (b *Broker) Subscribe(ctx context.Context, topic string, opts broker.SubscribeOptions) (broker.Subscription, error) {
	if err := broker.ValidateName("topic", topic); err != nil {
		return nil, err
	}
	opts, err := opts.WithDefaults()
	if err != nil {
		return nil, err
	}
	if err := validateRoutes(opts.Routes); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if b.isClosed() {
		return nil, broker.ErrClosed
	}
	if opts.Start.Kind != broker.StartNew && !b.o.topicLog {
		return nil, fmt.Errorf("rabbitmq: topic %q group %q: start %s needs the topic log (WithTopicLog(true)); queues do not replay", topic, opts.Group, opts.Start)
	}
	if opts.Start.Kind == broker.StartSequence && opts.Start.Seq == 0 {
		return nil, fmt.Errorf("rabbitmq: topic %q group %q: start sequence must be 1 or more", topic, opts.Group)
	}
	cfg := b.topicConfig(topic)
	g := &group{
		topic: topic, name: opts.Group, queue: groupQueue(topic, opts.Group),
		n: max(cfg.Partitions, 1), routes: opts.Routes, sac: cfg.Partitions > 1 || opts.KeyOrder,
		limit: b.o.deliveryLimit, dlq: b.o.deadLetter, repl: b.replicas(cfg),
	}
	if len(g.queue)+len("/delay/86400000000") > 255 {
		return nil, fmt.Errorf("rabbitmq: topic %q group %q: queue name %q too long for RabbitMQ (255 bytes with suffixes); use shorter names", topic, opts.Group, g.queue)
	}
	if err := b.ensureTopic(ctx, topic); err != nil {
		return nil, err
	}
	exists, err := b.groupExists(ctx, g)
	if err != nil {
		return nil, err
	}
	if !exists {
		if err := b.withTopo(ctx, g.declare); err != nil {
			return nil, fmt.Errorf("rabbitmq: topic %q group %q: %w", topic, g.name, err)
		}
		if opts.Start.Kind == broker.StartNew {
			err = b.withTopo(ctx, g.bind)
		} else {
			err = b.replay(ctx, g, opts.Start)
		}
		if err != nil {
			return nil, fmt.Errorf("rabbitmq: topic %q group %q: %w", topic, g.name, err)
		}
	}
	b.note(ctx, topic, g.name)
	s := &subscription{
		b: b, g: g, opts: opts,
		changed:   make(chan struct{}),
		done:      make(chan struct{}),
		cancelled: make(chan struct{}),
		kick:      make(chan struct{}, 1),
	}
	s.prefetch = (opts.MaxInFlight + g.n - 1) / g.n
	s.openCtx, s.cancelOpen = context.WithCancel(b.ctx)
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, broker.ErrClosed
	}
	b.subs[s] = struct{}{}
	b.wg.Go(s.run)
	b.mu.Unlock()
	return s, nil
}

// subscription is one member of a group. A goroutine (run) owns its AMQP
// channel: it opens it, consumes, requeues deliveries past their ack wait,
// and reopens it after a connection loss.
type subscription struct {
	b        *Broker
	g        *group
	opts     broker.SubscribeOptions
	prefetch int

	mu      sync.Mutex
	st      *subState     // nil while the channel is down
	changed chan struct{} // closed and replaced when st changes
	closing bool
	// Outstanding deliveries, oldest deadline first.
	head, tail *delivery
	n          int

	done      chan struct{} // closed by Close: stop receiving
	cancelled chan struct{} // closed by run once consumers are cancelled
	kick      chan struct{} // a delivery was settled while closing
	// openCtx ends with Close or the Broker: it stops waiting for a
	// connection to reopen on.
	openCtx    context.Context
	cancelOpen context.CancelFunc
}

// subState is one incarnation of the subscription's channel.
type subState struct {
	ch         *amqp.Channel
	deliveries <-chan amqp.Delivery
	queueOf    map[string]string // consumer tag -> queue
	tags       []string
	closed     chan *amqp.Error
	stop       chan struct{} // stops the merge goroutines
	acks       *acker        // coalesces the channel's acks
}

func (s *subscription) setState(st *subState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st = st
	if st == nil {
		// The channel is gone; RabbitMQ requeued what it had delivered.
		for d := s.head; d != nil; {
			next := d.next
			d.prev, d.next, d.linked, d.lost = nil, nil, false, true
			d = next
		}
		s.head, s.tail, s.n = nil, nil, 0
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *subscription) run() {
	defer func() {
		s.b.mu.Lock()
		delete(s.b.subs, s)
		s.b.mu.Unlock()
		s.cancelOpen()
		s.signalCancelled()
	}()
	ctx := s.b.ctx
	backoff := 50 * time.Millisecond
	for {
		if s.finished() {
			return
		}
		st, err := s.open(s.openCtx)
		if err != nil {
			if errors.Is(err, broker.ErrClosed) || s.openCtx.Err() != nil {
				if s.finished() || ctx.Err() != nil {
					return
				}
				continue
			}
			s.b.o.log.Warn("rabbitmq subscription: reopen failed", "topic", s.g.topic, "group", s.g.name, "err", err)
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			backoff = min(backoff*2, 2*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		s.setState(st)
		lost := s.serve(ctx, st)
		st.acks.close()
		close(st.stop)
		s.setState(nil)
		if !lost {
			return
		}
	}
}

// finished reports whether a closed subscription has nothing left to do.
func (s *subscription) finished() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing && s.n == 0
}

// open declares the group's topology (again, after a broker restart) and
// starts consuming.
func (s *subscription) open(ctx context.Context) (*subState, error) {
	ch, err := s.b.sub.channel(ctx)
	if err != nil {
		return nil, err
	}
	fail := func(err error) (*subState, error) {
		_ = ch.Close()
		return nil, fmt.Errorf("topic %q group %q: %w", s.g.topic, s.g.name, err)
	}
	if err := s.g.declare(ch); err != nil {
		return fail(err)
	}
	if err := s.g.bind(ch); err != nil {
		return fail(err)
	}
	if err := ch.Qos(s.prefetch, 0, false); err != nil {
		return fail(err)
	}
	st := &subState{ch: ch, queueOf: map[string]string{}, stop: make(chan struct{}), acks: newAcker(ch)}
	st.closed = ch.NotifyClose(make(chan *amqp.Error, 1))
	s.mu.Lock()
	closing := s.closing
	s.mu.Unlock()
	if closing {
		// Closed meanwhile: no consumer, only the channel to settle on.
		none := make(chan amqp.Delivery)
		close(none)
		st.deliveries = none
		return st, nil
	}
	var ins []<-chan amqp.Delivery
	for _, q := range s.g.queues() {
		tag := consumerTag()
		in, err := ch.Consume(q, tag, false, false, false, false, nil)
		if err != nil {
			return fail(fmt.Errorf("consume %q: %w", q, err))
		}
		st.queueOf[tag] = q
		st.tags = append(st.tags, tag)
		ins = append(ins, in)
	}
	if len(ins) == 1 {
		st.deliveries = ins[0]
		return st, nil
	}
	merged := make(chan amqp.Delivery)
	var wg sync.WaitGroup
	for _, in := range ins {
		wg.Go(func() {
			for d := range in {
				select {
				case merged <- d:
				case <-st.stop:
					return
				}
			}
		})
	}
	s.b.wg.Go(func() { wg.Wait(); close(merged) })
	st.deliveries = merged
	return st, nil
}

func consumerTag() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "herald-" + hex.EncodeToString(b[:])
}

// serve runs until the channel is lost (true) or the subscription is
// closed and settled, or the broker closed (false).
func (s *subscription) serve(ctx context.Context, st *subState) (lost bool) {
	tick := min(max(s.opts.AckWait/10, 10*time.Millisecond), time.Second)
	ticker := time.NewTicker(tick)
	defer ticker.Stop()
	doneCh := s.done
	for {
		select {
		case <-ctx.Done():
			_ = st.acks.flush()
			_ = st.ch.Close()
			return false
		case <-st.closed:
			return true
		case <-ticker.C:
			s.sweep(st)
		case <-doneCh:
			doneCh = nil
			if s.g.sac {
				// Single-active-consumer queues: cancelling would hand
				// the partitions to the next member before the messages
				// buffered here are back, breaking key order. Closing the
				// channel once what Next returned is settled returns them
				// first, then activates the next member.
				s.signalCancelled()
			} else {
				s.cancelConsumers(st)
			}
			if s.finished() {
				_ = st.acks.flush()
				_ = st.ch.Close()
				return false
			}
		case <-s.kick:
			if doneCh == nil && s.finished() {
				_ = st.acks.flush()
				_ = st.ch.Close()
				return false
			}
		}
	}
}

// cancelConsumers stops delivery and requeues what RabbitMQ sent but Next
// never returned.
func (s *subscription) cancelConsumers(st *subState) {
	defer s.signalCancelled()
	for _, tag := range st.tags {
		if err := st.ch.Cancel(tag, false); err != nil {
			return // the channel is gone, and with it the unacked deliveries
		}
	}
	for d := range st.deliveries {
		_ = st.acks.nack(d.DeliveryTag)
	}
}

// signalCancelled lets Close return.
func (s *subscription) signalCancelled() {
	select {
	case <-s.cancelled:
	default:
		close(s.cancelled)
	}
}

// sweep requeues deliveries past their ack wait.
func (s *subscription) sweep(st *subState) {
	now := time.Now()
	var expired []*delivery
	s.mu.Lock()
	for d := s.head; d != nil && !now.Before(d.deadline); d = s.head {
		s.unlinkLocked(d)
		d.expired = true
		expired = append(expired, d)
	}
	s.mu.Unlock()
	for _, d := range expired {
		if d.st == st {
			_ = st.acks.nack(d.tag)
		}
	}
	if len(expired) > 0 {
		s.kickRun()
	}
}

func (s *subscription) kickRun() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *subscription) linkLocked(d *delivery) {
	d.deadline = time.Now().Add(s.opts.AckWait)
	d.prev, d.next, d.linked = s.tail, nil, true
	if s.tail != nil {
		s.tail.next = d
	} else {
		s.head = d
	}
	s.tail = d
	s.n++
}

func (s *subscription) unlinkLocked(d *delivery) {
	if d.prev != nil {
		d.prev.next = d.next
	} else {
		s.head = d.next
	}
	if d.next != nil {
		d.next.prev = d.prev
	} else {
		s.tail = d.prev
	}
	d.prev, d.next, d.linked = nil, nil, false
	s.n--
}

// Next returns the next delivery. While the connection is down it waits
// for the subscription to be restored.
func (s *subscription) Next(ctx context.Context) (broker.Delivery, error) {
	for {
		s.mu.Lock()
		if s.closing {
			s.mu.Unlock()
			return nil, broker.ErrClosed
		}
		st, changed := s.st, s.changed
		s.mu.Unlock()
		var in <-chan amqp.Delivery
		if st != nil {
			in = st.deliveries
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.done:
			return nil, broker.ErrClosed
		case <-changed:
		case ad, ok := <-in:
			if !ok {
				// The channel closed; wait for run to replace it.
				select {
				case <-ctx.Done():
					return nil, ctx.Err()
				case <-s.done:
					return nil, broker.ErrClosed
				case <-changed:
				}
				continue
			}
			if d := s.accept(st, &ad); d != nil {
				return d, nil
			}
		}
	}
}

// accept wraps ad and starts its ack wait, or returns nil when ad can no
// longer be settled.
func (s *subscription) accept(st *subState, ad *amqp.Delivery) *delivery {
	d := &delivery{s: s, st: st, tag: ad.DeliveryTag, queue: st.queueOf[ad.ConsumerTag]}
	d.decode(s.g.topic, ad, &s.b.o)
	s.mu.Lock()
	if s.closing || s.st != st {
		same := s.st == st
		s.mu.Unlock()
		if same {
			_ = st.acks.nack(ad.DeliveryTag)
		}
		return nil
	}
	s.linkLocked(d)
	s.mu.Unlock()
	st.acks.received(d.tag)
	return d
}

// Close cancels the consumers and requeues deliveries never returned by
// Next. Deliveries returned by Next can still be settled; those left
// unsettled are requeued after their ack wait (or when the Broker closes).
func (s *subscription) Close() error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		<-s.cancelled
		return nil
	}
	s.closing = true
	close(s.done)
	s.mu.Unlock()
	s.cancelOpen()
	<-s.cancelled
	return nil
}

// flushAcks sends the acks the channel's acker holds.
func (s *subscription) flushAcks() {
	s.mu.Lock()
	st := s.st
	s.mu.Unlock()
	if st != nil {
		_ = st.acks.flush()
	}
}

// abort is Close for the Broker's shutdown; run then closes the channel.
func (s *subscription) abort() {
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		close(s.done)
	}
	s.mu.Unlock()
	s.cancelOpen()
}

// delivery is one message handed out by Next.
type delivery struct {
	s        *subscription
	st       *subState
	tag      uint64
	queue    string
	msg      broker.Message
	attempt  int
	seq      uint64
	at       time.Time
	copyHdr  amqp.Table // headers to carry into a delayed copy
	ct       string
	deadline time.Time

	prev, next *delivery
	linked     bool
	expired    bool // requeued by the ack wait
	lost       bool // its channel closed: RabbitMQ requeued it
}

func (d *delivery) Message() *broker.Message { return &d.msg }
func (d *delivery) Attempt() int             { return d.attempt }
func (d *delivery) Timestamp() time.Time     { return d.at }

// Sequence is the message's position in the topic log (stream offset + 1)
// for messages a group received by replay from the log, and 0 for messages
// routed to the group's queue as they were published: RabbitMQ does not
// tell a queue consumer where the message sits in the stream.
func (d *delivery) Sequence() uint64 { return d.seq }

// String describes the delivery for logs.
func (d *delivery) String() string {
	return fmt.Sprintf("rabbitmq delivery %s/%s tag %d attempt %d", d.s.g.topic, d.queue, d.tag, d.attempt)
}

func intHeader(v any) int64 {
	switch n := v.(type) {
	case int64:
		return n
	case int32:
		return int64(n)
	case int:
		return int64(n)
	case int16:
		return int64(n)
	case int8:
		return int64(n)
	case uint8:
		return int64(n)
	case uint16:
		return int64(n)
	case uint32:
		return int64(n)
	}
	return 0
}

func (d *delivery) decode(topic string, ad *amqp.Delivery, o *options) {
	m := &d.msg
	m.Topic = topic
	m.Route = ad.RoutingKey
	m.ID = ad.MessageId
	m.Data = ad.Body
	d.ct = ad.ContentType
	var prior, count int64
	herald := false
	n := len(ad.Headers)
	if ad.ContentType != "" {
		n++
	}
	m.Header = make(map[string]string, n)
	for k, v := range ad.Headers {
		if strings.HasPrefix(k, "herald-") {
			switch k {
			case hKey:
				m.Key, _ = v.(string)
			case hRoute:
				if r, ok := v.(string); ok {
					m.Route = r
				}
			case hSeq:
				d.seq = uint64(intHeader(v))
			case hTime:
				d.at = time.UnixMilli(intHeader(v))
				herald = true
			case hAttempt:
				prior = intHeader(v)
			}
			continue
		}
		if strings.HasPrefix(k, "x-") {
			if k == "x-delivery-count" {
				count = intHeader(v)
			}
			continue
		}
		switch x := v.(type) {
		case string:
			m.Header[k] = x
		case []byte:
			m.Header[k] = string(x)
		case time.Time:
			// The AMQP binding lets senders give attributes native types;
			// a timestamp becomes the RFC 3339 text the binary mode uses.
			m.Header[k] = x.UTC().Format(time.RFC3339Nano)
		default:
			m.Header[k] = fmt.Sprint(x)
		}
	}
	if ad.ContentType != "" {
		m.Header[hCT] = ad.ContentType
	}
	if count == 0 && ad.Redelivered {
		count = 1
	}
	d.attempt = int(1 + prior + count)
	if d.at.IsZero() {
		d.at = ad.Timestamp
	}
	if !herald {
		o.adopt(m, ad.Timestamp)
	}
	d.copyHdr = ad.Headers
}

// take removes d from the outstanding deliveries; the caller then owns
// settling it on the broker. It fails when d was already settled, its ack
// wait expired, or its channel closed.
func (d *delivery) take() (*subState, error) {
	s := d.s
	if s.b.isClosed() {
		return nil, broker.ErrClosed
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if !d.linked {
		if d.lost {
			return nil, fmt.Errorf("%w: rabbitmq: %s: the channel closed and RabbitMQ requeued the message; it will be delivered again", broker.ErrUnavailable, d)
		}
		return nil, nil // already settled, or requeued after its ack wait: a late settle is ignored
	}
	s.unlinkLocked(d)
	if s.closing && s.n == 0 {
		s.kickRun()
	}
	return d.st, nil
}

func settleErr(d *delivery, what string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: rabbitmq: %s %s: %w", broker.ErrUnavailable, what, d, err)
}

// Ack removes the message from the group's queue.
func (d *delivery) Ack(ctx context.Context) error {
	st, err := d.take()
	if st == nil {
		return err
	}
	// Coalesced with the channel's other acks (see acker); an
	// exactly-once group sends it now, to confirm it.
	if err := st.acks.ack(d.tag, d.s.opts.ConfirmAcks); err != nil {
		return settleErr(d, "ack", err)
	}
	if d.s.opts.ConfirmAcks {
		// Channel methods are handled in order: once basic.qos is
		// answered, the broker has processed the ack before it.
		return settleErr(d, "confirm ack", st.ch.Qos(d.s.prefetch, 0, false))
	}
	return nil
}

// Term rejects the message without requeue: it goes to the group's
// dead-letter queue (x-death records reason "rejected") or, without one,
// is dropped. reason is logged at debug level; AMQP's reject carries no
// text.
func (d *delivery) Term(ctx context.Context, reason string) error {
	st, err := d.take()
	if st == nil {
		return err
	}
	d.s.b.o.log.Debug("rabbitmq: message terminated", "topic", d.msg.Topic, "group", d.s.g.name, "event_id", d.msg.ID, "reason", reason)
	return settleErr(d, "reject", st.acks.reject(d.tag))
}

// InProgress restarts the delivery's ack wait. It does not reset
// RabbitMQ's own consumer timeout (consumer_timeout, 30 minutes by
// default), after which the broker closes the channel.
func (d *delivery) InProgress(ctx context.Context) error {
	s := d.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if !d.linked {
		if d.lost {
			return fmt.Errorf("%w: rabbitmq: %s: the channel closed", broker.ErrUnavailable, d)
		}
		return nil
	}
	s.unlinkLocked(d)
	s.linkLocked(d)
	return nil
}

// Nack with delay 0 requeues the message (RabbitMQ counts it in
// x-delivery-count). With a delay it publishes a copy to a delay queue of
// the group (a quorum queue whose message TTL is the delay rounded up to
// one of at most 8 steps per doubling, dead-lettering back to the group's
// queue), waits for its confirm and then acks the original. Over the
// delivery limit the message is rejected to the dead-letter queue instead.
func (d *delivery) Nack(ctx context.Context, delay time.Duration) error {
	if lim := d.s.g.limit; lim > 0 && d.attempt >= lim {
		return d.Term(ctx, fmt.Sprintf("delivery limit %d reached", lim))
	}
	st, err := d.take()
	if st == nil {
		return err
	}
	if delay <= 0 {
		return settleErr(d, "nack", st.acks.nack(d.tag))
	}
	ms := delayTier(delay)
	dq := delayQueue(d.queue, ms)
	if err := d.s.b.ensureDelayQueue(ctx, dq, d.queue, ms, d.s.g.repl); err != nil {
		_ = st.acks.nack(d.tag)
		return fmt.Errorf("rabbitmq: nack %s: %w", d, err)
	}
	hd := make(amqp.Table, len(d.copyHdr)+2)
	for k, v := range d.copyHdr {
		if !strings.HasPrefix(k, "x-") && k != hTag {
			hd[k] = v
		}
	}
	hd[hRoute] = d.msg.Route
	hd[hAttempt] = int64(d.attempt)
	errs := d.s.b.sendRaw(ctx, []rawMsg{{exchange: "", key: dq, p: amqp.Publishing{
		Headers: hd, ContentType: d.ct, MessageId: d.msg.ID, Timestamp: d.at, Body: d.msg.Data,
	}}})
	if errs[0] != nil {
		_ = st.acks.nack(d.tag)
		return fmt.Errorf("rabbitmq: nack %s: delayed copy: %w", d, errs[0])
	}
	return settleErr(d, "ack after delayed copy", st.acks.ack(d.tag, false))
}

// delayTier rounds d up to whole milliseconds and then to one of 8 steps
// per doubling (at most 12.5% more), so that jittered backoffs share a
// bounded set of delay queues.
func delayTier(d time.Duration) int64 {
	ms := int64((d + time.Millisecond - 1) / time.Millisecond)
	if ms <= 16 {
		return max(ms, 1)
	}
	p := int64(1)
	for p*2 <= ms {
		p *= 2
	}
	step := p / 8
	return (ms + step - 1) / step * step
}

// ensureDelayQueue declares delay queue dq for queue q. It is declared
// again when older than a quarter of its expiry, so an idle delay queue
// disappears (x-expires) but never while a message waits in it.
func (b *Broker) ensureDelayQueue(ctx context.Context, dq, q string, ms int64, repl int) error {
	expires := 2*ms + int64(10*time.Minute/time.Millisecond)
	now := time.Now()
	if at, ok := b.delays.Load(dq); ok && now.Sub(at.(time.Time)) < time.Duration(expires/4)*time.Millisecond {
		return nil
	}
	args := amqp.Table{
		"x-queue-type":              "quorum",
		"x-message-ttl":             ms,
		"x-expires":                 expires,
		"x-dead-letter-exchange":    "",
		"x-dead-letter-routing-key": q,
		"x-dead-letter-strategy":    "at-least-once",
		"x-overflow":                "reject-publish",
	}
	if repl > 0 {
		args["x-quorum-initial-group-size"] = int64(repl)
	}
	err := b.withTopo(ctx, func(ch *amqp.Channel) error {
		_, err := ch.QueueDeclare(dq, true, false, false, false, args)
		return err
	})
	if err != nil {
		return fmt.Errorf("declare delay queue %q: %w", dq, err)
	}
	b.delays.Store(dq, now)
	return nil
}
