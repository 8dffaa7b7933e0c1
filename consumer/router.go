package consumer

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

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/idempotency"
)

// Outcome is what became of a delivery.
type Outcome int

// Outcomes reported to an Observer.
const (
	// OutcomeAck: handled successfully and acknowledged.
	OutcomeAck Outcome = iota
	// OutcomeRetry: failed; redelivery requested.
	OutcomeRetry
	// OutcomeDeadLetter: moved to the dead-letter queue and acknowledged.
	OutcomeDeadLetter
	// OutcomeDrop: discarded (terminated) without dead-lettering.
	OutcomeDrop
	// OutcomeUnknown: no handler for the type; acknowledged and counted.
	OutcomeUnknown
	// OutcomeDuplicate: already handled by this group; acknowledged.
	OutcomeDuplicate
	// OutcomeSkipped: a redriven event meant for another group;
	// acknowledged without running a handler.
	OutcomeSkipped
)

// String returns the outcome's metric label: ack, retry, dlq, dropped,
// unknown, duplicate or skipped.
func (o Outcome) String() string {
	switch o {
	case OutcomeRetry:
		return "retry"
	case OutcomeDeadLetter:
		return "dlq"
	case OutcomeDrop:
		return "dropped"
	case OutcomeUnknown:
		return "unknown"
	case OutcomeDuplicate:
		return "duplicate"
	case OutcomeSkipped:
		return "skipped"
	default:
		return "ack"
	}
}

// Observer is told about every delivery; telemetry implements it. Its
// methods are called from handler goroutines and must be safe for
// concurrent use and quick.
type Observer interface {
	// Received is called when a delivery is decoded, before its handler.
	Received(m *Message)
	// Settled is called after the delivery was acked, nacked or
	// terminated. err is the handler chain's error, handled how long the
	// handler chain ran.
	Settled(m *Message, o Outcome, err error, handled time.Duration)
}

// UnknownPolicy says what to do with an event no handler is registered for.
type UnknownPolicy int

const (
	// UnknownAck acknowledges the event and counts it (OutcomeUnknown).
	UnknownAck UnknownPolicy = iota
	// UnknownDeadLetter moves it to the dead-letter queue.
	UnknownDeadLetter
)

// Router dispatches the events of a consumer group to handlers by type.
// Register handlers, then call Run once.
type Router struct {
	sub    broker.Subscriber
	pub    broker.Publisher
	group  string
	topics []string
	cfg    config

	mu       sync.Mutex
	handlers map[string]Handler
	fallback Handler
	running  atomic.Bool
	ready    chan struct{}
	breaker  *Breaker
	dlq      *deadLetterer
}

type config struct {
	concurrency     int
	mode            Mode
	binding         event.Binding
	start           broker.Start
	ackWait         time.Duration
	maxInFlight     int
	shutdownTimeout time.Duration
	unknown         UnknownPolicy
	retry           *RetryPolicy
	deadLetter      bool
	dlqTopic        func(string) string
	timeout         time.Duration
	breaker         *BreakerConfig
	store           idempotency.Store
	idemLease       time.Duration
	idemTTL         time.Duration
	maxDepth        int
	use             []Middleware
	observer        Observer
	log             *slog.Logger
	failDelay       time.Duration
	keyOrder        bool
	// noBreakerReports keeps a router with a breaker from reporting its
	// state to BreakerTopic.
	noBreakerReports bool
}

// Option configures a Router.
type Option func(*config) error

// WithConcurrency sets how many handlers run at once. Events with the same
// partition key always run one at a time, in order. Default 16.
func WithConcurrency(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("concurrency %d: must be at least 1", n)
		}
		c.concurrency = n
		return nil
	}
}

// WithMode sets the delivery mode. Default AtLeastOnce.
func WithMode(m Mode) Option { return func(c *config) error { c.mode = m; return nil } }

// WithBinding sets the CloudEvents binding used to decode deliveries.
// Default event.NATS.
func WithBinding(b event.Binding) Option { return func(c *config) error { c.binding = b; return nil } }

// WithStart sets where a new group starts. Default broker.FromNew.
func WithStart(s broker.Start) Option { return func(c *config) error { c.start = s; return nil } }

// WithAckWait sets how long a delivery may run before the broker
// redelivers it. Default 30s.
func WithAckWait(d time.Duration) Option { return func(c *config) error { c.ackWait = d; return nil } }

