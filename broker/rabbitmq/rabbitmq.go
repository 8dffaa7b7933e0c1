package rabbitmq

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

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/heraldhq/herald/broker"
)

// ErrUnroutable is returned (wrapped, per message) when RabbitMQ returned a
// mandatory message because no queue was bound for its route: the topic has
// no log and no group takes that route.
var ErrUnroutable = errors.New("rabbitmq: message unroutable")

// Broker is the RabbitMQ adapter. It is safe for concurrent use. Close
// releases its connections and stops its subscriptions.
type Broker struct {
	o   options
	pub *conn // publishing: flow control on it never blocks consumers' acks
	sub *conn // consuming and topology

	pubs []*pubChan
	rr   atomic.Uint64

	topoMu sync.Mutex // one topology channel, used serially
	topo   *amqp.Channel

	// known caches topics whose exchange (and log) exist.
	known  sync.Map // topic -> struct{}
	cfgsMu sync.Mutex
	cfgs   map[string]broker.TopicConfig

	delays sync.Map // delay queue name -> time.Time declared
	noted  sync.Map // catalog entries written: topic+"\x00"+group, and "" for the stream

	mu     sync.Mutex
	subs   map[*subscription]struct{}
	closed bool
	done   chan struct{}
	ctx    context.Context // ends with Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // dispatchers and subscriptions
}

var (
	_ broker.Broker       = (*Broker)(nil)
	_ broker.TopicManager = (*Broker)(nil)
)

// Option configures a Broker.
type Option func(*options)

type options struct {
	log           *slog.Logger
	name          string
	pubChannels   int
	topicLog      bool
	deliveryLimit int
	deadLetter    bool
	heartbeat     time.Duration
	dialTimeout   time.Duration
	replicas      int
	foreignTypes  map[string]string
}

// WithLogger sets the logger for connection loss and recovery. Default
// slog.Default().
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.log = l } }

// WithConnectionName names the adapter's connections in RabbitMQ (shown by
// rabbitmqctl list_connections and the management UI; the suffixes
// "/pub" and "/sub" are added). Default "herald".
func WithConnectionName(name string) Option { return func(o *options) { o.name = name } }

// WithPublisherChannels sets how many confirm-mode channels publishing
// spreads over. One Publish call uses one channel, so messages of one call
// keep their order. Each channel is one Erlang process in the broker: more
// channels use more broker cores. Default 2.
func WithPublisherChannels(n int) Option { return func(o *options) { o.pubChannels = n } }

// WithTopicLog sets whether each topic keeps a log: a RabbitMQ stream bound
// to the topic exchange that retains every message (under the topic's
// retention). With the log, a new group can start at the first message, a
// sequence or a time, and a message published before any group exists is
// kept. The cost is that every message is written twice (log and group
// queues). Without it, groups start at new messages only and a message no
// group takes is returned as ErrUnroutable. Default true.
func WithTopicLog(on bool) Option { return func(o *options) { o.topicLog = on } }

// WithDeliveryLimit sets the quorum queues' x-delivery-limit and the
// attempt after which Nack with a delay dead-letters instead of retrying:
// a message delivered more than n times goes to the group's dead-letter
// queue (or is dropped without one). 0 means no limit. Default 0: Herald's
// consumer layer counts attempts and dead-letters itself.
func WithDeliveryLimit(n int) Option { return func(o *options) { o.deliveryLimit = n } }

// WithDeadLetterQueues sets whether each group gets a dead-letter quorum
// queue "<group queue>/dlq" that receives terminated messages and those
// over the delivery limit. Without it they are dropped. Default true.
func WithDeadLetterQueues(on bool) Option { return func(o *options) { o.deadLetter = on } }

// WithHeartbeat sets the AMQP heartbeat, which bounds how long a dead
// connection goes unnoticed. Default 10s.
func WithHeartbeat(d time.Duration) Option { return func(o *options) { o.heartbeat = d } }

// WithDialTimeout bounds each connection attempt. Default 10s.
func WithDialTimeout(d time.Duration) Option { return func(o *options) { o.dialTimeout = d } }

