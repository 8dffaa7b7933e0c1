package audit

import (
	"context"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
)

// BenchmarkBrokerPath measures what the audit indexer costs the broker
// path: b.N CloudEvents of 256 bytes published in batches of 1000 (each
// waiting for its confirmations) while one group consumes and acks them,
// on an embedded server with file storage; the op ends when the group
// acked the last event. "baseline" runs no indexer; the others run one
// into SQLite (and PostgreSQL when it answers) for the whole run, paced
// by WithBusyRate's default, or unpaced.
// msgs/s is the broker path's throughput and cpu-µs/msg the CPU time the
// process (server included) spent per message, a figure less disturbed by
// other load on the machine; indexed/s is what the indexer wrote
// meanwhile (paced by WithBusyRate's default), behind what it had left
// when the group finished, and catch-up-s how long it took to index that.
func BenchmarkBrokerPath(b *testing.B) {
	b.Run("baseline", func(b *testing.B) { benchBrokerPath(b, nil) })
	sqlite := func(b *testing.B) Store {
		s, err := OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "audit.db"))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = s.Close() })
		return s
	}
	b.Run("audit=sqlite", func(b *testing.B) { benchBrokerPath(b, sqlite) })
	// Without pacing the indexer keeps up with the broker and takes its
	// share of the CPU: what WithBusyRate avoids.
	b.Run("audit=sqlite,unpaced", func(b *testing.B) { benchBrokerPath(b, sqlite, WithBusyRate(0)) })
	b.Run("audit=postgres", func(b *testing.B) {
		if c, err := net.DialTimeout("tcp", testenv.HostPort(testenv.PostgresURL), time.Second); err != nil {
			b.Skipf("PostgreSQL unreachable: %v", err)
		} else {
			_ = c.Close()
		}
		benchBrokerPath(b, func(b *testing.B) Store { return postgresStore(b) })
	})
}

func benchBrokerPath(b *testing.B, store func(*testing.B) Store, opts ...Option) {
	ctx := context.Background()
	e, err := natsjs.RunEmbedded(ctx, natsjs.EmbeddedConfig{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Shutdown)
	hb := brokerOn(b, e)
	topic := "bench"
	// The topic exists before the indexer starts, so it is indexed from
	// the first event.
	if err := hb.EnsureTopic(ctx, topic, broker.TopicConfig{}); err != nil {
		b.Fatal(err)
	}
	var ix *Indexer
	if store != nil {
		var stop func()
		ix, stop = runIndexer(b, hb, store(b), opts...)
		defer stop()
	}
	sub, err := hb.Subscribe(ctx, topic, broker.SubscribeOptions{Group: "g", Start: broker.FromFirst})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Close()

	data := []byte(`{"payload":"` + strings.Repeat("x", 256-14) + `"}`)
	msgs := make([]*broker.Message, 0, 1000)
	mk := func(i int) *broker.Message {
		ev := event.New("bench", "bench.event.v1", data)
		ev.Subject = "s-" + strconv.Itoa(i%100)
		ev.CorrelationID = "c-" + strconv.Itoa(i%1000)
		ev.DataContentType = "application/json"
		h := make(map[string]string, 8)
		event.NATS.Encode(ev, h)
		return &broker.Message{Topic: topic, Route: ev.Type, Key: ev.Subject, ID: ev.ID, Header: h, Data: ev.Data}
	}
	var acked atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for acked.Load() < int64(b.N) {
			d, err := sub.Next(ctx)
			if err != nil {
				b.Error(err)
				return
			}
			_ = d.Ack(ctx)
			acked.Add(1)
		}
	}()
	indexed0 := uint64(0)
	if ix != nil {
		indexed0 = ix.Indexed()
	}
	b.ResetTimer()
	cpu0 := cpuTime(b)
	start := time.Now()
	for i := 0; i < b.N; {
		msgs = msgs[:0]
		for ; i < b.N && len(msgs) < cap(msgs); i++ {
			msgs = append(msgs, mk(i))
		}
		if err := hb.Publish(ctx, msgs...); err != nil {
			b.Fatal(err)
		}
	}
	<-done
	elapsed := time.Since(start)
	cpu := cpuTime(b) - cpu0
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/msg")
	if ix != nil {
		b.ReportMetric(float64(ix.Indexed()-indexed0)/elapsed.Seconds(), "indexed/s")
		behind, err := ix.Behind(ctx)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(float64(behind), "behind")
		sctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		defer cancel()
		t0 := time.Now()
		if err := ix.Sync(sctx); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(t0).Seconds(), "catch-up-s")
	}
}

// cpuTime returns the user and system CPU time the process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkIndexerCatchUp measures the indexer alone at full speed: b.N
// stored events (as in BenchmarkBrokerPath) indexed into SQLite from the
// start, no pacing. cpu-µs/event is the CPU time the process spent per
// event indexed, server deliveries included.
func BenchmarkIndexerCatchUp(b *testing.B) {
	ctx := context.Background()
	e, err := natsjs.RunEmbedded(ctx, natsjs.EmbeddedConfig{DataDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.Shutdown)
	hb := brokerOn(b, e)
	data := []byte(`{"payload":"` + strings.Repeat("x", 256-14) + `"}`)
	msgs := make([]*broker.Message, 0, 1000)
	for i := 0; i < b.N; {
		msgs = msgs[:0]
		for ; i < b.N && len(msgs) < cap(msgs); i++ {
			ev := event.New("bench", "bench.event.v1", data)
			ev.Subject = "s-" + strconv.Itoa(i%100)
			ev.CorrelationID = "c-" + strconv.Itoa(i%1000)
			h := make(map[string]string, 8)
			event.NATS.Encode(ev, h)
			msgs = append(msgs, &broker.Message{Topic: "bench", Route: ev.Type, Key: ev.Subject, ID: ev.ID, Header: h, Data: ev.Data})
		}
		if err := hb.Publish(ctx, msgs...); err != nil {
			b.Fatal(err)
		}
	}
	s, err := OpenSQLite(ctx, filepath.Join(b.TempDir(), "audit.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	b.ResetTimer()
	cpu0 := cpuTime(b)
	start := time.Now()
	ix, stop := runIndexer(b, hb, s, WithBusyRate(0))
	sctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	if err := ix.Sync(sctx); err != nil {
		b.Fatal(err)
	}
	elapsed := time.Since(start)
	cpu := cpuTime(b) - cpu0
	b.StopTimer()
	stop()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/event")
}
