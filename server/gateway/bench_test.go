package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/gateway"
)

// batchBody is a structured batch of n events with fresh ids.
func batchBody(b *testing.B, n int, seq *atomic.Int64) []byte {
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i := range n {
		if i > 0 {
			buf.WriteByte(',')
		}
		k := seq.Add(1)
		fmt.Fprintf(&buf, `{"specversion":"1.0","id":"ev-%d","source":"bench","type":"shop.order.placed.v1","subject":"o-%d","datacontenttype":"application/json","data":{"order_id":"o-%d","total_cents":4200}}`, k, k%64, k)
	}
	buf.WriteByte(']')
	return buf.Bytes()
}

// BenchmarkIngest posts batches of 100 events over loopback HTTP from
// concurrent clients; the baseline publishes the same batches with the Go
// SDK, in the same run.
func BenchmarkIngest(b *testing.B) {
	srv := startServer(b, server.Config{})
	b.Run("http-batch-100", func(b *testing.B) {
		topic := newTopic(b, srv)
		url := ingestURL(srv, topic)
		tr := &http.Transport{MaxIdleConnsPerHost: 64}
		defer tr.CloseIdleConnections()
		hc := &http.Client{Transport: tr}
		var seq atomic.Int64
		b.SetParallelism(4)
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				body := batchBody(b, 100, &seq)
				resp, err := hc.Post(url, gateway.ContentTypeBatch, bytes.NewReader(body))
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusAccepted {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N*100)/time.Since(start).Seconds(), "events/s")
	})
	b.Run("sdk-batch-100-baseline", func(b *testing.B) {
		topic := newTopic(b, srv)
		c, err := herald.Connect(context.Background(), herald.Config{URL: srv.NATSURL(), Source: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		var seq atomic.Int64
		b.SetParallelism(4)
		b.ResetTimer()
		start := time.Now()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				evs := make([]*event.Event, 100)
				for i := range evs {
					k := seq.Add(1)
					e := event.New("bench", "shop.order.placed.v1", fmt.Appendf(nil, `{"order_id":"o-%d","total_cents":4200}`, k))
					e.Subject, e.DataContentType = fmt.Sprintf("o-%d", k%64), "application/json"
					evs[i] = e
				}
				if err := c.PublishTo(context.Background(), topic, evs...); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N*100)/time.Since(start).Seconds(), "events/s")
	})
}

// BenchmarkPush delivers b.N stored events (1024 keys) to a local webhook
// with concurrency 128; the baseline is a Go consumer group of the same
// concurrency handling the same events, in the same run.
func BenchmarkPush(b *testing.B) {
	srv := startServer(b, server.Config{})
	fill := func(b *testing.B) string {
		b.Helper()
		topic := newTopic(b, srv)
		c, err := herald.Connect(context.Background(), herald.Config{URL: srv.NATSURL(), Source: "bench"})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		var batch []*event.Event
		for i := range b.N {
			e := event.New("bench", "shop.order.placed.v1", fmt.Appendf(nil, `{"n":%d}`, i))
			e.Subject, e.DataContentType = fmt.Sprintf("k%d", i%1024), "application/json"
			batch = append(batch, e)
			if len(batch) == 500 || i == b.N-1 {
				if err := c.PublishTo(context.Background(), topic, batch...); err != nil {
					b.Fatal(err)
				}
				batch = batch[:0]
			}
		}
		return topic
	}
	wait := func(b *testing.B, got *atomic.Int64) {
		b.Helper()
		deadline := time.Now().Add(5 * time.Minute)
		for got.Load() < int64(b.N) {
			if time.Now().After(deadline) {
				b.Fatalf("waited 5m for %d deliveries; got %d", b.N, got.Load())
			}
			time.Sleep(time.Millisecond)
		}
	}
	b.Run("webhook", func(b *testing.B) {
		topic := fill(b)
		var got atomic.Int64
		hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			got.Add(1)
			w.WriteHeader(http.StatusNoContent)
		}))
		defer hs.Close()
		b.ResetTimer()
		start := time.Now()
		api, _ := gateway.NewAPIClient(srv.AdminURL(), nil)
		group := testenv.Unique("bench")
		if _, err := api.Create(context.Background(), gateway.Subscription{Group: group, Topic: topic, Push: hs.URL, Start: "first", Concurrency: 128}); err != nil {
			b.Fatal(err)
		}
		wait(b, &got)
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		b.StopTimer()
		_ = api.Delete(context.Background(), group)
	})
	b.Run("go-consumer-baseline", func(b *testing.B) {
		topic := fill(b)
		c, err := herald.Connect(context.Background(), herald.Config{URL: srv.NATSURL()})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		r, err := c.Router(testenv.Unique("bench"), []string{topic}, consumer.WithStart(broker.FromFirst), consumer.WithConcurrency(128))
		if err != nil {
			b.Fatal(err)
		}
		var got atomic.Int64
		r.HandleAll(func(context.Context, *consumer.Message) error { got.Add(1); return nil })
		b.ResetTimer()
		start := time.Now()
		stop := testenv.RunRouter(b, r)
		wait(b, &got)
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		b.StopTimer()
		stop()
	})
}
