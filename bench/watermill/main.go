// Command watermill measures Herald beside Watermill's NATS JetStream
// adapter (github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats) against one
// embedded JetStream server, in one run: confirmed publishing, then
// at-least-once consumption by a durable group of what was published.
//
//	go run . [-duration 10s] [-size 256] [-json]
//
// Herald publishes for -duration; Watermill then publishes the same number
// of events. Progress goes to stderr, the table (or JSON) to stdout. See
// README.md for what each side is configured with.
package main

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	wmnats "github.com/ThreeDotsLabs/watermill-nats/v2/pkg/nats"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/e2ebench"
)

// batch is how many events one publish call carries on both sides.
const batch = 100

// keys is the number of distinct partition keys of Herald's events.
const keys = 1024

// idleLimit ends a consume phase when nothing new arrived for this long.
const idleLimit = 10 * time.Second

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if errors.Is(err, errUsage) {
		return 2 // the flag package printed the error and the usage
	}
	if err != nil {
		fmt.Fprintln(stderr, "watermill bench:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	progress := func(format string, args ...any) {
		fmt.Fprintf(stderr, "%s  %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	rep, err := measure(ctx, cfg, progress)
	if err != nil {
		fmt.Fprintln(stderr, "watermill bench:", err)
		return 1
	}
	if cfg.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(stderr, "watermill bench:", err)
			return 1
		}
	} else {
		printTable(stdout, rep)
	}
	for _, r := range rep.Rows {
		if r.Lost != 0 || (r.AllAcked != nil && !*r.AllAcked) {
			fmt.Fprintf(stderr, "watermill bench: %s, %s: lost %d of %d, or not all acked\n", r.Side, r.Settings, r.Lost, r.Events)
			return 1
		}
	}
	return 0
}

// errUsage says the flag package already reported a bad flag.
var errUsage = errors.New("bad flag")

type config struct {
	duration time.Duration
	events   int
	size     int
	work     time.Duration
	json     bool
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fs := flag.NewFlagSet("watermill", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.DurationVar(&cfg.duration, "duration", 10*time.Second, "how long Herald publishes; Watermill then publishes the same number of events")
	fs.IntVar(&cfg.events, "events", 0, "publish exactly this many events per side instead of publishing for -duration")
	fs.IntVar(&cfg.size, "size", 256, "payload size in bytes (at least 8)")
	fs.DurationVar(&cfg.work, "work", 0, "time each handler call waits, as a handler that calls a database or a service would (0: none)")
	fs.BoolVar(&cfg.json, "json", false, "print JSON instead of a table")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, errUsage
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected argument %q (flags: -duration, -events, -size, -work, -json)", fs.Arg(0))
	}
	if cfg.duration <= 0 {
		return cfg, fmt.Errorf("-duration %v: must be positive, for example 10s", cfg.duration)
	}
	if cfg.events < 0 || cfg.events%batch != 0 {
		return cfg, fmt.Errorf("-events %d: a positive multiple of %d (the events per publish call), or 0", cfg.events, batch)
	}
	if cfg.work < 0 || cfg.work > time.Second {
		return cfg, fmt.Errorf("-work %v: between 0 and 1s", cfg.work)
	}
	if cfg.size < 8 {
		return cfg, fmt.Errorf("-size %d: at least 8 bytes (the payload carries the event number)", cfg.size)
	}
	if cfg.size > 1<<20 {
		return cfg, fmt.Errorf("-size %d: at most 1 MiB", cfg.size)
	}
	return cfg, nil
}

// Row is one measured phase of one side.
type Row struct {
	Phase    string `json:"phase"` // publish or consume
	Side     string `json:"side"`  // herald or watermill
	Settings string `json:"settings"`
	// Events is how many events the phase published or had to consume.
	Events   int     `json:"events"`
	Seconds  float64 `json:"seconds"`
	MsgsPerS float64 `json:"msgs_per_s"`
	// CPUus is the process's CPU time per event (server, publisher and
	// consumer share the process).
	CPUus float64 `json:"cpu_us_per_event"`
	// Consumed counts distinct events handled; Deliveries every handler
	// call, redeliveries included.
	Consumed   int `json:"consumed,omitempty"`
	Deliveries int `json:"deliveries,omitempty"`
	Lost       int `json:"lost"`
	// AllAcked (consume rows only): after the phase the stream's consumers
	// on the server had nothing pending and nothing awaiting an ack.
	AllAcked *bool `json:"all_acked,omitempty"`
}