// WithMaxInFlight caps deliveries fetched and not yet settled. Default 1024.
func WithMaxInFlight(n int) Option { return func(c *config) error { c.maxInFlight = n; return nil } }

// WithShutdownTimeout bounds how long Run waits for in-flight handlers
// after its context is cancelled; then their contexts are cancelled.
// Default 30s.
func WithShutdownTimeout(d time.Duration) Option {
	return func(c *config) error { c.shutdownTimeout = d; return nil }
}

// WithUnknownTypes sets the policy for events without a handler. Default
// UnknownAck.
func WithUnknownTypes(p UnknownPolicy) Option {
	return func(c *config) error { c.unknown = p; return nil }
}

// WithRetry sets the retry policy. Default DefaultRetryPolicy.
func WithRetry(p RetryPolicy) Option {
	return func(c *config) error {
		if err := p.validate(); err != nil {
			return err
		}
		c.retry = &p
		return nil
	}
}

// WithoutRetry turns retries off: a failure goes to the dead-letter queue
// at once.
func WithoutRetry() Option { return func(c *config) error { c.retry = nil; return nil } }

// WithoutDeadLetter turns the dead-letter queue off: events that exhaust
// their retries, and poison messages, are terminated and logged. Only for
// topics where losing an event is acceptable.
func WithoutDeadLetter() Option { return func(c *config) error { c.deadLetter = false; return nil } }

// WithDeadLetterTopic sets the dead-letter topic for a source topic.
// Default DeadLetterTopic (topic + ".dlq").
func WithDeadLetterTopic(f func(topic string) string) Option {
	return func(c *config) error { c.dlqTopic = f; return nil }
}

// WithTimeout bounds each handler run. Default none.
func WithTimeout(d time.Duration) Option { return func(c *config) error { c.timeout = d; return nil } }

// WithBreaker installs a circuit breaker that pauses consumption while the
// handlers keep failing and probes to recover. The router reports the
// breaker's state to BreakerTopic for the dashboard (see
// WithoutBreakerReports).
func WithBreaker(b BreakerConfig) Option {
	return func(c *config) error { c.breaker = &b; return nil }
}

// WithIdempotency claims each event id in store before its handler, so a
// redelivered event is handled once per group: lease bounds a claim whose
// holder died, ttl how long a completion is remembered.
func WithIdempotency(store idempotency.Store, lease, ttl time.Duration) Option {
	return func(c *config) error {
		if store == nil {
			return errors.New("WithIdempotency: store is nil")
		}
		c.store, c.idemLease, c.idemTTL = store, lease, ttl
		return nil
	}
}

// WithMaxDepth dead-letters events whose causation depth exceeds n: a guard
// against event storms where handlers keep causing each other. Default 64;
// 0 disables the guard.
func WithMaxDepth(n int) Option { return func(c *config) error { c.maxDepth = n; return nil } }

// WithMiddleware adds middleware around every handler, inside the built-in
// ones (panic recovery sees panics in them). The first wraps outermost.
func WithMiddleware(mw ...Middleware) Option {
	return func(c *config) error { c.use = append(c.use, mw...); return nil }
}

// WithKeyOrder sets whether events of one partition key are handled in
// order across every instance of the group (default true): the topic's
// partitions are shared out among the live instances and move only after
// their previous owner stopped. Off, the instances share the group's
// events as a plain work queue and order holds only inside one instance.
func WithKeyOrder(on bool) Option { return func(c *config) error { c.keyOrder = on; return nil } }

// WithObserver reports every delivery to o (metrics, tracing).
func WithObserver(o Observer) Option { return func(c *config) error { c.observer = o; return nil } }

// WithLogger sets the logger. Default slog.Default().
func WithLogger(l *slog.Logger) Option { return func(c *config) error { c.log = l; return nil } }

