package kafka

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/broker"
)

// Option configures a Broker.
type Option func(*config)

type config struct {
	seeds          []string
	topicDefaults  broker.TopicConfig
	clientOpts     []kgo.Opt
	consumerOpts   []kgo.Opt
	commitInterval time.Duration
	drain          time.Duration
	txnID          string
	logger         *slog.Logger
	maxDelayed     int
	compression    Compression
	foreignTypes   map[string]string
}

func defaultConfig() config {
	return config{
		commitInterval: DefaultCommitInterval,
		drain:          DefaultRebalanceDrain,
		logger:         slog.Default(),
		maxDelayed:     DefaultMaxDelayed,
		compression:    DefaultCompression,
	}
}

// Defaults of the options.
const (
	// DefaultCommitInterval is how often settled offsets are committed.
	DefaultCommitInterval = time.Second
	// DefaultRebalanceDrain bounds how long a member that loses a
	// partition in a rebalance waits for the deliveries it handed out
	// from that partition to be settled.
	DefaultRebalanceDrain = 10 * time.Second
	// DefaultMaxDelayed is how many not-yet-due retry records a
	// subscription holds before it pauses fetching its retry topic.
	DefaultMaxDelayed = 10000
)

// WithSeeds sets the bootstrap brokers ("host:port"). Required, unless
// WithClientOptions supplies kgo.SeedBrokers.
func WithSeeds(seeds ...string) Option {
	return func(c *config) { c.seeds = append(c.seeds, seeds...) }
}

// WithTopicDefaults sets the configuration of topics created on first use
// by Publish or Subscribe. Default: one partition, replication factor of
// the cluster, kept forever (retention.ms=-1, retention.bytes=-1).
// MaxMsgs must be 0: Kafka retains by age and size only.
func WithTopicDefaults(cfg broker.TopicConfig) Option {
	return func(c *config) { c.topicDefaults = cfg }
}

// WithClientOptions appends raw franz-go options to every client the
// broker makes (producer, transactional producer, consumers): TLS, SASL,
// logging, timeouts. Options that change the adapter's semantics
// (partitioner, consumer group, commit mode) are overridden.
func WithClientOptions(opts ...kgo.Opt) Option {
	return func(c *config) { c.clientOpts = append(c.clientOpts, opts...) }
}

// WithConsumerOptions appends raw franz-go options to the consumer
// clients only, for example kgo.HeartbeatInterval or kgo.SessionTimeout.
// Do not pass kgo.WithPools: delivered messages share the fetched bytes,
// which pooling would recycle under them.
func WithConsumerOptions(opts ...kgo.Opt) Option {
	return func(c *config) { c.consumerOpts = append(c.consumerOpts, opts...) }
}

// WithCommitInterval sets how often a subscription commits the offsets its
// deliveries settled. Default 1s. A shorter interval means fewer
// redeliveries after a crash and more commit requests. Acks with
// SubscribeOptions.ConfirmAcks commit at once regardless.
func WithCommitInterval(d time.Duration) Option {
	return func(c *config) { c.commitInterval = d }
}

// WithRebalanceDrain bounds how long a member that is losing partitions
// waits for its unsettled deliveries from them before it gives them up
// (they are then redelivered to the new owner). The wait is also bounded by
// the subscription's AckWait. Default 10s. It must stay well below the
// group's rebalance timeout (franz-go's default 60s).
func WithRebalanceDrain(d time.Duration) Option {
	return func(c *config) { c.drain = d }
}

// WithTransactionalID sets the transactional id used by Transact. Default:
// "herald-" followed by random hex, fresh for each Broker. A stable id
// fences a previous instance of the same producer after a restart.
func WithTransactionalID(id string) Option {
	return func(c *config) { c.txnID = id }
}

// WithLogger sets the logger for events the adapter handles itself
// (fetch errors, failed background commits). Default slog.Default().
func WithLogger(l *slog.Logger) Option {
	return func(c *config) { c.logger = l }
}

// WithMaxDelayed sets how many delayed (nacked, not yet due) records one
// subscription holds in memory before it pauses its retry topic. Default
// 10000.
func WithMaxDelayed(n int) Option {
	return func(c *config) { c.maxDelayed = n }
}

// Compression is the codec produced record batches are compressed with.
type Compression string

// Compression codecs. Every Kafka client reads uncompressed and gzip
// batches with nothing extra installed; snappy, lz4 and zstd need a codec
// package in some clients (kafka-python: python-snappy, lz4, zstandard).
const (
	CompressionNone   Compression = "none"
	CompressionGzip   Compression = "gzip"
	CompressionSnappy Compression = "snappy"
	CompressionLZ4    Compression = "lz4"
	CompressionZstd   Compression = "zstd"
)

