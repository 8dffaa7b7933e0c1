package e2ebench

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/event"
)

// TestRunCountsEveryEvent runs all three loops briefly with several
// single-event publishers at a fixed rate: every published event must be
// handled once on each side, and the figures must describe that run.
func TestRunCountsEveryEvent(t *testing.T) {
	var prof bytes.Buffer
	res, err := Run(t.Context(), Config{Duration: 500 * time.Millisecond, Rate: 2000, Publishers: 8, Batch: 1, Keys: 16, CPUProfile: &prof})
	if err != nil {
		t.Fatal(err)
	}
	if prof.Len() == 0 {
		t.Error("no CPU profile written")
	}
	checkSides(t, map[string]Side{"plain": res.Plain, "raw": res.Raw, "herald": res.Herald})
	if res.PlainRatio != res.Herald.MsgsPerS/res.Plain.MsgsPerS || res.PubRatio != res.Herald.PubMsgsPerS/res.Plain.PubMsgsPerS {
		t.Errorf("ratios %v %v do not match the sides %+v / %+v", res.PlainRatio, res.PubRatio, res.Herald, res.Plain)
	}
	if res.Publishers != 8 || res.Batch != 1 {
		t.Errorf("result says publishers %d batch %d, want 8 and 1", res.Publishers, res.Batch)
	}
}

func TestConfigErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		cfg  Config
		want string
	}{
		"small size":          {Config{Size: 8}, "size 8"},
		"negative rate":       {Config{Rate: -1}, "rate -1"},
		"negative publishers": {Config{Publishers: -2}, "publishers -2"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Run(t.Context(), tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to mention %q", err, tc.want)
			}
		})
	}
}

// TestPublishAllNumbersWithoutGaps checks that concurrent publishers hand
// out every event number once.
func TestPublishAllNumbersWithoutGaps(t *testing.T) {
	cfg := Config{Duration: 50 * time.Millisecond, Publishers: 7, Batch: 3}
	if err := cfg.defaults(); err != nil {
		t.Fatal(err)
	}
	seen := make(chan int, 1<<20)
	pub, err := publishAll(t.Context(), cfg, func(first, n int) error {
		for i := first; i < first+n; i++ {
			seen <- i
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	close(seen)
	sent := pub.n
	if len(pub.calls) == 0 || len(pub.calls)*cfg.Batch != sent {
		t.Errorf("%d call latencies for %d events in calls of %d", len(pub.calls), sent, cfg.Batch)
	}
	got := make([]bool, sent)
	for i := range seen {
		if i >= sent || got[i] {
			t.Fatalf("event number %d out of range or twice (sent %d)", i, sent)
		}
		got[i] = true
	}
	for i, ok := range got {
		if !ok {
			t.Fatalf("event number %d never sent (sent %d)", i, sent)
		}
	}
}

// checkSides fails unless every side published, handled each event once,
// lost none and has its figures.
func checkSides(t *testing.T, sides map[string]Side) {
	t.Helper()
	for name, side := range sides {
		if side.Published == 0 {
			t.Errorf("%s: published nothing", name)
		}
		if side.Lost != 0 || side.Handled != side.Published {
			t.Errorf("%s: published %d, handled %d, lost %d", name, side.Published, side.Handled, side.Lost)
		}
		if side.PubMsgsPerS <= 0 || side.MsgsPerS <= 0 || side.P99us <= 0 {
			t.Errorf("%s: figures missing: %+v", name, side)
		}
		// Only the loops that wait for their confirmations time the call.
		if confirmed := name != "plain"; confirmed != (side.PubP99us > 0) || side.PubP50us > side.PubP99us {
			t.Errorf("%s: publish latency p50 %v p99 %v", name, side.PubP50us, side.PubP99us)
		}
	}
}

// TestPaceKeepsRate checks that a paced publisher sends what its rate
// asks for in the time given, in calls of at most the batch size.
func TestPaceKeepsRate(t *testing.T) {
	const rate, batch = 2000, 4
	d := 300 * time.Millisecond
	sent, calls := 0, 0
	start := time.Now()
	err := pace(t.Context(), start, start.Add(d), rate, batch, true, func(n int) error {
		if n < 1 || n > batch {
			t.Errorf("a call of %d events, want 1..%d", n, batch)
		}
		sent += n
		calls++
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// At most what was due at the deadline; at least half of it even when
	// the machine is slow to wake the publisher.
	if want := int(rate * d.Seconds()); sent > want+1 || sent < want/2 {
		t.Errorf("sent %d events in %v at %d/s, want about %d", sent, d, rate, want)
	}
	if calls < sent/batch {
		t.Errorf("%d calls for %d events", calls, sent)
	}
}

// The raw loop writes its headers by hand; they must stay the ones the
// Herald side sends for the same event (the SDK's NATS binding), or the
// like-for-like baseline measures another wire format.
func TestRawHeaderIsWhatHeraldSends(t *testing.T) {
	e := event.New("bench", "bench.v1", []byte("x"))
	e.Subject = "k7"
	e.DataContentType = "application/octet-stream"
	want := map[string]string{}
	event.NATS.Encode(e, want)
	want[jetstream.MsgIDHeader] = e.ID // the broker message's id, as the adapter sends it
	got := rawHeader(e.ID, e.Subject, e.Time)
	if len(got) != len(want) {
		t.Errorf("raw headers %v, Herald's %v", got, want)
	}
	for k, v := range want {
		g := got.Get(k)
		if k == "ce-time" {
			gt, err1 := time.Parse(time.RFC3339Nano, g)
			wt, err2 := time.Parse(time.RFC3339Nano, v)
			if err1 != nil || err2 != nil || !gt.Equal(wt) {
				t.Errorf("ce-time: raw %q, Herald %q", g, v)
			}
			continue
		}
		if g != v {
			t.Errorf("%s: raw %q, Herald %q", k, g, v)
		}
	}
}
