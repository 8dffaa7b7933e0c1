package natsjs_test

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/e2ebench"
)

// The benchmarks compare the adapter with the raw nats.go JetStream client
// doing the same work in the same run: 256-byte messages with a dedup id,
// published in batches of benchBatch and waited for, then consumed and
// acked one by one.
const (
	benchSize  = 256
	benchBatch = 1000
)

func benchEnv(b *testing.B, d natsjs.Durability) (*natsjs.Embedded, *natsjs.Broker, jetstream.JetStream) {
	b.Helper()
	e := embedded(b, natsjs.EmbeddedConfig{Durability: d, Addr: "127.0.0.1:0"})
	hb := newBroker(b, natsjs.WithEmbedded(e))
	nc, err := e.Connect()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4000))
	if err != nil {
		b.Fatal(err)
	}
	return e, hb, js
}

func payload() []byte {
	p := make([]byte, benchSize)
	for i := range p {
		p[i] = byte('a' + i%26)
	}
	return p
}

func rawStream(b *testing.B, js jetstream.JetStream, name string) {
	b.Helper()
	_, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: name, Subjects: []string{name + ".>"}, Storage: jetstream.FileStorage,
	})
	if err != nil {
		b.Fatal(err)
	}
}

func publishHerald(b *testing.B, hb *natsjs.Broker, topic string, n int, data []byte) {
	b.Helper()
	ctx := context.Background()
	msgs := make([]*broker.Message, 0, benchBatch)
	for i := 0; i < n; i += benchBatch {
		msgs = msgs[:0]
		for j := i; j < min(i+benchBatch, n); j++ {
			msgs = append(msgs, &broker.Message{Topic: topic, Route: "bench.v1", Key: strconv.Itoa(j % 1024), ID: topic + strconv.Itoa(j), Data: data})
		}
		if err := hb.Publish(ctx, msgs...); err != nil {
			b.Fatal(err)
		}
	}
}

func publishRaw(b *testing.B, js jetstream.JetStream, stream string, n int, data []byte) {
	b.Helper()
	subj := stream + ".0.bench.v1"
	futs := make([]jetstream.PubAckFuture, 0, benchBatch)
	for i := 0; i < n; i += benchBatch {
		futs = futs[:0]
		for j := i; j < min(i+benchBatch, n); j++ {
			m := &nats.Msg{Subject: subj, Data: data, Header: nats.Header{jetstream.MsgIDHeader: []string{stream + strconv.Itoa(j)}}}
			f, err := js.PublishMsgAsync(m)
			if err != nil {
				b.Fatal(err)
			}
			futs = append(futs, f)
		}
		for _, f := range futs {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatal(err)
			}
		}
	}
}

var benchSeq int

func benchName(kind string) string {
	benchSeq++
	return fmt.Sprintf("bench_%s_%d", kind, benchSeq)
}

