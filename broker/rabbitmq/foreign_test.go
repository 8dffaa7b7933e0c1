package rabbitmq

import (
	"context"
	"strconv"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/event"
)

// TestReceiveCloudEventsAMQPBinding publishes as a client that does not
// use Herald would (pika, plain amqp091): attributes with native AMQP
// types in binary mode, then an application/cloudevents+json message in
// structured mode. Both decode as events.
func TestReceiveCloudEventsAMQPBinding(t *testing.T) {
	t.Parallel()
	b := newTestBroker(t)
	url := testURL(t)
	topic := "foreign-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	sub, err := b.Subscribe(t.Context(), topic, broker.SubscribeOptions{Group: "g"})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()

	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	binary := amqp.Publishing{
		ContentType: "application/json",
		Headers: amqp.Table{
			"cloudEvents_specversion": "1.0", "cloudEvents_id": "p-1", "cloudEvents_source": "pika",
			"cloudEvents_type": "payment.done.v1", "cloudEvents_time": at, "cloudEvents_sequence": int64(7),
		},
		Body: []byte(`{"amount":5}`),
	}
	structured := amqp.Publishing{
		ContentType: event.ContentTypeJSON,
		Body:        []byte(`{"specversion":"1.0","id":"p-2","source":"pika","type":"payment.done.v1","time":"2026-03-04T05:06:07Z","data":{"amount":6}}`),
	}
	for _, p := range []amqp.Publishing{binary, structured} {
		if err := ch.PublishWithContext(t.Context(), exchangeName(topic), "payment.done.v1", false, false, p); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]*event.Event{}
	for len(got) < 2 {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		d, err := sub.Next(ctx)
		cancel()
		if err != nil {
			t.Fatalf("waiting for the two published messages (have %d): %v", len(got), err)
		}
		m := d.Message()
		e, err := event.AMQP.Decode(m.Header, m.Data)
		if err != nil {
			t.Fatalf("decode message with headers %v: %v", m.Header, err)
		}
		got[e.ID] = e
		if err := d.Ack(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if e := got["p-1"]; e == nil || !e.Time.Equal(at) || e.Sequence != 7 || string(e.Data) != `{"amount":5}` {
		t.Errorf("binary mode with native types: %+v", e)
	}
	if e := got["p-2"]; e == nil || !e.Time.Equal(at) || string(e.Data) != `{"amount":6}` {
		t.Errorf("structured mode: %+v", e)
	}
}

// TestForeignMessages publishes plain messages as pika would, without
// CloudEvents attributes: they decode as events with an id that does not
// change on the redelivery after a Nack, a type from the configured
// setting, the body's "event_type" field or the routing key.
func TestForeignMessages(t *testing.T) {
	t.Parallel()
	suffix := strconv.FormatInt(time.Now().UnixNano(), 36)
	plain, typed := "plain-"+suffix, "typed-"+suffix
	b := newTestBroker(t, WithForeignTypes(map[string]string{typed: "shop.refund.issued.v1"}))
	url := testURL(t)
	c, err := amqp.Dial(url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ch, err := c.Channel()
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	type want struct{ typ, ct, id string }
	cases := []struct {
		topic, key string
		p          amqp.Publishing
		want       want
	}{
		{plain, "payment.made", amqp.Publishing{Body: []byte(`{"amount":5}`), Timestamp: at}, want{"payment.made", "application/json", ""}},
		{plain, "payment.any", amqp.Publishing{Body: []byte(`{"event_type":"payment.refunded","amount":6}`)}, want{"payment.refunded", "application/json", ""}},
		{plain, "payment.made", amqp.Publishing{Body: []byte("not json"), ContentType: "text/plain", MessageId: "m-1"}, want{"payment.made", "text/plain", "m-1"}},
		{typed, "x", amqp.Publishing{Body: []byte(`{"event_type":"ignored","amount":8}`)}, want{"shop.refund.issued.v1", "application/json", ""}},
	}
	subs := map[string]broker.Subscription{}
	for _, topic := range []string{plain, typed} {
		sub, err := b.Subscribe(t.Context(), topic, broker.SubscribeOptions{Group: "g"})
		if err != nil {
			t.Fatal(err)
		}
		defer sub.Close()
		subs[topic] = sub
	}
	for _, tc := range cases {
		if err := ch.PublishWithContext(t.Context(), exchangeName(tc.topic), tc.key, false, false, tc.p); err != nil {
			t.Fatal(err)
		}
	}
	for _, topic := range []string{plain, typed} {
		byBody := map[string]want{}
		for _, tc := range cases {
			if tc.topic == topic {
				byBody[string(tc.p.Body)] = tc.want
			}
		}
		ids := map[string]string{}
		for done := 0; done < len(byBody); {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			d, err := subs[topic].Next(ctx)
			cancel()
			if err != nil {
				t.Fatalf("topic %s: waiting for message %d of %d: %v", topic, done+1, len(byBody), err)
			}
			m := d.Message()
			e, err := event.AMQP.Decode(m.Header, m.Data)
			if err != nil {
				t.Fatalf("message %q with headers %v: %v", m.Data, m.Header, err)
			}
			w, ok := byBody[string(m.Data)]
			if !ok {
				t.Fatalf("unexpected message %q", m.Data)
			}
			if e.Type != w.typ || e.DataContentType != w.ct || e.Source != "amqp:"+topic || (w.id != "" && e.ID != w.id) {
				t.Errorf("message %q: type %q content type %q source %q id %q, want %+v", m.Data, e.Type, e.DataContentType, e.Source, e.ID, w)
			}
			if string(m.Data) == `{"amount":5}` && !e.Time.Equal(at) {
				t.Errorf("message %q: time %v, want the timestamp property %v", m.Data, e.Time, at)
			}
			first, seen := ids[string(m.Data)]
			switch {
			case !seen && d.Attempt() == 1:
				ids[string(m.Data)] = e.ID
				if err := d.Nack(t.Context(), 10*time.Millisecond); err != nil {
					t.Fatal(err)
				}
			case seen && d.Attempt() == 2:
				if e.ID != first {
					t.Errorf("message %q: id %q on redelivery, %q first", m.Data, e.ID, first)
				}
				done++
				if err := d.Ack(t.Context()); err != nil {
					t.Fatal(err)
				}
			default:
				t.Fatalf("message %q: attempt %d (seen before: %v)", m.Data, d.Attempt(), seen)
			}
		}
	}
}
