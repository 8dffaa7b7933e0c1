// Package herald is the SDK facade: Connect wires a broker (by URL, or one
// you built), and the Client publishes events and builds consumer routers.
//
//	c, err := herald.Connect(ctx, herald.Config{URL: "nats://127.0.0.1:4222", Source: "orders"})
//	defer c.Close()
//	placed := herald.Type[OrderPlaced]("shop.order.placed.v1", herald.OnTopic("orders"))
//	err = placed.Publish(ctx, c, OrderPlaced{ID: "o-1"}, herald.WithSubject("o-1"))
//
//	r, err := c.Router("billing", []string{"orders"})
//	herald.Handle(r, placed, func(ctx context.Context, o OrderPlaced, m *consumer.Message) error { ... })
//	err = r.Run(ctx)
package herald

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/heraldhq/herald/broker"
	_ "github.com/heraldhq/herald/broker/memory" // registers memory://
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/credentials"
	"github.com/heraldhq/herald/event"
)

// Config configures a Client.
type Config struct {
	// URL selects the broker by scheme (see OpenBroker): nats://, kafka://,
	// amqp:// or memory://. Ignored when Broker is set.
	URL string
	// Broker, if set, is used instead of dialing URL; the Client does not
	// close it. Binding must then match it (default event.NATS).
	Broker broker.Broker
	// Binding is the CloudEvents protocol binding for headers. Default: the
	// broker's (NATS for nats:// and memory://).
	Binding *event.Binding
	// Source is the default source of published events (the service name).
	Source string
	// DefaultTopic receives events whose type has no entry in Topics.
	// Default "events".
	DefaultTopic string
	// Topics maps event types to topics.
	Topics map[string]string
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Hooks observe publishing (metrics, tracing); see PublishHook.
	Hooks []PublishHook
	// Credentials is the path of a credentials file (written by `herald
	// auth add-service`) to connect to a NATS broker that authenticates
	// its clients. Default $HERALD_CREDS. The file is read again at each
	// reconnect, so rotated credentials are picked up without a restart.
	Credentials string
	// TLS configures the connection to a NATS broker over TLS (tls://
	// URLs, or a server that requires it). Default: trust the CA
	// certificates in $HERALD_CA, if set, else the system's.
	TLS *tls.Config
}

// PublishHook observes a publish. Before is called with the events and
// their topics (after correlation, causation and source are set, before
// they are encoded) and may set attributes such as TraceParent; the
// function it returns, if not nil, is called with the outcome once the
// broker confirmed or refused the batch. Hooks run on the publishing
// goroutine and must be quick.
type PublishHook interface {
	Before(ctx context.Context, events []*event.Event, topics []string) (context.Context, func(err error))
}

// Client publishes events and builds routers. It is safe for concurrent use.
type Client struct {
	b       broker.Broker
	own     bool
	binding event.Binding
	cfg     Config
	log     *slog.Logger
	creds   *credentials.Creds // nil without credentials
}

// Connect returns a client for cfg's broker, connected and ready.
func Connect(ctx context.Context, cfg Config) (*Client, error) {
	c := &Client{cfg: cfg, log: cfg.Logger, binding: event.NATS}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.cfg.DefaultTopic == "" {
		c.cfg.DefaultTopic = "events"
	}
	if err := broker.ValidateName("topic", c.cfg.DefaultTopic); err != nil {
		return nil, fmt.Errorf("herald: Config.DefaultTopic: %w", err)
	}
	natsOpts, err := c.security()
	if err != nil {
		return nil, err
	}
	if cfg.Broker != nil {
		c.b = cfg.Broker
	} else if scheme, _, _ := strings.Cut(cfg.URL, "://"); len(natsOpts) > 0 && (scheme == "nats" || scheme == "tls") {
		b, err := natsjs.New(ctx, natsjs.WithURL(cfg.URL, natsOpts...), natsjs.WithLogger(c.log))
		if err != nil {
			return nil, fmt.Errorf("herald: %w", err)
		}
		c.b, c.own = b, true
	} else {
		b, binding, err := OpenBroker(ctx, cfg.URL, c.log)
		if err != nil {
			return nil, err
		}
		c.b, c.own, c.binding = b, true, binding
	}
	if cfg.Binding != nil {
		c.binding = *cfg.Binding
	}
	return c, nil
}

// OpenBroker connects to the broker at url, chosen by its scheme among
// the adapters the program imports (see broker.Register), and returns it
// with the CloudEvents binding its headers use:
//
//	nats://host:port[,host:port]   NATS JetStream (tls:// too)       event.NATS
//	memory://                      in-process, for tests             event.NATS
//	kafka://host:port[,host:port]  Kafka                             event.Kafka
//	amqp://user:pass@host:port/vh  RabbitMQ (amqps:// too)           event.AMQP
//
// The herald package registers nats://, tls:// and memory:// itself. Kafka
// and RabbitMQ register when their adapters are imported, so that a
// service that does not use them does not link their clients:
//
//	import _ "github.com/heraldhq/herald/broker/kafka"
//	import _ "github.com/heraldhq/herald/broker/rabbitmq"
//
// The caller closes the broker.
func OpenBroker(ctx context.Context, url string, log *slog.Logger) (broker.Broker, event.Binding, error) {
	if log == nil {
		log = slog.Default()
	}
	scheme, _, _ := strings.Cut(url, "://")
	if scheme == "" {
		return nil, event.Binding{}, errors.New("herald: Config.URL or Config.Broker is required (for example nats://127.0.0.1:4222)")
	}
	d, ok := broker.Lookup(scheme)
	if !ok {
		hint := ""
		switch scheme {
		case "kafka":
			hint = `: import _ "github.com/heraldhq/herald/broker/kafka" to use Kafka`
		case "amqp", "amqps":
			hint = `: import _ "github.com/heraldhq/herald/broker/rabbitmq" to use RabbitMQ`
		}
		return nil, event.Binding{}, fmt.Errorf("herald: broker URL %q: unsupported scheme %q (registered: %s)%s",
			url, scheme, strings.Join(broker.Schemes(), ", "), hint)
	}
	binding, ok := bindings[d.Binding]
	if !ok {
		return nil, event.Binding{}, fmt.Errorf("herald: broker URL %q: the %s adapter names an unknown binding %q", url, scheme, d.Binding)
	}
	b, err := d.Open(ctx, url, log)
	if err != nil {
		return nil, event.Binding{}, fmt.Errorf("herald: %w", err)
	}
	return b, binding, nil
}

