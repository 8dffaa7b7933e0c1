package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/schema"
)

// Client is what the gateway needs of the SDK; *herald.Client implements
// it.
type Client interface {
	// PublishTo publishes events to topic and returns once the broker
	// confirmed every one (a *broker.PublishError says which were not).
	PublishTo(ctx context.Context, topic string, events ...*event.Event) error
	// Router returns a consumer router for group on topics.
	Router(group string, topics []string, opts ...consumer.Option) (*consumer.Router, error)
	// Broker returns the broker events live on.
	Broker() broker.Broker
	// Binding returns the CloudEvents binding of the broker's headers.
	Binding() event.Binding
}

// Registry is the schema registry ingest validates against;
// *schema.Registry implements it.
type Registry interface {
	Version(subject string, version int, deleted bool) (schema.SubjectVersion, error)
	Parsed(id int) (schema.Parsed, error)
	SubjectsByID(id int, deleted bool) ([]string, error)
}

// TopicCheck reports whether topic exists. An error other than
// ErrUnknownTopic (wrapped) means the answer is not known.
type TopicCheck func(ctx context.Context, topic string) error

// Sentinel errors.
var (
	// ErrUnknownTopic: the topic does not exist (404).
	ErrUnknownTopic = errors.New("unknown topic")
	// ErrUnknownGroup: no subscription has this group (404).
	ErrUnknownGroup = errors.New("unknown group")
)

// Defaults.
const (
	// DefaultMaxBody bounds a request body: 4 MiB.
	DefaultMaxBody = 4 << 20
	// DefaultMaxBatch bounds the events of one batch: 1000.
	DefaultMaxBatch = 1000
)

// Option configures a Gateway.
type Option func(*config) error

type config struct {
	reg      Registry
	topics   TopicCheck
	maxBody  int64
	maxBatch int
	log      *slog.Logger
	store    *Store
	observer consumer.Observer
}

// WithRegistry validates ingested events against reg: an event whose type
// is a subject of the registry must carry a payload its schema accepts.
// Default: no validation.
func WithRegistry(reg Registry) Option {
	return func(c *config) error { c.reg = reg; return nil }
}

// WithTopicCheck refuses events for topics check does not know (404).
// Default: every valid topic name is accepted (and created on first use
// by brokers that do so).
func WithTopicCheck(check TopicCheck) Option {
	return func(c *config) error { c.topics = check; return nil }
}

// WithMaxBody bounds request bodies to n bytes; larger requests get 413.
// Default DefaultMaxBody.
func WithMaxBody(n int64) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("WithMaxBody(%d): must be positive", n)
		}
		c.maxBody = n
		return nil
	}
}

// WithMaxBatch bounds the events of one batch request; more get 413.
// Default DefaultMaxBatch.
func WithMaxBatch(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("WithMaxBatch(%d): must be positive", n)
		}
		c.maxBatch = n
		return nil
	}
}

// WithStore keeps push and pull subscriptions in st; without it the
// gateway serves ingest only.
func WithStore(st *Store) Option {
	return func(c *config) error { c.store = st; return nil }
}

// WithObserver reports every push delivery to o, as SDK consumers do
// (telemetry.Metrics: herald_events_consumed_total, handler durations...).
func WithObserver(o consumer.Observer) Option {
	return func(c *config) error { c.observer = o; return nil }
}

// WithLogger sets the logger. Default slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("WithLogger: logger is nil")
		}
		c.log = l
		return nil
	}
}

// Gateway serves Herald over HTTP. Create it with New; it is safe for
// concurrent use.
type Gateway struct {
	c   Client
	cfg config
	log *slog.Logger

	mu      sync.Mutex
	running map[string]*running // by group
	closed  bool

	stopWatch context.CancelFunc
	watchDone chan struct{}
}

// New returns a gateway publishing and consuming through c.
func New(c Client, opts ...Option) (*Gateway, error) {
	if c == nil {
		return nil, errors.New("gateway: client is nil")
	}
	cfg := config{maxBody: DefaultMaxBody, maxBatch: DefaultMaxBatch, log: slog.Default()}
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, fmt.Errorf("gateway: %w", err)
		}
	}
	return &Gateway{c: c, cfg: cfg, log: cfg.log, running: map[string]*running{}}, nil
}

// GroupTopic returns the topic of group's subscription, if it has one.
func (g *Gateway) GroupTopic(group string) (string, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	r, ok := g.running[group]
	if !ok {
		return "", false
	}
	return r.sub.Topic, true
}

// Handler returns the HTTP API under /v1/ (see the package doc).
func (g *Gateway) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/topics/{topic}/events", g.ingest)
	mux.HandleFunc("GET /v1/groups/{group}/events", g.pullHandler)
	mux.HandleFunc("POST /v1/groups/{group}/ack", g.settleHandler(false))
	mux.HandleFunc("POST /v1/groups/{group}/nack", g.settleHandler(true))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeProblem(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path)
	})
	return mux
}
