package web_test

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/servertest"
)

// TestDLQPage groups dead letters by error, filters them, previews and
// performs a redrive after the handler is fixed, refuses a purge without
// confirmation and reports a redrive that races a purge.
func TestDLQPage(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.Config{})
	base := srv.AdminURL()
	c := connect(t, srv, "orders")
	topic := testenv.Unique("orders")
	g := runFailingGroup(t, c, "billing", topic)
	const n = 10
	publish(t, c, "orders", topic, "shop.order.placed.v1", "", n)
	eventually(t, 30*time.Second, fmt.Sprintf("%d dead letters on the DLQ page", n), func() (bool, string) {
		code, body := get(t, base, "/dlq/"+topic)
		return code == http.StatusOK && strings.Count(body, `name="id"`) == n, body
	})

	code, body := get(t, base, "/dlq")
	if code != http.StatusOK || !strings.Contains(body, `href="/dlq/`+topic+`"`) {
		t.Fatalf("dlq list: %d:\n%s", code, body)
	}
	code, body = get(t, base, "/dlq/"+topic)
	errs := section(body, `id="errors-h"`)
	if code != http.StatusOK || !regexp.MustCompile(`>5</td><td><a [^>]*>[^<]*payment service down`).MatchString(errs) ||
		!regexp.MustCompile(`>5</td><td><a [^>]*>[^<]*card declined`).MatchString(errs) {
		t.Fatalf("dlq page: %d, want 5 and 5 under the two errors:\n%s", code, errs)
	}
	code, body = get(t, base, "/dlq/"+topic+"?"+url.Values{"filter": {"error=*card declined"}}.Encode())
	if code != http.StatusOK || strings.Count(body, `name="id"`) != n/2 || !strings.Contains(body, "5 matching the filter") {
		t.Fatalf("filtered dlq page: %d, want 5 entries:\n%s", code, body)
	}
	code, body = get(t, base, "/dlq/"+topic+"?"+url.Values{"filter": {"colour=red"}}.Encode())
	if code != http.StatusBadRequest || !strings.Contains(body, "colour") {
		t.Fatalf("bad filter: %d, want 400 naming the key:\n%s", code, body)
	}

	// Fix the handler, preview the redrive of the "card declined" ones,
	// then run it.
	g.broken.Store(false)
	code, body = post(t, base, "/dlq/"+topic+"/redrive", url.Values{"filter": {"error=*card declined"}, "all": {"1"}})
	if code != http.StatusOK || !strings.Contains(body, `<strong>5</strong> dead letters would be republished`) {
		t.Fatalf("redrive preview: %d, want a count of 5:\n%s", code, body)
	}
	ids := regexp.MustCompile(`name="id" value="([^"]+)"`).FindAllStringSubmatch(body, -1)
	if len(ids) != 5 {
		t.Fatalf("redrive preview confirms %d ids, want 5:\n%s", len(ids), body)
	}
	if got := g.count(); got != 0 {
		t.Fatalf("a preview redrove: %d handled", got)
	}
	form := url.Values{"filter": {"error=*card declined"}, "step": {"run"}}
	for _, m := range ids {
		form.Add("id", m[1])
	}
	code, body = post(t, base, "/dlq/"+topic+"/redrive", form)
	if code != http.StatusOK || !strings.Contains(body, `<strong>5</strong> redriven, 0 failed`) {
		t.Fatalf("redrive: %d:\n%s", code, body)
	}
	eventually(t, 30*time.Second, "the 5 redriven events handled", func() (bool, string) {
		return g.count() == 5, fmt.Sprintf("%d handled", g.count())
	})
	code, body = get(t, base, "/dlq/"+topic)
	if code != http.StatusOK || strings.Count(body, `name="id"`) != 5 || strings.Contains(section(body, `id="errors-h"`), "card declined") {
		t.Fatalf("dlq page after the redrive: %d, want the 5 others left:\n%s", code, body)
	}

	// A redrive that races a purge: select the rest, purge, then run.
	rest := regexp.MustCompile(`name="id" value="([^"]+)"`).FindAllStringSubmatch(body, -1)
	code, body = post(t, base, "/dlq/"+topic+"/purge", url.Values{"confirm": {"yes"}})
	if code != http.StatusBadRequest || !strings.Contains(body, "confirm with the topic name") || strings.Count(body, `name="id"`) != 5 {
		t.Fatalf("purge without the right confirmation: %d, want 400 and nothing purged:\n%s", code, body)
	}
	code, body = post(t, base, "/dlq/"+topic+"/purge", url.Values{"confirm": {topic}})
	if code != http.StatusOK || !strings.Contains(body, "Purged 5 dead letters") {
		t.Fatalf("purge: %d:\n%s", code, body)
	}
	form = url.Values{"step": {"run"}}
	for _, m := range rest {
		form.Add("id", m[1])
	}
	code, body = post(t, base, "/dlq/"+topic+"/redrive", form)
	if code != http.StatusNotFound || !strings.Contains(body, "not found (redriven or purged?)") || !strings.Contains(body, `href="/dlq/`+topic+`"`) {
		t.Fatalf("redrive after a purge: %d, want 404 saying the entries are gone, linking back:\n%s", code, body)
	}

	for _, tc := range []struct {
		name string
		form url.Values
		says string
	}{
		{"nothing selected", url.Values{}, "no dead letters selected"},
		{"bad id", url.Values{"id": {"nonsense"}}, "nonsense"},
		{"other topic", url.Values{"id": {"other.dlq:1"}}, "is not in"},
		{"bad step", url.Values{"all": {"1"}, "step": {"now"}}, "step"},
		{"bad limit", url.Values{"all": {"1"}, "limit": {"x"}}, "limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := post(t, base, "/dlq/"+topic+"/redrive", tc.form)
			if code != http.StatusBadRequest || !strings.Contains(body, tc.says) {
				t.Fatalf("redrive %v: %d, want 400 saying %q:\n%s", tc.form, code, tc.says, body)
			}
		})
	}
	if code, body := get(t, base, "/dlq/"+testenv.Unique("none")); code != http.StatusNotFound {
		t.Fatalf("dlq of an unknown topic: %d:\n%s", code, body)
	}
	// A cross-site form post is refused by the admin listener's guard.
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, base+"/dlq/"+topic+"/purge", strings.NewReader("confirm="+topic))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if code, body := do(t, req); code != http.StatusForbidden {
		t.Fatalf("cross-site purge: %d, want 403:\n%s", code, body)
	}
}

// section cuts the part of a page from marker to the end of its section.
func section(body, marker string) string {
	_, rest, ok := strings.Cut(body, marker)
	if !ok {
		return ""
	}
	s, _, _ := strings.Cut(rest, "</section>")
	return s
}
