// Package natsjs is Herald's NATS JetStream adapter of the broker SPI, and
// the embedded JetStream server Herald runs by default.
//
// Layout: a topic is a stream (its name with '.' replaced by '_'); a message
// is stored on subject "<stream>.<partition>.<route>", where the partition
// is broker.Partition(key, partitions) and the route is the event type.
// Dedup uses the Nats-Msg-Id header (the message ID) within the stream's
// duplicate window. A group is a durable pull consumer with explicit acks.
//
//	emb, _ := natsjs.RunEmbedded(ctx, natsjs.EmbeddedConfig{DataDir: dir})
//	b, _ := natsjs.New(ctx, natsjs.WithEmbedded(emb))
//	defer b.Close()
//	err := b.Publish(ctx, &broker.Message{Topic: "orders", Route: "shop.order.placed.v1", Data: data})
package natsjs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
)

// Header names the adapter uses on the wire besides the message's own.
const (
	// HeaderKey carries Message.Key.
	HeaderKey = "Herald-Key"
)

// Stream metadata keys.
const (
	metaTopic      = "herald.topic"
	metaPartitions = "herald.partitions"
)

// Defaults for topics created on first use.
// Eight partitions let up to eight members of a key-ordered group work in
// parallel; servers before 2.10 get one.
var DefaultTopicConfig = broker.TopicConfig{
	Partitions:  8,
	MaxAge:      7 * 24 * time.Hour,
	Replicas:    1,
	DedupWindow: 2 * time.Minute,
}

// Broker publishes to and consumes from JetStream. It is safe for
// concurrent use. Create it with New; Close it when done.
type Broker struct {
	nc        *nats.Conn
	ownConn   bool
	js        jetstream.JetStream
	log       *slog.Logger
	defaults  broker.TopicConfig
	perTopic  map[string]broker.TopicConfig
	storage   jetstream.StorageType
	pubWait   time.Duration
	readyWait time.Duration

	connClosed chan struct{} // closed when an owned connection is closed
	modern     bool          // server >= 2.10
	termReason bool          // server >= 2.10.4
	pinned     bool          // server >= 2.11: pinned priority groups
	reset      bool          // server >= 2.14: consumer reset
	// groupCommit sends concurrent publishes to a stream together: as
	// atomic batches (server >= 2.12), or with fastBatch as fast batches
	// (streams that allow them, server >= 2.14).
	groupCommit bool
	fastBatch   bool
	// batches counts the batches committed whole, for tests.
	batches atomic.Uint64
	// failResets is how many consumer resets to refuse, for tests.
	failResets atomic.Int32
	// stallCreates is how many consumer creations to leave unanswered
	// until their request times out, for tests.
	stallCreates atomic.Int32
	// foreignTypes: event types of foreign messages by topic (foreign.go).
	foreignTypes map[string]string

	mu      sync.Mutex
	streams map[string]*streamInfo
	subs    map[*subscription]struct{}
	ordered map[*orderedSub]struct{}
	commits map[string]*committer // by stream name
	closed  bool
}

var (
	_ broker.Broker       = (*Broker)(nil)
	_ broker.TopicManager = (*Broker)(nil)
)

type streamInfo struct {
	name       string
	topic      string
	partitions int
	// prefixes[p] is "<stream>.<p>.", so a subject costs one concatenation.
	prefixes []string
	// batchPrefix starts the ids of this broker's atomic batches to the
	// stream: unique per broker, so two clients' batches never mix.
	batchPrefix string
	// batched: group commits to this stream go as fast batches.
	batched bool
	// fresh is set while the stream has just been created and nothing was
	// published to it through this broker yet: in a cluster the server
	// this client is connected to may not know the stream's subjects for
	// a moment and answer "no responders". The first publish goes alone
	// and is retried until the stream answers, so the ones after it
	// cannot overtake it.
	fresh atomic.Bool
}

func (s *streamInfo) subject(key, route string) string {
	return s.prefixes[broker.Partition(key, s.partitions)] + route
}

// Option configures a Broker.
type Option func(*config) error

type config struct {
	url       string
	natsOpts  []nats.Option
	conn      *nats.Conn
	emb       *Embedded
	defaults  broker.TopicConfig
	perTopic  map[string]broker.TopicConfig
	log       *slog.Logger
	memory    bool
	pubWait   time.Duration
	readyWait time.Duration
	maxAsync  int
	// groupCommit: nil means on with an embedded server of Sync
	// durability, off otherwise.
	groupCommit *bool
	// foreignTypes: event types of foreign messages by topic (foreign.go).
	foreignTypes map[string]string
	// replicasSet: WithTopicDefaults chose the replica count; otherwise it
	// follows the size of the cluster connected to.
	replicasSet bool
}

