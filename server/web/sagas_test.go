package web_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/saga"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/servertest"
)

// topicPublisher publishes a saga's commands to one topic.
type topicPublisher struct {
	c     *herald.Client
	topic string
}

func (p topicPublisher) Publish(ctx context.Context, evs ...*event.Event) error {
	return p.c.PublishTo(ctx, p.topic, evs...)
}

// checkout is a two-step saga: reserve stock (compensated by releasing
// it), then charge the card.
func checkout() saga.Definition {
	cmd := func(typ string) saga.CommandFunc {
		return func(context.Context, *saga.Instance) (*event.Event, error) {
			return event.New("checkout", typ, []byte(`{}`)), nil
		}
	}
	return saga.Definition{Name: "checkout", Steps: []saga.Step{
		{Name: "reserve", Command: cmd("shop.stock.reserve.v1"), Done: []string{"shop.stock.reserved.v1"},
			Compensate: cmd("shop.stock.release.v1"), Compensated: []string{"shop.stock.released.v1"}, Timeout: time.Hour},
		{Name: "charge", Command: cmd("shop.payment.charge.v1"), Done: []string{"shop.payment.charged.v1"},
			Failed: []string{"shop.payment.declined.v1"}, NoCompensation: true, Timeout: time.Hour},
	}}
}

// reply answers instance id's command for step (phase, first attempt)
// with a reply of typ.
func reply(t *testing.T, eng *saga.Engine, id, step string, phase saga.Phase, typ string) {
	t.Helper()
	r := event.New("services", typ, []byte(`{}`))
	r.CorrelationID, r.CausationID = id, saga.CommandID(id, step, phase, 1)
	if err := eng.HandleReply(t.Context(), r); err != nil {
		t.Fatal(err)
	}
}

// TestSagaPages runs saga instances to each state in the default
// JetStream KV store and reads them on the saga pages.
func TestSagaPages(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.Config{})
	base := srv.AdminURL()

	// Before any saga: the list says so, it is no error.
	code, body := get(t, base, "/sagas")
	if code != http.StatusOK || !strings.Contains(body, "No saga has run on this server yet") || !strings.Contains(body, `href="/sagas"`) {
		t.Fatalf("saga list before any saga: %d:\n%s", code, body)
	}

	store, err := saga.NewKVStore(t.Context(), srv.Broker().JetStream(), "")
	if err != nil {
		t.Fatal(err)
	}
	c := connect(t, srv, "checkout")
	eng, err := saga.New(store, topicPublisher{c, testenv.Unique("commands")}, []saga.Definition{checkout()})
	if err != nil {
		t.Fatal(err)
	}
	ok, bad, waiting := testenv.Unique("ok"), testenv.Unique("bad"), testenv.Unique("wait")
	for _, id := range []string{ok, bad, waiting} {
		if err := eng.Start(t.Context(), "checkout", id, map[string]int{"total": 42}); err != nil {
			t.Fatal(err)
		}
	}
	reply(t, eng, ok, "reserve", saga.Do, "shop.stock.reserved.v1")
	reply(t, eng, ok, "charge", saga.Do, "shop.payment.charged.v1")
	reply(t, eng, bad, "reserve", saga.Do, "shop.stock.reserved.v1")
	reply(t, eng, bad, "charge", saga.Do, "shop.payment.declined.v1")
	reply(t, eng, bad, "reserve", saga.Undo, "shop.stock.released.v1")

	code, body = get(t, base, "/sagas")
	for _, id := range []string{ok, bad, waiting} {
		if !strings.Contains(body, `href="/sagas/`+id+`"`) {
			t.Fatalf("saga list: %d, misses %s:\n%s", code, id, body)
		}
	}
	if code != http.StatusOK || !strings.Contains(body, `hx-trigger="every 5s"`) || !strings.Contains(body, "3 instances") {
		t.Fatalf("saga list: %d, want 3 instances, refreshing:\n%s", code, body)
	}
	for state, want := range map[string]string{"completed": ok, "compensated": bad, "running": waiting} {
		code, body := get(t, base, "/sagas?state="+state)
		if code != http.StatusOK || strings.Count(body, `href="/sagas/`) != 1 || !strings.Contains(body, `href="/sagas/`+want+`"`) {
			t.Fatalf("saga list of state %s: %d, want only %s:\n%s", state, code, want, body)
		}
	}

	code, body = get(t, base, "/sagas/"+ok)
	if code != http.StatusOK || !strings.Contains(body, `<span class="tag ok">completed</span>`) || strings.Count(body, `<span class="ok">done</span>`) != 2 ||
		!strings.Contains(body, "shop.payment.charged.v1") || !strings.Contains(body, `href="/trace/`+ok+`"`) || strings.Contains(body, "hx-trigger") {
		t.Fatalf("completed saga: %d, want its two steps done, a trace link and no refresh:\n%s", code, body)
	}
	code, body = get(t, base, "/sagas/"+bad)
	if code != http.StatusOK || !strings.Contains(body, "compensated</span>") || !strings.Contains(body, "step &#34;charge&#34; failed") ||
		!strings.Contains(body, "<td>undo</td>") || !strings.Contains(body, "shop.stock.released.v1") || strings.Count(body, "<tr><td>") != 3 {
		t.Fatalf("compensated saga: %d, want reserve, charge declined, reserve undone:\n%s", code, body)
	}
	code, body = get(t, base, "/sagas/"+waiting)
	if code != http.StatusOK || !strings.Contains(body, "running</span>") || !strings.Contains(body, "waiting ") ||
		!strings.Contains(body, "times out") || !strings.Contains(body, `hx-trigger="every 5s"`) {
		t.Fatalf("running saga: %d, want its command waiting and the page refreshing:\n%s", code, body)
	}

	for _, tc := range []struct {
		name, path string
		code       int
		says       string
	}{
		{"unknown instance", "/sagas/" + testenv.Unique("nope"), http.StatusNotFound, "no saga instance"},
		{"bad id", "/sagas/a%20b", http.StatusBadRequest, "saga id &#34;a b&#34;"},
		{"bad state", "/sagas?state=bogus", http.StatusBadRequest, "want running, compensating"},
		{"bad bucket", "/sagas?bucket=no%20such", http.StatusBadRequest, "bucket &#34;no such&#34;"},
		{"unknown bucket", "/sagas?bucket=" + testenv.Unique("none"), http.StatusNotFound, "no saga bucket"},
		{"unknown bucket of an instance", "/sagas/" + ok + "?bucket=" + testenv.Unique("none"), http.StatusNotFound, "no saga"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, base, tc.path)
			if code != tc.code || !strings.Contains(body, tc.says) || !strings.Contains(body, "<!doctype html>") {
				t.Fatalf("GET %s: %d, want %d saying %q in a page:\n%s", tc.path, code, tc.code, tc.says, body)
			}
		})
	}
}