func BenchmarkPublish(b *testing.B) {
	for _, d := range []natsjs.Durability{natsjs.Fast, natsjs.Sync} {
		_, hb, js := benchEnv(b, d)
		data := payload()
		b.Run(string(d)+"/raw", func(b *testing.B) {
			name := benchName("raw")
			rawStream(b, js, name)
			b.SetBytes(benchSize)
			b.ResetTimer()
			publishRaw(b, js, name, b.N, data)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
		b.Run(string(d)+"/herald", func(b *testing.B) {
			topic := benchName("herald")
			if err := hb.EnsureTopic(context.Background(), topic, broker.TopicConfig{}); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(benchSize)
			b.ResetTimer()
			publishHerald(b, hb, topic, b.N, data)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

func BenchmarkConsumeAck(b *testing.B) {
	_, hb, js := benchEnv(b, natsjs.Fast)
	data := payload()
	ctx := context.Background()
	b.Run("raw", func(b *testing.B) {
		name := benchName("rawc")
		rawStream(b, js, name)
		publishRaw(b, js, name, b.N, data)
		cons, err := js.CreateConsumer(ctx, name, jetstream.ConsumerConfig{
			Durable: "g", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1024, DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		if err != nil {
			b.Fatal(err)
		}
		done := make(chan struct{})
		got := 0
		b.SetBytes(benchSize)
		b.ResetTimer()
		cc, err := cons.Consume(func(m jetstream.Msg) {
			_ = m.Ack()
			got++
			if got == b.N {
				close(done)
			}
		}, jetstream.PullMaxMessages(1024))
		if err != nil {
			b.Fatal(err)
		}
		<-done
		b.StopTimer()
		cc.Stop()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	})
	for _, keyOrder := range []bool{false, true} {
		name := "herald"
		if keyOrder {
			name = "herald-keyorder"
		}
		b.Run(name, func(b *testing.B) {
			benchConsumeHerald(b, hb, data, keyOrder)
		})
	}
}

func benchConsumeHerald(b *testing.B, hb *natsjs.Broker, data []byte, keyOrder bool) {
	ctx := context.Background()
	{
		topic := benchName("heraldc")
		publishHerald(b, hb, topic, b.N, data)
		b.SetBytes(benchSize)
		b.ResetTimer()
		sub, err := hb.Subscribe(ctx, topic, broker.SubscribeOptions{Group: "g", Start: broker.FromFirst, KeyOrder: keyOrder})
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
		_ = sub.Close()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
	}
}

// BenchmarkPublishConcurrent is publishing under concurrent load with
// durability sync and fast: P goroutines each publish calls of n messages and wait
// for their confirmation. raw is the nats.go client doing the same
// (asynchronous publish, wait for the call's acks; the server fsyncs each
// message), herald the adapter with group commit (sync: one atomic batch
// and one fsync per commit; fast: one fast batch, answered once),
// herald-nogc the adapter without it. With sync, raw-atomic-1000 is the
// ceiling group commit works against: one raw client sending atomic
// batches of 1000 in turn. herald and herald-tcp report msgs/batch.
//
//	go test -run '^$' -bench PublishConcurrent -benchtime 100000x ./broker/natsjs
func BenchmarkPublishConcurrent(b *testing.B) {
	for _, d := range []natsjs.Durability{natsjs.Sync, natsjs.Fast} {
		benchPublishConcurrent(b, d)
	}
}

func benchPublishConcurrent(b *testing.B, d natsjs.Durability) {
	e, _, js := benchEnv(b, d)
	gc := newBroker(b, natsjs.WithEmbedded(e), natsjs.WithGroupCommit(true))
	nogc := newBroker(b, natsjs.WithEmbedded(e), natsjs.WithGroupCommit(false))
	// A client over loopback TCP, as of herald serve: group commit by
	// default where the server says it fsyncs.
	if _, err := natsjs.AnswerServerInfo(gc.Conn(), natsjs.ServerInfo{Durability: d}); err != nil {
		b.Fatal(err)
	}
	net := newBroker(b, natsjs.WithURL(e.ClientURL()))
	data := payload()
	if d == natsjs.Sync {
		// The ceiling of group commit: one raw client sending atomic
		// batches of the server's largest size in turn, each message with
		// its dedup id as Herald sends it, no other header.
		b.Run("sync/raw-atomic-1000", func(b *testing.B) {
			stream := benchName("rawa")
			_, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: stream, Subjects: []string{stream + ".>"},
				Storage: jetstream.FileStorage, AllowAtomicPublish: true})
			if err != nil {
				b.Fatal(err)
			}
			nc := js.Conn()
			subj := stream + ".0.bench.v1"
			b.SetBytes(benchSize)
			b.ResetTimer()
			for first := 0; first < b.N; first += 1000 {
				n := min(1000, b.N-first)
				id := stream + "-" + strconv.Itoa(first)
				for i := 1; i <= n; i++ {
					m := &nats.Msg{Subject: subj, Data: data, Header: nats.Header{
						natsjs.BatchIDHeader: {id}, natsjs.BatchSeqHeader: {strconv.Itoa(i)}, jetstream.MsgIDHeader: {stream + strconv.Itoa(first+i)}}}
					if i < n {
						if err := nc.PublishMsg(m); err != nil {
							b.Fatal(err)
						}
						continue
					}
					m.Header[natsjs.BatchCommitHeader] = []string{"1"}
					r, err := nc.RequestMsg(m, 10*time.Second)
					if err != nil {
						b.Fatal(err)
					}
					if !strings.Contains(string(r.Data), `"count":`+strconv.Itoa(n)) {
						b.Fatalf("batch %s not committed whole: %s", id, r.Data)
					}
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
	for _, shape := range []struct{ publishers, perCall int }{{64, 1}, {16, 100}} {
		name := fmt.Sprintf("%s/p%d-n%d", d, shape.publishers, shape.perCall)
		run := func(b *testing.B, call func(first, n int) error) {
			b.SetBytes(benchSize)
			var next atomic.Int64
			var wg sync.WaitGroup
			b.ResetTimer()
			for range shape.publishers {
				wg.Go(func() {
					for {
						first := int(next.Add(int64(shape.perCall))) - shape.perCall
						if first >= b.N {
							return
						}
						if err := call(first, min(shape.perCall, b.N-first)); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		}
		b.Run(name+"/raw", func(b *testing.B) {
			stream := benchName("rawp")
			rawStream(b, js, stream)
			subj := stream + ".0.bench.v1"
			run(b, func(first, n int) error {
				futs := make([]jetstream.PubAckFuture, n)
				for i := range futs {
					m := &nats.Msg{Subject: subj, Data: data, Header: nats.Header{jetstream.MsgIDHeader: []string{stream + strconv.Itoa(first+i)}}}
					f, err := js.PublishMsgAsync(m)
					if err != nil {
						return err
					}
					futs[i] = f
				}
				for _, f := range futs {
					select {
					case <-f.Ok():
					case err := <-f.Err():
						return err
					}
				}
				return nil
			})
		})
		for _, side := range []struct {
			name string
			b    *natsjs.Broker
		}{{"herald", gc}, {"herald-nogc", nogc}, {"herald-tcp", net}} {
			b.Run(name+"/"+side.name, func(b *testing.B) {
				topic := benchName("heraldp")
				if err := side.b.EnsureTopic(context.Background(), topic, broker.TopicConfig{}); err != nil {
					b.Fatal(err)
				}
				batches0 := natsjs.CommittedBatches(side.b)
				defer func() {
					if n := natsjs.CommittedBatches(side.b) - batches0; n > 0 {
						b.ReportMetric(float64(b.N)/float64(n), "msgs/batch")
					}
				}()
				run(b, func(first, n int) error {
					msgs := make([]*broker.Message, n)
					for i := range msgs {
						j := first + i
						msgs[i] = &broker.Message{Topic: topic, Route: "bench.v1", Key: strconv.Itoa(j % 1024), ID: topic + strconv.Itoa(j), Data: data}
					}
					return side.b.Publish(context.Background(), msgs...)
				})
			})
		}
	}
}

// wireCEHeader is the CloudEvents binary-mode headers of a bench event,
// written out as a raw client would (TestWireCEHeaderIsTheSDKs holds them
// equal to the SDK's encoding).
func wireCEHeader(id, subject string, now time.Time) nats.Header {
	return nats.Header{
		"ce-specversion": {"1.0"}, "ce-id": {id}, "ce-source": {"bench"}, "ce-type": {"bench.v1"},
		"ce-subject": {subject}, "ce-time": {now.UTC().Format(time.RFC3339Nano)},
		"ce-datacontenttype": {"application/octet-stream"},
	}
}

// The wire-format benchmark writes the SDK's headers by hand: they must
// stay the ones event.NATS writes, or it measures another format.
func TestWireCEHeaderIsTheSDKs(t *testing.T) {
	e := event.New("bench", "bench.v1", []byte("x"))
	e.Subject = "k7"
	e.DataContentType = "application/octet-stream"
	want := map[string]string{}
	event.NATS.Encode(e, want)
	got := wireCEHeader(e.ID, e.Subject, e.Time)
	if len(got) != len(want) {
		t.Errorf("bench headers %v, SDK's %v", got, want)
	}
	for k, v := range want {
		if g := got.Get(k); g != v {
			if gt, err := time.Parse(time.RFC3339Nano, g); k == "ce-time" && err == nil && gt.Equal(e.Time) {
				continue
			}
			t.Errorf("%s: bench %q, SDK %q", k, g, v)
		}
	}
}

// BenchmarkWireFormat is what Herald's wire format costs the raw client
// and the server, apart from the adapter: the plain nats.go loop (one
// asynchronous publisher, 4096 confirmations outstanding, a pull consumer
// that acks each message, 256-byte payloads) with no headers, with the
// seven CloudEvents binary-mode headers the SDK writes, with only the
// dedup id (Nats-Msg-Id, checked against the stream's duplicate window),
// and with both, as Herald publishes. cpu-µs/ev is the process's CPU time
// per message, the server's included.
//
//	go test -run '^$' -bench WireFormat -benchtime 300000x -count 3 ./broker/natsjs
func BenchmarkWireFormat(b *testing.B) {
	_, _, js := benchEnv(b, natsjs.Fast)
	data := payload()
	ce := func(i int, id string) nats.Header { return wireCEHeader(id, "k"+strconv.Itoa(i%1024), time.Now()) }
	for _, tc := range []struct {
		name   string
		header func(i int, id string) nats.Header
	}{
		{"plain", func(int, string) nats.Header { return nil }},
		{"cloudevents", ce},
		{"msgid", func(_ int, id string) nats.Header { return nats.Header{jetstream.MsgIDHeader: {id}} }},
		{"cloudevents+msgid", func(i int, id string) nats.Header {
			h := ce(i, id)
			h[jetstream.MsgIDHeader] = []string{id}
			return h
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			name := benchName("wire")
			rawStream(b, js, name)
			// Deleted after the run: a stream's dedup ids stay in memory for
			// its duplicate window and would weigh on the next run's GC.
			defer js.DeleteStream(ctx, name) //nolint:errcheck // best effort
			cons, err := js.CreateConsumer(ctx, name, jetstream.ConsumerConfig{Durable: "g", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 4096})
			if err != nil {
				b.Fatal(err)
			}
			var got atomic.Int64
			done := make(chan struct{})
			subjects := make([]string, 8)
			for k := range subjects {
				subjects[k] = name + "." + strconv.Itoa(k) + ".bench.v1"
			}
			cpu0 := e2ebench.CPUTime()
			b.ResetTimer()
			cc, err := cons.Consume(func(m jetstream.Msg) {
				_ = m.Headers()
				_ = m.Ack()
				if got.Add(1) == int64(b.N) {
					close(done)
				}
			}, jetstream.PullMaxMessages(4096))
			if err != nil {
				b.Fatal(err)
			}
			defer cc.Stop()
			for i := range b.N {
				m := &nats.Msg{Subject: subjects[i%len(subjects)], Data: data, Header: tc.header(i, event.NewID())}
				if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
					b.Fatal(err)
				}
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("publishes not confirmed within a minute")
			}
			select {
			case <-done:
			case <-time.After(time.Minute):
				b.Fatalf("consumed %d of %d within a minute", got.Load(), b.N)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
			b.ReportMetric(float64((e2ebench.CPUTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/ev")
		})
	}
}