// WithURL connects to a NATS server (or cluster: comma-separated URLs).
func WithURL(url string, opts ...nats.Option) Option {
	return func(c *config) error { c.url, c.natsOpts = url, opts; return nil }
}

// WithConn uses an existing connection; Close does not close it.
func WithConn(nc *nats.Conn) Option {
	return func(c *config) error { c.conn = nc; return nil }
}

// WithEmbedded connects in-process to an embedded server.
func WithEmbedded(e *Embedded) Option {
	return func(c *config) error { c.emb = e; return nil }
}

// WithTopicDefaults sets the config of topics created on first use.
// Zero fields keep DefaultTopicConfig's values.
func WithTopicDefaults(t broker.TopicConfig) Option {
	return func(c *config) error {
		c.defaults = mergeTopicConfig(c.defaults, t)
		c.replicasSet = c.replicasSet || t.Replicas > 0
		return nil
	}
}

// WithTopic sets the config of one topic, used when it is created.
func WithTopic(topic string, t broker.TopicConfig) Option {
	return func(c *config) error {
		if err := broker.ValidateName("topic", topic); err != nil {
			return err
		}
		c.perTopic[topic] = t
		return nil
	}
}

// WithMemoryStorage keeps streams in memory instead of files (tests).
func WithMemoryStorage() Option {
	return func(c *config) error { c.memory = true; return nil }
}

// WithLogger sets the logger. Default slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error { c.log = l; return nil }
}

// WithPublishTimeout bounds the wait for each publish confirmation.
// Default 10s.
func WithPublishTimeout(d time.Duration) Option {
	return func(c *config) error { c.pubWait = d; return nil }
}

// WithReadyTimeout bounds the wait for JetStream to answer at connect time.
// Default 10s.
func WithReadyTimeout(d time.Duration) Option {
	return func(c *config) error { c.readyWait = d; return nil }
}

// WithMaxPending caps unconfirmed asynchronous publishes per connection
// (further publishes wait). Default 4000.
func WithMaxPending(n int) Option {
	return func(c *config) error { c.maxAsync = n; return nil }
}

// WithGroupCommit turns group commit on or off. On, the messages that
// concurrent Publish calls send to one topic are committed together (up
// to 1000 messages) while the previous batch is being written; a lone
// message is sent at once, alone. One batch per topic is in flight, so
// the messages of a key keep their order.
//
// A batch is a JetStream atomic batch, which the server writes, and with
// Sync durability fsyncs, once (streams get JetStream's allow_atomic
// setting; NATS server 2.12 or later, else message by message). With an
// embedded server of Fast durability, where there is no fsync to save, a
// batch is a JetStream fast batch instead: its messages are stored as they
// arrive and the server answers the batch once instead of once per message
// (streams get allow_batched; NATS server 2.14 or later, else message by
// message). A batch the server stops part way (a message it refuses, an
// id already stored, no stream leader, no answer in time) is finished
// message by message from the first message not confirmed, so each message
// gets its own outcome and duplicates are still dropped by id.
//
// Default: on with a server of Sync durability, embedded (WithEmbedded)
// or a Herald server that says so on ServerInfoSubject; off otherwise.
// Fast batches measure within a few per cent of message by message
// publishing (BENCHMARKS.md), so Fast durability does not turn them on by
// itself.
func WithGroupCommit(on bool) Option {
	return func(c *config) error { c.groupCommit = &on; return nil }
}

func mergeTopicConfig(base, over broker.TopicConfig) broker.TopicConfig {
	if over.Partitions > 0 {
		base.Partitions = over.Partitions
	}
	if over.MaxAge != 0 {
		base.MaxAge = over.MaxAge
	}
	if over.MaxBytes != 0 {
		base.MaxBytes = over.MaxBytes
	}
	if over.MaxMsgs != 0 {
		base.MaxMsgs = over.MaxMsgs
	}
	if over.Replicas > 0 {
		base.Replicas = over.Replicas
	}
	if over.DedupWindow > 0 {
		base.DedupWindow = over.DedupWindow
	}
	return base
}

