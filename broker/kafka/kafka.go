package kafka

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/broker"
)

// Record headers the adapter writes. User headers with the "herald-"
// prefix are refused by Publish so they cannot be confused with these.
const (
	// HeaderRoute carries Message.Route.
	HeaderRoute = "herald-route"
	// HeaderID carries Message.ID.
	HeaderID = "herald-id"
	// HeaderAttempt, on a retry record, is the attempt number of the
	// delivery it becomes.
	HeaderAttempt = "herald-attempt"
	// HeaderDue, on a retry record, is when it may be delivered (Unix
	// milliseconds).
	HeaderDue = "herald-due"
	// HeaderSeq, on a retry record, is the Sequence of the original record.
	HeaderSeq = "herald-seq"
	// HeaderTime, on a retry record, is the timestamp of the original
	// record (Unix milliseconds).
	HeaderTime = "herald-time"

	reservedPrefix = "herald-"
)

// maxTopicLen is Kafka's limit on topic names.
const maxTopicLen = 249

var errMaxMsgs = fmt.Errorf("kafka retains by age and size only, not by message count: %w", errors.ErrUnsupported)

// ErrPartitionRevoked is returned by an Ack with ConfirmAcks (and by
// Tx commits) when the delivery's partition moved to another group member
// before the ack was committed. The message will be redelivered there.
var ErrPartitionRevoked = errors.New("kafka: partition revoked from this member before the ack was committed")

// GroupID is the Kafka consumer group id behind the Herald group named
// group on topic: "<topic>:<group>". Herald groups belong to one topic; Kafka groups
// do not, so the topic is part of the id.
func GroupID(topic, group string) string { return topic + ":" + group }

// RetryTopic is the topic that holds the delayed redeliveries of group on
// topic: "<topic>.retry.<group>". Each group has its own, so one group's
// retries never reach another.
func RetryTopic(topic, group string) string { return topic + ".retry." + group }

// Broker is the Kafka adapter. It is safe for concurrent use. Close it
// when done.
type Broker struct {
	cfg config
	cl  *kgo.Client // idempotent producer, metadata and admin requests
	adm *kadm.Client

	topics  sync.Map // topic name -> *topicInfo
	flights sync.Map // topic name -> *flight, topics being created

	txMu sync.Mutex // one transaction at a time
	txcl *kgo.Client

	clock coarseClock // for the subscriptions' ack waits

	mu     sync.Mutex
	subs   map[*subscription]struct{}
	closed atomic.Bool
}

var (
	_ broker.Broker       = (*Broker)(nil)
	_ broker.TopicManager = (*Broker)(nil)
)

type topicInfo struct {
	partitions int32
	id         kadm.TopicID
}

type flight struct {
	done chan struct{}
	info *topicInfo
	err  error
}

// New connects to the cluster given by WithSeeds and returns a Broker. It
// fails with broker.ErrUnavailable when no seed answers before ctx ends.
func New(ctx context.Context, opts ...Option) (*Broker, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.txnID == "" {
		var r [8]byte
		_, _ = rand.Read(r[:])
		cfg.txnID = "herald-" + hex.EncodeToString(r[:])
	}
	cl, err := kgo.NewClient(cfg.producerOpts()...)
	if err != nil {
		return nil, fmt.Errorf("kafka: client: %w", err)
	}
	if err := cl.Ping(ctx); err != nil {
		cl.Close()
		return nil, fmt.Errorf("kafka: seeds %v: %w: %w", cfg.seeds, broker.ErrUnavailable, err)
	}
	return &Broker{
		cfg:  cfg,
		cl:   cl,
		adm:  kadm.NewClient(cl),
		subs: make(map[*subscription]struct{}),
	}, nil
}

func (c *config) baseOpts() []kgo.Opt {
	opts := make([]kgo.Opt, 0, 4+len(c.clientOpts))
	if len(c.seeds) > 0 {
		opts = append(opts, kgo.SeedBrokers(c.seeds...))
	}
	return append(opts, c.clientOpts...)
}