// NewRouter returns a router for group on topics, subscribing with sub and
// publishing dead letters with pub.
func NewRouter(sub broker.Subscriber, pub broker.Publisher, group string, topics []string, opts ...Option) (*Router, error) {
	if sub == nil {
		return nil, errors.New("consumer: subscriber is nil")
	}
	if err := broker.ValidateName("group", group); err != nil {
		return nil, fmt.Errorf("consumer: %w", err)
	}
	if len(topics) == 0 {
		return nil, errors.New("consumer: at least one topic is required")
	}
	for _, t := range topics {
		if err := broker.ValidateName("topic", t); err != nil {
			return nil, fmt.Errorf("consumer: %w", err)
		}
	}
	def := DefaultRetryPolicy
	c := config{
		concurrency:     16,
		binding:         event.NATS,
		ackWait:         broker.DefaultAckWait,
		maxInFlight:     broker.DefaultMaxInFlight,
		shutdownTimeout: 30 * time.Second,
		retry:           &def,
		deadLetter:      true,
		dlqTopic:        DeadLetterTopic,
		maxDepth:        64,
		log:             slog.Default(),
		failDelay:       time.Second,
		keyOrder:        true,
	}
	for _, o := range opts {
		if err := o(&c); err != nil {
			return nil, fmt.Errorf("consumer: %w", err)
		}
	}
	if c.mode == ExactlyOnce && c.store == nil {
		return nil, errors.New("consumer: ExactlyOnce needs an idempotency store: add WithIdempotency")
	}
	if c.deadLetter && pub == nil {
		return nil, errors.New("consumer: a publisher is required for the dead-letter queue (or WithoutDeadLetter)")
	}
	if c.maxInFlight < c.concurrency {
		c.maxInFlight = c.concurrency
	}
	r := &Router{sub: sub, pub: pub, group: group, topics: topics, cfg: c, handlers: map[string]Handler{}, ready: make(chan struct{})}
	if c.breaker != nil {
		r.breaker = NewBreaker(*c.breaker)
	}
	if c.deadLetter {
		r.dlq = newDeadLetterer(pub, c.dlqTopic)
	}
	return r, nil
}

// Handle registers h for events of type typ. It panics on a duplicate
// registration or after Run started: both are programming errors.
func (r *Router) Handle(typ string, h Handler) {
	if r.running.Load() {
		panic("consumer: Handle called after Run")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, dup := r.handlers[typ]; dup {
		panic("consumer: handler for " + strconv.Quote(typ) + " registered twice")
	}
	r.handlers[typ] = h
}

// HandleAll registers h for every type without a handler of its own.
func (r *Router) HandleAll(h Handler) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fallback = h
}

// Ready returns a channel closed once Run has joined the group on every
// topic: events published after that reach the group even when it starts
// at "new".
func (r *Router) Ready() <-chan struct{} { return r.ready }

// Group returns the router's group.
func (r *Router) Group() string { return r.group }

// Breaker returns the router's circuit breaker, or nil.
func (r *Router) Breaker() *Breaker { return r.breaker }

// route is the terminal handler: it finds the event's handler.
func (r *Router) route(ctx context.Context, m *Message) error {
	if m.DecodeErr != nil {
		return Permanent(fmt.Errorf("poison message: %w", m.DecodeErr))
	}
	if g, ok := m.Raw.Header[HeaderRedriveGroup]; ok && g != r.group {
		m.outcome = OutcomeSkipped
		return nil
	}
	h := r.handlers[m.Event.Type]
	if h == nil {
		h = r.fallback
	}
	if h == nil {
		if r.cfg.unknown == UnknownDeadLetter {
			return Permanent(fmt.Errorf("%w %q", ErrUnknownType, m.Event.Type))
		}
		m.outcome = OutcomeUnknown
		return nil
	}
	return h(ctx, m)
}

// chain builds the middleware stack, outermost first: dead letter, retry,
// breaker, depth guard, idempotency, timeout, panic recovery, user
// middleware, handler.
func (r *Router) chain() Handler {
	h := Handler(r.route)
	for i := len(r.cfg.use) - 1; i >= 0; i-- {
		h = r.cfg.use[i](h)
	}
	h = Recover()(h)
	if r.cfg.timeout > 0 {
		h = Timeout(r.cfg.timeout)(h)
	}
	if r.cfg.store != nil {
		h = Idempotent(r.cfg.store, r.cfg.idemLease, r.cfg.idemTTL, r.cfg.log)(h)
	}
	if r.cfg.maxDepth > 0 {
		h = MaxDepth(r.cfg.maxDepth)(h)
	}
	if r.breaker != nil {
		h = r.breaker.Middleware()(h)
	}
	if r.cfg.retry != nil {
		h = Retry(*r.cfg.retry)(h)
	} else {
		h = noRetry(h)
	}
	if r.dlq != nil {
		h = r.dlq.middleware(h)
	}
	return h
}

