// Package e2ebench measures Herald end to end: events published with the
// SDK, consumed by a router (at-least-once, retry and dead-letter
// middleware on, per-key order within the instance) and acknowledged;
// beside two loops of the raw nats.go JetStream client against the same
// server in the same run: the plain one (asynchronous publish with 4096
// pending, no headers, pull consume + ack: the fastest the client goes) and
// the like-for-like one (the same CloudEvents headers and dedup id as
// Herald, published the way Herald's publishers publish). Config.KeyOrder
// adds per-key order across instances. `herald bench e2e` and the consumer
// package's benchmark use it.
package e2ebench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
)

// Config says what to measure.
type Config struct {
	// URL of a NATS server with JetStream; empty starts an embedded one on
	// a loopback port (TCP, like a remote client) with a temporary dir.
	URL string
	// Duration of the publishing phase of each side. Default 10s.
	Duration time.Duration
	// Rate in events per second; 0 publishes as fast as confirmations
	// allow.
	Rate int
	// Size of each payload in bytes (at least 16). Default 256.
	Size int
	// Batch is how many events one publish call carries at full speed.
	// Default 100.
	Batch int
	// Keys is the number of distinct partition keys. Default 1024.
	Keys int
	// Partitions of the Herald topic; 0 means the broker's default.
	Partitions int
	// Publishers is the number of goroutines publishing at once, each
	// calling publish with Batch events and waiting for its confirmation
	// before the next call (Herald and the like-for-like raw loop; the
	// plain loop has one asynchronous publisher). Rate is shared among
	// them. Default 1.
	Publishers int
	// KeyOrder turns on the router's per-key order across instances
	// (pinned partition consumers). Off by default: the raw loop it is
	// compared with is a plain work queue, so off is the like-for-like
	// comparison; on measures what the guarantee costs.
	KeyOrder bool
	// CPUProfile, if set, receives a CPU profile (pprof format) of the
	// process while the Herald side runs.
	CPUProfile io.Writer
	// Progress, if set, receives a line per phase.
	Progress func(string)
}

// Side is what one side (Herald or raw) achieved.
type Side struct {
	Published int     `json:"published"`
	Handled   int     `json:"handled"`
	Lost      int     `json:"lost"`
	MsgsPerS  float64 `json:"msgs_per_s"`
	P50us     float64 `json:"p50_us"`
	P99us     float64 `json:"p99_us"`
	MaxUs     float64 `json:"max_us"`
	// CPUus is the process CPU time per handled event, in µs: server,
	// publisher and consumer together when the server is embedded. It is
	// steadier than throughput on a busy machine.
	CPUus float64 `json:"cpu_us_per_event"`
	// PubMsgsPerS is the publishing side alone: confirmed events per
	// second from the first publish to the last confirmation.
	PubMsgsPerS float64 `json:"pub_msgs_per_s"`
	// PubP50us and PubP99us are the latency of a publish call, from the
	// call to its return with every event confirmed, in µs. The plain
	// loops publish asynchronously and have none (0).
	PubP50us float64 `json:"pub_p50_us"`
	PubP99us float64 `json:"pub_p99_us"`
}

// Result is the outcome of a run. The flat fields are the headline
// figures `herald bench e2e --json` prints.
// Ratio is Herald over the like-for-like raw loop, PlainRatio Herald over
// the plain raw loop, PubRatio Herald's publishing over the plain loop's.
type Result struct {
	// Broker is what was measured: nats, kafka or amqp. The like-for-like
	// raw loop (Raw, RawMsgsPerS, Ratio) runs on nats only.
	Broker            string  `json:"broker"`
	HeraldMsgsPerS    float64 `json:"herald_msgs_per_s"`
	RawMsgsPerS       float64 `json:"raw_msgs_per_s"`
	Ratio             float64 `json:"ratio"`
	PlainMsgsPerS     float64 `json:"plain_msgs_per_s"`
	PlainRatio        float64 `json:"plain_ratio"`
	HeraldPubMsgsPerS float64 `json:"herald_pub_msgs_per_s"`
	PlainPubMsgsPerS  float64 `json:"plain_pub_msgs_per_s"`
	PubRatio          float64 `json:"pub_ratio"`
	P50us             float64 `json:"p50_us"`
	P99us             float64 `json:"p99_us"`
	RawP50us          float64 `json:"raw_p50_us"`
	RawP99us          float64 `json:"raw_p99_us"`
	PlainP50us        float64 `json:"plain_p50_us"`
	PlainP99us        float64 `json:"plain_p99_us"`
	Lost              int     `json:"lost"`
	RawLost           int     `json:"raw_lost"`
	PlainLost         int     `json:"plain_lost"`
	Rate              int     `json:"rate"`
	Size              int     `json:"size"`
	Batch             int     `json:"batch"`
	Publishers        int     `json:"publishers"`
	DurationS         float64 `json:"duration_s"`
	URL               string  `json:"url"`
	Herald            Side    `json:"herald"`
	Raw               Side    `json:"raw"`
	Plain             Side    `json:"plain"`
}