func (c *config) producerOpts() []kgo.Opt {
	codec, _ := c.compression.codec() // checked by validate
	return append(c.baseOpts(),
		kgo.ProducerBatchCompression(codec),
		kgo.RecordPartitioner(keyPartitioner{}),
		kgo.RequiredAcks(kgo.AllISRAcks()),
	)
}

// Client returns the underlying franz-go client the broker produces with,
// for admin tasks the adapter does not cover. Do not close it.
func (b *Broker) Client() *kgo.Client { return b.cl }

// Ping checks that a seed broker answers.
func (b *Broker) Ping(ctx context.Context) error {
	if err := b.cl.Ping(ctx); err != nil {
		return fmt.Errorf("kafka: ping: %w: %w", broker.ErrUnavailable, err)
	}
	return nil
}

// Close closes every subscription and the clients. Deliveries not yet
// settled are redelivered to their groups.
func (b *Broker) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	b.mu.Lock()
	subs := make([]*subscription, 0, len(b.subs))
	for s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	for _, s := range subs {
		_ = s.Close()
	}
	b.txMu.Lock()
	if b.txcl != nil {
		b.txcl.Close()
		b.txcl = nil
	}
	b.txMu.Unlock()
	b.cl.Close()
	return nil
}

// keyPartitioner maps a keyed record with broker.Partition, the FNV-1a hash
// every Herald adapter uses, so a key lands on the same partition whoever
// published it. A record without a key has no order to keep and goes
// where franz-go's sticky partitioner puts it (whole batches on one
// partition, spread over time).
type keyPartitioner struct{}

func (keyPartitioner) ForTopic(string) kgo.TopicPartitioner {
	sticky := kgo.StickyPartitioner().ForTopic("")
	onNew, _ := sticky.(kgo.TopicPartitionerOnNewBatch)
	return &keyTopicPartitioner{sticky: sticky, onNew: onNew}
}

type keyTopicPartitioner struct {
	sticky kgo.TopicPartitioner
	onNew  kgo.TopicPartitionerOnNewBatch
}

func (p *keyTopicPartitioner) RequiresConsistency(r *kgo.Record) bool { return len(r.Key) > 0 }

func (p *keyTopicPartitioner) Partition(r *kgo.Record, n int) int {
	if len(r.Key) > 0 {
		return broker.Partition(string(r.Key), n)
	}
	return p.sticky.Partition(r, n)
}

func (p *keyTopicPartitioner) OnNewBatch() {
	if p.onNew != nil {
		p.onNew.OnNewBatch()
	}
}

// Publish appends msgs and returns when the cluster acknowledged every one
// (acks=all, idempotent producer: the client's retries never duplicate or
// reorder a record). The whole call is one ProduceSync. Topics are created
// on first use with the WithTopicDefaults config.
func (b *Broker) Publish(ctx context.Context, msgs ...*broker.Message) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	return b.publish(ctx, b.cl, msgs)
}

func validateMessage(m *broker.Message) error {
	if m == nil {
		return fmt.Errorf("%w: nil message", broker.ErrInvalidMessage)
	}
	if err := broker.ValidateName("topic", m.Topic); err != nil {
		return err
	}
	if err := broker.ValidateRoute(m.Route); err != nil {
		return err
	}
	for k := range m.Header {
		if strings.HasPrefix(k, reservedPrefix) {
			return fmt.Errorf("%w: header %q: the %q prefix is reserved for the adapter", broker.ErrInvalidMessage, k, reservedPrefix)
		}
		if k == "" {
			return fmt.Errorf("%w: empty header name", broker.ErrInvalidMessage)
		}
	}
	return nil
}

