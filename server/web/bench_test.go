package web_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/saga"
	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/servertest"
)

// BenchmarkPages renders each dashboard page against a running server
// holding 100k events, 1k dead letters and 1k saga instances, beside the admin API's JSON
// answer for the same data (the baseline: what the CLI asks for):
//
//	go test -run '^$' -bench BenchmarkPages -benchtime 20x ./server/web
func BenchmarkPages(b *testing.B) {
	const events, deadLetters, sagaInstances = 100_000, 1_000, 1_000
	srv := servertest.Start(b, server.Config{Audit: server.AuditConfig{BusyRate: -1}})
	base := srv.AdminURL()
	ctx := context.Background()
	topic := testenv.Unique("orders")
	br := srv.Broker()
	corr := testenv.Unique("corr")
	batch := make([]*broker.Message, 0, 1000)
	for i := range events {
		e := event.New("orders", "shop.order.placed.v1", fmt.Appendf(nil, `{"order":%d,"total":%d}`, i, i%500))
		e.Subject = "o-" + strconv.Itoa(i%5000)
		e.DataContentType = "application/json"
		if i%100 == 0 {
			e.CorrelationID = corr
		}
		h := map[string]string{}
		event.NATS.Encode(e, h)
		batch = append(batch, &broker.Message{Topic: topic, Route: e.Type, Key: e.Subject, ID: e.ID, Header: h, Data: e.Data})
		if len(batch) == cap(batch) {
			if err := br.Publish(ctx, batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	for i := range deadLetters {
		e := event.New("orders", "shop.order.placed.v1", fmt.Appendf(nil, `{"order":%d}`, i))
		e.Subject = "o-" + strconv.Itoa(i)
		h := map[string]string{
			consumer.HeaderError: []string{"payment service down", "card declined", "timeout after 5s"}[i%3], consumer.HeaderAttempts: "3",
			consumer.HeaderGroup: "billing", consumer.HeaderHandler: e.Type, consumer.HeaderOriginalTopic: topic,
			consumer.HeaderOriginalSequence: strconv.Itoa(i + 1), consumer.HeaderFirstFailure: now, consumer.HeaderLastFailure: now,
		}
		event.NATS.Encode(e, h)
		batch = append(batch, &broker.Message{Topic: consumer.DeadLetterTopic(topic), Route: e.Type, Key: e.Subject, ID: e.ID, Header: h, Data: e.Data})
	}
	if err := br.Publish(ctx, batch...); err != nil {
		b.Fatal(err)
	}
	subject := topic + "-value"
	for _, text := range []string{orderV1, orderV2} {
		if _, err := srv.Registry().Register(ctx, subject, schema.Schema{Type: schema.Avro, Text: text}, schema.RegisterOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	sagas, err := saga.NewKVStore(ctx, br.JetStream(), "")
	if err != nil {
		b.Fatal(err)
	}
	started := time.Now().UTC()
	for i := range sagaInstances {
		in := &saga.Instance{ID: "checkout-" + strconv.Itoa(i), Saga: "checkout", State: saga.Completed, Created: started, Updated: started,
			History: []saga.Entry{
				{Step: "reserve", Phase: saga.Do, Attempt: 1, Type: "shop.stock.reserve.v1", Sent: started, Ended: started.Add(time.Millisecond), Outcome: "done"},
				{Step: "charge", Phase: saga.Do, Attempt: 1, Type: "shop.payment.charge.v1", Sent: started, Ended: started.Add(2 * time.Millisecond), Outcome: "done"},
			}}
		if i%10 == 0 {
			in.State = saga.Running
		}
		if err := sagas.Create(ctx, in); err != nil {
			b.Fatal(err)
		}
	}
	eventually(b, 5*time.Minute, "the audit log to index every event", func() (bool, string) {
		n, err := srv.AuditIndexer().Behind(ctx)
		return err == nil && n == 0, fmt.Sprintf("%d behind (%v)", n, err)
	})

	for _, p := range []struct{ name, path string }{
		{"api-topics", "/api/v1/topics"},
		{"api-dlq", "/api/v1/dlq/" + topic + "?limit=1000"},
		{"overview", "/"},
		{"topic", "/topics/" + topic},
		{"topic-search-correlation", "/topics/" + topic + "?field=correlation&q=" + corr},
		{"event", "/topics/" + topic + "/events/50000"},
		{"dlq", "/dlq/" + topic},
		{"dlq-filter", "/dlq/" + topic + "?filter=error~%3Dtimeout"},
		{"schema-diff", "/schemas/" + subject},
		{"groups", "/groups"},
		{"topology", "/topology"},
		{"sagas", "/sagas"},
		{"sagas-running", "/sagas?state=running"},
		{"saga", "/sagas/checkout-500"},
	} {
		b.Run(p.name, func(b *testing.B) {
			var worst time.Duration
			for b.Loop() {
				start := time.Now()
				resp, err := http.Get(base + p.path)
				if err != nil {
					b.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || n == 0 {
					b.Fatalf("GET %s: %s, %d bytes", p.path, resp.Status, n)
				}
				worst = max(worst, time.Since(start))
			}
			b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N)/1000, "ms/page")
			b.ReportMetric(float64(worst.Microseconds())/1000, "worst-ms")
		})
	}
}
