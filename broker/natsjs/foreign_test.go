package natsjs_test

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
)

// TestForeignMessages publishes to a topic's stream as clients that do not
// use Herald would (`nats pub`, a plain nats.go JetStream publisher): no
// CloudEvents headers, subjects with and without Herald's partition token,
// a configured type on one topic, and a structured-mode CloudEvent. Each
// decodes as an event; the id does not change on the redelivery after a
// Nack.
func TestForeignMessages(t *testing.T) {
	t.Parallel()
	e := embedded(t, natsjs.EmbeddedConfig{})
	plain, typed := testenv.Unique("payments"), testenv.Unique("refunds")
	b := newBroker(t, natsjs.WithEmbedded(e), natsjs.WithForeignTypes(map[string]string{typed: "shop.refund.issued.v1"}))
	for _, topic := range []string{plain, typed} {
		if err := b.EnsureTopic(t.Context(), topic, broker.TopicConfig{Partitions: 2}); err != nil {
			t.Fatal(err)
		}
	}
	ps, ts := natsjs.StreamName(plain), natsjs.StreamName(typed)
	msg := func(subj string, h nats.Header, data string) *nats.Msg {
		return &nats.Msg{Subject: subj, Header: h, Data: []byte(data)}
	}
	raw := []*nats.Msg{
		msg(ps+".0.payment.made", nil, `{"amount":5}`),
		msg(ps+".payment", nil, `{"event_type":"payment.refunded","amount":6}`),
		msg(ps+".1.misc", nats.Header{"Nats-Msg-Id": {"m-1"}, natsjs.HeaderKey: {"k-1"}}, "not json"),
		msg(ps+".0.sdk.made", nats.Header{"content-type": {event.ContentTypeJSON}},
			`{"specversion":"1.0","id":"s-1","source":"sdk","type":"sdk.made","data":{"amount":7}}`),
		msg(ts+".0.whatever", nil, `{"event_type":"ignored.here","amount":8}`),
	}
	for _, m := range raw {
		if _, err := b.JetStream().PublishMsg(t.Context(), m); err != nil {
			t.Fatal(err)
		}
	}
	type want struct {
		id, typ, route, key, ct string
	}
	cases := map[string]want{ // by payload; id "" = nats:<topic>/<seq>
		`{"amount":5}`: {"", "payment.made", "payment.made", "", "application/json"},
		`{"event_type":"payment.refunded","amount":6}`: {"", "payment.refunded", "payment", "", "application/json"},
		"not json":     {"m-1", "misc", "misc", "k-1", ""},
		`{"amount":7}`: {"s-1", "sdk.made", "sdk.made", "", ""},
		`{"event_type":"ignored.here","amount":8}`: {"", "shop.refund.issued.v1", "whatever", "", "application/json"},
	}
	for topic, n := range map[string]int{plain: 4, typed: 1} {
		sub, err := b.Subscribe(t.Context(), topic, broker.SubscribeOptions{Group: "g", Start: broker.FromFirst})
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]string{} // payload -> id on the first delivery
		for got := 0; got < n; {
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			d, err := sub.Next(ctx)
			cancel()
			if err != nil {
				t.Fatalf("topic %s: waiting for message %d of %d: %v", topic, got+1, n, err)
			}
			m := d.Message()
			ev, err := event.NATS.Decode(m.Header, m.Data)
			if err != nil {
				t.Fatalf("topic %s: message %q with headers %v: %v", topic, m.Data, m.Header, err)
			}
			data := string(ev.Data)
			w, ok := cases[data]
			if !ok {
				t.Fatalf("unexpected message %q", data)
			}
			wantID := w.id
			if wantID == "" {
				wantID = "nats:" + topic + "/" + strconv.FormatUint(d.Sequence(), 10)
			}
			if ev.ID != wantID || ev.Type != w.typ || m.Route != w.route || ev.PartitionKey != w.key || ev.DataContentType != w.ct {
				t.Errorf("message %q: id %q type %q route %q key %q content type %q, want %+v (id %s)",
					data, ev.ID, ev.Type, m.Route, ev.PartitionKey, ev.DataContentType, w, wantID)
			}
			if w.id != "s-1" && (ev.Source != "nats:"+topic || !ev.Time.Equal(d.Timestamp())) {
				t.Errorf("message %q: source %q time %v, want nats:%s and %v", data, ev.Source, ev.Time, topic, d.Timestamp())
			}
			first, seen := ids[data]
			switch {
			case !seen && d.Attempt() == 1:
				ids[data] = ev.ID
				if err := d.Nack(t.Context(), 0); err != nil {
					t.Fatal(err)
				}
			case seen && d.Attempt() == 2:
				if ev.ID != first {
					t.Errorf("message %q: id %q on redelivery, %q first", data, ev.ID, first)
				}
				got++
				if err := d.Ack(t.Context()); err != nil {
					t.Fatal(err)
				}
			default:
				t.Fatalf("message %q: attempt %d (seen before: %v)", data, d.Attempt(), seen)
			}
		}
		if err := sub.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestForeignTypesRejectsBadInput checks that WithForeignTypes names what
// is wrong with a topic or a type.
func TestForeignTypesRejectsBadInput(t *testing.T) {
	t.Parallel()
	e := embedded(t, natsjs.EmbeddedConfig{})
	for name, tc := range map[string]struct {
		types map[string]string
		want  string
	}{
		"bad topic": {map[string]string{"a b": "t.v1"}, `topic name "a b"`},
		"bad type":  {map[string]string{"orders": "has space"}, `type of topic "orders"`},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := natsjs.New(t.Context(), natsjs.WithEmbedded(e), natsjs.WithForeignTypes(tc.types))
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "WithForeignTypes") {
				t.Fatalf("err %v, want one naming WithForeignTypes and %s", err, tc.want)
			}
		})
	}
}