// Report is the outcome of a run.
type Report struct {
	Started  time.Time `json:"started"`
	Duration string    `json:"duration"`
	Work     string    `json:"handler_work"`
	Size     int       `json:"size"`
	Batch    int       `json:"batch"`
	Server   string    `json:"nats_server"`
	Rows     []Row     `json:"rows"`
	Ratios   Ratios    `json:"ratios"`
}

// Ratios are Herald's rates divided by Watermill's (defaults).
type Ratios struct {
	Publish              float64 `json:"publish"`
	ConsumeQueue         float64 `json:"consume_key_order_off"`
	ConsumeKeyOrder      float64 `json:"consume_key_order_on"`
	ConsumeQueueAckAsync float64 `json:"consume_key_order_off_vs_watermill_ack_async"`
}

func measure(ctx context.Context, cfg config, progress func(string, ...any)) (Report, error) {
	rep := Report{Started: time.Now().UTC(), Duration: cfg.duration.String(), Work: cfg.work.String(), Size: cfg.size, Batch: batch}
	if cfg.events > 0 {
		rep.Duration = ""
	}
	dir, err := os.MkdirTemp("", "herald-watermill-bench-")
	if err != nil {
		return rep, err
	}
	defer os.RemoveAll(dir)
	emb, err := natsjs.RunEmbedded(ctx, natsjs.EmbeddedConfig{DataDir: dir, Addr: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return rep, err
	}
	defer emb.Shutdown()
	url := emb.ClientURL()
	rep.Server = url
	progress("embedded JetStream server at %s, data in %s", url, dir)

	h, err := newHeraldSide(ctx, url)
	if err != nil {
		return rep, fmt.Errorf("herald: %w", err)
	}
	defer h.close()
	inspect, err := newInspector(url)
	if err != nil {
		return rep, err
	}
	defer inspect.close()
	w := &watermillSide{url: url, topic: "wm_bench", js: inspect.js}

	d, count := cfg.duration, cfg.events
	if count > 0 {
		d = 0
		progress("herald: publishing %d events, %d per call", count, batch)
	} else {
		progress("herald: publishing for %v, %d events per call", d, batch)
	}
	row, err := measurePublish(ctx, func(first int) (int, error) { return h.publish(ctx, cfg, first) }, d, count)
	if err != nil {
		return rep, fmt.Errorf("herald publish: %w", err)
	}
	row.Side, row.Settings = "herald", "Client.PublishTo, 100 events per call"
	events := row.Events
	progress("herald: published %d events, %.0f msgs/s", events, row.MsgsPerS)
	rep.Rows = append(rep.Rows, row)

	progress("watermill: publishing %d events, %d per call", events, batch)
	if err := w.openPublisher(); err != nil {
		return rep, fmt.Errorf("watermill: %w", err)
	}
	defer w.closePublisher()
	row, err = measurePublish(ctx, func(first int) (int, error) { return w.publish(cfg, first) }, 0, events)
	if err != nil {
		return rep, fmt.Errorf("watermill publish: %w", err)
	}
	row.Side, row.Settings = "watermill", "Publisher.Publish, 100 messages per call (sync ack each)"
	progress("watermill: published %d events, %.0f msgs/s", row.Events, row.MsgsPerS)
	rep.Rows = append(rep.Rows, row)

	type consumePhase struct {
		side, settings string
		stream         string
		run            func(rec *recorder) (stop func(), err error)
	}
	phases := []consumePhase{
		{"herald", "Router, WithKeyOrder(false)", h.stream(), func(rec *recorder) (func(), error) {
			return h.consume(ctx, "bench_queue", rec, cfg.work, consumer.WithKeyOrder(false))
		}},
		{"watermill", "Subscribe + Ack, AckSync (its default)", w.topic, func(rec *recorder) (func(), error) {
			return w.consume(ctx, "bench_default", rec, cfg.work, false)
		}},
		{"herald", "Router, defaults (key order on)", h.stream(), func(rec *recorder) (func(), error) {
			return h.consume(ctx, "bench_ordered", rec, cfg.work)
		}},
		{"watermill", "Subscribe + Ack, AckAsync: true (not its default)", w.topic, func(rec *recorder) (func(), error) {
			return w.consume(ctx, "bench_async", rec, cfg.work, true)
		}},
	}
	for _, p := range phases {
		progress("%s: consuming %d events: %s", p.side, events, p.settings)
		rec := newRecorder(events)
		cpu0, start := e2ebench.CPUTime(), time.Now()
		stop, err := p.run(rec)
		if err != nil {
			return rep, fmt.Errorf("%s consume (%s): %w", p.side, p.settings, err)
		}
		rec.wait(ctx)
		end := rec.last()
		cpu := e2ebench.CPUTime() - cpu0
		acked := inspect.allAcked(ctx, p.stream)
		stop()
		row := Row{Phase: "consume", Side: p.side, Settings: p.settings, Events: events,
			Consumed: int(rec.handled.Load()), Deliveries: int(rec.deliveries.Load()), AllAcked: &acked}
		row.Lost = events - row.Consumed
		if d := end.Sub(start); row.Consumed > 0 && d > 0 {
			row.Seconds = d.Seconds()
			row.MsgsPerS = float64(row.Consumed) / d.Seconds()
			row.CPUus = perEvent(cpu, row.Consumed)
		}
		progress("%s: consumed %d of %d (%d deliveries), %.0f msgs/s, all acked %v", p.side, row.Consumed, events, row.Deliveries, row.MsgsPerS, acked)
		rep.Rows = append(rep.Rows, row)
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
	}
	rate := func(i int) float64 { return rep.Rows[i].MsgsPerS }
	ratio := func(a, b float64) float64 {
		if b == 0 {
			return 0
		}
		return a / b
	}
	rep.Ratios = Ratios{
		Publish:              ratio(rate(0), rate(1)),
		ConsumeQueue:         ratio(rate(2), rate(3)),
		ConsumeKeyOrder:      ratio(rate(4), rate(3)),
		ConsumeQueueAckAsync: ratio(rate(2), rate(5)),
	}
	return rep, nil
}

// measurePublish calls send with the number of the next event until d
// passed (d > 0) or count events were sent (count > 0), or ctx ended. send
// returns how many events it published.
func measurePublish(ctx context.Context, send func(first int) (int, error), d time.Duration, count int) (Row, error) {
	row := Row{Phase: "publish"}
	cpu0, start := e2ebench.CPUTime(), time.Now()
	deadline := start.Add(d)
	sent := 0
	for (d > 0 && time.Now().Before(deadline)) || (count > 0 && sent < count) {
		n, err := send(sent)
		sent += n
		if err != nil {
			return row, fmt.Errorf("after %d events: %w", sent, err)
		}
		if ctx.Err() != nil {
			return row, ctx.Err()
		}
	}
	elapsed := time.Since(start)
	row.Events, row.Seconds = sent, elapsed.Seconds()
	row.MsgsPerS = float64(sent) / elapsed.Seconds()
	row.CPUus = perEvent(e2ebench.CPUTime()-cpu0, sent)
	return row, nil
}

func perEvent(d time.Duration, n int) float64 {
	if n == 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(n)
}

// payload returns a payload of size bytes carrying event number n.
func payload(size, n int) []byte {
	p := make([]byte, size)
	binary.BigEndian.PutUint64(p, uint64(n))
	return p
}

// recorder counts what a consume phase saw. Safe for concurrent use.
type recorder struct {
	seen       []atomic.Bool
	handled    atomic.Int64
	deliveries atomic.Int64
	lastSeen   atomic.Int64 // unix nanos of the last new event
}

func newRecorder(events int) *recorder { return &recorder{seen: make([]atomic.Bool, events)} }

// record notes a delivery of the event whose payload is p; a redelivery
// counts once.
func (r *recorder) record(p []byte) {
	r.deliveries.Add(1)
	if len(p) < 8 {
		return
	}
	n := binary.BigEndian.Uint64(p)
	if n >= uint64(len(r.seen)) || r.seen[n].Swap(true) {
		return
	}
	r.handled.Add(1)
	r.lastSeen.Store(time.Now().UnixNano())
}

// wait returns once every event was seen, nothing new arrived for
// idleLimit, or ctx ended.
func (r *recorder) wait(ctx context.Context) {
	want := int64(len(r.seen))
	last, idle := r.handled.Load(), time.Now()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for r.handled.Load() < want {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n := r.handled.Load(); n != last {
			last, idle = n, time.Now()
		} else if time.Since(idle) > idleLimit {
			return
		}
	}
}

func (r *recorder) last() time.Time { return time.Unix(0, r.lastSeen.Load()) }

// heraldSide publishes and consumes with the Herald SDK over TCP.
type heraldSide struct {
	c     *herald.Client
	topic string
	keys  []string
	quiet *slog.Logger
}

func newHeraldSide(ctx context.Context, url string) (*heraldSide, error) {
	quiet := slog.New(slog.DiscardHandler)
	c, err := herald.Connect(ctx, herald.Config{URL: url, Source: "bench", Logger: quiet})
	if err != nil {
		return nil, err
	}
	h := &heraldSide{c: c, topic: "herald_bench", keys: make([]string, keys), quiet: quiet}
	for k := range h.keys {
		h.keys[k] = "k" + strconv.Itoa(k)
	}
	tm, ok := c.Broker().(broker.TopicManager)
	if !ok {
		_ = c.Close()
		return nil, errors.New("broker does not manage topics")
	}
	// The topic's defaults: file storage, 8 partitions, 2-minute dedup window.
	if err := tm.EnsureTopic(ctx, h.topic, broker.TopicConfig{}); err != nil {
		_ = c.Close()
		return nil, err
	}
	return h, nil
}

func (h *heraldSide) stream() string { return natsjs.StreamName(h.topic) }

func (h *heraldSide) close() { _ = h.c.Close() }

func (h *heraldSide) publish(ctx context.Context, cfg config, first int) (int, error) {
	events := make([]*event.Event, batch)
	for i := range events {
		n := first + i
		e := event.New("bench", "bench.v1", payload(cfg.size, n))
		e.Subject = h.keys[n%keys]
		e.DataContentType = "application/octet-stream"
		events[i] = e
	}
	if err := h.c.PublishTo(ctx, h.topic, events...); err != nil {
		return 0, err
	}
	return batch, nil
}

// consume runs a router for group from the topic's first event, counting
// into rec, and returns the function that stops it.
func (h *heraldSide) consume(ctx context.Context, group string, rec *recorder, work time.Duration, opts ...consumer.Option) (func(), error) {
	opts = append([]consumer.Option{consumer.WithStart(broker.FromFirst), consumer.WithLogger(h.quiet)}, opts...)
	r, err := h.c.Router(group, []string{h.topic}, opts...)
	if err != nil {
		return nil, err
	}
	r.HandleAll(func(_ context.Context, m *consumer.Message) error {
		if work > 0 {
			time.Sleep(work)
		}
		rec.record(m.Event.Data)
		return nil
	})
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- r.Run(rctx) }()
	stop := func() { cancel(); <-done }
	select {
	case <-r.Ready():
		return stop, nil
	case err := <-done:
		cancel()
		return nil, fmt.Errorf("router: %w", err)
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
}

// watermillSide publishes and consumes with watermill-nats's pkg/nats in
// JetStream mode.
type watermillSide struct {
	url   string
	topic string
	js    jetstream.JetStream // creates the groups' durable consumers
	pub   *wmnats.Publisher
}

func (w *watermillSide) openPublisher() error {
	pub, err := wmnats.NewPublisher(wmnats.PublisherConfig{
		URL: w.url,
		JetStream: wmnats.JetStreamConfig{
			// Create the stream (file storage, subject = topic) if missing.
			AutoProvision: true,
			// Nats-Msg-Id from the message UUID: the server drops a publish
			// retried within the dedup window, as Herald's event id does.
			TrackMsgId: true,
		},
	}, watermill.NopLogger{})
	if err != nil {
		return err
	}
	w.pub = pub
	return nil
}

func (w *watermillSide) closePublisher() {
	if w.pub != nil {
		_ = w.pub.Close()
	}
}

func (w *watermillSide) publish(cfg config, first int) (int, error) {
	msgs := make([]*message.Message, batch)
	for i := range msgs {
		msgs[i] = message.NewMessage(watermill.NewUUID(), payload(cfg.size, first+i))
	}
	// Publish waits for each message's publish ack in turn and stops at the
	// first failure, so on error the count sent is not known: report none.
	if err := w.pub.Publish(w.topic, msgs...); err != nil {
		return 0, err
	}
	return batch, nil
}

// consume subscribes group (a durable queue group) to the topic and acks
// each message after counting it, one at a time as Watermill hands them
// over; it returns the function that stops it.
func (w *watermillSide) consume(ctx context.Context, group string, rec *recorder, work time.Duration, ackAsync bool) (func(), error) {
	// The durable consumer is created here, as the one nats.go would create
	// on Subscribe (push, explicit acks, from the first message, the
	// server's defaults otherwise). nats.go deletes a durable it created
	// itself when the subscription ends, so a group left to Watermill starts
	// again from the first message after every restart; one created
	// beforehand keeps its position.
	_, err := w.js.CreatePushConsumer(ctx, w.topic, jetstream.ConsumerConfig{
		Durable:        group,
		DeliverSubject: "bench.deliver." + group,
		DeliverGroup:   group,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
		AckPolicy:      jetstream.AckExplicitPolicy,
		FilterSubject:  w.topic,
	})
	if err != nil {
		return nil, fmt.Errorf("create durable consumer %q: %w", group, err)
	}
	sub, err := wmnats.NewSubscriber(wmnats.SubscriberConfig{
		URL: w.url,
		// With DurablePrefix, a durable queue group.
		QueueGroupPrefix: group,
		JetStream: wmnats.JetStreamConfig{
			AutoProvision: true,
			DurablePrefix: group,
			// Without ManualAck nats.go acks every message once Watermill's
			// callback returns, also one the handler never acked (Watermill
			// gave up after AckWaitTimeout, or was closing): that message
			// would be lost.
			SubscribeOptions: []nats.SubOpt{nats.ManualAck()},
			AckAsync:         ackAsync,
		},
	}, watermill.NopLogger{})
	if err != nil {
		return nil, err
	}
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	ch, err := sub.Subscribe(sctx, w.topic)
	if err != nil {
		cancel()
		_ = sub.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for m := range ch {
			if work > 0 {
				time.Sleep(work)
			}
			rec.record(m.Payload)
			m.Ack()
		}
	}()
	return func() {
		cancel()
		<-done
		_ = sub.Close()
	}, nil
}

// inspector reads consumer state from the server to check that every
// delivered message was acknowledged.
type inspector struct {
	nc *nats.Conn
	js jetstream.JetStream
}

func newInspector(url string) (*inspector, error) {
	nc, err := nats.Connect(url, nats.Name("bench-inspector"))
	if err != nil {
		return nil, fmt.Errorf("inspector: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("inspector: %w", err)
	}
	return &inspector{nc: nc, js: js}, nil
}

func (i *inspector) close() { i.nc.Close() }

// allAcked reports whether, within a few seconds, every consumer on stream
// has nothing left to deliver and nothing awaiting an ack. Acks still in
// flight when the last event was counted land meanwhile.
func (i *inspector) allAcked(ctx context.Context, stream string) bool {
	deadline := time.Now().Add(5 * time.Second)
	for {
		if i.settled(ctx, stream) {
			return true
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (i *inspector) settled(ctx context.Context, stream string) bool {
	s, err := i.js.Stream(ctx, stream)
	if err != nil {
		return false
	}
	l := s.ListConsumers(ctx)
	n := 0
	for c := range l.Info() {
		n++
		if c.NumPending != 0 || c.NumAckPending != 0 {
			return false
		}
	}
	return n > 0 && l.Err() == nil
}

func printTable(out io.Writer, rep Report) {
	phase := rep.Duration
	if phase == "" {
		phase = "a fixed count"
	}
	fmt.Fprintf(out, "started %s, publish phase %s, %d-byte payloads, %d per publish call, handler work %s, server %s\n\n",
		rep.Started.Format(time.RFC3339), phase, rep.Size, rep.Batch, rep.Work, rep.Server)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "phase\tside\tsettings\tevents\tseconds\tmsgs/s\tcpu µs/event\tconsumed\tdeliveries\tlost\tall acked")
	for _, r := range rep.Rows {
		consumed, deliveries, acked := "", "", ""
		if r.Phase == "consume" {
			consumed, deliveries = strconv.Itoa(r.Consumed), strconv.Itoa(r.Deliveries)
		}
		if r.AllAcked != nil {
			acked = strconv.FormatBool(*r.AllAcked)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.2f\t%.0f\t%.1f\t%s\t%s\t%d\t%s\n",
			r.Phase, r.Side, r.Settings, r.Events, r.Seconds, r.MsgsPerS, r.CPUus, consumed, deliveries, r.Lost, acked)
	}
	_ = tw.Flush()
	fmt.Fprintf(out, "\nherald / watermill: publish %.2f; consume, key order off %.2f; consume, key order on %.2f; key order off vs watermill AckAsync %.2f\n",
		rep.Ratios.Publish, rep.Ratios.ConsumeQueue, rep.Ratios.ConsumeKeyOrder, rep.Ratios.ConsumeQueueAckAsync)
}