// publish builds one record per valid message with its key, route, id and
// headers in one byte arena and one header slice, and produces them all in
// one ProduceSync.
func (b *Broker) publish(ctx context.Context, cl *kgo.Client, msgs []*broker.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var errs []error
	fail := func(i int, err error) {
		if errs == nil {
			errs = make([]error, len(msgs))
		}
		errs[i] = err
	}
	arena, nhdr := 0, 0
	for _, m := range msgs {
		if m == nil {
			continue
		}
		arena += len(m.Key) + len(m.Route) + len(m.ID)
		nhdr += 2 + len(m.Header)
		for _, v := range m.Header {
			arena += len(v)
		}
	}
	buf := make([]byte, 0, arena)
	bytesOf := func(s string) []byte {
		if s == "" {
			return nil
		}
		start := len(buf)
		buf = append(buf, s...)
		return buf[start:len(buf):len(buf)]
	}
	hdrs := make([]kgo.RecordHeader, 0, nhdr)
	recs := make([]kgo.Record, len(msgs))
	ptrs := make([]*kgo.Record, 0, len(msgs))
	idx := make([]int, 0, len(msgs))
	var last string
	for i, m := range msgs {
		if err := validateMessage(m); err != nil {
			fail(i, err)
			continue
		}
		if m.Topic != last {
			if _, err := b.ensureTopic(ctx, m.Topic, nil); err != nil {
				fail(i, err)
				continue
			}
			last = m.Topic
		}
		start := len(hdrs)
		hdrs = append(hdrs, kgo.RecordHeader{Key: HeaderRoute, Value: bytesOf(m.Route)})
		if m.ID != "" {
			hdrs = append(hdrs, kgo.RecordHeader{Key: HeaderID, Value: bytesOf(m.ID)})
		}
		for k, v := range m.Header {
			hdrs = append(hdrs, kgo.RecordHeader{Key: k, Value: bytesOf(v)})
		}
		r := &recs[i]
		r.Topic = m.Topic
		r.Key = bytesOf(m.Key)
		r.Value = m.Data
		r.Headers = hdrs[start:len(hdrs):len(hdrs)]
		ptrs = append(ptrs, r)
		idx = append(idx, i)
	}
	if len(ptrs) > 0 {
		for j, res := range cl.ProduceSync(ctx, ptrs...) {
			if res.Err != nil {
				fail(idx[j], produceError(res.Record.Topic, res.Err))
			}
		}
	}
	if errs == nil {
		return nil
	}
	return broker.NewPublishError(errs)
}

func produceError(topic string, err error) error {
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.Is(err, kgo.ErrClientClosed):
		return fmt.Errorf("kafka: publish to %q: %w", topic, err)
	case errors.Is(err, kerr.MessageTooLarge), errors.Is(err, kerr.RecordListTooLarge), errors.Is(err, kerr.InvalidRecord):
		return fmt.Errorf("kafka: publish to %q: %w: %w", topic, broker.ErrInvalidMessage, err)
	}
	return fmt.Errorf("kafka: publish to %q: %w: %w", topic, broker.ErrUnavailable, err)
}

// EnsureTopic creates topic with cfg (Partitions, Replicas, MaxAge as
// retention.ms, MaxBytes as retention.bytes split over the partitions), or
// sets the retention of an existing topic. The partition count of an
// existing topic is left alone: changing it would move keys to other
// partitions. MaxMsgs is not supported by Kafka and is an error;
// DedupWindow has no meaning here (see the package doc) and is ignored.
func (b *Broker) EnsureTopic(ctx context.Context, topic string, cfg broker.TopicConfig) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if err := broker.ValidateName("topic", topic); err != nil {
		return err
	}
	if cfg.MaxMsgs != 0 {
		return fmt.Errorf("kafka: topic %q: MaxMsgs %d: %w", topic, cfg.MaxMsgs, errMaxMsgs)
	}
	info, created, err := b.createOrLookup(ctx, topic, cfg)
	if err != nil {
		return err
	}
	if !created {
		parts := int(info.partitions)
		var alter []kadm.AlterConfig
		for k, v := range retentionConfigs(cfg, parts) {
			alter = append(alter, kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: v})
		}
		resps, err := b.adm.AlterTopicConfigs(ctx, alter, topic)
		if err == nil {
			for _, r := range resps {
				if r.Err != nil {
					err = r.Err
					break
				}
			}
		}
		if err != nil {
			return fmt.Errorf("kafka: topic %q: set retention: %w", topic, err)
		}
	}
	b.topics.Store(topic, info)
	return nil
}

