package web_test

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/servertest"
)

// TestOverviewTopicEventPages loads the read-only pages with real data
// and checks what they show, and that bad input gets a clear page.
func TestOverviewTopicEventPages(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.Config{})
	base := srv.AdminURL()
	c := connect(t, srv, "orders")
	topic := testenv.Unique("orders")
	corr := testenv.Unique("corr")
	evs := publish(t, c, "orders", topic, "shop.order.placed.v1", corr, 5)
	publish(t, c, "orders", topic, "shop.order.cancelled.v1", "", 2)

	code, body := get(t, base, "/")
	if code != http.StatusOK || !strings.Contains(body, `href="/topics/`+topic+`"`) || !strings.Contains(body, "<svg class=\"spark\"") ||
		!strings.Contains(body, `aria-label="7 messages`) {
		t.Fatalf("overview: %d, want the topic with a sparkline of its 7 messages:\n%s", code, body)
	}

	code, body = get(t, base, "/topics/"+topic)
	if code != http.StatusOK || strings.Count(body, "shop.order.placed.v1") != 5 || strings.Count(body, "shop.order.cancelled.v1") != 2 {
		t.Fatalf("topic page: %d, want 5 placed and 2 cancelled events:\n%s", code, body)
	}

	// The audit log indexes in the background: wait for the search to
	// find the correlation id.
	var found string
	eventually(t, 30*time.Second, "the search by correlation id to find the 5 events", func() (bool, string) {
		code, found = get(t, base, "/topics/"+topic+"?"+url.Values{"field": {"correlation"}, "q": {corr}}.Encode())
		found = results(found)
		return code == http.StatusOK && strings.Count(found, `/events/`) == 5, found
	})
	for _, e := range evs {
		if !strings.Contains(found, e.ID) {
			t.Fatalf("search by correlation id misses event %s:\n%s", e.ID, found)
		}
	}
	code, body = get(t, base, "/topics/"+topic+"?"+url.Values{"field": {"id"}, "q": {evs[2].ID}}.Encode())
	if body = results(body); code != http.StatusOK || !strings.Contains(body, evs[2].ID) || strings.Count(body, "/events/") != 1 {
		t.Fatalf("search by id: %d, want only %s:\n%s", code, evs[2].ID, body)
	}
	code, body = get(t, base, "/topics/"+topic+"?"+url.Values{"field": {"header"}, "q": {"ce-subject=o-3"}}.Encode())
	if body = results(body); code != http.StatusOK || !strings.Contains(body, evs[3].ID) || strings.Count(body, "/events/") != 1 {
		t.Fatalf("search by header: %d, want %s:\n%s", code, evs[3].ID, body)
	}

	code, body = get(t, base, "/topics/"+topic+"/events/1")
	if code != http.StatusOK || !strings.Contains(body, evs[0].ID) || !strings.Contains(body, "&#34;total&#34;: 100") ||
		!strings.Contains(body, "Causation tree") || !strings.Contains(body, "Delivery history") {
		t.Fatalf("event page: %d, want the envelope, pretty payload, history and tree of %s:\n%s", code, evs[0].ID, body)
	}
	code, body = get(t, base, "/trace/"+url.PathEscape(corr))
	if code != http.StatusOK || strings.Count(body, "shop.order.placed.v1") != 5 {
		t.Fatalf("trace page: %d:\n%s", code, body)
	}

	for _, tc := range []struct {
		name, path string
		code       int
		says       string
	}{
		{"unknown topic", "/topics/" + testenv.Unique("nope"), http.StatusNotFound, "not found"},
		{"bad sequence", "/topics/" + topic + "/events/abc", http.StatusBadRequest, "want a positive sequence number"},
		{"gone event", "/topics/" + topic + "/events/999", http.StatusNotFound, "has no message 999"},
		{"bad field", "/topics/" + topic + "?field=bogus&q=x", http.StatusBadRequest, "search field &#34;bogus&#34;"},
		{"bad header search", "/topics/" + topic + "?field=header&q=nothing", http.StatusBadRequest, "want NAME=VALUE"},
		{"empty search", "/topics/" + topic + "?field=id&q=", http.StatusBadRequest, "type something"},
		{"bad before", "/topics/" + topic + "?before=-1", http.StatusBadRequest, "before"},
		{"unknown trace", "/trace/" + testenv.Unique("none"), http.StatusNotFound, "no events with correlation id"},
		{"unknown page", "/nothing/here", http.StatusNotFound, "no dashboard page"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := get(t, base, tc.path)
			if code != tc.code || !strings.Contains(body, tc.says) || !strings.Contains(body, "<!doctype html>") {
				t.Fatalf("GET %s: %d, want %d saying %q in a page:\n%s", tc.path, code, tc.code, tc.says, body)
			}
		})
	}

	code, body = get(t, base, "/static/htmx.min.js")
	if code != http.StatusOK || !strings.Contains(body, "htmx") {
		t.Fatalf("htmx: %d", code)
	}
}

// results cuts the search results out of a topic page.
func results(body string) string {
	_, rest, ok := strings.Cut(body, `id="results"`)
	if !ok {
		return ""
	}
	res, _, _ := strings.Cut(rest, "</section>")
	return res
}