// DefaultCompression is none, as in Kafka's own producer: every consumer
// reads Herald's records without an extra codec, and publishing spends no
// CPU on compression. Choose gzip for smaller batches readable by every
// client, or snappy, lz4 or zstd when every consumer has the codec.
const DefaultCompression = CompressionNone

// WithCompression sets the codec produced batches are compressed with.
// Default DefaultCompression (none). In a URL: ?compression=gzip.
func WithCompression(c Compression) Option {
	return func(cfg *config) { cfg.compression = c }
}

func (c Compression) codec() (kgo.CompressionCodec, error) {
	switch c {
	case CompressionNone:
		return kgo.NoCompression(), nil
	case CompressionGzip:
		return kgo.GzipCompression(), nil
	case CompressionSnappy:
		return kgo.SnappyCompression(), nil
	case CompressionLZ4:
		return kgo.Lz4Compression(), nil
	case CompressionZstd:
		return kgo.ZstdCompression(), nil
	}
	return kgo.CompressionCodec{}, fmt.Errorf("kafka: compression %q: want none, gzip, snappy, lz4 or zstd", string(c))
}

func (c *config) validate() error {
	if _, err := c.compression.codec(); err != nil {
		return err
	}
	if len(c.seeds) == 0 && len(c.clientOpts) == 0 {
		return errors.New("kafka: no seed brokers: pass kafka.WithSeeds(\"host:9092\")")
	}
	if c.commitInterval <= 0 {
		return fmt.Errorf("kafka: commit interval %v must be positive", c.commitInterval)
	}
	if c.drain < 0 {
		return fmt.Errorf("kafka: rebalance drain %v must not be negative", c.drain)
	}
	if c.maxDelayed <= 0 {
		return fmt.Errorf("kafka: max delayed %d must be positive", c.maxDelayed)
	}
	if c.logger == nil {
		return errors.New("kafka: logger is nil")
	}
	if c.topicDefaults.MaxMsgs != 0 {
		return fmt.Errorf("kafka: topic defaults: MaxMsgs %d: %w", c.topicDefaults.MaxMsgs, errMaxMsgs)
	}
	return nil
}

// Scheme is the URL scheme that selects this adapter.
const Scheme = "kafka"

// DefaultPort is used for a seed given without a port.
const DefaultPort = "9092"

// ParseURL reads "kafka://host:port[,host:port...][?compression=codec]"
// and returns the options that select those seed brokers (and the
// compression, see WithCompression). A host without a port gets 9092. A
// path, fragment, user info or another query parameter is rejected, so a
// typo is not silently ignored.
func ParseURL(s string) ([]Option, error) {
	rest, ok := strings.CutPrefix(s, Scheme+"://")
	if !ok {
		return nil, fmt.Errorf("kafka: url %q: want kafka://host:port[,host:port]", s)
	}
	var opts []Option
	if hosts, query, ok := strings.Cut(rest, "?"); ok {
		rest = hosts
		q, err := url.ParseQuery(query)
		if err != nil {
			return nil, fmt.Errorf("kafka: url %q: query: %w", s, err)
		}
		for k, v := range q {
			if k != "compression" || len(v) != 1 {
				return nil, fmt.Errorf("kafka: url %q: query parameter %q: only one compression=none|gzip|snappy|lz4|zstd is allowed", s, k)
			}
			c := Compression(v[0])
			if _, err := c.codec(); err != nil {
				return nil, fmt.Errorf("kafka: url %q: %w", s, err)
			}
			opts = append(opts, WithCompression(c))
		}
	}
	if i := strings.IndexAny(rest, "/?#@"); i >= 0 {
		return nil, fmt.Errorf("kafka: url %q: unexpected %q: only a comma-separated list of host:port is allowed", s, rest[i:i+1])
	}
	if rest == "" {
		return nil, fmt.Errorf("kafka: url %q: no broker address", s)
	}
	var seeds []string
	for _, hp := range strings.Split(rest, ",") {
		if hp == "" {
			return nil, fmt.Errorf("kafka: url %q: empty broker address", s)
		}
		host, port, err := net.SplitHostPort(hp)
		if err != nil {
			// No port: the whole item is the host (bracketed IPv6 allowed).
			host, port = strings.TrimSuffix(strings.TrimPrefix(hp, "["), "]"), DefaultPort
			if strings.ContainsAny(host, "[]") || (strings.Contains(host, ":") && !strings.HasPrefix(hp, "[")) {
				return nil, fmt.Errorf("kafka: url %q: broker address %q: want host:port", s, hp)
			}
		}
		if host == "" {
			return nil, fmt.Errorf("kafka: url %q: broker address %q has no host", s, hp)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("kafka: url %q: broker address %q: port must be 1-65535", s, hp)
		}
		seeds = append(seeds, net.JoinHostPort(host, port))
	}
	return append(opts, WithSeeds(seeds...)), nil
}