// WithReplicas sets the initial cluster size of the queues and streams the
// adapter creates, when TopicConfig.Replicas does not. Default: the
// broker's default (all nodes for quorum queues, up to 3 for streams).
func WithReplicas(n int) Option { return func(o *options) { o.replicas = n } }

// New connects to the broker at url (amqp://user:pass@host:port/vhost, or
// amqps://) and returns an adapter. It fails with broker.ErrUnavailable
// when the broker cannot be reached. After that, lost connections are
// redialled in the background and channels, topology and consumers are
// restored.
func New(ctx context.Context, url string, opts ...Option) (*Broker, error) {
	o := options{
		log:         slog.Default(),
		name:        "herald",
		pubChannels: 2,
		topicLog:    true,
		deadLetter:  true,
		heartbeat:   10 * time.Second,
		dialTimeout: 10 * time.Second,
	}
	for _, opt := range opts {
		opt(&o)
	}
	switch {
	case o.pubChannels < 1:
		return nil, fmt.Errorf("rabbitmq: WithPublisherChannels(%d): want at least 1", o.pubChannels)
	case o.deliveryLimit < 0:
		return nil, fmt.Errorf("rabbitmq: WithDeliveryLimit(%d): want 0 (no limit) or more", o.deliveryLimit)
	case o.heartbeat < 0 || o.dialTimeout <= 0:
		return nil, errors.New("rabbitmq: WithHeartbeat must not be negative and WithDialTimeout must be positive")
	case o.replicas < 0:
		return nil, fmt.Errorf("rabbitmq: WithReplicas(%d): must not be negative", o.replicas)
	case o.log == nil:
		return nil, errors.New("rabbitmq: WithLogger(nil): want a logger")
	}
	if _, err := amqp.ParseURI(url); err != nil {
		return nil, fmt.Errorf("rabbitmq: url: %w (want amqp://user:pass@host:port/vhost)", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cfg := amqp.Config{Heartbeat: o.heartbeat, Dial: amqp.DefaultDial(o.dialTimeout)}
	b := &Broker{o: o, subs: make(map[*subscription]struct{}), cfgs: make(map[string]broker.TopicConfig), done: make(chan struct{})}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	var err error
	if b.pub, err = dialConn(url, cfg, o.name+"/pub", true, o.log); err != nil {
		b.cancel()
		return nil, err
	}
	if b.sub, err = dialConn(url, cfg, o.name+"/sub", false, o.log); err != nil {
		b.pub.close()
		b.cancel()
		return nil, err
	}
	b.pubs = make([]*pubChan, o.pubChannels)
	for i := range b.pubs {
		b.pubs[i] = &pubChan{b: b}
	}
	return b, nil
}

// Close stops every subscription, waits for the adapter's goroutines and
// closes the connections. Deliveries not acked are redelivered by
// RabbitMQ. Publish calls waiting for confirms fail with
// broker.ErrUnavailable.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	close(b.done)
	b.cancel()
	subs := make([]*subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	for _, s := range subs {
		s.abort()
		// Acks handlers made before Close go out before the connection
		// closes, or their messages would come again.
		s.flushAcks()
	}
	for _, pc := range b.pubs {
		pc.shutdown()
	}
	b.pub.close()
	b.sub.close()
	b.wg.Wait()
	return nil
}

func (b *Broker) isClosed() bool {
	select {
	case <-b.done:
		return true
	default:
		return false
	}
}

// Names of the broker objects. Topic and group names cannot contain '/',
// so these never collide.
func exchangeName(topic string) string      { return "herald/" + topic }
func logName(topic string) string           { return "herald/" + topic + "/log" }
func groupQueue(topic, group string) string { return "herald/" + topic + "/g/" + group }
func hashExchange(gq string) string         { return gq + "/hash" }
func partitionQueue(gq string, i int) string {
	return gq + "/p" + strconv.Itoa(i)
}
func dlqName(gq string) string { return gq + "/dlq" }
func delayQueue(q string, ms int64) string {
	return q + "/delay/" + strconv.FormatInt(ms, 10)
}

// maxPartitions is the number of hash slots every message is stamped with;
// a partitioned group splits them, so its partition count divides it.
const maxPartitions = 16

// Reserved header names. Publish rejects user headers with the herald-
// prefix.
const (
	hKey     = "herald-key"     // Message.Key
	hSlot    = "herald-slot"    // broker.Partition(Key, 16), as a string
	hTag     = "herald-pt"      // publish tag, to match basic.return to its message
	hTime    = "herald-ts"      // publish time, Unix milliseconds
	hRoute   = "herald-route"   // original route of a copy (delay, replay)
	hSeq     = "herald-seq"     // log position of a replayed copy
	hAttempt = "herald-attempt" // deliveries before this copy was made
	hMarker  = "herald-marker"  // replay marker in the log
	hCT      = "content-type"
)

func (b *Broker) topicConfig(topic string) broker.TopicConfig {
	b.cfgsMu.Lock()
	defer b.cfgsMu.Unlock()
	return b.cfgs[topic]
}

// EnsureTopic creates the topic's exchange and, with the topic log, its
// stream with cfg's retention (MaxAge, MaxBytes; Replicas). RabbitMQ cannot
// change a stream's arguments once it exists: EnsureTopic with other
// retention for an existing topic fails; change it with a policy instead.
// MaxMsgs is not supported by streams and is an error; DedupWindow is
// ignored (RabbitMQ does not deduplicate). Partitions (1, 2, 4, 8 or 16)
// is remembered by this adapter and applies to groups it creates on the
// topic afterwards.
func (b *Broker) EnsureTopic(ctx context.Context, topic string, cfg broker.TopicConfig) error {
	if err := broker.ValidateName("topic", topic); err != nil {
		return err
	}
	if cfg.MaxMsgs != 0 {
		return fmt.Errorf("rabbitmq: topic %q: TopicConfig.MaxMsgs is not supported by RabbitMQ streams; use MaxBytes or MaxAge", topic)
	}
	if cfg.Partitions < 0 || cfg.Partitions > maxPartitions || (cfg.Partitions > 0 && maxPartitions%cfg.Partitions != 0) {
		return fmt.Errorf("rabbitmq: topic %q: TopicConfig.Partitions %d: want 1, 2, 4, 8 or 16", topic, cfg.Partitions)
	}
	if cfg.MaxAge < 0 || cfg.MaxBytes < 0 || cfg.Replicas < 0 {
		return fmt.Errorf("rabbitmq: topic %q: TopicConfig MaxAge, MaxBytes and Replicas must not be negative", topic)
	}
	if b.isClosed() {
		return broker.ErrClosed
	}
	b.cfgsMu.Lock()
	b.cfgs[topic] = cfg
	b.cfgsMu.Unlock()
	b.known.Delete(topic)
	return b.ensureTopic(ctx, topic)
}

// ensureTopic declares the topic's exchange and log once per adapter (and
// again after a publisher channel failed).
func (b *Broker) ensureTopic(ctx context.Context, topic string) error {
	if _, ok := b.known.Load(topic); ok {
		return nil
	}
	cfg := b.topicConfig(topic)
	err := b.withTopo(ctx, func(ch *amqp.Channel) error {
		if err := ch.ExchangeDeclare(exchangeName(topic), amqp.ExchangeTopic, true, false, false, false, nil); err != nil {
			return fmt.Errorf("declare exchange %q: %w", exchangeName(topic), err)
		}
		if !b.o.topicLog {
			return nil
		}
		args := amqp.Table{"x-queue-type": "stream"}
		if cfg.MaxAge > 0 {
			args["x-max-age"] = strconv.FormatInt(int64((cfg.MaxAge+time.Second-1)/time.Second), 10) + "s"
		}
		if cfg.MaxBytes > 0 {
			args["x-max-length-bytes"] = cfg.MaxBytes
		}
		if r := b.replicas(cfg); r > 0 {
			args["x-initial-cluster-size"] = int64(r)
		}
		if _, err := ch.QueueDeclare(logName(topic), true, false, false, false, args); err != nil {
			return fmt.Errorf("declare log stream %q (it may exist with other retention arguments): %w", logName(topic), err)
		}
		if err := ch.QueueBind(logName(topic), "#", exchangeName(topic), false, nil); err != nil {
			return fmt.Errorf("bind log stream %q: %w", logName(topic), err)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("rabbitmq: topic %q: %w", topic, err)
	}
	b.known.Store(topic, struct{}{})
	b.note(ctx, topic, "")
	return nil
}

func (b *Broker) replicas(cfg broker.TopicConfig) int {
	if cfg.Replicas > 0 {
		return cfg.Replicas
	}
	return b.o.replicas
}

// withTopo runs f on the topology channel. A broker error closes an AMQP
// channel, so a failed f leaves the next call a fresh channel. When the
// connection fails under f, f runs again on the next connection; errors
// other than the broker's refusal wrap broker.ErrUnavailable.
func (b *Broker) withTopo(ctx context.Context, f func(ch *amqp.Channel) error) error {
	b.topoMu.Lock()
	defer b.topoMu.Unlock()
	for attempt := 1; ; attempt++ {
		if b.topo == nil || b.topo.IsClosed() {
			ch, err := b.sub.channel(ctx)
			if err != nil {
				return err
			}
			b.topo = ch
		}
		err := f(b.topo)
		if err == nil {
			return nil
		}
		var ae *amqp.Error
		if errors.As(err, &ae) && ae.Code >= 400 && ae.Code < 500 && ae.Code != amqp.ChannelError {
			return err // the broker refused: retrying will not help
		}
		_ = b.topo.Close()
		b.topo = nil
		if attempt >= 5 || ctx.Err() != nil {
			return fmt.Errorf("%w: %w", broker.ErrUnavailable, err)
		}
		t := time.NewTimer(time.Duration(attempt) * 100 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %w", broker.ErrUnavailable, err)
		case <-t.C:
		}
	}
}

// checkHeaderName rejects reserved header names.
func checkHeaderName(k string) error {
	if strings.HasPrefix(k, "herald-") || strings.HasPrefix(k, "x-") {
		return fmt.Errorf("%w: header %q: the herald- and x- prefixes are reserved", broker.ErrInvalidMessage, k)
	}
	return nil
}

// DeleteTopic removes topic's exchange and log, and for each of groups its
// queues (partition queues, dead-letter queue, hash exchange). Messages in
// them are gone. Objects that do not exist are skipped. Delay queues
// expire on their own.
func (b *Broker) DeleteTopic(ctx context.Context, topic string, groups ...string) error {
	if err := broker.ValidateName("topic", topic); err != nil {
		return err
	}
	queues := []string{logName(topic)}
	exchanges := []string{exchangeName(topic)}
	for _, g := range groups {
		gq := groupQueue(topic, g)
		queues = append(queues, gq, dlqName(gq))
		for i := range maxPartitions {
			queues = append(queues, partitionQueue(gq, i))
		}
		exchanges = append(exchanges, hashExchange(gq))
	}
	// A missing object closes the channel it was deleted on, so each
	// deletion gets a channel of its own.
	for _, q := range queues {
		if err := b.withTopo(ctx, func(ch *amqp.Channel) error {
			_, err := ch.QueueDelete(q, false, false, false)
			return err
		}); err != nil && !isNotFound(err) {
			return fmt.Errorf("rabbitmq: delete queue %q: %w", q, err)
		}
	}
	for _, x := range exchanges {
		if err := b.withTopo(ctx, func(ch *amqp.Channel) error { return ch.ExchangeDelete(x, false, false) }); err != nil && !isNotFound(err) {
			return fmt.Errorf("rabbitmq: delete exchange %q: %w", x, err)
		}
	}
	b.known.Delete(topic)
	b.forget(ctx, topic, "")
	return nil
}

func isNotFound(err error) bool {
	var ae *amqp.Error
	return errors.As(err, &ae) && ae.Code == amqp.NotFound
}

// Ping checks that the broker answers, opening a channel if needed.
func (b *Broker) Ping(ctx context.Context) error {
	if b.isClosed() {
		return broker.ErrClosed
	}
	return b.withTopo(ctx, func(*amqp.Channel) error { return nil })
}
