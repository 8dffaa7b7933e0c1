// Package memory is an in-process broker for unit tests of code built on
// Herald. It keeps every message in memory until closed and implements the
// full broker SPI (groups, start positions, ack wait, delayed nack, term,
// dedup), and passes the conformance suite in broker/brokertest.
//
// It is not durable and not meant for production.
package memory

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
)

// Broker is an in-memory broker. The zero value is not usable; call New.
// It is safe for concurrent use.
type Broker struct {
	dedupWindow time.Duration
	now         func() time.Time

	mu     sync.Mutex
	topics map[string]*topic
	closed bool
	subs   map[*subscription]struct{}
}

var _ broker.Broker = (*Broker)(nil)
var _ broker.TopicManager = (*Broker)(nil)

// Option configures a Broker.
type Option func(*Broker)

// WithDedupWindow sets how long a message ID is remembered. Default 2m.
func WithDedupWindow(d time.Duration) Option { return func(b *Broker) { b.dedupWindow = d } }

// New returns an empty in-memory broker.
func New(opts ...Option) *Broker {
	b := &Broker{
		dedupWindow: 2 * time.Minute,
		now:         time.Now,
		topics:      make(map[string]*topic),
		subs:        make(map[*subscription]struct{}),
	}
	for _, o := range opts {
		o(b)
	}
	return b
}

type stored struct {
	seq uint64
	at  time.Time
	msg broker.Message
}

type topic struct {
	name   string
	cfg    broker.TopicConfig
	log    []stored // log[i].seq == i+1
	ids    map[string]time.Time
	groups map[string]*group
	// changed is closed and replaced whenever something a waiting
	// subscription may care about happens.
	changed chan struct{}
}

type pending struct {
	attempt  int
	deadline time.Time // when an unsettled delivery is redelivered
	token    uint64    // identifies the current delivery
}

type retry struct {
	seq uint64
	at  time.Time
}

type group struct {
	name     string
	routes   map[string]bool
	cursor   uint64 // next sequence never delivered to this group
	inflight map[uint64]*pending
	attempts map[uint64]int // attempts of messages waiting for redelivery
	retries  []retry        // sorted by seq
	maxIn    int
	ackWait  time.Duration
	tokens   uint64
}

func (t *topic) notify() {
	close(t.changed)
	t.changed = make(chan struct{})
}

func (b *Broker) topicLocked(name string) *topic {
	t := b.topics[name]
	if t == nil {
		t = &topic{
			name:    name,
			ids:     make(map[string]time.Time),
			groups:  make(map[string]*group),
			changed: make(chan struct{}),
		}
		b.topics[name] = t
	}
	return t
}

// EnsureTopic creates topic or updates its config. Of the config, only
// DedupWindow applies in memory: retention limits are not enforced.
func (b *Broker) EnsureTopic(_ context.Context, name string, cfg broker.TopicConfig) error {
	if err := broker.ValidateName("topic", name); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return broker.ErrClosed
	}
	b.topicLocked(name).cfg = cfg
	return nil
}

// Publish stores msgs; a message is confirmed as soon as it is stored.
func (b *Broker) Publish(ctx context.Context, msgs ...*broker.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	errs := make([]error, len(msgs))
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return broker.ErrClosed
	}
	now := b.now()
	touched := make(map[*topic]bool, 1)
	for i, m := range msgs {
		if err := broker.ValidateName("topic", m.Topic); err != nil {
			errs[i] = err
			continue
		}
		if err := broker.ValidateRoute(m.Route); err != nil {
			errs[i] = err
			continue
		}
		t := b.topicLocked(m.Topic)
		window := b.dedupWindow
		if t.cfg.DedupWindow > 0 {
			window = t.cfg.DedupWindow
		}
		if m.ID != "" {
			if at, ok := t.ids[m.ID]; ok && now.Sub(at) < window {
				continue // duplicate: confirmed, not stored again
			}
			t.ids[m.ID] = now
		}
		c := broker.Message{
			Topic: m.Topic, Route: m.Route, Key: m.Key, ID: m.ID,
			Data: slices.Clone(m.Data),
		}
		if m.Header != nil {
			c.Header = make(map[string]string, len(m.Header))
			for k, v := range m.Header {
				c.Header[k] = v
			}
		}
		t.log = append(t.log, stored{seq: uint64(len(t.log)) + 1, at: now, msg: c})
		touched[t] = true
	}
	for t := range touched {
		t.notify()
	}
	return broker.NewPublishError(errs)
}

// Subscribe joins a group; see broker.Subscriber.
func (b *Broker) Subscribe(ctx context.Context, name string, opts broker.SubscribeOptions) (broker.Subscription, error) {
	if err := broker.ValidateName("topic", name); err != nil {
		return nil, err
	}
	opts, err := opts.WithDefaults()
	if err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, broker.ErrClosed
	}
	t := b.topicLocked(name)
	g := t.groups[opts.Group]
	if g == nil {
		g = &group{
			name:     opts.Group,
			inflight: make(map[uint64]*pending),
			attempts: make(map[uint64]int),
			cursor:   b.startLocked(t, opts.Start),
		}
		t.groups[opts.Group] = g
	}
	g.maxIn = opts.MaxInFlight
	g.ackWait = opts.AckWait
	g.routes = nil
	if len(opts.Routes) > 0 {
		g.routes = make(map[string]bool, len(opts.Routes))
		for _, r := range opts.Routes {
			g.routes[r] = true
		}
	}
	s := &subscription{b: b, t: t, g: g, done: make(chan struct{})}
	b.subs[s] = struct{}{}
	return s, nil
}