// New connects to JetStream (one of WithURL, WithConn or WithEmbedded is
// required) and waits until JetStream answers.
func New(ctx context.Context, opts ...Option) (*Broker, error) {
	c := &config{
		defaults:  DefaultTopicConfig,
		perTopic:  map[string]broker.TopicConfig{},
		log:       slog.Default(),
		pubWait:   10 * time.Second,
		readyWait: 10 * time.Second,
		maxAsync:  4000,
	}
	for _, o := range opts {
		if err := o(c); err != nil {
			return nil, fmt.Errorf("natsjs: %w", err)
		}
	}
	b := &Broker{
		log:       c.log,
		defaults:  c.defaults,
		perTopic:  c.perTopic,
		storage:   jetstream.FileStorage,
		pubWait:   c.pubWait,
		readyWait: c.readyWait,
		streams:   map[string]*streamInfo{},
		subs:      map[*subscription]struct{}{},
		ordered:   map[*orderedSub]struct{}{},
		commits:   map[string]*committer{},

		foreignTypes: c.foreignTypes,
	}
	if c.memory {
		b.storage = jetstream.MemoryStorage
	}
	var err error
	switch {
	case c.conn != nil:
		b.nc = c.conn
	case c.emb != nil:
		b.connClosed = make(chan struct{})
		b.nc, err = c.emb.Connect(nats.MaxReconnects(-1), b.closedHandler())
		b.ownConn = true
	case c.url != "":
		b.connClosed = make(chan struct{})
		b.nc, err = Connect(c.url, append(c.natsOpts, b.closedHandler())...)
		b.ownConn = true
	default:
		return nil, errors.New("natsjs: one of WithURL, WithConn or WithEmbedded is required")
	}
	if err != nil {
		return nil, err
	}
	b.js, err = jetstream.New(b.nc, jetstream.WithPublishAsyncMaxPending(c.maxAsync),
		jetstream.WithPublishAsyncTimeout(c.pubWait))
	if err != nil {
		b.closeConn()
		return nil, fmt.Errorf("natsjs: %w", err)
	}
	if err := WaitJetStream(ctx, b.js, c.readyWait); err != nil {
		b.closeConn()
		return nil, err
	}
	// Servers before 2.10 lack stream metadata, several filter subjects
	// per consumer and term reasons; 2.10.4 added the reasons.
	v := b.nc.ConnectedServerVersion()
	b.modern = serverAtLeast(v, 2, 10, 0)
	b.termReason = serverAtLeast(v, 2, 10, 4)
	b.pinned = serverAtLeast(v, 2, 11, 0)
	b.reset = serverAtLeast(v, 2, 14, 0)
	// Atomic batches need 2.12; before it there is nothing to decide, nor
	// to ask the server.
	switch atomicBatches := serverAtLeast(v, 2, 12, 0); {
	case !atomicBatches:
	case c.groupCommit != nil:
		b.groupCommit = *c.groupCommit
	case c.emb != nil:
		b.groupCommit = c.emb.Durability() == Sync
	default:
		// Over the network: a Herald server says its durability.
		info, ok, err := askServerInfo(ctx, b.nc)
		if err != nil {
			b.log.Debug("natsjs: ask the server its durability; publishing message by message", "subject", ServerInfoSubject, "error", err)
		}
		b.groupCommit = ok && info.Durability == Sync
	}
	// With Fast durability nothing is fsynced per message, so atomic
	// batches save nothing: fast batches save the server's answers.
	b.fastBatch = b.groupCommit && c.emb != nil && c.emb.Durability() == Fast && serverAtLeast(v, 2, 14, 0)
	if !b.modern {
		b.defaults.Partitions = 1
	}
	if !c.replicasSet {
		b.defaults.Replicas = clusterReplicas(b.nc, c.emb)
	}
	return b, nil
}

// clusterReplicas is the replica count of topics and buckets created
// through nc: 1 on a single server; in a cluster 3, or the number of
// its servers when there are fewer. An embedded node knows its cluster;
// a client counts the servers it was given and was told of.
func clusterReplicas(nc *nats.Conn, emb *Embedded) int {
	if emb != nil {
		return emb.Replicas()
	}
	if nc.ConnectedClusterName() == "" {
		return 1
	}
	hosts := map[string]bool{}
	for _, s := range nc.Servers() {
		if u, err := url.Parse(s); err == nil {
			hosts[u.Host] = true
		}
	}
	return Replicas(len(hosts))
}

// Replicas returns the replica count of the topics and key-value buckets
// this broker creates.
func (b *Broker) Replicas() int { return max(1, b.defaults.Replicas) }

