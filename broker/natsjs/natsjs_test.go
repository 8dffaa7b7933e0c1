package natsjs_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	cenats "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/netport"
	"github.com/heraldhq/herald/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, testenv.NATSLeaks()...) }

func embedded(t testing.TB, cfg natsjs.EmbeddedConfig) *natsjs.Embedded {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	e, err := natsjs.RunEmbedded(context.Background(), cfg)
	if err != nil {
		t.Fatalf("run embedded: %v", err)
	}
	t.Cleanup(e.Shutdown)
	return e
}

func newBroker(t testing.TB, opts ...natsjs.Option) *natsjs.Broker {
	t.Helper()
	b, err := natsjs.New(context.Background(), opts...)
	if err != nil {
		t.Fatalf("new broker: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

func TestConformanceEmbedded(t *testing.T) {
	e := embedded(t, natsjs.EmbeddedConfig{})
	brokertest.Run(t, func(t *testing.T) broker.Broker {
		return newBroker(t, natsjs.WithEmbedded(e))
	}, brokertest.Features{})
}

func TestConformanceEmbeddedPartitioned(t *testing.T) {
	e := embedded(t, natsjs.EmbeddedConfig{})
	brokertest.Run(t, func(t *testing.T) broker.Broker {
		return newBroker(t, natsjs.WithEmbedded(e), natsjs.WithTopicDefaults(broker.TopicConfig{Partitions: 4}))
	}, brokertest.Features{})
}

func TestConformanceExternal(t *testing.T) {
	testenv.Need(t, "NATS", testenv.HostPort(testenv.NATSURL))
	var mu sync.Mutex
	var made []string
	t.Cleanup(func() {
		// Remove the streams this run created on the shared server.
		nc, err := nats.Connect(testenv.NATSURL)
		if err != nil {
			return
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		for _, s := range made {
			_ = js.DeleteStream(context.Background(), s)
		}
	})
	prefix := "herald-test"
	brokertest.Run(t, func(t *testing.T) broker.Broker {
		b := newBroker(t, natsjs.WithURL(testenv.NATSURL))
		return &recording{Broker: b, mu: &mu, made: &made}
	}, brokertest.Features{TopicPrefix: prefix})
}

// recording remembers the streams a broker touched, for cleanup.
type recording struct {
	*natsjs.Broker
	mu   *sync.Mutex
	made *[]string
}

func (r *recording) Subscribe(ctx context.Context, topic string, o broker.SubscribeOptions) (broker.Subscription, error) {
	r.mu.Lock()
	*r.made = append(*r.made, natsjs.StreamName(topic))
	r.mu.Unlock()
	return r.Broker.Subscribe(ctx, topic, o)
}

func TestEmbeddedAddrInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, err = natsjs.RunEmbedded(context.Background(), natsjs.EmbeddedConfig{DataDir: t.TempDir(), Addr: l.Addr().String()})
	if !errors.Is(err, natsjs.ErrAddrInUse) {
		t.Fatalf("got %v, want ErrAddrInUse", err)
	}
	if !strings.Contains(err.Error(), "--nats-addr") {
		t.Fatalf("error %q does not say how to fix it", err)
	}
}

// A cluster node whose route port was taken after it was chosen fails at
// once with ErrAddrInUse; the server itself only logs it and waits.
func TestEmbeddedRoutePortInUse(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	peers, err := netport.LoopbackAddrs(2)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	e, err := natsjs.RunEmbedded(ctx, natsjs.EmbeddedConfig{DataDir: t.TempDir(), Addr: "127.0.0.1:0", ServerName: "n1",
		Cluster: &natsjs.ClusterConfig{Name: "taken", Addr: l.Addr().String(), Peers: peers}})
	if err == nil {
		e.Shutdown()
		t.Fatal("started with its route port taken")
	}
	if !errors.Is(err, natsjs.ErrAddrInUse) || !strings.Contains(err.Error(), "router port") {
		t.Fatalf("got %v, want ErrAddrInUse naming the route port", err)
	}
}

func TestEmbeddedDataDirNotWritable(t *testing.T) {
	dir := t.TempDir() + "/file"
	if err := os.WriteFile(dir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := natsjs.RunEmbedded(context.Background(), natsjs.EmbeddedConfig{DataDir: dir + "/sub"})
	if err == nil || !strings.Contains(err.Error(), "data dir") {
		t.Fatalf("got %v, want a data dir error", err)
	}
}

func TestConnectUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens there now
	_, err = natsjs.New(context.Background(), natsjs.WithURL("nats://"+addr, nats.MaxReconnects(0), nats.Timeout(500*time.Millisecond)))
	if !errors.Is(err, broker.ErrUnavailable) {
		t.Fatalf("got %v, want ErrUnavailable", err)
	}
}

func TestEnsureTopicRetention(t *testing.T) {
	e := embedded(t, natsjs.EmbeddedConfig{})
	b := newBroker(t, natsjs.WithEmbedded(e))
	ctx := t.Context()
	if err := b.EnsureTopic(ctx, "retained.topic", broker.TopicConfig{MaxMsgs: 3, Partitions: 2}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if err := b.Publish(ctx, &broker.Message{Topic: "retained.topic", Route: "x.v1", Key: string(rune('a' + i)), Data: []byte{byte(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	s, err := b.JetStream().Stream(ctx, natsjs.StreamName("retained.topic"))
	if err != nil {
		t.Fatal(err)
	}
	info, _ := s.Info(ctx)
	if info.State.Msgs != 3 {
		t.Fatalf("stream holds %d messages, want 3 (MaxMsgs)", info.State.Msgs)
	}
	if err := b.EnsureTopic(ctx, "retained.topic", broker.TopicConfig{MaxMsgs: 10, Partitions: 5}); err == nil {
		t.Fatal("changing the partition count succeeded, want an error")
	}
	if err := b.EnsureTopic(ctx, "retained.topic", broker.TopicConfig{MaxMsgs: 10}); err != nil {
		t.Fatalf("raising MaxMsgs: %v", err)
	}
	info, _ = s.Info(ctx)
	if info.Config.MaxMsgs != 10 {
		t.Fatalf("MaxMsgs = %d after update, want 10", info.Config.MaxMsgs)
	}
}

// EnsureTopic sends the server a stream update only when a limit changes:
// routers and clients ensure their topics at every start.
func TestEnsureTopicUpdatesOnlyOnChange(t *testing.T) {
	e := embedded(t, natsjs.EmbeddedConfig{})
	b := newBroker(t, natsjs.WithEmbedded(e))
	ctx := t.Context()
	nc, err := e.Connect()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	updates := make(chan *nats.Msg, 16)
	if _, err := nc.ChanSubscribe("$JS.API.STREAM.UPDATE.>", updates); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := b.EnsureTopic(ctx, "limited.topic", broker.TopicConfig{MaxAge: time.Hour, MaxMsgs: 100}); err != nil {
			t.Fatal(err)
		}
		if err := b.EnsureTopic(ctx, "default.topic", broker.TopicConfig{}); err != nil {
			t.Fatal(err)
		}
		if err := b.EnsureTopic(ctx, "short.topic", broker.TopicConfig{MaxAge: 30 * time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.EnsureTopic(ctx, "limited.topic", broker.TopicConfig{MaxAge: 2 * time.Hour, MaxMsgs: 100}); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-updates:
		if !strings.HasSuffix(m.Subject, natsjs.StreamName("limited.topic")) {
			t.Fatalf("first update %s, want the changed topic's", m.Subject)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("raising MaxAge sent no stream update")
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := len(updates); n != 0 {
		t.Fatalf("%d more stream updates, want only the one that changed a limit", n)
	}
	s, err := b.JetStream().Stream(ctx, natsjs.StreamName("limited.topic"))
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config.MaxAge; got != 2*time.Hour {
		t.Fatalf("MaxAge %v after the update, want 2h", got)
	}
}

// TestCloudEventsInterop proves standard CloudEvents tooling and Herald read
// each other's events on JetStream: sdk-go decodes what Herald published,
// and Herald decodes what sdk-go sent.
func TestCloudEventsInterop(t *testing.T) {
	e := embedded(t, natsjs.EmbeddedConfig{Addr: "127.0.0.1:0"})
	b := newBroker(t, natsjs.WithEmbedded(e))
	ctx := t.Context()

	t.Run("sdk-go reads Herald", func(t *testing.T) {
		ev := event.New("/shop/orders", "shop.order.placed.v1", []byte(`{"order":"o-1","total":42}`))
		ev.Subject = "o-1"
		ev.DataContentType = "application/json"
		ev.CorrelationID = "corr-1"
		ev.Sequence = 7
		h := make(map[string]string, event.NATS.HeaderCount(ev))
		event.NATS.Encode(ev, h)
		sub := mustSubscribe(t, b, "interop1", broker.SubscribeOptions{Group: "g", Start: broker.FromFirst})
		if err := b.Publish(ctx, &broker.Message{Topic: "interop1", Route: ev.Type, Key: ev.Key(), ID: ev.ID, Header: h, Data: ev.Data}); err != nil {
			t.Fatal(err)
		}
		// Read the stored message with nats.go and hand it to sdk-go.
		nc, err := nats.Connect(e.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		js, _ := jetstream.New(nc)
		stream, _ := js.Stream(ctx, "interop1")
		raw, err := stream.GetMsg(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		got, err := binding.ToEvent(ctx, cenats.NewMessage(&nats.Msg{Subject: raw.Subject, Header: raw.Header, Data: raw.Data}))
		if err != nil {
			t.Fatalf("sdk-go cannot decode Herald's event: %v", err)
		}
		if got.ID() != ev.ID || got.Type() != ev.Type || got.Source() != ev.Source || got.Subject() != "o-1" ||
			got.DataContentType() != "application/json" || string(got.Data()) != string(ev.Data) {
			t.Fatalf("sdk-go decoded %v", got)
		}
		if got.Extensions()["correlationid"] != "corr-1" {
			t.Fatalf("correlationid = %v", got.Extensions()["correlationid"])
		}
		if !got.Time().Equal(ev.Time) {
			t.Fatalf("time %v, want %v", got.Time(), ev.Time)
		}
		if n := len(raw.Header.Values("content-type")); n != 0 {
			t.Fatalf("Herald wrote both content-type and ce-datacontenttype")
		}
		d := next(t, sub)
		_ = d.Ack(ctx)
	})

	t.Run("Herald reads sdk-go", func(t *testing.T) {
		// Create the topic through Herald, then send with sdk-go on its subject.
		if err := b.EnsureTopic(ctx, "interop2", broker.TopicConfig{}); err != nil {
			t.Fatal(err)
		}
		sub := mustSubscribe(t, b, "interop2", broker.SubscribeOptions{Group: "g", Start: broker.FromFirst})
		sender, err := cenats.NewSender(e.ClientURL(), "interop2", "interop2.0.shop.payment.taken.v1", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		client, err := cloudevents.NewClient(sender)
		if err != nil {
			t.Fatal(err)
		}
		ce := cloudevents.NewEvent()
		ce.SetID("pay-1")
		ce.SetSource("/shop/payments")
		ce.SetType("shop.payment.taken.v1")
		ce.SetSubject("o-9")
		ce.SetExtension("correlationid", "corr-9")
		ce.SetTime(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
		if err := ce.SetData("application/json", map[string]int{"amount": 5}); err != nil {
			t.Fatal(err)
		}
		if res := client.Send(ctx, ce); cloudevents.IsUndelivered(res) {
			t.Fatalf("sdk-go send: %v", res)
		}
		_ = sender.Close(ctx)
		d := next(t, sub)
		m := d.Message()
		got, err := event.NATS.Decode(m.Header, m.Data)
		if err != nil {
			t.Fatalf("Herald cannot decode sdk-go's event: %v (headers %v)", err, m.Header)
		}
		if got.ID != "pay-1" || got.Source != "/shop/payments" || got.Type != "shop.payment.taken.v1" ||
			got.Subject != "o-9" || got.CorrelationID != "corr-9" || got.DataContentType != "application/json" ||
			string(got.Data) != `{"amount":5}` || !got.Time.Equal(ce.Time()) {
			t.Fatalf("decoded %+v", got)
		}
		if m.Route != "shop.payment.taken.v1" {
			t.Fatalf("route %q", m.Route)
		}
		_ = d.Ack(ctx)
	})
}

func mustSubscribe(t *testing.T, b broker.Subscriber, topic string, o broker.SubscribeOptions) broker.Subscription {
	t.Helper()
	s, err := b.Subscribe(t.Context(), topic, o)
	if err != nil {
		t.Fatalf("subscribe %s: %v", topic, err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func next(t *testing.T, s broker.Subscription) broker.Delivery {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	d, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("waiting for a delivery: %v", err)
	}
	return d
}

// A consumer creation the server does not answer in time (a cluster busy
// creating replicated consumers) is asked again, for plain and key-ordered
// groups alike, and the group then receives its messages.
func TestSubscribeRetriesAnUnansweredConsumerCreate(t *testing.T) {
	t.Parallel()
	e := embedded(t, natsjs.EmbeddedConfig{})
	for _, keyOrder := range []bool{false, true} {
		t.Run(fmt.Sprintf("key_order_%v", keyOrder), func(t *testing.T) {
			b := newBroker(t, natsjs.WithEmbedded(e))
			topic := fmt.Sprintf("stalled_%v", keyOrder)
			if err := b.Publish(t.Context(), &broker.Message{Topic: topic, Route: "t.v1", Key: "k", ID: "1", Data: []byte("1")}); err != nil {
				t.Fatal(err)
			}
			natsjs.StallConsumerCreates(b, 1)
			start := time.Now()
			sub, err := b.Subscribe(t.Context(), topic, broker.SubscribeOptions{Group: "g", Start: broker.FromFirst, KeyOrder: keyOrder})
			if err != nil {
				t.Fatalf("subscribe after one unanswered create: %v", err)
			}
			defer sub.Close()
			if left := natsjs.StallCreatesLeft(b); left != 0 {
				t.Fatalf("%d stalls left: the create was never stalled", left)
			}
			t.Logf("subscribed after %v", time.Since(start).Round(time.Millisecond))
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			d, err := sub.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if string(d.Message().Data) != "1" {
				t.Fatalf("got %q", d.Message().Data)
			}
			if err := d.Ack(ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}