func (c *Config) defaults() error {
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Size == 0 {
		c.Size = 256
	}
	if c.Size < 16 {
		return fmt.Errorf("size %d: at least 16 bytes (the payload carries a timestamp and a number)", c.Size)
	}
	if c.Rate < 0 {
		return fmt.Errorf("rate %d: must not be negative", c.Rate)
	}
	if c.Batch <= 0 {
		c.Batch = 100
	}
	if c.Publishers < 0 {
		return fmt.Errorf("publishers %d: must not be negative", c.Publishers)
	}
	if c.Publishers == 0 {
		c.Publishers = 1
	}
	if c.Keys <= 0 {
		c.Keys = 1024
	}
	if c.Progress == nil {
		c.Progress = func(string) {}
	}
	return nil
}

// Run measures the plain raw loop, the like-for-like raw loop, then
// Herald, and returns all three.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.defaults(); err != nil {
		return Result{}, err
	}
	kind, err := scheme(cfg.URL)
	if err != nil {
		return Result{}, err
	}
	url := cfg.URL
	if url == "" {
		dir, err := os.MkdirTemp("", "herald-bench-")
		if err != nil {
			return Result{}, err
		}
		defer os.RemoveAll(dir)
		emb, err := natsjs.RunEmbedded(ctx, natsjs.EmbeddedConfig{DataDir: dir, Addr: "127.0.0.1:0",
			Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			return Result{}, err
		}
		defer emb.Shutdown()
		url = emb.ClientURL()
	}
	res := Result{Broker: kind, Rate: cfg.Rate, Size: cfg.Size, Batch: cfg.Batch, Publishers: cfg.Publishers,
		DurationS: cfg.Duration.Seconds(), URL: url}
	type sideRun struct {
		name string
		run  func(context.Context, Config, string) (Side, error)
		out  *Side
	}
	var sides []sideRun
	switch kind {
	case "kafka":
		sides = []sideRun{{"plain franz-go", runKafkaPlain, &res.Plain}}
	case "amqp":
		sides = []sideRun{{"plain amqp091-go", runRabbitPlain, &res.Plain}}
	default:
		sides = []sideRun{{"plain nats.go", runPlain, &res.Plain}, {"raw nats.go", runRaw, &res.Raw}}
	}
	sides = append(sides, sideRun{"herald", func(ctx context.Context, cfg Config, url string) (Side, error) {
		return runHerald(ctx, cfg, url, kind)
	}, &res.Herald})
	for _, sd := range sides {
		cfg.Progress(fmt.Sprintf("%s: publishing for %v at %s", sd.name, cfg.Duration, rateText(cfg.Rate)))
		if sd.out == &res.Herald && cfg.CPUProfile != nil {
			if err := pprof.StartCPUProfile(cfg.CPUProfile); err != nil {
				return res, fmt.Errorf("cpu profile: %w", err)
			}
		}
		cpu0 := CPUTime()
		s, err := sd.run(ctx, cfg, url)
		if sd.out == &res.Herald && cfg.CPUProfile != nil {
			pprof.StopCPUProfile()
		}
		if err != nil {
			return res, fmt.Errorf("%s side: %w", sd.name, err)
		}
		s.CPUus = perEvent(CPUTime()-cpu0, s.Handled)
		cfg.Progress(fmt.Sprintf("%s: %.0f msgs/s, p99 %.0f µs, lost %d", sd.name, s.MsgsPerS, s.P99us, s.Lost))
		*sd.out = s
	}
	hs, raw, plain := res.Herald, res.Raw, res.Plain
	res.HeraldMsgsPerS, res.RawMsgsPerS, res.PlainMsgsPerS = hs.MsgsPerS, raw.MsgsPerS, plain.MsgsPerS
	res.Ratio = ratio(hs.MsgsPerS, raw.MsgsPerS)
	res.PlainRatio = ratio(hs.MsgsPerS, plain.MsgsPerS)
	res.HeraldPubMsgsPerS, res.PlainPubMsgsPerS = hs.PubMsgsPerS, plain.PubMsgsPerS
	res.PubRatio = ratio(hs.PubMsgsPerS, plain.PubMsgsPerS)
	res.P50us, res.P99us = hs.P50us, hs.P99us
	res.RawP50us, res.RawP99us = raw.P50us, raw.P99us
	res.PlainP50us, res.PlainP99us = plain.P50us, plain.P99us
	res.Lost, res.RawLost, res.PlainLost = hs.Lost, raw.Lost, plain.Lost
	return res, nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func perEvent(d time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(n)
}

func rateText(rate int) string {
	if rate == 0 {
		return "full speed"
	}
	return strconv.Itoa(rate) + " events/s"
}

func uniqueName(prefix string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return prefix + "_" + hex.EncodeToString(b[:])
}

// recorder collects what the consuming side saw.
type recorder struct {
	mu       sync.Mutex
	lat      []time.Duration
	seen     []bool
	handled  atomic.Int64
	lastSeen atomic.Int64 // unix nanos of the last new event
}

func newRecorder(capacity int) *recorder {
	return &recorder{lat: make([]time.Duration, 0, capacity)}
}

// record notes event n, sent at unix nanos sent; duplicates count once.
func (r *recorder) record(n int, sent int64) {
	now := time.Now()
	r.mu.Lock()
	for n >= len(r.seen) {
		r.seen = append(r.seen, make([]bool, max(len(r.seen), 1024))...)
	}
	dup := r.seen[n]
	r.seen[n] = true
	if !dup {
		r.lat = append(r.lat, now.Sub(time.Unix(0, sent)))
	}
	r.mu.Unlock()
	if !dup {
		r.handled.Add(1)
		r.lastSeen.Store(now.UnixNano())
	}
}

func (r *recorder) side(published int, start time.Time) Side {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := Side{Published: published, Handled: int(r.handled.Load())}
	s.Lost = published - s.Handled
	if end := r.lastSeen.Load(); end > 0 {
		s.MsgsPerS = float64(s.Handled) / time.Unix(0, end).Sub(start).Seconds()
	}
	if len(r.lat) > 0 {
		slices.Sort(r.lat)
		s.P50us, s.P99us, s.MaxUs = quantile(r.lat, 0.50), quantile(r.lat, 0.99), float64(r.lat[len(r.lat)-1].Microseconds())
	}
	return s
}

// payload writes the send time and the event number into p.
func payload(p []byte, n int) {
	binary.BigEndian.PutUint64(p[0:8], uint64(time.Now().UnixNano()))
	binary.BigEndian.PutUint64(p[8:16], uint64(n))
}

func parse(p []byte) (n int, sent int64, ok bool) {
	if len(p) < 16 {
		return 0, 0, false
	}
	return int(binary.BigEndian.Uint64(p[8:16])), int64(binary.BigEndian.Uint64(p[0:8])), true
}

// published is what publishAll did: how many events were confirmed,
// how long that took and how long each publish call took.
type published struct {
	n     int
	took  time.Duration
	calls []time.Duration
}

// quantile returns the p quantile of sorted d in µs (0 if empty).
func quantile(d []time.Duration, p float64) float64 {
	if len(d) == 0 {
		return 0
	}
	return float64(d[min(int(p*float64(len(d))), len(d)-1)].Microseconds())
}

// latencies fills s's publish-call latencies from p.
func (p published) latencies(s *Side) {
	slices.Sort(p.calls)
	s.PubP50us, s.PubP99us = quantile(p.calls, 0.50), quantile(p.calls, 0.99)
}

// publishAll runs cfg.Publishers goroutines that each pace themselves to
// their share of cfg.Rate (or publish full batches at full speed) until the
// duration is over, and returns how many events were sent, how long that
// took and how long each call of send took. send gets the first event
// number and the count; the numbers of all publishers together are
// 0..sent-1 without gaps.
func publishAll(ctx context.Context, cfg Config, send func(first, n int) error) (published, error) {
	var (
		next  atomic.Int64 // the next event number to hand out
		sent  atomic.Int64
		first error
		mu    sync.Mutex
		calls []time.Duration
		wg    sync.WaitGroup
	)
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	for p := range cfg.Publishers {
		rate := cfg.Rate / cfg.Publishers
		if p < cfg.Rate%cfg.Publishers {
			rate++
		}
		wg.Go(func() {
			var mine []time.Duration
			claim := func(n int) error {
				f := int(next.Add(int64(n))) - n
				t0 := time.Now()
				err := send(f, n)
				if err == nil {
					mine = append(mine, time.Since(t0))
					sent.Add(int64(n))
				}
				return err
			}
			// Paced publishers start a fraction of their interval apart,
			// so their events arrive spread out, not all at one instant.
			offset := time.Duration(0)
			if rate > 0 {
				offset = time.Duration(float64(time.Second) / float64(rate) * float64(p) / float64(cfg.Publishers))
			}
			err := pace(ctx, start.Add(offset), deadline, rate, cfg.Batch, cfg.Rate > 0, claim)
			mu.Lock()
			calls = append(calls, mine...)
			if err != nil && first == nil {
				first = err
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return published{n: int(sent.Load()), took: time.Since(start), calls: calls}, first
}

// pace calls send with batch sizes that keep to rate from start (or full
// batches when paced is false) until deadline. Between calls it sleeps
// until the next event is due, so slow publishers wake once per event
// rather than on a fixed tick.
func pace(ctx context.Context, start, deadline time.Time, rate, batch int, paced bool, send func(n int) error) error {
	if !paced {
		for time.Now().Before(deadline) {
			if err := send(batch); err != nil {
				return err
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
		return nil
	}
	if rate == 0 {
		return nil
	}
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	sent := 0
	for now := time.Now(); now.Before(deadline); now = time.Now() {
		due := int(float64(rate) * now.Sub(start).Seconds())
		if n := min(due-sent, batch); n > 0 {
			if err := send(n); err != nil {
				return err
			}
			sent += n
			continue
		}
		next := start.Add(time.Duration(float64(sent+1) * float64(time.Second) / float64(rate)))
		t.Reset(time.Until(next))
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// drain waits until the recorder saw every published event, or nothing new
// arrived for a while.
func drain(ctx context.Context, r *recorder, published int) {
	idle := time.Now()
	last := r.handled.Load()
	for r.handled.Load() < int64(published) {
		select {
		case <-ctx.Done():
			return
		case <-time.After(20 * time.Millisecond):
		}
		if h := r.handled.Load(); h != last {
			last, idle = h, time.Now()
		} else if time.Since(idle) > 10*time.Second {
			return
		}
	}
}

// rawOptions authenticates and trusts the server as the SDK does
// ($HERALD_CREDS, $HERALD_CA), so a secured server compares alike.
func rawOptions() []nats.Option {
	var opts []nats.Option
	if p := os.Getenv("HERALD_CREDS"); p != "" {
		opts = append(opts, nats.UserCredentials(p))
	}
	if p := os.Getenv("HERALD_CA"); p != "" {
		opts = append(opts, nats.RootCAs(p))
	}
	return opts
}

// plainPending is how many unconfirmed publishes the plain loop keeps.
const plainPending = 4096

// runPlain is the fastest loop the raw client offers: one publisher
// sending asynchronously with up to plainPending confirmations
// outstanding, no headers, and a pull consumer that acks each message.
func runPlain(ctx context.Context, cfg Config, url string) (Side, error) {
	nc, err := nats.Connect(url, rawOptions()...)
	if err != nil {
		return Side{}, err
	}
	defer nc.Close()
	var failed failures
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(plainPending),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, _ *nats.Msg, err error) { failed.add(err) }))
	if err != nil {
		return Side{}, err
	}
	name := uniqueName("bench_plain")
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Storage: jetstream.FileStorage}); err != nil {
		return Side{}, err
	}
	defer js.DeleteStream(context.Background(), name) //nolint:errcheck // best effort
	cons, err := js.CreateConsumer(ctx, name, jetstream.ConsumerConfig{Durable: "g", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: plainPending})
	if err != nil {
		return Side{}, err
	}
	rec := newRecorder(cfg.Rate * int(cfg.Duration.Seconds()+1))
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if n, sent, ok := parse(m.Data()); ok {
			rec.record(n, sent)
		}
		_ = m.Ack()
	}, jetstream.PullMaxMessages(plainPending))
	if err != nil {
		return Side{}, err
	}
	defer cc.Stop()
	subjects := make([]string, 8)
	for k := range subjects {
		subjects[k] = name + "." + strconv.Itoa(k) + ".bench"
	}
	return plainLoop(ctx, cfg, rec, func(i int, p []byte) error {
		_, err := js.PublishMsgAsync(&nats.Msg{Subject: subjects[i%len(subjects)], Data: p}, jetstream.WithStallWait(time.Minute))
		return err
	}, func(sent int) error {
		select {
		case <-js.PublishAsyncComplete():
		case <-ctx.Done():
			return ctx.Err()
		}
		return failed.err(sent, "publishes")
	})
}

// plainLoop publishes cfg's events with send, one call per event with a
// fresh payload, from one publisher as the plain loops do; settle then
// waits until the broker confirmed every publish (an error if it did not),
// and the side is measured once rec saw every event.
func plainLoop(ctx context.Context, cfg Config, rec *recorder, send func(i int, p []byte) error, settle func(sent int) error) (Side, error) {
	plain := cfg
	plain.Publishers = 1
	start := time.Now()
	pub, err := publishAll(ctx, plain, func(first, n int) error {
		for i := first; i < first+n; i++ {
			p := make([]byte, cfg.Size)
			payload(p, i)
			if err := send(i, p); err != nil {
				return err
			}
		}
		return nil
	})
	// Settled even after an error, so nothing waits on the confirmations
	// after the side returned.
	if serr := settle(pub.n); err == nil {
		err = serr
	}
	if err != nil {
		return Side{}, err
	}
	took := time.Since(start)
	drain(ctx, rec, pub.n)
	side := rec.side(pub.n, start)
	side.PubMsgsPerS = float64(pub.n) / took.Seconds()
	return side, nil
}

// failures counts the publishes a broker refused and keeps the first
// reason.
type failures struct {
	n     atomic.Int64
	first atomic.Pointer[error]
}

func (f *failures) add(err error) {
	f.n.Add(1)
	f.first.CompareAndSwap(nil, &err)
}

// err reports the failures among sent publishes (what names them), or nil.
func (f *failures) err(sent int, what string) error {
	n := f.n.Load()
	if n == 0 {
		return nil
	}
	return fmt.Errorf("%d of %d %s not confirmed, the first: %w", n, sent, what, *f.first.Load())
}

func runRaw(ctx context.Context, cfg Config, url string) (Side, error) {
	nc, err := nats.Connect(url, rawOptions()...)
	if err != nil {
		return Side{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return Side{}, err
	}
	name := uniqueName("bench_raw")
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name + ".>"}, Storage: jetstream.FileStorage}); err != nil {
		return Side{}, err
	}
	defer js.DeleteStream(context.Background(), name) //nolint:errcheck // best effort
	cons, err := js.CreateConsumer(ctx, name, jetstream.ConsumerConfig{Durable: "g", AckPolicy: jetstream.AckExplicitPolicy, MaxAckPending: 1024})
	if err != nil {
		return Side{}, err
	}
	rec := newRecorder(cfg.Rate * int(cfg.Duration.Seconds()+1))
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if n, sent, ok := parse(m.Data()); ok {
			rec.record(n, sent)
		}
		_ = m.Ack()
	}, jetstream.PullMaxMessages(1024))
	if err != nil {
		return Side{}, err
	}
	defer cc.Stop()
	start := time.Now()
	subjects := make([]string, cfg.Keys)
	for k := range subjects {
		subjects[k] = name + "." + strconv.Itoa(k%8) + ".bench.v1"
	}
	pub, err := publishAll(ctx, cfg, func(first, n int) error {
		futs := make([]jetstream.PubAckFuture, 0, n)
		for i := first; i < first+n; i++ {
			p := make([]byte, cfg.Size)
			payload(p, i)
			h := rawHeader(event.NewID(), "k"+strconv.Itoa(i%cfg.Keys), time.Now())
			m := &nats.Msg{Subject: subjects[i%cfg.Keys], Data: p, Header: h}
			f, err := js.PublishMsgAsync(m)
			if err != nil {
				return err
			}
			futs = append(futs, f)
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
	if err != nil {
		return Side{}, err
	}
	drain(ctx, rec, pub.n)
	side := rec.side(pub.n, start)
	side.PubMsgsPerS = float64(pub.n) / pub.took.Seconds()
	pub.latencies(&side)
	return side, nil
}

// rawHeader is what the raw loop sends with each event, written out as a
// raw client would: the headers of the CloudEvent in binary mode that the
// Herald side publishes (TestRawHeaderIsWhatHeraldSends holds them equal)
// and the dedup id.
func rawHeader(id, subject string, now time.Time) nats.Header {
	return nats.Header{
		"ce-specversion":      {"1.0"},
		"ce-id":               {id},
		"ce-source":           {"bench"},
		"ce-type":             {"bench.v1"},
		"ce-subject":          {subject},
		"ce-time":             {now.UTC().Format(time.RFC3339Nano)},
		"ce-datacontenttype":  {"application/octet-stream"},
		jetstream.MsgIDHeader: {id},
	}
}

// benchGroup is the Herald side's consumer group.
const benchGroup = "bench"

// topicDeleter is the RabbitMQ adapter's DeleteTopic.
type topicDeleter interface {
	DeleteTopic(ctx context.Context, topic string, groups ...string) error
}

// runHerald measures the SDK on the broker url names, of kind (see scheme).
func runHerald(ctx context.Context, cfg Config, url, kind string) (Side, error) {
	quiet := slog.New(slog.DiscardHandler)
	c, err := herald.Connect(ctx, herald.Config{URL: url, Source: "bench", Logger: quiet})
	if err != nil {
		return Side{}, err
	}
	defer c.Close()
	topic := uniqueName("bench_herald")
	nb, ok := c.Broker().(*natsjs.Broker)
	if ok {
		defer nb.JetStream().DeleteStream(context.Background(), natsjs.StreamName(topic))                           //nolint:errcheck // best effort
		defer nb.JetStream().DeleteStream(context.Background(), natsjs.StreamName(consumer.DeadLetterTopic(topic))) //nolint:errcheck // best effort
	}
	if b, ok := c.Broker().(topicDeleter); ok { // RabbitMQ: the topic's exchange, log and the group's queues
		defer b.DeleteTopic(context.Background(), topic, benchGroup)               //nolint:errcheck // best effort
		defer b.DeleteTopic(context.Background(), consumer.DeadLetterTopic(topic)) //nolint:errcheck // best effort
	}
	if kind == "kafka" {
		defer deleteKafkaTopics(url, topic, consumer.DeadLetterTopic(topic))
	}
	tm, ok := c.Broker().(broker.TopicManager)
	if !ok {
		return Side{}, fmt.Errorf("the %T adapter cannot create topics", c.Broker())
	}
	if err := tm.EnsureTopic(ctx, topic, broker.TopicConfig{Partitions: cfg.Partitions}); err != nil {
		return Side{}, err
	}
	rec := newRecorder(cfg.Rate * int(cfg.Duration.Seconds()+1))
	r, err := c.Router(benchGroup, []string{topic}, consumer.WithStart(broker.FromNew), consumer.WithLogger(quiet), consumer.WithKeyOrder(cfg.KeyOrder))
	if err != nil {
		return Side{}, err
	}
	r.HandleAll(func(ctx context.Context, m *consumer.Message) error {
		n, sent, ok := parse(m.Event.Data)
		if !ok {
			return consumer.Permanent(errors.New("short payload"))
		}
		rec.record(n, sent)
		return nil
	})
	rctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	defer func() { stop(); <-done }()
	select {
	case <-r.Ready():
	case err := <-done:
		return Side{}, fmt.Errorf("router: %w", err)
	case <-ctx.Done():
		return Side{}, ctx.Err()
	}
	keys := make([]string, cfg.Keys)
	for k := range keys {
		keys[k] = "k" + strconv.Itoa(k)
	}
	start := time.Now()
	pub, err := publishAll(ctx, cfg, func(first, n int) error {
		events := make([]*event.Event, 0, n)
		for i := first; i < first+n; i++ {
			p := make([]byte, cfg.Size)
			payload(p, i)
			e := event.New("bench", "bench.v1", p)
			e.Subject = keys[i%cfg.Keys]
			e.DataContentType = "application/octet-stream"
			events = append(events, e)
		}
		return c.PublishTo(ctx, topic, events...)
	})
	if err != nil {
		return Side{}, err
	}
	drain(ctx, rec, pub.n)
	side := rec.side(pub.n, start)
	side.PubMsgsPerS = float64(pub.n) / pub.took.Seconds()
	pub.latencies(&side)
	return side, nil
}