// Connect dials a NATS URL with Herald's defaults (reconnect forever, a
// name, a ping every 2 s, a 5 s write timeout) and a clear error when
// nothing answers.
//
// The ping and the write timeout are what notice a server that went
// silent without closing the connection (a network partition, a machine
// that lost power): with three pings unanswered (6-8 s), or a write that
// could not finish in 5 s because the socket's buffer is full, the client
// reconnects to another server of the URL list. With nats.go's own
// defaults (a ping every 2 minutes, a 1-minute write timeout) a busy
// publisher hangs on the dead connection for a minute and an idle one for
// 4-6 minutes. Options passed in override these.
func Connect(url string, opts ...nats.Option) (*nats.Conn, error) {
	all := append([]nats.Option{nats.Name("herald"), nats.MaxReconnects(-1), nats.Timeout(5 * time.Second),
		nats.PingInterval(2 * time.Second), nats.MaxPingsOutstanding(3), nats.FlusherTimeout(5 * time.Second)}, opts...)
	nc, err := nats.Connect(url, all...)
	if err != nil {
		return nil, fmt.Errorf("natsjs: connect %s: %w: %w (is a NATS server or `herald serve` running there?)", redactURL(url), broker.ErrUnavailable, err)
	}
	return nc, nil
}

// WaitJetStream polls until JetStream answers an account info request, or
// returns an error wrapping broker.ErrUnavailable after timeout.
func WaitJetStream(ctx context.Context, js jetstream.JetStream, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		// Each try is short: in a cluster that is still forming, a
		// request (or its reply) can be lost, and one lost request must
		// not use up the whole wait.
		actx, acancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := js.AccountInfo(actx)
		acancel()
		if err == nil {
			return nil
		}
		last = err
		if errors.Is(err, jetstream.ErrJetStreamNotEnabled) || errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return fmt.Errorf("natsjs: %w: the NATS server has JetStream disabled (start it with -js)", broker.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("natsjs: %w: JetStream not ready after %v: %v", broker.ErrUnavailable, timeout, last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func redactURL(u string) string {
	at := strings.LastIndex(u, "@")
	scheme := strings.Index(u, "://")
	if at < 0 || scheme < 0 || at < scheme {
		return u
	}
	return u[:scheme+3] + "***@" + u[at+1:]
}

// Conn returns the NATS connection.
func (b *Broker) Conn() *nats.Conn { return b.nc }

// GroupCommit reports whether concurrent publishes to a topic are
// committed together (WithGroupCommit).
func (b *Broker) GroupCommit() bool { return b.groupCommit }

// JetStream returns the JetStream context, for KV buckets and the like.
func (b *Broker) JetStream() jetstream.JetStream { return b.js }

// StreamName returns the stream that holds topic.
func StreamName(topic string) string { return strings.ReplaceAll(topic, ".", "_") }

// EnsureTopic creates topic's stream with cfg merged over the defaults, or
// updates the retention of an existing one. The partition count of an
// existing topic cannot change.
func (b *Broker) EnsureTopic(ctx context.Context, topic string, cfg broker.TopicConfig) error {
	if err := broker.ValidateName("topic", topic); err != nil {
		return err
	}
	b.mu.Lock()
	b.perTopic[topic] = cfg
	delete(b.streams, topic)
	b.mu.Unlock()
	want := b.streamConfig(topic, mergeTopicConfig(b.defaults, cfg))
	var s jetstream.Stream
	err := Retry(ctx, func(ctx context.Context) (err error) {
		s, err = b.js.Stream(ctx, want.Name)
		return err
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = b.stream(ctx, topic)
		return err
	}
	if err != nil {
		return fmt.Errorf("natsjs: topic %q: %w", topic, err)
	}
	have := s.CachedInfo().Config
	if err := checkOwner(topic, have); err != nil {
		return err
	}
	if p := have.Metadata[metaPartitions]; p != want.Metadata[metaPartitions] && cfg.Partitions > 0 {
		return fmt.Errorf("natsjs: topic %q has %s partitions; changing it to %d would break per-key order (create a new topic)", topic, p, cfg.Partitions)
	}
	upd := have
	upd.MaxAge, upd.MaxBytes, upd.MaxMsgs = want.MaxAge, want.MaxBytes, want.MaxMsgs
	upd.Duplicates = want.Duplicates
	if cfg.Replicas > 0 {
		// Only when asked: a client that saw fewer cluster nodes than
		// there are must not shrink a topic.
		upd.Replicas = cfg.Replicas
	}
	if sameLimits(have, upd) {
		// Every router and client ensures its topics at start: an update
		// that changes nothing would still rewrite the stream's metadata,
		// and the server does not order it with consumers being created
		// on the same stream.
		return nil
	}
	if err := Retry(ctx, func(ctx context.Context) error {
		_, err := b.js.UpdateStream(ctx, upd)
		return err
	}); err != nil {
		return fmt.Errorf("natsjs: update topic %q: %w", topic, err)
	}
	return nil
}

// sameLimits reports whether the limits EnsureTopic sets are the same in
// a and b, reading a zero duplicate window as the server's default.
func sameLimits(a, b jetstream.StreamConfig) bool {
	return a.MaxAge == b.MaxAge && a.MaxBytes == b.MaxBytes && a.MaxMsgs == b.MaxMsgs && a.Replicas == b.Replicas &&
		dedupWindow(a) == dedupWindow(b)
}

// serverDedupWindow is the server's duplicate window for a stream that
// asks for none.
const serverDedupWindow = 2 * time.Minute

// dedupWindow is the stream's duplicate window as the server sets it: a
// zero window is serverDedupWindow, or the maximum age if that is shorter.
func dedupWindow(c jetstream.StreamConfig) time.Duration {
	if c.Duplicates != 0 {
		return c.Duplicates
	}
	if c.MaxAge != 0 && c.MaxAge < serverDedupWindow {
		return c.MaxAge
	}
	return serverDedupWindow
}

func (b *Broker) streamConfig(topic string, t broker.TopicConfig) jetstream.StreamConfig {
	name := StreamName(topic)
	maxBytes, maxMsgs := t.MaxBytes, t.MaxMsgs
	if maxBytes == 0 {
		maxBytes = -1
	}
	if maxMsgs == 0 {
		maxMsgs = -1
	}
	dedup := t.DedupWindow
	if t.MaxAge > 0 && dedup > t.MaxAge {
		// The server refuses a window longer than the messages live, and
		// ids of messages that are gone guard nothing.
		dedup = t.MaxAge
	}
	return jetstream.StreamConfig{
		Name:        name,
		Description: "Herald topic " + topic,
		Subjects:    []string{name + ".>"},
		Storage:     b.storage,
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      t.MaxAge,
		MaxBytes:    maxBytes,
		MaxMsgs:     maxMsgs,
		Replicas:    max(t.Replicas, 1),
		Duplicates:  dedup,
		// Atomic or fast batches carry group commits (WithGroupCommit).
		AllowAtomicPublish: b.groupCommit && !b.fastBatch,
		AllowBatchPublish:  b.fastBatch,
		Metadata: map[string]string{
			metaTopic:      topic,
			metaPartitions: strconv.Itoa(max(t.Partitions, 1)),
		},
	}
}

// partitionsOf reads a topic stream's partition count from its metadata;
// streams without it (created elsewhere, or by a server before 2.10) have
// one.
func partitionsOf(cfg jetstream.StreamConfig) int {
	if p, err := strconv.Atoi(cfg.Metadata[metaPartitions]); err == nil && p > 0 {
		return p
	}
	return 1
}

func checkOwner(topic string, have jetstream.StreamConfig) error {
	if owner, ok := have.Metadata[metaTopic]; ok && owner != topic {
		return fmt.Errorf("natsjs: %w: topic %q maps to stream %q, which holds topic %q", broker.ErrInvalidTopic, topic, have.Name, owner)
	}
	return nil
}

// stream returns the stream of topic, creating it on first use.
func (b *Broker) stream(ctx context.Context, topic string) (*streamInfo, error) {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, broker.ErrClosed
	}
	si := b.streams[topic]
	cfg, ok := b.perTopic[topic]
	b.mu.Unlock()
	if si != nil {
		return si, nil
	}
	if err := broker.ValidateName("topic", topic); err != nil {
		return nil, err
	}
	if !ok {
		cfg = broker.TopicConfig{}
	}
	want := b.streamConfig(topic, mergeTopicConfig(b.defaults, cfg))
	if !b.modern && want.Metadata[metaPartitions] != "1" {
		return nil, fmt.Errorf("natsjs: topic %q: partitioned topics need NATS server 2.10 or later (connected to %s)", topic, b.nc.ConnectedServerVersion())
	}
	var s jetstream.Stream
	created := false
	err := Retry(ctx, func(ctx context.Context) (err error) {
		s, err = b.js.Stream(ctx, want.Name)
		return err
	})
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		created = true
		s, err = createStream(ctx, b.js, want)
		if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
			err = Retry(ctx, func(ctx context.Context) (err error) {
				s, err = b.js.Stream(ctx, want.Name)
				return err
			})
		}
		if err == nil {
			err = waitLeader(ctx, func(ctx context.Context) (*jetstream.ClusterInfo, error) {
				info, err := s.Info(ctx)
				if err != nil {
					return nil, err
				}
				return info.Cluster, nil
			})
		}
	}
	if err != nil {
		return nil, fmt.Errorf("natsjs: topic %q: stream %q: %w", topic, want.Name, err)
	}
	have := s.CachedInfo().Config
	if err := checkOwner(topic, have); err != nil {
		return nil, err
	}
	switch {
	case b.fastBatch && !have.AllowBatchPublish:
		have.AllowBatchPublish = true
		st, err := b.js.UpdateStream(ctx, have)
		if err != nil {
			return nil, fmt.Errorf("natsjs: topic %q: allow fast batches for group commit: %w", topic, err)
		}
		have.AllowBatchPublish = st.CachedInfo().Config.AllowBatchPublish
	case b.groupCommit && !b.fastBatch && !have.AllowAtomicPublish:
		have.AllowAtomicPublish = true
		if _, err := b.js.UpdateStream(ctx, have); err != nil {
			return nil, fmt.Errorf("natsjs: topic %q: allow atomic batches for group commit: %w", topic, err)
		}
	}
	parts := partitionsOf(have)
	si = &streamInfo{name: have.Name, topic: topic, partitions: parts, prefixes: make([]string, parts),
		batchPrefix: nats.NewInbox()[len(nats.InboxPrefix):] + "-", batched: b.fastBatch && have.AllowBatchPublish}
	for p := range parts {
		si.prefixes[p] = have.Name + "." + strconv.Itoa(p) + "."
	}
	si.fresh.Store(created)
	b.mu.Lock()
	b.streams[topic] = si
	b.mu.Unlock()
	return si, nil
}

// Publish publishes msgs asynchronously and waits for every confirmation.
// With Fast durability a confirmation means stored by the server; with
// Sync, fsynced. Messages with an ID are deduplicated within the topic's
// window (a duplicate is confirmed, not stored again).
func (b *Broker) Publish(ctx context.Context, msgs ...*broker.Message) error {
	futs := make([]jetstream.PubAckFuture, len(msgs))
	hdrs := make([]*hdrBuf, len(msgs))
	var errs []error
	fail := func(i int, err error) {
		if errs == nil {
			errs = make([]error, len(msgs))
		}
		errs[i] = err
	}
	var si *streamInfo              // batches usually share one topic: look it up once
	var lookupErrs map[string]error // topics whose stream could not be had
	var call *gcCall                // with group commit: this call's queued messages
	var queued []gcGroup
	var gone map[string]bool // topics whose stream was looked up after no answer
	var rctx context.Context // bounds the messages sent again
	for i, m := range msgs {
		if err := broker.ValidateRoute(m.Route); err != nil {
			fail(i, err)
			continue
		}
		if si == nil || si.topic != m.Topic {
			if err := lookupErrs[m.Topic]; err != nil {
				fail(i, err)
				continue
			}
			var err error
			if si, err = b.stream(ctx, m.Topic); err != nil {
				if lookupErrs == nil {
					lookupErrs = map[string]error{}
				}
				lookupErrs[m.Topic] = err
				fail(i, err)
				continue
			}
		}
		hb := toNATSHeader(m)
		nm := &nats.Msg{Subject: si.subject(m.Key, m.Route), Data: m.Data}
		if hb != nil {
			nm.Header = hb.h
		}
		var err error
		if si.fresh.Load() {
			err = b.republish(ctx, nm)
			hb.release()
			if err == nil {
				si.fresh.Store(false)
				continue
			}
		} else if b.groupCommit && (!b.fastBatch || si.batched) {
			if call == nil {
				call = &gcCall{errs: make([]error, len(msgs)), done: make(chan struct{})}
			}
			if len(queued) == 0 || queued[len(queued)-1].c.si.name != si.name {
				c, err := b.committer(si)
				if err != nil {
					hb.release()
					fail(i, err)
					continue
				}
				queued = append(queued, gcGroup{c: c})
			}
			g := &queued[len(queued)-1]
			g.ms = append(g.ms, &gcMsg{nm: nm, call: call, i: i})
			hdrs[i] = hb
			continue
		} else {
			var f jetstream.PubAckFuture
			if f, err = b.js.PublishMsgAsync(nm); err == nil {
				futs[i], hdrs[i] = f, hb
				continue
			}
			hb.release()
		}
		fail(i, publishErr(m.Topic, len(m.Data), err))
	}
	if call != nil {
		b.awaitCommits(ctx, call, queued, msgs, hdrs, fail)
	}
	for i, f := range futs {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
			hdrs[i].release()
		case err := <-f.Err():
			if errors.Is(err, jetstream.ErrNoStreamResponse) {
				// The stream has no leader right now (an election): the
				// message was not stored, so sending it again is safe.
				// One publish timeout for all the call's messages sent
				// again, not one each.
				if rctx == nil {
					var cancel context.CancelFunc
					rctx, cancel = context.WithTimeout(ctx, b.pubWait)
					defer cancel()
				}
				err = b.republish(rctx, f.Msg())
				if err != nil && !gone[msgs[i].Topic] {
					if gone == nil {
						gone = map[string]bool{}
					}
					gone[msgs[i].Topic] = true
					b.checkGone(msgs[i].Topic)
				}
			}
			hdrs[i].release()
			if err != nil {
				fail(i, fmt.Errorf("natsjs: publish to %q: %w", msgs[i].Topic, err))
			}
		case <-ctx.Done():
			// Futures still pending keep their headers: nats.go may send
			// them again.
			for j := i; j < len(futs); j++ {
				if futs[j] != nil {
					fail(j, fmt.Errorf("natsjs: publish to %q: confirmation not received: %w", msgs[j].Topic, ctx.Err()))
				}
			}
			return broker.NewPublishError(errs)
		}
	}
	if errs == nil {
		return nil
	}
	return broker.NewPublishError(errs)
}

