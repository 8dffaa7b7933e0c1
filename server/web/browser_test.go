package web_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/eventstore"
	"github.com/heraldhq/herald/eventstore/memory"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/saga"
	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/servertest"
)

// updateScreenshots, when set, has the browser test write its
// screenshots to docs/img (HERALD_UPDATE_SCREENSHOTS=1 go test -run
// TestBrowser ./server/web).
var updateScreenshots = os.Getenv("HERALD_UPDATE_SCREENSHOTS") != ""

// chromiumPath finds Debian's Chromium, skipping the test without it
// (failing in CI, which installs it).
func chromiumPath(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if testenv.InCI() {
		t.Fatal("no chromium on PATH: CI installs it (apt-get install chromium)")
	}
	t.Skip("no chromium on PATH (apt-get install chromium)")
	return ""
}

// browser is a headless Chromium tab that records console errors,
// uncaught exceptions and failed loads.
type browser struct {
	ctx  context.Context
	mu   sync.Mutex
	errs []string
	done chan struct{}
}

func newBrowser(t *testing.T) *browser {
	t.Helper()
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromiumPath(t)),
		chromedp.NoSandbox, // CI runs as root
		chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900),
		chromedp.UserDataDir(t.TempDir()),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelCtx := chromedp.NewContext(actx)
	ctx, cancelTimeout := context.WithTimeout(ctx, 2*time.Minute)
	b := &browser{ctx: ctx, done: make(chan struct{})}
	if err := chromedp.Do(ctx); err != nil {
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
		t.Fatalf("start chromium: %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		defer close(b.done)
		for m, err := range messages {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.IsException() {
				b.mu.Lock()
				b.errs = append(b.errs, fmt.Sprintf("%s %s:%d %s", m.Type, m.URL, m.Line+1, m))
				b.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancelTimeout()
		cancelCtx()
		cancelAlloc()
		<-b.done
	})
	return b
}

func (b *browser) do(t *testing.T, what string, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(b.ctx, steps...); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

func (b *browser) text(t *testing.T, sel string) string {
	t.Helper()
	s, err := b.tryText(sel)
	if err != nil {
		t.Fatalf("browser: text of %s: %v", sel, err)
	}
	return s
}

// tryText is text for a region htmx replaces while it refreshes: the node
// the query found may be swapped out before its text is read, so a caller
// polling it asks again.
func (b *browser) tryText(sel string) (string, error) {
	return chromedp.Run(b.ctx, chromedp.Text(chromedp.CSS(sel)))
}

// consoleErrors returns and forgets the errors recorded so far.
func (b *browser) consoleErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	errs := b.errs
	b.errs = nil
	return errs
}

// screenshot captures the page; with updateScreenshots it is written to
// docs/img/name.png.
func (b *browser) screenshot(t *testing.T, name string) {
	t.Helper()
	png, err := chromedp.Run(b.ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("browser: screenshot %s: %v", name, err)
	}
	if len(png) < 1000 {
		t.Fatalf("screenshot %s: %d bytes", name, len(png))
	}
	if updateScreenshots {
		if err := os.WriteFile(filepath.Join("..", "..", "docs", "img", name+".png"), png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestBrowser drives Chromium through the dashboard with real data: every
// page loads without console errors, the search finds events by
// correlation id, the schema diff shows the added field, and a redrive
// from the DLQ page gets the events handled.
func TestBrowser(t *testing.T) {
	t.Parallel()
	dbURL, pool := projectionsDB(t)
	srv := servertest.Start(t, server.Config{ProjectionsURL: dbURL})
	base := srv.AdminURL()
	ctx := t.Context()
	orders := connect(t, srv, "orders")
	topic := testenv.Unique("orders")
	corr := testenv.Unique("corr")
	subject := topic + "-value"
	for _, text := range []string{orderV1, orderV2} {
		if _, err := srv.Registry().Register(ctx, subject, schema.Schema{Type: schema.Avro, Text: text}, schema.RegisterOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	billing := runFailingGroup(t, orders, "billing", topic)
	const n = 8
	evs := publish(t, orders, "orders", topic, "shop.order.placed.v1", corr, n)
	eventually(t, 30*time.Second, fmt.Sprintf("%d dead letters", n), func() (bool, string) {
		code, body := get(t, base, "/dlq/"+topic)
		return code == 200 && strings.Count(body, `name="id"`) == n, body
	})
	eventually(t, 30*time.Second, "the audit log to index the events", func() (bool, string) {
		_, body := get(t, base, "/trace/"+corr)
		return strings.Count(body, "shop.order.placed.v1") >= n, body
	})

	// A saga compensated, one waiting, and a projection over 500 events.
	sagas, err := saga.NewKVStore(ctx, srv.Broker().JetStream(), "")
	if err != nil {
		t.Fatal(err)
	}
	eng, err := saga.New(sagas, topicPublisher{orders, testenv.Unique("commands")}, []saga.Definition{checkout()})
	if err != nil {
		t.Fatal(err)
	}
	compensated, waiting := testenv.Unique("order"), testenv.Unique("order")
	for _, id := range []string{compensated, waiting} {
		if err := eng.Start(ctx, "checkout", id, map[string]int{"total": 42}); err != nil {
			t.Fatal(err)
		}
	}
	reply(t, eng, compensated, "reserve", saga.Do, "shop.stock.reserved.v1")
	reply(t, eng, compensated, "charge", saga.Do, "shop.payment.declined.v1")
	reply(t, eng, compensated, "reserve", saga.Undo, "shop.stock.released.v1")
	reply(t, eng, waiting, "reserve", saga.Do, "shop.stock.reserved.v1")
	store := memory.New()
	for i := range 5 {
		evs := make([]*event.Event, 100)
		for j := range evs {
			evs[j] = event.New("orders", fmt.Sprintf("shop.order.t%d.v1", j%3), []byte(`{}`))
		}
		if _, err := store.Append(ctx, fmt.Sprintf("order-%d", i), eventstore.Any, evs...); err != nil {
			t.Fatal(err)
		}
	}
	proj := testenv.SQLName("order_summary_")
	runProjector(t, summaryProjection(t, pool, store, proj))

	b := newBrowser(t)
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	b.do(t, "overview", chromedp.Navigate(base+"/"), chromedp.WaitVisible(css(`a[href="/topics/`+topic+`"]`)))
	if text := b.text(t, "main"); !strings.Contains(text, "billing") {
		t.Fatalf("overview shows no group billing:\n%s", text)
	}
	b.screenshot(t, "dashboard-overview")

	// Search the topic by correlation id through the form. The overview
	// links the topic (waited for above); it is opened by its address, as
	// a click can land on a node the overview's refresh just replaced.
	b.do(t, "search by correlation id",
		chromedp.Navigate(base+"/topics/"+topic),
		chromedp.WaitVisible(chromedp.ID("q")),
		chromedp.SetValue(chromedp.ID("field"), "correlation"),
		chromedp.SendKeys(chromedp.ID("q"), corr),
		chromedp.Submit(chromedp.ID("q")),
		chromedp.WaitVisible(chromedp.ID("results")))
	// Times are rewritten in the viewer's zone by the page's script.
	local, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](
		`document.querySelectorAll("time[data-local]").length > 0 && document.querySelectorAll("time[datetime]:not([data-local])").length === 0`))
	if err != nil || !local {
		t.Fatalf("times were not rewritten in the viewer's zone: %v", err)
	}
	text := b.text(t, "#results")
	for _, e := range evs {
		if !strings.Contains(text, e.ID) {
			t.Fatalf("search by correlation id %s misses event %s:\n%s", corr, e.ID, text)
		}
	}
	b.screenshot(t, "dashboard-topic")
	b.do(t, "open an event", chromedp.Click(css(`#results a`)), chromedp.WaitVisible(css(`pre.payload`)))
	if text := b.text(t, "main"); !strings.Contains(text, "Causation tree") || !strings.Contains(text, corr) {
		t.Fatalf("event page:\n%s", text)
	}
	b.screenshot(t, "dashboard-event")

	// The schema diff shows the added field on the right.
	b.do(t, "schema diff", chromedp.Navigate(base+"/schemas"), chromedp.Click(css(`a[href="/schemas/`+subject+`"]`)),
		chromedp.WaitVisible(css(`table.diff`)))
	added, err := chromedp.Run(b.ctx, chromedp.Evaluate[[]string](
		`Array.from(document.querySelectorAll("table.diff tr.add td.r, table.diff tr.change td.r")).map(td => td.textContent)`))
	if err != nil || !slices.ContainsFunc(added, func(l string) bool { return strings.Contains(l, `"name": "total"`) }) {
		t.Fatalf("schema diff: added lines %q (%v), want the field total among them", added, err)
	}
	removed, err := chromedp.Run(b.ctx, chromedp.Evaluate[string](
		`Array.from(document.querySelectorAll("table.diff td.l")).map(td => td.textContent).join("\n")`))
	if err != nil || strings.Contains(removed, "total") {
		t.Fatalf("schema diff: version 1 shows %q (%v), want no field total", removed, err)
	}
	b.screenshot(t, "dashboard-schema-diff")

	// Fix the handler, then redrive from the DLQ page: every matching,
	// preview, confirm.
	billing.broken.Store(false)
	b.do(t, "dlq page", chromedp.Navigate(base+"/dlq"), chromedp.Click(css(`a[href="/dlq/`+topic+`"]`)),
		chromedp.WaitVisible(chromedp.ID("errors-h")))
	b.screenshot(t, "dashboard-dlq")
	b.do(t, "redrive preview", chromedp.Click(chromedp.ID("all-matching")), chromedp.Click(chromedp.ID("redrive-preview")),
		chromedp.WaitVisible(chromedp.ID("redrive-count")))
	if text := b.text(t, "#redrive-count"); !strings.HasPrefix(text, fmt.Sprintf("%d dead letters would be republished", n)) {
		t.Fatalf("redrive preview says %q, want %d", text, n)
	}
	if got := billing.count(); got != 0 {
		t.Fatalf("the preview redrove: %d handled", got)
	}
	b.do(t, "redrive", chromedp.Click(chromedp.ID("redrive-confirm")), chromedp.WaitVisible(chromedp.ID("redrive-done")))
	if text := b.text(t, "#redrive-done"); !strings.HasPrefix(text, fmt.Sprintf("%d redriven, 0 failed", n)) {
		t.Fatalf("redrive says %q", text)
	}
	eventually(t, 30*time.Second, "the redriven events handled", func() (bool, string) {
		return billing.count() == n, fmt.Sprintf("%d of %d handled", billing.count(), n)
	})

	// The remaining pages, and the overview in dark mode.
	for _, p := range []struct{ path, wait, shot string }{
		{"/groups", `a[href="/groups/billing"]`, "dashboard-groups"},
		{"/groups/billing", `#rewind-preview`, ""},
		{"/dlq", `main h1`, ""},
		{"/trace/" + corr, `ul.tree`, ""},
		{"/sagas", `a[href="/sagas/` + waiting + `"]`, "dashboard-sagas"},
		{"/sagas/" + compensated, `#history`, "dashboard-saga"},
		{"/projections", `a[href="/projections/` + proj + `"]`, ""},
		{"/topology", `div.topology svg`, "dashboard-topology"},
	} {
		b.do(t, p.path, chromedp.Navigate(base+p.path), chromedp.WaitVisible(css(p.wait)))
		if p.shot != "" {
			b.screenshot(t, p.shot)
		}
	}
	// A rebuild from the projection's page, followed to its end by the
	// page's refresh.
	b.do(t, "projection", chromedp.Navigate(base+"/projections/"+proj), chromedp.WaitVisible(chromedp.ID("rebuild-start")))
	b.do(t, "rebuild", chromedp.Click(chromedp.ID("rebuild-start")), chromedp.WaitVisible(css(`p.flash`)))
	eventually(t, time.Minute, "the rebuild done in the page", func() (bool, string) {
		text, err := b.tryText("#live")
		if err != nil {
			return false, "reading the refreshing region: " + err.Error()
		}
		return strings.Contains(text, "Last rebuild") && strings.Contains(text, "500 events applied"), text
	})
	b.screenshot(t, "dashboard-projection")
	if _, err := chromedp.Call(b.ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}}); err != nil {
		t.Fatal(err)
	}
	b.do(t, "dark overview", chromedp.Navigate(base+"/"), chromedp.WaitVisible(css(`a[href="/topics/`+topic+`"]`)))
	b.screenshot(t, "dashboard-overview-dark")
	live, err := chromedp.Run(b.ctx, chromedp.Evaluate[bool](`typeof htmx === "object" && document.querySelector("#live[hx-trigger]") !== null`))
	if err != nil || !live {
		t.Fatalf("htmx did not load, or the overview has no live region: %v", err)
	}

	if errs := b.consoleErrors(); len(errs) > 0 {
		t.Fatalf("console errors:\n%s", strings.Join(errs, "\n"))
	}
}
