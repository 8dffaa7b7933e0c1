//go:build fault && soak

package fault

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
)

// TestSoak runs `herald serve --durability sync` for HERALD_SOAK_DURATION
// (default 30m) at half the end-to-end throughput a full-rate probe
// measured first, with a consumer group whose handler fails 1% of the
// events (every 100th: retried, then dead-lettered). Every 30 s it samples
// the memory and goroutines of the server (from /metrics) and of this
// process (the SDK's publisher and router); heap and goroutine profiles of
// both are written after the warm-up and at the end. It fails if memory
// or goroutines grow past the warm-up's by more than the slack below, or
// if an acknowledged event was neither handled nor dead-lettered.
//
//	HERALD_SOAK_DURATION=30m HERALD_SOAK_REPORT=/tmp/soak \
//	  go test -tags fault,soak -count=1 -run TestSoak -timeout 60m -v ./test/fault
//
// The report directory (default: a new one under the system's temporary
// directory, logged) gets summary.json, samples.csv and the profiles:
// go tool pprof -top -base server-heap-start.pb.gz server-heap-end.pb.gz.
func TestSoak(t *testing.T) {
	duration := envDuration(t, "HERALD_SOAK_DURATION", 30*time.Minute)
	probe := envDuration(t, "HERALD_SOAK_PROBE", 15*time.Second)
	dir := os.Getenv("HERALD_SOAK_REPORT")
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("", "herald-soak-"); err != nil {
			t.Fatal(err)
		}
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Logf("report in %s", dir)

	bin := build(t, "./cmd/herald")
	const topic = "soak"
	// A minute of retention keeps the store's size flat, so what grows is
	// what leaks; the dead-letter topic keeps everything.
	srv := startServer(t, bin, filepath.Join(t.TempDir(), "data"), "--pprof", "--topic-retention", topic+"=max-age:1m")

	ctx := t.Context()
	b, err := natsjs.New(ctx, natsjs.WithURL(srv.url()), natsjs.WithGroupCommit(true))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	c, err := herald.Connect(ctx, herald.Config{Broker: b, Source: "soak"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })

	// Event n's data is n. Capacity for a probe at a generous rate and
	// the soak at half of it; the sets grow if that is short.
	sk := newSoakState(int(100_000 * (probe + duration/2).Seconds()))
	r, err := c.Router("soak", []string{topic}, consumer.WithStart(broker.FromFirst), consumer.WithConcurrency(8),
		consumer.WithRetry(consumer.RetryPolicy{MaxAttempts: 3, Backoff: consumer.Backoff{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 2}}))
	if err != nil {
		t.Fatal(err)
	}
	r.HandleAll(func(_ context.Context, m *consumer.Message) error {
		n, err := strconv.ParseInt(string(m.Event.Data), 10, 64)
		if err != nil {
			return consumer.Permanent(fmt.Errorf("soak: event data %q is not a number", m.Event.Data))
		}
		if failing(n) {
			sk.failures.Add(1)
			return fmt.Errorf("soak: event %d fails on purpose", n)
		}
		if !sk.handled.set(n) {
			sk.duplicates.Add(1)
		}
		sk.handledCount.Add(1)
		return nil
	})
	rctx, stopRouter := context.WithCancel(context.WithoutCancel(ctx))
	routerDone := make(chan error, 1)
	go func() { routerDone <- r.Run(rctx) }()
	t.Cleanup(func() {
		stopRouter()
		<-routerDone
	})

	// The probe: publish as fast as 8 publishers go for probe, and take
	// what the router handled per second as the maximum.
	began := time.Now()
	pub := sk.publish(ctx, c, topic, 0)
	// The first third of the probe warms up; the rest is measured.
	time.Sleep(probe / 3)
	h0, mark := sk.handledCount.Load(), time.Now()
	time.Sleep(probe - probe/3)
	maxRate := float64(sk.handledCount.Load()-h0) / time.Since(mark).Seconds()
	pub.stop()
	rate := maxRate / 2
	t.Logf("probe: %.0f events/s handled at full rate; soaking at %.0f/s for %s", maxRate, rate, duration)
	if rate < 100 {
		t.Fatalf("the probe measured %.0f events/s; too little to soak at", maxRate)
	}

	pub = sk.publish(ctx, c, topic, rate)
	samples, err := os.Create(filepath.Join(dir, "samples.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer samples.Close()
	fmt.Fprintln(samples, "elapsed_s,acked,handled,failures,server_heap_inuse_bytes,server_rss_bytes,server_goroutines,client_heap_alloc_bytes,client_goroutines")

	const every = 30 * time.Second
	warmup := min(duration/10, 3*time.Minute)
	var first, last []soakSample
	soakStart := time.Now()
	tick := time.NewTicker(every)
	defer tick.Stop()
	profiled := false
	for now := range tick.C {
		elapsed := now.Sub(soakStart)
		s := sampleSoak(t, srv, sk)
		fmt.Fprintf(samples, "%.0f,%d,%d,%d,%.0f,%.0f,%.0f,%d,%d\n", elapsed.Seconds(), s.acked, s.handled, s.failures,
			s.serverHeap, s.serverRSS, s.serverGoroutines, s.clientHeap, s.clientGoroutines)
		t.Logf("%s: %d acked, %d handled, %d failures; server heap %s rss %s goroutines %.0f; client heap %s goroutines %d; %d publishes failed",
			elapsed.Round(time.Second), s.acked, s.handled, s.failures, mib(s.serverHeap), mib(s.serverRSS), s.serverGoroutines,
			mib(float64(s.clientHeap)), s.clientGoroutines, pub.fails.Load())
		if elapsed >= warmup {
			if !profiled {
				profiled = true
				profileBoth(t, srv, dir, "start")
			}
			if len(first) < 3 {
				first = append(first, s)
			}
			last = append(last, s)
			if len(last) > 3 {
				last = last[1:]
			}
		}
		if elapsed >= duration {
			break
		}
	}
	profileBoth(t, srv, dir, "end")
	pub.stop()

	// Every acked event is handled or, if it fails on purpose, in the
	// dead-letter topic.
	want := sk.acked.count()
	wantDead := 0
	sk.acked.each(func(n int64) {
		if failing(n) {
			wantDead++
		}
	})
	var (
		missing []int64
		dead    int
		deadErr error
	)
	waitFor(t, 3*time.Minute, func() string {
		msg := fmt.Sprintf("every acked event handled or dead-lettered: %d missing (first %v), %d of %d dead letters", len(missing), missing[:min(len(missing), 5)], dead, wantDead)
		if deadErr != nil {
			msg += fmt.Sprintf(" (counting them: %v)", deadErr)
		}
		return msg
	}, func() bool {
		missing = missing[:0]
		sk.acked.each(func(n int64) {
			if !failing(n) && !sk.handled.has(n) {
				missing = append(missing, n)
			}
		})
		dead, deadErr = streamMsgs(t.Context(), b, consumer.DeadLetterTopic(topic))
		return len(missing) == 0 && dead >= wantDead
	})

	sum := soakSummary{
		DurationS: time.Since(began).Seconds(), ProbeRate: maxRate, Rate: rate,
		Acked: want, Handled: int(sk.handledCount.Load()), Duplicates: int(sk.duplicates.Load()), DeadLettered: dead,
		PublishFailures: int(pub.fails.Load()),
		First:           avgSample(first), Last: avgSample(last),
	}
	b2, _ := json.MarshalIndent(sum, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "summary.json"), b2, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("summary: %s", b2)
	if dead > wantDead {
		t.Logf("%d dead letters for %d failing events: a failing event was dead-lettered again after a redelivery", dead, wantDead)
	}

	// Flat: the last samples against those right after the warm-up, with
	// slack for the garbage collector's pacing and the caches filling.
	f, l := sum.First, sum.Last
	check := func(what string, before, after, slack float64) {
		if after > before*1.5+slack {
			t.Errorf("%s grew from %.0f after the warm-up to %.0f at the end", what, before, after)
		}
	}
	check("server heap in use (bytes)", f.ServerHeap, l.ServerHeap, 64<<20)
	check("server resident memory (bytes)", f.ServerRSS, l.ServerRSS, 128<<20)
	check("server goroutines", f.ServerGoroutines, l.ServerGoroutines, 50)
	check("client heap (bytes)", f.ClientHeap, l.ClientHeap, 32<<20)
	check("client goroutines", f.ClientGoroutines, l.ClientGoroutines, 50)
}

// failing picks the 1% of events the handler fails.
func failing(n int64) bool { return n%100 == 37 }

// soakState is what the publishers and the handler record.
type soakState struct {
	next         atomic.Int64
	acked        *bitset
	handled      *bitset
	handledCount atomic.Int64 // handler successes, redeliveries included
	duplicates   atomic.Int64 // successes for an event handled before
	failures     atomic.Int64
}

func newSoakState(capacity int) *soakState {
	return &soakState{acked: newBitset(capacity), handled: newBitset(capacity)}
}

// soakLoad is a running set of publishers.
type soakLoad struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup
	fails  atomic.Int64
}

func (l *soakLoad) stop() {
	l.cancel()
	l.wg.Wait()
}

// publish starts 8 publishers of 20-event calls over 64 keys; with rate >
// 0 they publish rate events per second together, else as fast as they
// can. A failed call is sent again with the same events (same ids).
func (sk *soakState) publish(ctx context.Context, c *herald.Client, topic string, rate float64) *soakLoad {
	const workers, batch = 8, 20
	lctx, cancel := context.WithCancel(ctx)
	l := &soakLoad{cancel: cancel}
	var interval time.Duration // between one worker's calls
	if rate > 0 {
		interval = time.Duration(float64(time.Second) * workers * batch / rate)
	}
	for range workers {
		l.wg.Go(func() {
			next := time.Now()
			for lctx.Err() == nil {
				first := sk.next.Add(batch) - batch
				evs := make([]*event.Event, batch)
				for i := range evs {
					n := first + int64(i)
					evs[i] = event.New("soak", "soak.tick.v1", strconv.AppendInt(nil, n, 10))
					evs[i].Subject = "k" + strconv.FormatInt(n%64, 10)
				}
				for lctx.Err() == nil {
					pctx, cancelCall := context.WithTimeout(lctx, 10*time.Second)
					err := c.PublishTo(pctx, topic, evs...)
					cancelCall()
					if err == nil {
						for i := range evs {
							_ = sk.acked.set(first + int64(i))
						}
						break
					}
					if lctx.Err() == nil { // not the stop's own cancellation
						l.fails.Add(1)
					}
					sleepCtx(lctx, 50*time.Millisecond)
				}
				if interval > 0 {
					next = next.Add(interval)
					sleepCtx(lctx, time.Until(next))
				}
			}
		})
	}
	return l
}

func sleepCtx(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// bitset is a growable set of non-negative integers, safe for concurrent
// use.
type bitset struct {
	mu    sync.Mutex
	words []uint64
}

func newBitset(capacity int) *bitset { return &bitset{words: make([]uint64, capacity/64+1)} }

// set adds n and reports whether it was new.
func (s *bitset) set(n int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := int(n / 64)
	for w >= len(s.words) {
		s.words = append(s.words, make([]uint64, len(s.words))...)
	}
	bit := uint64(1) << (n % 64)
	fresh := s.words[w]&bit == 0
	s.words[w] |= bit
	return fresh
}

func (s *bitset) has(n int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := int(n / 64)
	return w < len(s.words) && s.words[w]&(1<<(n%64)) != 0
}

func (s *bitset) count() int {
	n := 0
	s.each(func(int64) { n++ })
	return n
}

// each calls f for every member, in order, holding the set's lock: f
// must not use s.
func (s *bitset) each(f func(n int64)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for w, word := range s.words {
		for word != 0 {
			f(int64(w*64 + bits.TrailingZeros64(word)))
			word &= word - 1 // clear the lowest bit set
		}
	}
}

type soakSample struct {
	acked, handled, failures int64
	serverHeap, serverRSS    float64
	serverGoroutines         float64
	clientHeap               uint64
	clientGoroutines         int
}

// sampleSoak reads the server's memory and goroutines from /metrics and
// this process's after a collection.
func sampleSoak(t *testing.T, srv *server, sk *soakState) soakSample {
	t.Helper()
	m := scrape(t, srv.state.AdminURL+"/metrics")
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return soakSample{
		acked: int64(sk.acked.count()), handled: sk.handledCount.Load(), failures: sk.failures.Load(),
		serverHeap: m["go_memstats_heap_inuse_bytes"], serverRSS: m["process_resident_memory_bytes"], serverGoroutines: m["go_goroutines"],
		clientHeap: ms.HeapAlloc, clientGoroutines: runtime.NumGoroutine(),
	}
}

// scrape reads the unlabelled series of a Prometheus text exposition.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, value, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(value, 64); err == nil {
			out[name] = v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	return out
}

// profileBoth writes the heap and goroutine profiles of the server and of
// this process into dir, named by who and when.
func profileBoth(t *testing.T, srv *server, dir, when string) {
	t.Helper()
	for _, p := range []string{"heap", "goroutine"} {
		fetch(t, srv.state.AdminURL+"/debug/pprof/"+p+"?gc=1", filepath.Join(dir, fmt.Sprintf("server-%s-%s.pb.gz", p, when)))
		if p == "heap" {
			runtime.GC()
		}
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("client-%s-%s.pb.gz", p, when)))
		if err != nil {
			t.Fatal(err)
		}
		err = pprof.Lookup(p).WriteTo(f, 0)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func fetch(t *testing.T, url, path string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.Copy(f, resp.Body)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// streamMsgs is how many messages topic's stream holds: 0 and no error if
// the stream does not exist yet.
func streamMsgs(ctx context.Context, b *natsjs.Broker, topic string) (int, error) {
	s, err := b.JetStream().Stream(ctx, natsjs.StreamName(topic))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, err
	}
	return int(info.State.Msgs), nil
}

type soakSummary struct {
	DurationS       float64       `json:"duration_s"`
	ProbeRate       float64       `json:"probe_events_per_s"`
	Rate            float64       `json:"soak_events_per_s"`
	Acked           int           `json:"acked"`
	Handled         int           `json:"handled"`
	Duplicates      int           `json:"duplicates_handled"`
	DeadLettered    int           `json:"dead_lettered"`
	PublishFailures int           `json:"publish_failures"`
	First           soakSampleOut `json:"after_warmup"`
	Last            soakSampleOut `json:"at_end"`
}

type soakSampleOut struct {
	ServerHeap       float64 `json:"server_heap_inuse_bytes"`
	ServerRSS        float64 `json:"server_rss_bytes"`
	ServerGoroutines float64 `json:"server_goroutines"`
	ClientHeap       float64 `json:"client_heap_alloc_bytes"`
	ClientGoroutines float64 `json:"client_goroutines"`
}

func avgSample(ss []soakSample) soakSampleOut {
	var o soakSampleOut
	if len(ss) == 0 {
		return o
	}
	for _, s := range ss {
		o.ServerHeap += s.serverHeap
		o.ServerRSS += s.serverRSS
		o.ServerGoroutines += s.serverGoroutines
		o.ClientHeap += float64(s.clientHeap)
		o.ClientGoroutines += float64(s.clientGoroutines)
	}
	n := float64(len(ss))
	o.ServerHeap /= n
	o.ServerRSS /= n
	o.ServerGoroutines /= n
	o.ClientHeap /= n
	o.ClientGoroutines /= n
	return o
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

// envDuration reads a positive duration from the environment.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	return envPositive(t, name, def, time.ParseDuration, "a positive duration")
}
