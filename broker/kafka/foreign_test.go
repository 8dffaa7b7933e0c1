package kafka_test

import (
	"context"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/kafka"
	cevent "github.com/heraldhq/herald/event"
)

// TestForeignRecords produces as a client that does not use Herald would
// (kafka-python, a plain franz-go producer): JSON records with a key and
// no headers, one naming its type in an "event_type" field, one on a topic
// with a configured type, and a CloudEvents record written by a
// CloudEvents SDK. Each decodes as an event; the id, derived from the
// position, is the same on the redelivery that follows a Nack.
func TestForeignRecords(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	const plain, typed = "payments", "refunds"
	b := newBroker(t, c, kafka.WithForeignTypes(map[string]string{typed: "shop.refund.issued.v1"}))
	for _, topic := range []string{plain, typed} {
		if err := b.EnsureTopic(t.Context(), topic, broker.TopicConfig{Partitions: 2}); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	at := time.Date(2026, 5, 6, 7, 8, 9, 0, time.UTC)
	recs := []*kgo.Record{
		{Topic: plain, Key: []byte("p-1"), Value: []byte(`{"amount":5}`), Timestamp: at},
		{Topic: plain, Key: []byte("p-2"), Value: []byte(`{"event_type":"payment.made","amount":6}`), Timestamp: at},
		{Topic: plain, Value: []byte("not json"), Timestamp: at},
		{Topic: plain, Key: []byte("p-3"), Value: []byte(`{"amount":7}`), Timestamp: at, Headers: []kgo.RecordHeader{
			{Key: "ce_specversion", Value: []byte("1.0")}, {Key: "ce_id", Value: []byte("sdk-1")},
			{Key: "ce_source", Value: []byte("sdk")}, {Key: "ce_type", Value: []byte("sdk.made")},
		}},
		{Topic: typed, Key: []byte("r-1"), Value: []byte(`{"event_type":"ignored.here","amount":8}`), Timestamp: at},
	}
	if err := raw.ProduceSync(t.Context(), recs...).FirstErr(); err != nil {
		t.Fatal(err)
	}

	type want struct {
		typ, key, ct string
	}
	cases := map[string]want{ // by payload
		`{"amount":5}`: {"payments", "p-1", "application/json"},
		`{"event_type":"payment.made","amount":6}`: {"payment.made", "p-2", "application/json"},
		"not json":     {"payments", "", ""},
		`{"amount":7}`: {"sdk.made", "", ""},
		`{"event_type":"ignored.here","amount":8}`: {"shop.refund.issued.v1", "r-1", "application/json"},
	}
	for _, topic := range []string{plain, typed} {
		sub, err := b.Subscribe(t.Context(), topic, broker.SubscribeOptions{Group: "g", Start: broker.FromFirst})
		if err != nil {
			t.Fatal(err)
		}
		n := 4
		if topic == typed {
			n = 1
		}
		ids := map[string]string{} // payload -> first id
		for got := 0; got < n; {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			d, err := sub.Next(ctx)
			cancel()
			if err != nil {
				t.Fatalf("topic %s: waiting for record %d of %d: %v", topic, got+1, n, err)
			}
			m := d.Message()
			e, err := cevent.Kafka.Decode(m.Header, m.Data)
			if err != nil {
				t.Fatalf("topic %s: record %q with headers %v: %v", topic, m.Data, m.Header, err)
			}
			w, ok := cases[string(m.Data)]
			if !ok {
				t.Fatalf("unexpected record %q", m.Data)
			}
			if e.Type != w.typ || m.Route != w.typ || e.PartitionKey != w.key || e.DataContentType != w.ct {
				t.Errorf("record %q: type %q route %q key %q content type %q, want %+v", m.Data, e.Type, m.Route, e.PartitionKey, e.DataContentType, w)
			}
			if e.ID != "sdk-1" && (!e.Time.Equal(at) || e.Source != "kafka:"+topic) {
				t.Errorf("record %q: time %v source %q", m.Data, e.Time, e.Source)
			}
			first, seen := ids[string(m.Data)]
			switch {
			case !seen && d.Attempt() == 1:
				ids[string(m.Data)] = e.ID
				// A Nack redelivers through the group's retry topic: the id
				// must not change with the record's new position.
				if err := d.Nack(t.Context(), 10*time.Millisecond); err != nil {
					t.Fatal(err)
				}
			case seen && d.Attempt() == 2:
				if e.ID != first {
					t.Errorf("record %q: id %q on redelivery, %q first", m.Data, e.ID, first)
				}
				got++
				if err := d.Ack(t.Context()); err != nil {
					t.Fatal(err)
				}
			default:
				t.Fatalf("record %q: attempt %d (seen before: %v)", m.Data, d.Attempt(), seen)
			}
		}
		for data, id := range ids {
			if data == `{"amount":7}` {
				if id != "sdk-1" {
					t.Errorf("CloudEvents record: id %q, want its own sdk-1", id)
				}
				continue
			}
			if len(id) < len("kafka:"+topic+"/0/0") || id[:len("kafka:"+topic+"/")] != "kafka:"+topic+"/" {
				t.Errorf("record %q: id %q, want kafka:%s/<partition>/<offset>", data, id, topic)
			}
		}
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestForeignRecordRoutes checks that a group filtering on routes receives
// the foreign records whose inferred type it names, and skips the others.
func TestForeignRecordRoutes(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	b := newBroker(t, c)
	const topic = "ledger"
	if err := b.EnsureTopic(t.Context(), topic, broker.TopicConfig{}); err != nil {
		t.Fatal(err)
	}
	raw, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.ProduceSync(t.Context(),
		&kgo.Record{Topic: topic, Value: []byte(`{"event_type":"ledger.skip","n":1}`)},
		&kgo.Record{Topic: topic, Value: []byte(`{"event_type":"ledger.take","n":2}`)},
		&kgo.Record{Topic: topic, Value: []byte(`{"specversion":"1.0","id":"s-1","source":"sdk","type":"ledger.skip","data":3}`),
			Headers: []kgo.RecordHeader{{Key: "content-type", Value: []byte(cevent.ContentTypeJSON)}}},
		&kgo.Record{Topic: topic, Value: []byte(`{"specversion":"1.0","id":"s-2","source":"sdk","type":"ledger.take","data":4}`),
			Headers: []kgo.RecordHeader{{Key: "content-type", Value: []byte(cevent.ContentTypeJSON + "; charset=utf-8")}}},
	).FirstErr(); err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(t.Context(), topic, broker.SubscribeOptions{Group: "g", Start: broker.FromFirst, Routes: []string{"ledger.take"}})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	d, err := sub.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d.Message().Route != "ledger.take" || string(d.Message().Data) != `{"event_type":"ledger.take","n":2}` {
		t.Fatalf("got route %q data %s, want the ledger.take record", d.Message().Route, d.Message().Data)
	}
	if err := d.Ack(t.Context()); err != nil {
		t.Fatal(err)
	}
	// A structured-mode CloudEvent is routed by the type it holds and
	// decodes as that event.
	ctx2, cancel2 := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel2()
	d, err = sub.Next(ctx2)
	if err != nil {
		t.Fatal(err)
	}
	m := d.Message()
	e, err := cevent.Kafka.Decode(m.Header, m.Data)
	if err != nil || m.Route != "ledger.take" || e.ID != "s-2" || e.Type != "ledger.take" || string(e.Data) != "4" {
		t.Fatalf("structured record: route %q, event %+v, %v", m.Route, e, err)
	}
	if err := d.Ack(t.Context()); err != nil {
		t.Fatal(err)
	}
}
