// Package e2ebench measures Herald end to end: events published with the
// SDK, consumed by a router (at-least-once, retry and dead-letter
// middleware on, per-key order within the instance) and acknowledged;
// beside the raw nats.go JetStream client doing the same loop against the
// same server in the same run. Config.KeyOrder adds per-key order across
// instances. `herald bench e2e` and the consumer package's benchmark use it.
package e2ebench

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
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
	// KeyOrder turns on the router's per-key order across instances
	// (pinned partition consumers). Off by default: the raw loop it is
	// compared with is a plain work queue, so off is the like-for-like
	// comparison; on measures what the guarantee costs.
	KeyOrder bool
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
}

// Result is the outcome of a run. The flat fields are the headline
// figures `herald bench e2e --json` prints.
type Result struct {
	HeraldMsgsPerS float64 `json:"herald_msgs_per_s"`
	RawMsgsPerS    float64 `json:"raw_msgs_per_s"`
	Ratio          float64 `json:"ratio"`
	P50us          float64 `json:"p50_us"`
	P99us          float64 `json:"p99_us"`
	RawP50us       float64 `json:"raw_p50_us"`
	RawP99us       float64 `json:"raw_p99_us"`
	Lost           int     `json:"lost"`
	RawLost        int     `json:"raw_lost"`
	Rate           int     `json:"rate"`
	Size           int     `json:"size"`
	DurationS      float64 `json:"duration_s"`
	URL            string  `json:"url"`
	Herald         Side    `json:"herald"`
	Raw            Side    `json:"raw"`
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
	if c.Keys <= 0 {
		c.Keys = 1024
	}
	if c.Progress == nil {
		c.Progress = func(string) {}
	}
	return nil
}

// Run measures the raw client, then Herald, and returns both.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if err := cfg.defaults(); err != nil {
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
	res := Result{Rate: cfg.Rate, Size: cfg.Size, DurationS: cfg.Duration.Seconds(), URL: url}
	cfg.Progress(fmt.Sprintf("raw nats.go: publishing for %v at %s", cfg.Duration, rateText(cfg.Rate)))
	cpu0 := CPUTime()
	raw, err := runRaw(ctx, cfg, url)
	if err != nil {
		return res, fmt.Errorf("raw side: %w", err)
	}
	raw.CPUus = perEvent(CPUTime()-cpu0, raw.Handled)
	cfg.Progress(fmt.Sprintf("raw nats.go: %.0f msgs/s, p99 %.0f µs, lost %d", raw.MsgsPerS, raw.P99us, raw.Lost))
	cfg.Progress(fmt.Sprintf("herald: publishing for %v at %s", cfg.Duration, rateText(cfg.Rate)))
	cpu0 = CPUTime()
	hs, err := runHerald(ctx, cfg, url)
	if err != nil {
		return res, fmt.Errorf("herald side: %w", err)
	}
	hs.CPUus = perEvent(CPUTime()-cpu0, hs.Handled)
	cfg.Progress(fmt.Sprintf("herald: %.0f msgs/s, p99 %.0f µs, lost %d", hs.MsgsPerS, hs.P99us, hs.Lost))
	res.Herald, res.Raw = hs, raw
	res.HeraldMsgsPerS, res.RawMsgsPerS = hs.MsgsPerS, raw.MsgsPerS
	if raw.MsgsPerS > 0 {
		res.Ratio = hs.MsgsPerS / raw.MsgsPerS
	}
	res.P50us, res.P99us = hs.P50us, hs.P99us
	res.RawP50us, res.RawP99us = raw.P50us, raw.P99us
	res.Lost, res.RawLost = hs.Lost, raw.Lost
	return res, nil
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
		q := func(p float64) float64 {
			return float64(r.lat[min(int(p*float64(len(r.lat))), len(r.lat)-1)].Microseconds())
		}
		s.P50us, s.P99us, s.MaxUs = q(0.50), q(0.99), float64(r.lat[len(r.lat)-1].Microseconds())
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

// pace calls send with batch sizes that keep to cfg.Rate (or full
// batches at full speed) until the duration is over, and returns how many
// events were sent. send gets the first event number and the count.
func pace(ctx context.Context, cfg Config, send func(first, n int) error) (int, error) {
	deadline := time.Now().Add(cfg.Duration)
	sent := 0
	if cfg.Rate == 0 {
		for time.Now().Before(deadline) {
			if err := send(sent, cfg.Batch); err != nil {
				return sent, err
			}
			sent += cfg.Batch
			if ctx.Err() != nil {
				return sent, ctx.Err()
			}
		}
		return sent, nil
	}
	const tick = time.Millisecond
	t := time.NewTicker(tick)
	defer t.Stop()
	start := time.Now()
	for now := start; now.Before(deadline); now = time.Now() {
		due := int(float64(cfg.Rate) * now.Sub(start).Seconds())
		if n := min(due-sent, cfg.Batch); n > 0 {
			if err := send(sent, n); err != nil {
				return sent, err
			}
			sent += n
			continue
		}
		select {
		case <-ctx.Done():
			return sent, ctx.Err()
		case <-t.C:
		}
	}
	return sent, nil
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

func runRaw(ctx context.Context, cfg Config, url string) (Side, error) {
	// The raw client authenticates and trusts the server as the SDK does
	// ($HERALD_CREDS, $HERALD_CA), so a secured server compares alike.
	var opts []nats.Option
	if p := os.Getenv("HERALD_CREDS"); p != "" {
		opts = append(opts, nats.UserCredentials(p))
	}
	if p := os.Getenv("HERALD_CA"); p != "" {
		opts = append(opts, nats.RootCAs(p))
	}
	nc, err := nats.Connect(url, opts...)
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
	futs := make([]jetstream.PubAckFuture, 0, cfg.Batch)
	published, err := pace(ctx, cfg, func(first, n int) error {
		futs = futs[:0]
		for i := first; i < first+n; i++ {
			p := make([]byte, cfg.Size)
			payload(p, i)
			// The same message Herald sends: a CloudEvent in binary mode.
			id := event.NewID()
			h := nats.Header{
				"ce-specversion":      {"1.0"},
				"ce-id":               {id},
				"ce-source":           {"bench"},
				"ce-type":             {"bench.v1"},
				"ce-subject":          {"k" + strconv.Itoa(i%cfg.Keys)},
				"ce-time":             {time.Now().UTC().Format(time.RFC3339Nano)},
				"ce-datacontenttype":  {"application/octet-stream"},
				jetstream.MsgIDHeader: {id},
			}
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
	drain(ctx, rec, published)
	return rec.side(published, start), nil
}

func runHerald(ctx context.Context, cfg Config, url string) (Side, error) {
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
	if err := c.Broker().(broker.TopicManager).EnsureTopic(ctx, topic, broker.TopicConfig{Partitions: cfg.Partitions}); err != nil {
		return Side{}, err
	}
	rec := newRecorder(cfg.Rate * int(cfg.Duration.Seconds()+1))
	r, err := c.Router("bench", []string{topic}, consumer.WithStart(broker.FromNew), consumer.WithLogger(quiet), consumer.WithKeyOrder(cfg.KeyOrder))
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
	events := make([]*event.Event, 0, cfg.Batch)
	published, err := pace(ctx, cfg, func(first, n int) error {
		events = events[:0]
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
	drain(ctx, rec, published)
	return rec.side(published, start), nil
}