// Run subscribes and handles events until ctx is cancelled, then stops
// fetching, lets in-flight handlers finish (up to the shutdown timeout),
// settles them and returns nil. It returns an error if it cannot subscribe.
// Run may be called once.
func (r *Router) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("consumer: Run called twice")
	}
	handler := r.chain()
	subs := make([]broker.Subscription, 0, len(r.topics))
	closeSubs := func() {
		for _, s := range subs {
			_ = s.Close()
		}
	}
	for _, t := range r.topics {
		s, err := r.subscribe(ctx, t)
		if err != nil {
			closeSubs()
			if ctx.Err() != nil {
				return nil // cancelled while the broker was unreachable
			}
			return fmt.Errorf("consumer: group %q: subscribe to %q: %w", r.group, t, err)
		}
		subs = append(subs, s)
	}
	close(r.ready)

	// hardCtx is what handlers see; it outlives ctx by the shutdown timeout.
	hardCtx, hardCancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hardCancel()
	var stopping atomic.Bool

	n := r.cfg.concurrency
	laneCap := max(r.cfg.maxInFlight/n, 1)
	lanes := make([]chan *Message, n)
	var workers sync.WaitGroup
	for i := range lanes {
		lanes[i] = make(chan *Message, laneCap)
		lane := lanes[i]
		workers.Go(func() {
			for m := range lane {
				if stopping.Load() {
					// Not started before shutdown: hand it back at once
					// (unless the broker already took it back).
					if broker.Claim(m.delivery) {
						r.nack(m, 0)
					}
					continue
				}
				// Its partition may have moved to another instance while
				// it sat in the lane: then the broker took it back, and
				// the new owner handles it.
				if !broker.Claim(m.delivery) {
					continue
				}
				r.process(hardCtx, handler, m)
			}
		})
	}

	var fetchers sync.WaitGroup
	for i, s := range subs {
		topic := r.topics[i]
		fetchers.Go(func() { r.fetch(ctx, s, topic, lanes) })
	}
	var reports sync.WaitGroup
	if r.breaker != nil && r.pub != nil && !r.cfg.noBreakerReports {
		reports.Go(func() { r.reportBreaker(ctx, BreakerReportInterval) })
	}
	defer reports.Wait() // the last report says the router stopped
	<-ctx.Done()
	stopping.Store(true)
	closeSubs()
	fetchers.Wait()
	for _, l := range lanes {
		close(l)
	}
	done := make(chan struct{})
	go func() { workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(r.cfg.shutdownTimeout):
		r.cfg.log.Warn("consumer: shutdown timeout; cancelling handlers", "group", r.group, "timeout", r.cfg.shutdownTimeout)
		hardCancel()
		<-done
	}
	return nil
}