func (b *Broker) startLocked(t *topic, s broker.Start) uint64 {
	switch s.Kind {
	case broker.StartFirst:
		return 1
	case broker.StartSequence:
		return s.Seq
	case broker.StartTime:
		i, _ := slices.BinarySearchFunc(t.log, s.Time, func(m stored, at time.Time) int {
			return m.at.Compare(at)
		})
		return uint64(i) + 1
	default:
		return uint64(len(t.log)) + 1
	}
}

// Close stops every subscription. Further calls return broker.ErrClosed.
func (b *Broker) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil
	}
	b.closed = true
	for s := range b.subs {
		s.closeLocked()
	}
	for _, t := range b.topics {
		t.notify()
	}
	return nil
}

type subscription struct {
	b      *Broker
	t      *topic
	g      *group
	done   chan struct{}
	closed bool
}

func (s *subscription) closeLocked() {
	if !s.closed {
		s.closed = true
		close(s.done)
		delete(s.b.subs, s)
	}
}

func (s *subscription) Close() error {
	s.b.mu.Lock()
	defer s.b.mu.Unlock()
	s.closeLocked()
	return nil
}

func (s *subscription) Next(ctx context.Context) (broker.Delivery, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		s.b.mu.Lock()
		if s.closed || s.b.closed {
			s.b.mu.Unlock()
			return nil, broker.ErrClosed
		}
		d, wake := s.takeLocked(s.b.now())
		changed := s.t.changed
		s.b.mu.Unlock()
		if d != nil {
			return d, nil
		}
		var tc <-chan time.Time
		if !wake.IsZero() {
			wait := time.Until(wake)
			if wait < 0 {
				wait = 0
			}
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			tc = timer.C
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-s.done:
			return nil, broker.ErrClosed
		case <-changed:
		case <-tc:
		}
	}
}

// takeLocked returns the next delivery for the group, or the time at which
// one may become available (zero: only on change).
func (s *subscription) takeLocked(now time.Time) (*delivery, time.Time) {
	g, t := s.g, s.t
	var wake time.Time
	later := func(at time.Time) {
		if wake.IsZero() || at.Before(wake) {
			wake = at
		}
	}
	// Unsettled deliveries past their deadline become retries.
	for seq, p := range g.inflight {
		if !now.Before(p.deadline) {
			delete(g.inflight, seq)
			g.attempts[seq] = p.attempt
			g.addRetry(retry{seq: seq, at: now})
		} else {
			later(p.deadline)
		}
	}
	if len(g.inflight) >= g.maxIn {
		return nil, wake
	}
	for i, r := range g.retries {
		if now.Before(r.at) {
			later(r.at)
			continue
		}
		g.retries = slices.Delete(g.retries, i, i+1)
		attempt := g.attempts[r.seq] + 1
		delete(g.attempts, r.seq)
		return s.deliverLocked(r.seq, attempt, now), wake
	}
	for g.cursor <= uint64(len(t.log)) {
		seq := g.cursor
		g.cursor++
		if g.routes != nil && !g.routes[t.log[seq-1].msg.Route] {
			continue
		}
		return s.deliverLocked(seq, 1, now), wake
	}
	return nil, wake
}

func (g *group) addRetry(r retry) {
	i, _ := slices.BinarySearchFunc(g.retries, r.seq, func(x retry, seq uint64) int {
		switch {
		case x.seq < seq:
			return -1
		case x.seq > seq:
			return 1
		}
		return 0
	})
	g.retries = slices.Insert(g.retries, i, r)
}

func (s *subscription) deliverLocked(seq uint64, attempt int, now time.Time) *delivery {
	g := s.g
	g.tokens++
	g.inflight[seq] = &pending{attempt: attempt, deadline: now.Add(g.ackWait), token: g.tokens}
	st := s.t.log[seq-1]
	m := st.msg
	if m.Header != nil {
		h := make(map[string]string, len(m.Header))
		for k, v := range m.Header {
			h[k] = v
		}
		m.Header = h
	}
	return &delivery{s: s, seq: seq, attempt: attempt, at: st.at, token: g.tokens, msg: m}
}

type delivery struct {
	s       *subscription
	seq     uint64
	attempt int
	at      time.Time
	token   uint64
	msg     broker.Message
}

func (d *delivery) Message() *broker.Message { return &d.msg }
func (d *delivery) Attempt() int             { return d.attempt }
func (d *delivery) Sequence() uint64         { return d.seq }
func (d *delivery) Timestamp() time.Time     { return d.at }

// settle applies f to the delivery if it is still the current one.
func (d *delivery) settle(f func(g *group, p *pending)) error {
	b := d.s.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return broker.ErrClosed
	}
	g := d.s.g
	p := g.inflight[d.seq]
	if p == nil || p.token != d.token {
		return nil // already settled or redelivered: a late settle is ignored
	}
	f(g, p)
	d.s.t.notify()
	return nil
}

func (d *delivery) Ack(ctx context.Context) error {
	return d.settle(func(g *group, _ *pending) { delete(g.inflight, d.seq) })
}

func (d *delivery) Nack(ctx context.Context, delay time.Duration) error {
	return d.settle(func(g *group, p *pending) {
		delete(g.inflight, d.seq)
		g.attempts[d.seq] = p.attempt
		g.addRetry(retry{seq: d.seq, at: d.s.b.now().Add(delay)})
	})
}

func (d *delivery) Term(ctx context.Context, reason string) error {
	return d.settle(func(g *group, _ *pending) { delete(g.inflight, d.seq) })
}

func (d *delivery) InProgress(ctx context.Context) error {
	return d.settle(func(g *group, p *pending) { p.deadline = d.s.b.now().Add(g.ackWait) })
}

// String describes the delivery for logs.
func (d *delivery) String() string {
	return fmt.Sprintf("memory delivery %s/%d attempt %d", d.msg.Topic, d.seq, d.attempt)
}
