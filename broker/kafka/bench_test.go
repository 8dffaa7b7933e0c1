package kafka_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/kafka"
)

// The benchmarks run the adapter and the raw franz-go client through the
// same loop against the same in-process cluster, so the ratio of their
// msgs/s is measured in one run. Messages carry a 256-byte payload, a key
// (16 keys), a route and an id; the raw records carry the same key, value
// and two headers.

const benchBatch = 100

var benchPayload = make([]byte, 256)

func benchMessages(topic string, n int) []*broker.Message {
	out := make([]*broker.Message, n)
	for i := range out {
		out[i] = &broker.Message{Topic: topic, Route: "bench.item.v1", Key: "k" + strconv.Itoa(i%16), ID: "id-" + strconv.Itoa(i), Data: benchPayload}
	}
	return out
}

func rawRecords(topic string, n int) []*kgo.Record {
	out := make([]*kgo.Record, n)
	for i := range out {
		out[i] = &kgo.Record{Topic: topic, Key: []byte("k" + strconv.Itoa(i%16)), Value: benchPayload, Headers: []kgo.RecordHeader{
			{Key: kafka.HeaderRoute, Value: []byte("bench.item.v1")},
			{Key: kafka.HeaderID, Value: []byte("id-" + strconv.Itoa(i))},
		}}
	}
	return out
}

func rawClient(b *testing.B, seeds []string, opts ...kgo.Opt) *kgo.Client {
	b.Helper()
	cl, err := kgo.NewClient(append([]kgo.Opt{kgo.SeedBrokers(seeds...)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cl.Close)
	return cl
}

func reportRate(b *testing.B, n int) {
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkPublish: publish-confirmed messages, batches of 100, each call
// returning once every record of the batch is acknowledged.
func BenchmarkPublish(b *testing.B) {
	c := newCluster(b)
	br := newBroker(b, c)
	ctx := context.Background()
	b.Run("adapter", func(b *testing.B) {
		topic := "bench-pub-adapter-" + strconv.Itoa(b.N)
		if err := br.EnsureTopic(ctx, topic, broker.TopicConfig{}); err != nil {
			b.Fatal(err)
		}
		batch := benchMessages(topic, benchBatch)
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i += benchBatch {
			if err := br.Publish(ctx, batch[:min(benchBatch, b.N-i)]...); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, b.N)
	})
	b.Run("raw-franz-go", func(b *testing.B) {
		topic := "bench-pub-raw-" + strconv.Itoa(b.N)
		if err := br.EnsureTopic(ctx, topic, broker.TopicConfig{}); err != nil {
			b.Fatal(err)
		}
		cl := rawClient(b, c.ListenAddrs())
		b.ReportAllocs()
		b.ResetTimer()
		for i := 0; i < b.N; i += benchBatch {
			recs := rawRecords(topic, min(benchBatch, b.N-i))
			if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				b.Fatal(err)
			}
		}
		reportRate(b, b.N)
	})
}

// BenchmarkConsume: consume and ack b.N messages published beforehand,
// through a consumer group, reading each payload. The adapter acks each
// delivery (commits run in the background every second); the raw client
// marks each record done and autocommits the marks (kgo.AutoCommitMarks),
// franz-go's way to commit only processed records.
func BenchmarkConsume(b *testing.B) {
	c := newCluster(b)
	br := newBroker(b, c, kafka.WithCommitInterval(time.Second))
	ctx := context.Background()
	fill := func(b *testing.B, topic string) {
		b.Helper()
		batch := benchMessages(topic, benchBatch)
		for i := 0; i < b.N; i += benchBatch {
			if err := br.Publish(ctx, batch[:min(benchBatch, b.N-i)]...); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("adapter", func(b *testing.B) {
		topic := "bench-con-adapter-" + strconv.Itoa(b.N)
		fill(b, topic)
		b.ReportAllocs()
		b.ResetTimer()
		sub, err := br.Subscribe(ctx, topic, broker.SubscribeOptions{Group: "bench", Start: broker.FromFirst})
		if err != nil {
			b.Fatal(err)
		}
		size := 0
		for range b.N {
			d, err := sub.Next(ctx)
			if err != nil {
				b.Fatal(err)
			}
			size += len(d.Message().Data)
			if err := d.Ack(ctx); err != nil {
				b.Fatal(err)
			}
		}
		if size != b.N*len(benchPayload) {
			b.Fatalf("read %d bytes, want %d", size, b.N*len(benchPayload))
		}
		b.StopTimer()
		reportRate(b, b.N)
		_ = sub.Close()
	})
	b.Run("raw-franz-go", func(b *testing.B) {
		topic := "bench-con-raw-" + strconv.Itoa(b.N)
		fill(b, topic)
		b.ReportAllocs()
		b.ResetTimer()
		cl := rawClient(b, c.ListenAddrs(), kgo.ConsumerGroup(topic+":bench"), kgo.ConsumeTopics(topic),
			kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadCommitted()),
			kgo.AutoCommitMarks())
		n, size := 0, 0
		for n < b.N {
			fs := cl.PollFetches(ctx)
			if err := fs.Err(); err != nil {
				b.Fatal(err)
			}
			fs.EachRecord(func(r *kgo.Record) {
				size += len(r.Value)
				cl.MarkCommitRecords(r)
				n++
			})
		}
		if size != b.N*len(benchPayload) {
			b.Fatalf("read %d bytes, want %d", size, b.N*len(benchPayload))
		}
		b.StopTimer()
		reportRate(b, b.N)
	})
}
