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
