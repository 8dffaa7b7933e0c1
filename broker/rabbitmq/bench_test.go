package rabbitmq

import (
	"context"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/heraldhq/herald/broker"
)

// The benchmarks run the adapter and the raw amqp091-go client over the
// same topology (topic exchange, log stream, one quorum group queue), so
// the ratio measures the adapter, not the broker.

const benchBatch = 1000

var benchPayload = make([]byte, 256)

func benchMsgs(topic string, n int) []*broker.Message {
	msgs := make([]*broker.Message, n)
	for i := range msgs {
		msgs[i] = &broker.Message{Topic: topic, Route: "bench.item.v1", Key: "k" + strconv.Itoa(i%64), ID: strconv.Itoa(i), Data: benchPayload}
	}
	return msgs
}

// benchTopic makes a topic with one group queue and returns the adapter.
func benchTopic(b *testing.B) (*tracked, string) {
	tb := newTestBroker(b, WithDeadLetterQueues(false))
	topic := uniq("bench")
	s, err := tb.Subscribe(b.Context(), topic, broker.SubscribeOptions{Group: "g"})
	if err != nil {
		b.Fatal(err)
	}
	_ = s.Close()
	return tb, topic
}

func rawChannel(b *testing.B) *amqp.Channel {
	c, err := amqp.Dial(testURL(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	ch, err := c.Channel()
	if err != nil {
		b.Fatal(err)
	}
	return ch
}

func msgsPerSec(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkPublish publishes 256-byte messages in batches of 1000 and waits
// for every confirm of a batch before the next.
func BenchmarkPublish(b *testing.B) {
	b.Run("raw", func(b *testing.B) {
		tb, topic := benchTopic(b)
		_ = tb
		ch := rawChannel(b)
		if err := ch.Confirm(false); err != nil {
			b.Fatal(err)
		}
		dcs := make([]*amqp.DeferredConfirmation, 0, benchBatch)
		b.ResetTimer()
		for i := 0; i < b.N; i += benchBatch {
			dcs = dcs[:0]
			for j := i; j < min(i+benchBatch, b.N); j++ {
				dc, err := ch.PublishWithDeferredConfirm(exchangeName(topic), "bench.item.v1", true, false, amqp.Publishing{
					DeliveryMode: amqp.Persistent, MessageId: strconv.Itoa(j),
					Headers: amqp.Table{hKey: "k" + strconv.Itoa(j%64)}, Body: benchPayload,
				})
				if err != nil {
					b.Fatal(err)
				}
				dcs = append(dcs, dc)
			}
			for _, dc := range dcs {
				if ok, err := dc.WaitContext(b.Context()); err != nil || !ok {
					b.Fatalf("confirm: ack %v, %v", ok, err)
				}
			}
		}
		msgsPerSec(b)
	})
	b.Run("adapter", func(b *testing.B) {
		tb, topic := benchTopic(b)
		msgs := benchMsgs(topic, benchBatch)
		b.ResetTimer()
		for i := 0; i < b.N; i += benchBatch {
			if err := tb.Publish(b.Context(), msgs[:min(benchBatch, b.N-i)]...); err != nil {
				b.Fatal(err)
			}
		}
		msgsPerSec(b)
	})
}

// fill publishes n messages to topic with the adapter, outside the timer.
func fill(b *testing.B, tb *tracked, topic string, n int) {
	b.Helper()
	msgs := benchMsgs(topic, benchBatch)
	for i := 0; i < n; i += benchBatch {
		if err := tb.Publish(b.Context(), msgs[:min(benchBatch, n-i)]...); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkConsume drains b.N queued 256-byte messages, acking each one,
// with prefetch 1024.
func BenchmarkConsume(b *testing.B) {
	b.Run("raw", func(b *testing.B) {
		tb, topic := benchTopic(b)
		fill(b, tb, topic, b.N)
		ch := rawChannel(b)
		if err := ch.Qos(broker.DefaultMaxInFlight, 0, false); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		in, err := ch.Consume(groupQueue(topic, "g"), "", false, false, false, false, nil)
		if err != nil {
			b.Fatal(err)
		}
		for range b.N {
			d := <-in
			if err := d.Ack(false); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		msgsPerSec(b)
	})
	b.Run("adapter", func(b *testing.B) {
		tb, topic := benchTopic(b)
		fill(b, tb, topic, b.N)
		ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
		defer cancel()
		b.ResetTimer()
		sub, err := tb.Subscribe(ctx, topic, broker.SubscribeOptions{Group: "g"})
		if err != nil {
			b.Fatal(err)
		}
		for range b.N {
			d, err := sub.Next(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if err := d.Ack(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		msgsPerSec(b)
		_ = sub.Close()
	})
}
