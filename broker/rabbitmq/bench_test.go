package rabbitmq

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/event"
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
// filledSubscription fills a topic with b.N messages, starts the timer and
// joins group g on it.
func filledSubscription(b *testing.B) (context.Context, broker.Subscription) {
	tb, topic := benchTopic(b)
	fill(b, tb, topic, b.N)
	ctx, cancel := context.WithTimeout(b.Context(), 10*time.Minute)
	b.Cleanup(cancel)
	b.ResetTimer()
	sub, err := tb.Subscribe(ctx, topic, broker.SubscribeOptions{Group: "g"})
	if err != nil {
		b.Fatal(err)
	}
	return ctx, sub
}

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
		ctx, sub := filledSubscription(b)
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
	// As the router consumes: one goroutine takes deliveries and hands
	// them to 4 lanes that ack them, so deliveries wait in the lanes while
	// others are acked.
	b.Run("adapter-lanes", func(b *testing.B) {
		ctx, sub := filledSubscription(b)
		lanes := make([]chan broker.Delivery, 4)
		var wg sync.WaitGroup
		errs := make(chan error, len(lanes))
		for i := range lanes {
			lanes[i] = make(chan broker.Delivery, broker.DefaultMaxInFlight/len(lanes))
			wg.Go(func() {
				for d := range lanes[i] {
					if err := d.Ack(ctx); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		for i := range b.N {
			d, err := sub.Next(ctx)
			if err != nil {
				b.Fatal(err)
			}
			lanes[i%len(lanes)] <- d
		}
		for _, l := range lanes {
			close(l)
		}
		wg.Wait()
		b.StopTimer()
		select {
		case err := <-errs:
			b.Fatal(err)
		default:
		}
		msgsPerSec(b)
		_ = sub.Close()
	})
}

// shapePublishing is what the adapter sends for an event the SDK
// published (type bench.item.v1, the given id and subject, a binary
// payload) as the tag-th message of its channel, written out as a raw
// client would: the CloudEvents AMQP binding's application properties,
// the content-type and message-id properties and the adapter's own
// headers. TestShapePublishingIsTheAdapters holds it equal to the
// adapter's.
func shapePublishing(id, subject string, now time.Time, tag uint64) amqp.Publishing {
	return amqp.Publishing{
		MessageId: id, ContentType: "application/octet-stream", DeliveryMode: amqp.Persistent, Body: benchPayload,
		Headers: amqp.Table{
			"cloudEvents_specversion": "1.0", "cloudEvents_id": id, "cloudEvents_source": "bench",
			"cloudEvents_type": "bench.item.v1", "cloudEvents_subject": subject,
			"cloudEvents_time": now.UTC().Format(time.RFC3339Nano),
			hKey:               subject, hSlot: slotNames[broker.Partition(subject, maxPartitions)],
			hTime: now.UnixMilli(), hTag: int64(tag),
		},
	}
}

// The shapes benchmark writes the adapter's message by hand: it must stay
// what the SDK and the adapter send, or its last row measures another
// format.
func TestShapePublishingIsTheAdapters(t *testing.T) {
	e := event.New("bench", "bench.item.v1", benchPayload)
	e.Subject = "k7"
	e.DataContentType = "application/octet-stream"
	h := map[string]string{}
	event.AMQP.Encode(e, h)
	m := &broker.Message{Topic: "shape", Route: e.Type, Key: e.Key(), ID: e.ID, Header: h, Data: e.Data}
	hd := amqp.Table{}
	before := time.Now()
	_, key, got := (&pubChan{}).builder([]*broker.Message{m})(0, hd)
	hd[hTag] = int64(1) // publish stamps the channel's tag after build
	got.Headers, got.DeliveryMode = hd, amqp.Persistent
	want := shapePublishing(e.ID, e.Subject, e.Time, 1)
	if key != "bench.item.v1" {
		t.Errorf("routing key %q, want the event type", key)
	}
	if got.MessageId != want.MessageId || got.ContentType != want.ContentType || got.DeliveryMode != want.DeliveryMode {
		t.Errorf("properties: adapter id %q type %q mode %d, bench id %q type %q mode %d",
			got.MessageId, got.ContentType, got.DeliveryMode, want.MessageId, want.ContentType, want.DeliveryMode)
	}
	if len(got.Headers) != len(want.Headers) {
		t.Errorf("adapter headers %v, bench %v", got.Headers, want.Headers)
	}
	for k, w := range want.Headers {
		g, ok := got.Headers[k]
		switch {
		case !ok:
			t.Errorf("%s: the adapter does not send it", k)
		case k == "cloudEvents_time":
			gt, err := time.Parse(time.RFC3339Nano, g.(string))
			if err != nil || !gt.Equal(e.Time) {
				t.Errorf("%s: adapter %v, bench %v", k, g, w)
			}
		case k == hTime:
			// The adapter stamps the publish time, the bench the event's.
			if ms, ok := g.(int64); !ok || ms < before.UnixMilli() || ms > time.Now().UnixMilli() {
				t.Errorf("%s: adapter %v (%T), want the publish time in ms", k, g, g)
			}
		case g != w:
			t.Errorf("%s: adapter %v (%T), bench %v (%T)", k, g, g, w, w)
		}
	}
}

// BenchmarkRawShapes takes apart what separates Herald's shape on
// RabbitMQ from the plain amqp091-go loop (a quorum queue fed through the
// default exchange, 4096 confirms outstanding, a consumer acking each
// message with prefetch 4096): acking many messages with one multiple ack
// (multiack), routing each message through a topic exchange into a
// quorum queue and a stream, Herald's two stored copies (two-copies), and
// publishing calls of 100 awaited in turn, as `herald bench e2e` publishes
// (wait100), with the properties and headers the adapter sends, published
// mandatory as it publishes (headers; see shapePublishing). All raw
// client, no adapter.
//
//	go test -run '^$' -bench RawShapes -benchtime 100000x ./broker/rabbitmq
func BenchmarkRawShapes(b *testing.B) {
	for _, tc := range []struct {
		name                           string
		two, multiAck, wait100, header bool
	}{
		{name: "one-queue"},
		{name: "one-queue-multiack", multiAck: true},
		{name: "two-copies", two: true},
		{name: "two-copies-wait100", two: true, wait100: true},
		{name: "two-copies-wait100-headers", two: true, wait100: true, header: true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			pc, cc := rawChannel(b), rawChannel(b)
			q := uniq("shape")
			if _, err := pc.QueueDeclare(q, true, false, false, false, amqp.Table{"x-queue-type": "quorum"}); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _, _ = pc.QueueDelete(q, false, false, false) })
			ex, key := "", q
			if tc.two {
				ex, key = q+".x", "bench.item.v1"
				if err := pc.ExchangeDeclare(ex, "topic", true, false, false, false, nil); err != nil {
					b.Fatal(err)
				}
				if _, err := pc.QueueDeclare(q+".log", true, false, false, false, amqp.Table{"x-queue-type": "stream"}); err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() {
					_, _ = pc.QueueDelete(q+".log", false, false, false)
					_ = pc.ExchangeDelete(ex, false, false)
				})
				for _, bound := range []string{q, q + ".log"} {
					if err := pc.QueueBind(bound, "#", ex, false, nil); err != nil {
						b.Fatal(err)
					}
				}
			}
			if err := pc.Confirm(false); err != nil {
				b.Fatal(err)
			}
			if err := cc.Qos(4096, 0, false); err != nil {
				b.Fatal(err)
			}
			ds, err := cc.Consume(q, "", false, false, false, false, nil)
			if err != nil {
				b.Fatal(err)
			}
			done := make(chan error, 1)
			b.ResetTimer()
			go func() {
				for n := 1; n <= b.N; n++ {
					d, ok := <-ds
					if !ok {
						done <- errors.New("deliveries closed")
						return
					}
					var err error
					if !tc.multiAck {
						err = d.Ack(false)
					} else if n%64 == 0 || n == b.N {
						err = d.Ack(true)
					}
					if err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			ctx := b.Context()
			const window = 4096 // confirms outstanding, as the plain loop keeps
			pend := make([]*amqp.DeferredConfirmation, 0, window)
			wait := func(ds []*amqp.DeferredConfirmation) {
				for _, d := range ds {
					if ok, err := d.WaitContext(ctx); err != nil || !ok {
						b.Fatalf("publish not confirmed: %v", err)
					}
				}
			}
			for i := range b.N {
				p := amqp.Publishing{Body: benchPayload, DeliveryMode: amqp.Persistent}
				if tc.header {
					p = shapePublishing(strconv.Itoa(i), "k"+strconv.Itoa(i%64), time.Now(), uint64(i+1))
				}
				// The adapter publishes mandatory (an unroutable event is
				// returned, not dropped); so does the row with its headers.
				dc, err := pc.PublishWithDeferredConfirmWithContext(ctx, ex, key, tc.header, false, p)
				if err != nil {
					b.Fatal(err)
				}
				pend = append(pend, dc)
				switch {
				case tc.wait100 && len(pend) == 100:
					wait(pend)
					pend = pend[:0]
				case !tc.wait100 && len(pend) == window:
					// The oldest first; append moves the rest to a new
					// array now and then, not on every message.
					wait(pend[:1])
					pend = pend[1:]
				}
			}
			wait(pend)
			select {
			case err := <-done:
				if err != nil {
					b.Fatal(err)
				}
			case <-time.After(time.Minute):
				b.Fatal("not every message consumed within a minute")
			}
			b.StopTimer()
			msgsPerSec(b)
		})
	}
}