// gcGroup is a run of a call's messages to one stream's committer.
type gcGroup struct {
	c  *committer
	ms []*gcMsg
}

// committer returns si's group committer, starting it on first use.
func (b *Broker) committer(si *streamInfo) (*committer, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, broker.ErrClosed
	}
	c := b.commits[si.name]
	if c == nil {
		var err error
		if c, err = newCommitter(b, si); err != nil {
			return nil, err
		}
		b.commits[si.name] = c
	}
	return c, nil
}

// awaitCommits queues a call's messages with their committers and waits
// until every one is settled, recording failures with fail. If ctx ends
// first it reports the call's queued messages as unconfirmed: the
// committer still holds them (and their headers).
func (b *Broker) awaitCommits(ctx context.Context, call *gcCall, queued []gcGroup, msgs []*broker.Message, hdrs []*hdrBuf, fail func(int, error)) {
	n := 0
	for _, g := range queued {
		n += len(g.ms)
	}
	call.left.Store(int32(n))
	for gi, g := range queued {
		if !g.c.enqueue(g.ms) {
			// Closed between lookup and enqueue: settle what was not
			// queued, so the wait below ends.
			for _, q := range queued[gi:] {
				for _, m := range q.ms {
					call.settle(m.i, fmt.Errorf("natsjs: publish to %q: %w", msgs[m.i].Topic, broker.ErrClosed))
				}
			}
			break
		}
	}
	select {
	case <-call.done:
	case <-ctx.Done():
		for _, g := range queued {
			for _, m := range g.ms {
				fail(m.i, fmt.Errorf("natsjs: publish to %q: confirmation not received: %w", msgs[m.i].Topic, ctx.Err()))
				hdrs[m.i] = nil
			}
		}
		return
	}
	for _, g := range queued {
		for _, m := range g.ms {
			hdrs[m.i].release()
			hdrs[m.i] = nil
			if err := call.errs[m.i]; err != nil {
				fail(m.i, err)
			}
		}
	}
}

