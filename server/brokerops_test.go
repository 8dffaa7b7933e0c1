package server_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/rabbitmq"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/admin"
	"github.com/heraldhq/herald/server/audit"
	"github.com/heraldhq/herald/server/servertest"
)

// TestOperationsOnEveryBroker is the operator's story, run on each broker
// events can live on: the embedded JetStream, Kafka (kfake, in process)
// and RabbitMQ (the local server). A handler fails, the events land in the
// dead-letter queue with their context and /metrics shows its depth and
// the topic's size; the handler is fixed, a redrive pushes them through
// once each and the depth goes back to 0 with the group idle (lag and
// /metrics, which read the broker); then the group is rewound to a time
// and receives again exactly the events stored since.
func TestOperationsOnEveryBroker(t *testing.T) {
	brokers := map[string]func(t *testing.T) string{
		"jetstream": func(*testing.T) string { return "" },
		"kafka":     func(t *testing.T) string { return testenv.Kafka(t) },
		"rabbitmq": func(t *testing.T) string {
			testenv.Need(t, "RabbitMQ", testenv.HostPort(testenv.RabbitURL))
			return testenv.RabbitURL
		},
	}
	for name, brokerURL := range brokers {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			operate(t, brokerURL(t))
		})
	}
}

func operate(t *testing.T, brokerURL string) {
	srv := servertest.Start(t, server.Config{BrokerURL: brokerURL})
	ctx := t.Context()
	c, err := herald.Connect(ctx, herald.Config{URL: srv.EventsURL(), Source: "ops"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	topic := testenv.Unique("orders")
	const group = "billing"
	if rb, ok := c.Broker().(*rabbitmq.Broker); ok {
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = rb.DeleteTopic(ctx, topic, group)
			_ = rb.DeleteTopic(ctx, consumer.DeadLetterTopic(topic))
		})
	}
	cl, err := admin.NewClient(srv.AdminURL(), nil)
	if err != nil {
		t.Fatal(err)
	}

	var (
		broken  atomic.Bool
		fails   atomic.Int64
		mu      sync.Mutex
		handled = map[string]int{}
	)
	broken.Store(true)
	var (
		stop context.CancelFunc
		wg   sync.WaitGroup
	)
	run := func() {
		r, err := c.Router(group, []string{topic},
			consumer.WithStart(broker.FromFirst),
			consumer.WithRetry(consumer.RetryPolicy{MaxAttempts: 3, Backoff: consumer.Backoff{Initial: 10 * time.Millisecond, Max: 40 * time.Millisecond, Multiplier: 2}}))
		if err != nil {
			t.Fatal(err)
		}
		r.Handle("shop.order.placed.v1", func(ctx context.Context, m *consumer.Message) error {
			if broken.Load() {
				fails.Add(1)
				return errors.New("payment service down")
			}
			mu.Lock()
			handled[m.Event.ID]++
			mu.Unlock()
			return nil
		})
		var rctx context.Context
		rctx, stop = context.WithCancel(context.WithoutCancel(ctx))
		wg.Go(func() {
			if err := r.Run(rctx); err != nil {
				t.Errorf("router: %v", err)
			}
		})
	}
	halt := func() { stop(); wg.Wait() }
	run()
	defer func() { halt() }()

	publish := func(n int, from int) []*event.Event {
		events := make([]*event.Event, n)
		for i := range events {
			e := event.New("ops", "shop.order.placed.v1", fmt.Appendf(nil, `{"order":%d}`, from+i))
			e.Subject = fmt.Sprintf("o-%d", from+i)
			e.DataContentType = "application/json"
			events[i] = e
		}
		if err := c.PublishTo(ctx, topic, events...); err != nil {
			t.Fatal(err)
		}
		return events
	}
	count := func(events []*event.Event, want int) (bool, string) {
		mu.Lock()
		defer mu.Unlock()
		done := 0
		for _, e := range events {
			if handled[e.ID] == want {
				done++
			}
		}
		return done == len(events), fmt.Sprintf("%d of %d handled %d times", done, len(events), want)
	}

	// Failing handler: every event is dead-lettered with its context.
	const n = 12
	first := publish(n, 0)
	ids := map[string]bool{}
	for _, e := range first {
		ids[e.ID] = true
	}
	dlqSeries := fmt.Sprintf(`herald_dlq_depth_messages{topic=%q}`, consumer.DeadLetterTopic(topic))
	pendingSeries := fmt.Sprintf(`herald_consumer_pending_messages{group=%q,topic=%q}`, group, topic)
	topicSeries := fmt.Sprintf(`herald_topic_messages{topic=%q}`, topic)
	eventually(t, 60*time.Second, "every event in the dead-letter queue, seen by /metrics", func() (bool, string) {
		v, ok := gauge(t, srv.AdminURL(), dlqSeries)
		held, hok := gauge(t, srv.AdminURL(), topicSeries)
		return ok && v == n && hok && held >= n, fmt.Sprintf("%s = %v (present %v), %s = %v (present %v), handler failures %d",
			dlqSeries, v, ok, topicSeries, held, hok, fails.Load())
	})
	page, err := cl.DLQEntries(ctx, topic, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != n {
		t.Fatalf("dlq lists %d entries, want %d", len(page.Entries), n)
	}
	for _, e := range page.Entries {
		if !ids[e.EventID] || e.Topic != topic || e.Group != group || e.Handler != "shop.order.placed.v1" ||
			e.Attempts != 3 || e.Redrives != 0 || !strings.Contains(e.Error, "payment service down") ||
			e.FirstFailure.IsZero() || e.LastFailure.Before(e.FirstFailure) || e.Type != "shop.order.placed.v1" {
			t.Fatalf("dead letter without its context: %+v", e)
		}
	}
	full, err := cl.DLQEntry(ctx, page.Entries[0].ID)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(full.Data), `{"order":`) || full.EventID != page.Entries[0].EventID {
		t.Fatalf("dlq show: data %s event id %q, want %q", full.Data, full.EventID, page.Entries[0].EventID)
	}

	// Fixed handler: a redrive delivers each event once; the queue empties.
	broken.Store(false)
	res, err := cl.Redrive(ctx, admin.RedriveRequest{Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	if res.Matched != n || res.Redriven != n || res.Failed != 0 {
		t.Fatalf("redrive: %+v", res)
	}
	again, err := cl.Redrive(ctx, admin.RedriveRequest{Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	if again.Matched != 0 || again.Redriven != 0 {
		t.Fatalf("second redrive: %+v", again)
	}
	eventually(t, 60*time.Second, "every redriven event handled once", func() (bool, string) { return count(first, 1) })
	idle := func(what string) {
		t.Helper()
		eventually(t, 60*time.Second, what, func() (bool, string) {
			v, ok := gauge(t, srv.AdminURL(), dlqSeries)
			pending, pok := gauge(t, srv.AdminURL(), pendingSeries)
			up, _ := gauge(t, srv.AdminURL(), "herald_broker_stats_up")
			lags, err := cl.Lag(ctx, topic, group)
			if err != nil {
				return false, err.Error()
			}
			idle := len(lags) == 1 && lags[0].Topic == topic && lags[0].Group == group && lags[0].Pending == 0 && lags[0].InFlight == 0
			return ok && v == 0 && pok && pending == 0 && up == 1 && idle,
				fmt.Sprintf("%s = %v, %s = %v (present %v), stats up %v, lag %+v", dlqSeries, v, pendingSeries, pending, pok, up, lags)
		})
	}
	idle("the dead-letter depth back to 0 on /metrics and the group idle")

	// Rewind to a time: the group receives again the events stored since,
	// and only those.
	since := time.Now()
	for !time.Now().After(since.Add(time.Millisecond)) {
		time.Sleep(time.Millisecond) // the clock moves past since, so nothing earlier is stored at it
	}
	second := publish(5, n)
	eventually(t, 60*time.Second, "the events published after the mark handled once", func() (bool, string) { return count(second, 1) })
	halt()
	var rw *admin.ReplayResult
	eventually(t, 60*time.Second, "a rewind of the stopped group", func() (bool, string) {
		rw, err = cl.Replay(ctx, admin.ReplayRequest{Group: group, Topic: topic, To: "time:" + since.UTC().Format(time.RFC3339Nano)})
		return err == nil, fmt.Sprint(err) // a broker may see the stopped members leave late
	})
	if rw.Group != group || len(rw.Topics) != 1 || rw.Topics[0].Topic != topic {
		t.Fatalf("rewind: %+v", rw)
	}
	run()
	eventually(t, 60*time.Second, "the events stored since the mark handled again", func() (bool, string) { return count(second, 2) })
	idle("the group idle after the rewind")
	if ok, state := count(first, 1); !ok {
		t.Fatalf("events stored before the mark: %s, want each handled once", state)
	}
}

// TestAuditIndexesKafkaTopics runs the platform with events on Kafka
// (kfake) and finds the events of a correlation id, on a topic of several
// partitions and its dead-letter topic, in the audit log.
func TestAuditIndexesKafkaTopics(t *testing.T) {
	t.Parallel()
	kc, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(3))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(kc.Close)
	srv := servertest.Start(t, server.Config{BrokerURL: "kafka://" + strings.Join(kc.ListenAddrs(), ",")})
	ctx := t.Context()
	c, err := herald.Connect(ctx, herald.Config{URL: srv.EventsURL(), Source: "audit-test"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cl, err := admin.NewClient(srv.AdminURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	topic := testenv.Unique("orders")
	if err := c.Broker().(broker.TopicManager).EnsureTopic(ctx, topic, broker.TopicConfig{Partitions: 3}); err != nil {
		t.Fatal(err)
	}
	const correlation = "checkout-7"
	var events []*event.Event
	for i := range 9 {
		e := event.New("audit-test", "shop.order.placed.v1", fmt.Appendf(nil, `{"order":%d}`, i))
		e.Subject, e.CorrelationID, e.DataContentType = fmt.Sprintf("o-%d", i), correlation, "application/json"
		events = append(events, e)
	}
	if err := c.PublishTo(ctx, topic, events[:6]...); err != nil {
		t.Fatal(err)
	}
	if err := c.PublishTo(ctx, consumer.DeadLetterTopic(topic), events[6]); err != nil {
		t.Fatal(err)
	}
	find := func(want int) []audit.Record {
		t.Helper()
		var recs []audit.Record
		eventually(t, 60*time.Second, fmt.Sprintf("%d events of the correlation id in the audit log", want), func() (bool, string) {
			page, err := cl.Audit(ctx, audit.Query{CorrelationID: correlation})
			if err != nil {
				return false, err.Error()
			}
			recs = page.Events
			return len(recs) == want, fmt.Sprintf("%d records: %+v", len(recs), recs)
		})
		return recs
	}
	find(7)
	// Later events are indexed after the first ones, once each.
	if err := c.PublishTo(ctx, topic, events[7:]...); err != nil {
		t.Fatal(err)
	}
	recs := find(9)
	byID := map[string]audit.Record{}
	for _, r := range recs {
		byID[r.ID] = r
	}
	for i, e := range events {
		if i == 6 {
			continue
		}
		r, ok := byID[e.ID]
		if !ok || r.Topic != topic || r.Type != "shop.order.placed.v1" || r.Subject != e.Subject || r.DeadLetter ||
			string(r.Payload) != string(e.Data) || !r.Time.Equal(e.Time.UTC()) {
			t.Errorf("event %d: record %+v, want it on topic %s", i, r, topic)
		}
	}
	if r := byID[events[6].ID]; r.Topic != consumer.DeadLetterTopic(topic) || !r.DeadLetter {
		t.Errorf("dead letter: record %+v", r)
	}
}