func retentionConfigs(cfg broker.TopicConfig, partitions int) map[string]*string {
	ms, bytes := "-1", "-1"
	if cfg.MaxAge > 0 {
		ms = strconv.FormatInt(max(cfg.MaxAge.Milliseconds(), 1), 10)
	}
	if cfg.MaxBytes > 0 {
		bytes = strconv.FormatInt(max(cfg.MaxBytes/int64(max(partitions, 1)), 1), 10)
	}
	return map[string]*string{"retention.ms": &ms, "retention.bytes": &bytes}
}

// ensureTopic returns what is known of topic, creating it with cfg (nil:
// the broker's topic defaults) if it does not exist. Concurrent callers of
// one missing topic share one creation.
func (b *Broker) ensureTopic(ctx context.Context, topic string, cfg *broker.TopicConfig) (*topicInfo, error) {
	if v, ok := b.topics.Load(topic); ok {
		return v.(*topicInfo), nil
	}
	f := &flight{done: make(chan struct{})}
	if v, loaded := b.flights.LoadOrStore(topic, f); loaded {
		f = v.(*flight)
		select {
		case <-f.done:
			return f.info, f.err
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	c := b.cfg.topicDefaults
	if cfg != nil {
		c = *cfg
	}
	f.info, _, f.err = b.createOrLookup(ctx, topic, c)
	if f.err == nil {
		b.topics.Store(topic, f.info)
	}
	b.flights.Delete(topic)
	close(f.done)
	return f.info, f.err
}

func (b *Broker) createOrLookup(ctx context.Context, topic string, cfg broker.TopicConfig) (info *topicInfo, created bool, err error) {
	// Create first, look up only if it exists: a lookup of a missing topic
	// would be cached by the client as missing for a few seconds.
	parts := int32(max(cfg.Partitions, 1))
	repl := int16(-1)
	if cfg.Replicas > 0 {
		repl = int16(cfg.Replicas)
	}
	resp, err := b.adm.CreateTopic(ctx, parts, repl, retentionConfigs(cfg, int(parts)), topic)
	if err == nil {
		err = resp.Err
	}
	switch {
	case err == nil:
		return &topicInfo{partitions: parts, id: resp.ID}, true, nil
	case errors.Is(err, kerr.TopicAlreadyExists),
		errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
		// Exists, or we may not create topics: use it as it is.
		info, lerr := b.lookupTopic(ctx, topic)
		if lerr != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return nil, false, fmt.Errorf("kafka: create topic %q: %w (and %w)", topic, err, lerr)
		}
		return info, false, lerr
	}
	return nil, false, fmt.Errorf("kafka: create topic %q: %w: %w", topic, broker.ErrUnavailable, err)
}

func (b *Broker) lookupTopic(ctx context.Context, topic string) (*topicInfo, error) {
	tds, err := b.adm.ListTopics(ctx, topic)
	if err != nil {
		return nil, fmt.Errorf("kafka: topic %q: metadata: %w: %w", topic, broker.ErrUnavailable, err)
	}
	td, ok := tds[topic]
	if !ok {
		return nil, fmt.Errorf("kafka: topic %q: %w", topic, kerr.UnknownTopicOrPartition)
	}
	if td.Err != nil {
		return nil, fmt.Errorf("kafka: topic %q: %w", topic, td.Err)
	}
	return &topicInfo{partitions: int32(len(td.Partitions)), id: td.ID}, nil
}

// waitCtx returns a context for cleanup work that must outlive a canceled
// caller but not hang: commits on close and revoke.
func waitCtx(parent context.Context, d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(parent), d)
}
