package web_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/servertest"
)

// TestGroupPage pauses and resumes a group, previews a rewind with its
// count of events to replay, runs it and sees them handled again.
func TestGroupPage(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.Config{})
	base := srv.AdminURL()
	c := connect(t, srv, "shipping")
	topic := testenv.Unique("orders")
	group := testenv.Unique("shipping")
	var handled atomic.Int64
	r, err := c.Router(group, []string{topic}, consumer.WithStart(broker.FromFirst))
	if err != nil {
		t.Fatal(err)
	}
	r.HandleAll(func(context.Context, *consumer.Message) error { handled.Add(1); return nil })
	testenv.RunRouter(t, r)
	const n = 6
	publish(t, c, "orders", topic, "shop.order.placed.v1", "", n)
	eventually(t, 30*time.Second, fmt.Sprintf("%d events handled", n), func() (bool, string) {
		return handled.Load() == n, fmt.Sprintf("%d handled", handled.Load())
	})

	code, body := get(t, base, "/groups")
	if code != http.StatusOK || !strings.Contains(body, `href="/groups/`+group+`"`) {
		t.Fatalf("groups page: %d:\n%s", code, body)
	}
	code, body = post(t, base, "/groups/"+group+"/pause", url.Values{"for": {"15m"}})
	if code != http.StatusOK || !strings.Contains(body, "Paused "+group) || !strings.Contains(body, `<td id="state"><span class="tag warn">paused`) {
		t.Fatalf("pause: %d, want the group shown paused:\n%s", code, body)
	}
	code, body = post(t, base, "/groups/"+group+"/resume", nil)
	if code != http.StatusOK || !strings.Contains(body, "Resumed "+group) {
		t.Fatalf("resume: %d:\n%s", code, body)
	}
	eventually(t, 10*time.Second, "the group running again", func() (bool, string) {
		code, body = get(t, base, "/groups/"+group)
		return code == http.StatusOK && strings.Contains(body, `<td id="state"><span class="tag ok">running`), body
	})

	code, body = post(t, base, "/groups/"+group+"/rewind", url.Values{"to": {"first"}})
	if code != http.StatusOK || !strings.Contains(body, fmt.Sprintf(`<strong>%d</strong> events will be delivered again`, n)) {
		t.Fatalf("rewind preview: %d, want %d events to replay:\n%s", code, n, body)
	}
	if got := handled.Load(); got != n {
		t.Fatalf("a preview replayed events: %d handled", got)
	}
	code, body = post(t, base, "/groups/"+group+"/rewind", url.Values{"to": {"first"}, "step": {"run"}})
	if code != http.StatusOK || !strings.Contains(body, "Rewound "+group) {
		t.Fatalf("rewind: %d:\n%s", code, body)
	}
	eventually(t, 30*time.Second, "the rewound events handled again", func() (bool, string) {
		return handled.Load() == 2*n, fmt.Sprintf("%d handled", handled.Load())
	})
	// A time an hour ago replays the same; one in the future is refused.
	code, body = post(t, base, "/groups/"+group+"/rewind", url.Values{"to": {"1h"}})
	if code != http.StatusOK || !strings.Contains(body, fmt.Sprintf(`<strong>%d</strong> events will be delivered again`, n)) {
		t.Fatalf("rewind preview to 1h ago: %d:\n%s", code, body)
	}

	for _, tc := range []struct {
		name, path string
		form       url.Values
		code       int
		says       string
	}{
		{"bad pause", "/groups/" + group + "/pause", url.Values{"for": {"forever"}}, http.StatusBadRequest, "want 5m"},
		{"no position", "/groups/" + group + "/rewind", url.Values{}, http.StatusBadRequest, "give first"},
		{"bad position", "/groups/" + group + "/rewind", url.Values{"to": {"yesterday"}}, http.StatusBadRequest, "yesterday"},
		{"future", "/groups/" + group + "/rewind", url.Values{"to": {time.Now().Add(time.Hour).UTC().Format(time.RFC3339)}}, http.StatusBadRequest, "in the future"},
		{"past the end", "/groups/" + group + "/rewind", url.Values{"to": {"seq:99"}}, http.StatusBadRequest, "past the end"},
		{"unknown group", "/groups/" + testenv.Unique("none") + "/pause", url.Values{"for": {"5m"}}, http.StatusNotFound, "no topic has consumers"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := post(t, base, tc.path, tc.form)
			if code != tc.code || !strings.Contains(body, tc.says) {
				t.Fatalf("POST %s %v: %d, want %d saying %q:\n%s", tc.path, tc.form, code, tc.code, tc.says, body)
			}
		})
	}
	if code, body := get(t, base, "/groups/"+testenv.Unique("none")); code != http.StatusNotFound {
		t.Fatalf("unknown group page: %d:\n%s", code, body)
	}
}