// subscribe joins the group on topic. A broker that is unreachable or
// electing leaders is retried with backoff until ctx ends; a refusal
// (invalid names, a closed subscriber, an unsupported option) is returned.
func (r *Router) subscribe(ctx context.Context, topic string) (broker.Subscription, error) {
	opts := broker.SubscribeOptions{
		Group:       r.group,
		Start:       r.cfg.start,
		AckWait:     r.cfg.ackWait,
		MaxInFlight: r.cfg.maxInFlight,
		ConfirmAcks: r.cfg.mode == ExactlyOnce,
		KeyOrder:    r.cfg.keyOrder,
	}
	wait := 100 * time.Millisecond
	for {
		s, err := r.sub.Subscribe(ctx, topic, opts)
		if err == nil {
			return s, nil
		}
		if !retryable(err) || ctx.Err() != nil {
			return nil, err
		}
		r.cfg.log.Warn("consumer: subscribe failed; retrying", "group", r.group, "topic", topic, "in", wait, "error", err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
}

// retryable reports whether a subscribe error may go away by itself.
func retryable(err error) bool {
	switch {
	case errors.Is(err, broker.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return true
	case errors.Is(err, broker.ErrInvalidTopic), errors.Is(err, broker.ErrInvalidMessage),
		errors.Is(err, broker.ErrClosed), errors.Is(err, context.Canceled):
		return false
	}
	// Timeouts and leader elections surface as assorted client errors;
	// anything that names a timeout or no responders is worth a retry.
	msg := err.Error()
	return strings.Contains(msg, "timeout") || strings.Contains(msg, "no responders") || strings.Contains(msg, "deadline exceeded")
}

// fetch moves deliveries from one subscription to the lanes until ctx is
// done or the subscription closes.
func (r *Router) fetch(ctx context.Context, s broker.Subscription, topic string, lanes []chan *Message) {
	failures := 0
	for {
		if r.breaker != nil {
			if err := r.breaker.Wait(ctx); err != nil {
				return
			}
		}
		d, err := s.Next(ctx)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, broker.ErrClosed) {
				return
			}
			failures++
			r.cfg.log.Warn("consumer: fetch failed", "group", r.group, "topic", topic, "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(min(time.Duration(failures)*100*time.Millisecond, 5*time.Second)):
			}
			continue
		}
		failures = 0
		m := r.decode(d, topic)
		lane := lanes[broker.Partition(laneKey(m), len(lanes))]
		select {
		case lane <- m:
		case <-ctx.Done():
			if broker.Claim(d) {
				r.nack(m, 0)
			}
			return
		}
	}
}

func laneKey(m *Message) string {
	if m.Event != nil {
		if k := m.Event.Key(); k != "" {
			return k
		}
		return m.Event.ID
	}
	if m.Raw.Key != "" {
		return m.Raw.Key
	}
	return strconv.FormatUint(m.Sequence, 10)
}

func (r *Router) decode(d broker.Delivery, topic string) *Message {
	return newMessage(d, topic, r.group, r.cfg.mode, r.cfg.binding)
}

func (r *Router) process(ctx context.Context, h Handler, m *Message) {
	if r.cfg.observer != nil {
		r.cfg.observer.Received(m)
	}
	if m.Mode == AtMostOnce {
		if err := m.delivery.Ack(ctx); err != nil {
			r.cfg.log.Warn("consumer: ack", "group", r.group, "topic", m.Topic, "sequence", m.Sequence, "error", err)
		}
	}
	start := time.Now()
	err := h(m.context(ctx), m)
	elapsed := time.Since(start)
	o := r.settle(ctx, m, err)
	if r.cfg.observer != nil {
		r.cfg.observer.Settled(m, o, err, elapsed)
	}
}

// settle acks, nacks or terminates the delivery according to err.
func (r *Router) settle(ctx context.Context, m *Message, err error) Outcome {
	d := m.delivery
	var o Outcome
	var serr error
	switch {
	case m.Mode == AtMostOnce:
		// Acked before the handler ran.
		o = m.outcome
		if err != nil && o == OutcomeAck {
			o = OutcomeDrop
		}
		if err != nil {
			r.cfg.log.Warn("consumer: handler failed (at-most-once: not retried)", "group", r.group, "topic", m.Topic, "event_id", eventID(m), "error", err)
		}
		return o
	case err == nil:
		o = m.outcome
		serr = d.Ack(ctx)
	case isRetry(err):
		o = OutcomeRetry
		serr = d.Nack(ctx, retryDelay(err))
	case errors.Is(err, ErrDrop):
		o = OutcomeDrop
		serr = d.Term(ctx, err.Error())
	case errors.Is(err, ErrPermanent):
		// Only reached with the dead-letter queue turned off.
		o = OutcomeDrop
		r.cfg.log.Error("consumer: event dropped (no dead-letter queue)", "group", r.group, "topic", m.Topic, "event_id", eventID(m), "error", err)
		serr = d.Term(ctx, err.Error())
	default:
		o = OutcomeRetry
		serr = d.Nack(ctx, r.cfg.failDelay)
	}
	if serr != nil {
		r.cfg.log.Warn("consumer: settle", "group", r.group, "topic", m.Topic, "sequence", m.Sequence, "outcome", o.String(), "error", serr)
	}
	return o
}

func (r *Router) nack(m *Message, delay time.Duration) {
	if m.Mode == AtMostOnce {
		return
	}
	_ = m.delivery.Nack(context.Background(), delay)
}

func eventID(m *Message) string {
	if m.Event != nil {
		return m.Event.ID
	}
	return ""
}

// noRetry turns plain failures into permanent ones when retries are off.
func noRetry(next Handler) Handler {
	return func(ctx context.Context, m *Message) error {
		err := next(ctx, m)
		if err == nil || isOutcome(err) {
			return err
		}
		return Permanent(err)
	}
}

// isOutcome reports whether err already says what to do.
func isOutcome(err error) bool {
	var re *RetryError
	return errors.As(err, &re) || errors.Is(err, ErrPermanent) || errors.Is(err, ErrDrop)
}
