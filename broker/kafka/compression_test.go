package kafka_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/kafka"
)

// TestCompressionOnTheWire publishes with each URL setting and reads the
// batches back with a plain client: the default must be uncompressed, so
// that clients without extra codecs (kafka-python) read Herald's records.
func TestCompressionOnTheWire(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	seed := c.ListenAddrs()[0]
	for query, want := range map[string]uint8{"": 0, "?compression=none": 0, "?compression=gzip": 1, "?compression=snappy": 2, "?compression=lz4": 3, "?compression=zstd": 4} {
		topic := "comp" + strings.NewReplacer("?compression=", "-").Replace(query)
		opts, err := kafka.ParseURL("kafka://" + seed + query)
		if err != nil {
			t.Fatal(err)
		}
		b, err := kafka.New(t.Context(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		err = b.Publish(t.Context(), &broker.Message{Topic: topic, Route: "r", Data: []byte(strings.Repeat("herald ", 200))})
		_ = b.Close()
		if err != nil {
			t.Fatal(err)
		}
		cl, err := kgo.NewClient(kgo.SeedBrokers(seed), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		fs := cl.PollRecords(ctx, 1)
		cancel()
		cl.Close()
		if err := fs.Err0(); err != nil || fs.NumRecords() != 1 {
			t.Fatalf("%q: reading the record back: %v (%d records)", query, err, fs.NumRecords())
		}
		if got := fs.Records()[0].Attrs.CompressionType(); got != want {
			t.Errorf("URL suffix %q: batch compression type %d, want %d", query, got, want)
		}
	}
	if _, err := kafka.New(t.Context(), kafka.WithSeeds(seed), kafka.WithCompression("brotli")); err == nil || !strings.Contains(err.Error(), "brotli") {
		t.Errorf("New with compression brotli: %v, want an error naming it", err)
	}
}

// TestIdempotentProducerByDefault reads a record Herald published with a
// plain client: its batch carries a producer id, which only an idempotent
// (or transactional) producer sets, so the client's retries never
// duplicate or reorder records.
func TestIdempotentProducerByDefault(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	b := newBroker(t, c)
	const topic = "idempotent"
	if err := b.Publish(t.Context(), &broker.Message{Topic: topic, Route: "r", Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ConsumeTopics(topic), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	fs := cl.PollRecords(ctx, 1)
	if err := fs.Err0(); err != nil || fs.NumRecords() != 1 {
		t.Fatalf("reading the record back: %v (%d records)", err, fs.NumRecords())
	}
	if r := fs.Records()[0]; r.ProducerID < 0 {
		t.Fatalf("record batch has producer id %d: not written by an idempotent producer", r.ProducerID)
	}
}