// checkGone looks the topic's stream up after a publish that no stream
// answered for a whole publish timeout. If the stream does not exist any
// more (deleted, or lost with a server's unsynced data in a power cut),
// the topic is forgotten, so the next publish creates it again instead of
// publishing into nothing.
func (b *Broker) checkGone(topic string) {
	b.mu.Lock()
	si := b.streams[topic]
	b.mu.Unlock()
	if si == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), b.pubWait)
	defer cancel()
	if _, err := b.js.Stream(ctx, si.name); !errors.Is(err, jetstream.ErrStreamNotFound) {
		return
	}
	b.mu.Lock()
	if b.streams[topic] == si {
		delete(b.streams, topic)
	}
	b.mu.Unlock()
	b.log.Warn("natsjs: the topic's stream is gone; the next publish creates it again", "topic", topic, "stream", si.name)
}

// republish sends m again, synchronously, while the stream answers "no
// responders", until the publish timeout or ctx ends.
func (b *Broker) republish(ctx context.Context, m *nats.Msg) error {
	deadline := time.Now().Add(b.pubWait)
	wait := 50 * time.Millisecond
	for {
		pctx, cancel := context.WithDeadline(ctx, deadline)
		_, err := b.js.PublishMsg(pctx, m)
		cancel()
		if err == nil || !errors.Is(err, jetstream.ErrNoStreamResponse) || time.Now().Add(wait).After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}

// hdrBuf is a NATS header map and the backing array of its values, reused
// across publishes: a map of an event's nine headers is the largest
// allocation of a publish.
type hdrBuf struct {
	h    nats.Header
	vals []string
}

var hdrPool = sync.Pool{New: func() any { return &hdrBuf{h: make(nats.Header, 12), vals: make([]string, 0, 12)} }}

// toNATSHeader fills a pooled header with m's header, ID and key. The
// buffer may go back to the pool once the publish is settled: nats.go
// keeps the message only until its acknowledgement (or final error).
func toNATSHeader(m *broker.Message) *hdrBuf {
	if len(m.Header) == 0 && m.ID == "" && m.Key == "" {
		return nil
	}
	b := hdrPool.Get().(*hdrBuf)
	set := func(k, v string) {
		b.vals = append(b.vals, v)
		i := len(b.vals) - 1
		b.h[k] = b.vals[i : i+1 : i+1]
	}
	for k, v := range m.Header {
		set(k, v)
	}
	if m.ID != "" {
		set(jetstream.MsgIDHeader, m.ID)
	}
	if m.Key != "" {
		set(HeaderKey, m.Key)
	}
	return b
}

func (b *hdrBuf) release() {
	if b == nil {
		return
	}
	clear(b.h)
	clear(b.vals)
	b.vals = b.vals[:0]
	hdrPool.Put(b)
}

// Close stops every subscription and closes the connection if the broker
// opened it.
func (b *Broker) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	subs := make([]broker.Subscription, 0, len(b.subs)+len(b.ordered))
	for s := range b.subs {
		subs = append(subs, s)
	}
	for s := range b.ordered {
		subs = append(subs, s)
	}
	commits := make([]*committer, 0, len(b.commits))
	for _, c := range b.commits {
		commits = append(commits, c)
	}
	b.mu.Unlock()
	for _, c := range commits {
		c.close() // commits what is queued
	}
	for _, s := range subs {
		_ = s.Close()
	}
	b.closeConn()
	return nil
}