var bindings = map[string]event.Binding{"nats": event.NATS, "kafka": event.Kafka, "amqp": event.AMQP}

// Broker returns the client's broker.
func (c *Client) Broker() broker.Broker { return c.b }

// Binding returns the CloudEvents binding the client encodes with.
func (c *Client) Binding() event.Binding { return c.binding }

// TopicFor returns the topic events of type typ are published to.
func (c *Client) TopicFor(typ string) string {
	if t, ok := c.cfg.Topics[typ]; ok {
		return t
	}
	return c.cfg.DefaultTopic
}

// Publish publishes events to their topics (see Config.Topics) and returns
// once the broker confirmed every one. Events published while handling
// another (ctx is a handler's) inherit its correlation id, take its id as
// causation id and one more causation depth. Events without a source get
// Config.Source; without a time, now.
func (c *Client) Publish(ctx context.Context, events ...*event.Event) error {
	return c.publish(ctx, "", events)
}

// PublishTo publishes events to topic, whatever their types.
func (c *Client) PublishTo(ctx context.Context, topic string, events ...*event.Event) error {
	if err := broker.ValidateName("topic", topic); err != nil {
		return fmt.Errorf("herald: %w", err)
	}
	return c.publish(ctx, topic, events)
}

func (c *Client) publish(ctx context.Context, topic string, events []*event.Event) error {
	parent, _ := consumer.FromContext(ctx)
	topics := make([]string, len(events))
	for i, e := range events {
		if e.Source == "" {
			e.Source = c.cfg.Source
		}
		if e.ID == "" {
			e.ID = event.NewID()
		}
		if parent != nil && parent.Event != nil {
			inherit(e, parent.Event)
		}
		if err := e.Validate(); err != nil {
			return fmt.Errorf("herald: event %d (%s): %w", i, e.Type, err)
		}
		topics[i] = topic
		if topic == "" {
			topics[i] = c.TopicFor(e.Type)
		}
	}
	if c.creds != nil {
		if err := c.mayPublish(topics); err != nil {
			return err
		}
	}
	var afters []func(error)
	for _, h := range c.cfg.Hooks {
		var after func(error)
		ctx, after = h.Before(ctx, events, topics)
		if after != nil {
			afters = append(afters, after)
		}
	}
	msgs := make([]broker.Message, len(events))
	ptrs := make([]*broker.Message, len(events))
	for i, e := range events {
		h := headerPool.Get().(map[string]string)
		c.binding.Encode(e, h)
		msgs[i] = broker.Message{Topic: topics[i], Route: e.Type, Key: e.Key(), ID: e.ID, Header: h, Data: e.Data}
		ptrs[i] = &msgs[i]
	}
	err := c.b.Publish(ctx, ptrs...)
	// Publishers do not keep messages after Publish returns: the header
	// maps can serve the next publish.
	for i := range msgs {
		clear(msgs[i].Header)
		headerPool.Put(msgs[i].Header)
	}
	for _, after := range afters {
		after(err)
	}
	if err != nil {
		return fmt.Errorf("herald: publish: %w", err)
	}
	return nil
}

var headerPool = sync.Pool{New: func() any { return make(map[string]string, 8) }}

// inherit sets e's correlation, causation and depth from the event being
// handled, unless e sets them itself.
func inherit(e, parent *event.Event) {
	if e.CorrelationID == "" {
		e.CorrelationID = parent.CorrelationID
		if e.CorrelationID == "" {
			e.CorrelationID = parent.ID
		}
	}
	if e.CausationID == "" {
		e.CausationID = parent.ID
	}
	if _, ok := e.Extensions[consumer.ExtDepth]; !ok {
		_ = e.SetExtension(consumer.ExtDepth, strconv.Itoa(consumer.Depth(parent)+1))
	}
	if e.TraceParent == "" {
		e.TraceParent, e.TraceState = parent.TraceParent, parent.TraceState
	}
}

// Router returns a consumer router for group on topics, decoding with the
// client's binding and dead-lettering through its broker. Options after
// the defaults override them.
func (c *Client) Router(group string, topics []string, opts ...consumer.Option) (*consumer.Router, error) {
	all := append([]consumer.Option{consumer.WithBinding(c.binding), consumer.WithLogger(c.log)}, opts...)
	return consumer.NewRouter(c.b, c.b, group, topics, all...)
}

// Close closes the broker if the client opened it.
func (c *Client) Close() error {
	if c.own {
		return c.b.Close()
	}
	return nil
}
