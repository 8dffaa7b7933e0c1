package web_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, testenv.NATSLeaks()...)
}

func connect(t testing.TB, srv *server.Server, source string) *herald.Client {
	t.Helper()
	c, err := herald.Connect(t.Context(), herald.Config{URL: srv.NATSURL(), Source: source})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// eventually polls cond every 20ms until it holds or timeout passes; what
// names the awaited condition in the failure.
func eventually(t testing.TB, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s; last state: %s", timeout, what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// get fetches a dashboard page and returns its status and body.
func get(t testing.TB, base, path string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

// post submits a dashboard form as a browser does: form-encoded, from the
// same origin.
func post(t testing.TB, base, path string, form url.Values) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, base+path, strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", base)
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	return do(t, req)
}

func do(t testing.TB, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read: %v", req.Method, req.URL, err)
	}
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode < 300 && !strings.HasPrefix(ct, "text/html") && !strings.HasPrefix(req.URL.Path, "/static/") &&
		!strings.HasSuffix(req.URL.Path, ".json") && !strings.HasSuffix(req.URL.Path, ".svg") {
		t.Fatalf("%s %s: Content-Type %q, want HTML", req.Method, req.URL, ct)
	}
	return resp.StatusCode, string(b)
}

// publish publishes n events of typ to topic, all with the correlation id
// corr, subjects "<prefix>-<i>".
func publish(t testing.TB, c *herald.Client, source, topic, typ, corr string, n int) []*event.Event {
	t.Helper()
	evs := make([]*event.Event, n)
	for i := range evs {
		e := event.New(source, typ, fmt.Appendf(nil, `{"order":%d,"total":%d}`, i, 100+i))
		e.Subject = fmt.Sprintf("o-%d", i)
		e.DataContentType = "application/json"
		e.CorrelationID = corr
		evs[i] = e
	}
	if err := c.PublishTo(t.Context(), topic, evs...); err != nil {
		t.Fatal(err)
	}
	return evs
}

// failingGroup runs group on topic with a handler that fails every event
// while broken is set (errors by subject: even "payment service down",
// odd "card declined"), dead-lettering after one attempt, and records the
// ids it handled.
type failingGroup struct {
	broken  atomic.Bool
	mu      sync.Mutex
	handled map[string]int
}

func runFailingGroup(t testing.TB, c *herald.Client, group, topic string) *failingGroup {
	t.Helper()
	g := &failingGroup{handled: map[string]int{}}
	g.broken.Store(true)
	r, err := c.Router(group, []string{topic}, consumer.WithStart(broker.FromFirst),
		consumer.WithRetry(consumer.RetryPolicy{MaxAttempts: 1, Backoff: consumer.Backoff{Initial: time.Millisecond, Max: time.Millisecond, Multiplier: 1}}))
	if err != nil {
		t.Fatal(err)
	}
	r.HandleAll(func(ctx context.Context, m *consumer.Message) error {
		if g.broken.Load() {
			n, _ := strconv.Atoi(strings.TrimPrefix(m.Event.Subject, "o-"))
			if n%2 == 0 {
				return errors.New("payment service down")
			}
			return errors.New("card declined")
		}
		g.mu.Lock()
		g.handled[m.Event.ID]++
		g.mu.Unlock()
		return nil
	})
	testenv.RunRouter(t, r)
	return g
}

func (g *failingGroup) count() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.handled)
}