func (b *Broker) closedHandler() nats.Option {
	ch := b.connClosed
	return nats.ClosedHandler(func(*nats.Conn) { close(ch) })
}

func (b *Broker) closeConn() {
	if !b.ownConn || b.nc == nil {
		return
	}
	// Drain flushes pending acks before closing.
	if err := b.nc.Drain(); err != nil {
		b.nc.Close()
	}
	<-b.connClosed
}

// waitLeader waits (up to 10s) until a replicated stream or consumer has
// elected a leader: in a cluster, using one right after creating it would
// otherwise fail with "no responders" or lose the first pull request.
// placementWait bounds how long creating a replicated stream waits for
// enough cluster peers to come online.
const placementWait = 20 * time.Second

// errCodeNoPeers is JetStream's "no suitable peers for placement".
const errCodeNoPeers jetstream.ErrorCode = 10005

// createStream creates a stream. A cluster that is still forming, or has
// a peer restarting, refuses to place a replicated stream ("no suitable
// peers for placement"); that passes within seconds, so the creation is
// tried again for up to placementWait before the error is returned.
func createStream(ctx context.Context, js jetstream.JetStream, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	wctx, cancel := context.WithTimeout(ctx, placementWait)
	defer cancel()
	noPeers := func(err error) error {
		return fmt.Errorf("cluster peers for %d replicas not available within %v: %w", cfg.Replicas, placementWait, err)
	}
	var placement error // the last "no suitable peers"
	for {
		tctx, tcancel := context.WithTimeout(wctx, apiTry)
		s, err := js.CreateStream(tctx, cfg)
		timedOut := tctx.Err() != nil
		tcancel()
		var apiErr *jetstream.APIError
		if err != nil && wctx.Err() == nil && retryable(err, timedOut) {
			// unanswered while the cluster elects leaders: ask again
		} else if err == nil || !errors.As(err, &apiErr) || apiErr.ErrorCode != errCodeNoPeers {
			if err != nil && placement != nil && wctx.Err() != nil && ctx.Err() == nil {
				return nil, noPeers(placement) // the wait ran out during a try
			}
			return s, err
		} else {
			placement = err
		}
		select {
		case <-wctx.Done():
			if placement == nil {
				return nil, err
			}
			return nil, noPeers(placement)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func waitLeader(ctx context.Context, info func(context.Context) (*jetstream.ClusterInfo, error)) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		// A stream without a leader yet may leave an info request
		// unanswered: short tries.
		tctx, tcancel := context.WithTimeout(ctx, 2*time.Second)
		ci, err := info(tctx)
		tcancel()
		if err == nil && (ci == nil || ci.Leader != "") {
			return nil
		}
		select {
		case <-ctx.Done():
			if err != nil {
				return err
			}
			return fmt.Errorf("no leader elected: %w", ctx.Err())
		case <-time.After(25 * time.Millisecond):
		}
	}
}
