package kafka_test

import (
	"context"
	"errors"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/kafka"
)

func TestParseURL(t *testing.T) {
	tests := []struct {
		name, url string
		wantErr   bool
	}{
		{"one", "kafka://127.0.0.1:9092", false},
		{"several", "kafka://a:9092,b:9093", false},
		{"default port", "kafka://broker", false},
		{"ipv6", "kafka://[::1]:9092", false},
		{"ipv6 no port", "kafka://[::1]", false},
		{"other scheme", "nats://127.0.0.1:4222", true},
		{"no host", "kafka://", true},
		{"empty item", "kafka://a:1,,b:2", true},
		{"bad port", "kafka://a:99999", true},
		{"path", "kafka://a:9092/topic", true},
		{"query", "kafka://a:9092?tls=1", true},
		{"compression", "kafka://a:9092,b?compression=gzip", false},
		{"bad compression", "kafka://a:9092?compression=brotli", true},
		{"compression twice", "kafka://a:9092?compression=gzip&compression=lz4", true},
		{"compression and more", "kafka://a:9092?compression=gzip&acks=1", true},
		{"user", "kafka://u:p@a:9092", true},
		{"bare ipv6", "kafka://::1", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := kafka.ParseURL(tc.url)
			if (err != nil) != tc.wantErr {
				t.Fatalf("ParseURL(%q) error %v, want error %v", tc.url, err, tc.wantErr)
			}
			if err == nil && len(opts) == 0 {
				t.Fatalf("ParseURL(%q) returned no options", tc.url)
			}
		})
	}
}

func TestNewFromURL(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	opts, err := kafka.ParseURL("kafka://" + c.ListenAddrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	b, err := kafka.New(t.Context(), opts...)
	if err != nil {
		t.Fatalf("New from URL: %v", err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(t.Context(), msgs("x", 0, 1, nil)...); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("publish after close: %v, want ErrClosed", err)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := kafka.New(t.Context()); err == nil {
		t.Error("New without seeds: want an error")
	}
	if _, err := kafka.New(t.Context(), kafka.WithSeeds("127.0.0.1:1"), kafka.WithCommitInterval(0)); err == nil {
		t.Error("New with a zero commit interval: want an error")
	}
	if _, err := kafka.New(t.Context(), kafka.WithSeeds("127.0.0.1:1"), kafka.WithTopicDefaults(broker.TopicConfig{MaxMsgs: 10})); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("New with MaxMsgs: %v, want errors.ErrUnsupported", err)
	}
}

func TestNewUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // nothing listens there any more
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	if _, err := kafka.New(ctx, kafka.WithSeeds(addr)); !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("New with seed %s: %v, want ErrUnavailable", addr, err)
	}
}

func TestPublishReservedHeader(t *testing.T) {
	t.Parallel()
	b := newBroker(t, newCluster(t))
	m := msgs("hdr", 0, 1, nil)[0]
	m.Header = map[string]string{kafka.HeaderRoute: "spoof"}
	err := b.Publish(t.Context(), m)
	var pe *broker.PublishError
	if !errors.As(err, &pe) || !errors.Is(err, broker.ErrInvalidMessage) {
		t.Fatalf("publish with header %q: %v, want a PublishError wrapping ErrInvalidMessage", kafka.HeaderRoute, err)
	}
}

func TestEnsureTopic(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	b := newBroker(t, c)
	adm := kadm.NewClient(b.Client())
	cfg := broker.TopicConfig{Partitions: 3, MaxAge: time.Hour, MaxBytes: 3 << 20}
	if err := b.EnsureTopic(t.Context(), "orders", cfg); err != nil {
		t.Fatal(err)
	}
	check := func(wantMs, wantBytes string) {
		t.Helper()
		tds, err := adm.ListTopics(t.Context(), "orders")
		if err != nil {
			t.Fatal(err)
		}
		if n := len(tds["orders"].Partitions); n != 3 {
			t.Errorf("partitions %d, want 3", n)
		}
		rcs, err := adm.DescribeTopicConfigs(t.Context(), "orders")
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, rc := range rcs {
			for _, c := range rc.Configs {
				if c.Value != nil {
					got[c.Key] = *c.Value
				}
			}
		}
		if got["retention.ms"] != wantMs || got["retention.bytes"] != wantBytes {
			t.Errorf("retention.ms %q retention.bytes %q, want %q %q", got["retention.ms"], got["retention.bytes"], wantMs, wantBytes)
		}
	}
	check("3600000", "1048576") // MaxBytes is split over the partitions

	// Existing topic: retention changes, partitions stay.
	if err := b.EnsureTopic(t.Context(), "orders", broker.TopicConfig{Partitions: 6, MaxAge: 2 * time.Hour}); err != nil {
		t.Fatal(err)
	}
	check("7200000", "-1")

	if err := b.EnsureTopic(t.Context(), "orders", broker.TopicConfig{MaxMsgs: 5}); !errors.Is(err, errors.ErrUnsupported) {
		t.Errorf("MaxMsgs: %v, want errors.ErrUnsupported", err)
	}
	if err := b.EnsureTopic(t.Context(), "bad name", cfg); !errors.Is(err, broker.ErrInvalidTopic) {
		t.Errorf("bad name: %v, want ErrInvalidTopic", err)
	}

	// Topics created on first use take the defaults.
	if err := b.Publish(t.Context(), msgs("auto", 0, 1, nil)...); err != nil {
		t.Fatal(err)
	}
	tds, err := adm.ListTopics(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(tds.Names(), "auto") || len(tds["auto"].Partitions) != 1 {
		t.Errorf("auto-created topic: %+v", tds["auto"])
	}
}
