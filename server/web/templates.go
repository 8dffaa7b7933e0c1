package web

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/dustin/go-humanize"

	"github.com/heraldhq/herald/projection"
	"github.com/heraldhq/herald/saga"
	"github.com/heraldhq/herald/server/admin"
)

// pages are the templates besides the layout, one per page.
var pages = []string{"error", "overview", "topic", "event", "trace", "dlqs", "dlq", "redrive", "groups", "group", "schemas", "subject", "topology", "sagas", "saga", "projections", "projection"}

func parseTemplates() (map[string]*template.Template, error) {
	out := make(map[string]*template.Template, len(pages))
	for _, name := range pages {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", path.Join("templates", name+".html"))
		if err != nil {
			return nil, fmt.Errorf("web: template %s: %w", name, err)
		}
		out[name] = t
	}
	return out, nil
}

var funcs = template.FuncMap{
	"ltime":  localTime,
	"bytes":  func(n uint64) string { return humanize.IBytes(n) },
	"count":  func(n uint64) string { return humanize.Comma(int64(n)) },
	"spark":  sparkline,
	"pretty": prettyJSON,
	"seconds": func(s float64) string {
		return (time.Duration(s * float64(time.Second))).Round(time.Millisecond).String()
	},
	"topicURL": func(topic string) string { return link(nil, "topics", topic) },
	"eventURL": func(topic string, seq uint64) string {
		return link(nil, "topics", topic, "events", strconv.FormatUint(seq, 10))
	},
	"dlqURL":    func(topic string) string { return link(nil, "dlq", topic) },
	"groupURL":  func(group string) string { return link(nil, "groups", group) },
	"traceURL":  func(corr string) string { return link(nil, "trace", corr) },
	"schemaURL": func(subject string) string { return link(nil, "schemas", subject) },
	"diffURL": func(subject string, a, b int) string {
		return link(url.Values{"a": {strconv.Itoa(a)}, "b": {strconv.Itoa(b)}}, "schemas", subject)
	},
	"searchURL": func(topic, field, q string) string {
		return link(url.Values{"field": {field}, "q": {q}}, "topics", topic)
	},
	"dlqFilterURL":    func(topic, filter string) string { return link(url.Values{"filter": {filter}}, "dlq", topic) },
	"sagaURL":         sagaURL,
	"projectionURL":   func(name string) string { return link(nil, "projections", name) },
	"rebuildPercent":  rebuildPercent,
	"sagaState":       sagaState,
	"projectionState": projectionState,
	"outcome":         outcome,
	"since":           func(now, t time.Time) string { return now.Sub(t).Round(time.Second).String() },
	"breaker":         breakerSummary,
	"breakerState":    breakerState,
	"add":             func(a, b int) int { return a + b },
	"u64":             func(n int) uint64 { return uint64(max(n, 0)) },
	"truncate": func(s string, n int) string {
		if len(s) <= n {
			return s
		}
		return s[:n] + "…"
	},
}

// breakerSummary says how many of a group's instances have their breaker
// open or half-open, or that all are closed.
func breakerSummary(g *admin.GroupBreakers) template.HTML {
	n := len(g.Instances)
	switch {
	case g.Open > 0:
		return tag("bad", fmt.Sprintf("open on %d of %d", g.Open, n))
	case g.HalfOpen > 0:
		return tag("warn", fmt.Sprintf("half-open on %d of %d", g.HalfOpen, n))
	}
	return tag("ok", fmt.Sprintf("closed on %d", n))
}

// tag renders text as a tag of class ("": a plain tag).
func tag(class, text string) template.HTML {
	if class != "" {
		class = " " + class
	}
	return template.HTML(`<span class="tag` + class + `">` + template.HTMLEscapeString(text) + `</span>`)
}

// breakerState renders one instance's breaker state as a tag.
func breakerState(state string) template.HTML {
	class := "ok"
	switch state {
	case "open":
		class = "bad"
	case "half-open":
		class = "warn"
	}
	return tag(class, state)
}

// localTime renders t as a <time> element in UTC; the page's script
// rewrites it in the viewer's zone.
func localTime(t time.Time) template.HTML {
	if t.IsZero() {
		return "—"
	}
	t = t.UTC()
	return template.HTML(fmt.Sprintf(`<time datetime="%s">%s</time>`,
		t.Format(time.RFC3339Nano), template.HTMLEscapeString(t.Format("2006-01-02 15:04:05 UTC"))))
}

// sparkline draws counts as a small inline SVG polyline.
func sparkline(counts []uint64) template.HTML {
	const w, h = 120, 24
	if len(counts) == 0 {
		return ""
	}
	var peak uint64
	for _, c := range counts {
		peak = max(peak, c)
	}
	var pts strings.Builder
	for i, c := range counts {
		x := 0.0
		if len(counts) > 1 {
			x = float64(i) * w / float64(len(counts)-1)
		}
		y := float64(h - 1)
		if peak > 0 {
			y = float64(h-1) - float64(c)*float64(h-2)/float64(peak)
		}
		fmt.Fprintf(&pts, "%.1f,%.1f ", x, y)
	}
	var total uint64
	for _, c := range counts {
		total += c
	}
	return template.HTML(fmt.Sprintf(`<svg class="spark" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="%d messages, peak %d per window"><polyline fill="none" stroke="currentColor" stroke-width="1.5" points="%s"/></svg>`,
		w, h, w, h, total, peak, strings.TrimSpace(pts.String())))
}

// prettyJSON indents b when it is JSON, else describes it.
func prettyJSON(b []byte) string {
	if len(b) == 0 {
		return "(empty)"
	}
	var out bytes.Buffer
	if json.Valid(b) {
		if err := json.Indent(&out, b, "", "  "); err == nil {
			return out.String()
		}
	}
	return describeBinary(b)
}

func describeBinary(b []byte) string {
	n := min(len(b), 256)
	var s strings.Builder
	fmt.Fprintf(&s, "(%d bytes, not JSON; first %d in hex)\n", len(b), n)
	for i := 0; i < n; i += 16 {
		fmt.Fprintf(&s, "%04x  % x\n", i, b[i:min(i+16, n)])
	}
	return s.String()
}

// sagaState tags a saga state by how it went.
func sagaState(s saga.State) template.HTML {
	class := ""
	switch s {
	case saga.Completed:
		class = "ok"
	case saga.Compensating, saga.Compensated:
		class = "warn"
	case saga.Failed:
		class = "bad"
	}
	return tag(class, string(s))
}

// projectionState tags a projection state.
func projectionState(s projection.State) template.HTML {
	class := ""
	switch s {
	case projection.StateRunning:
		class = "ok"
	case projection.StateRebuilding, projection.StateStopped:
		class = "warn"
	case projection.StateFailed:
		class = "bad"
	}
	return tag(class, string(s))
}

// outcome colours a saga command's outcome.
func outcome(o string) template.HTML {
	class := ""
	switch o {
	case "done", "compensated":
		class = "ok"
	case "failed", "timeout":
		class = "bad"
	case "":
		return "—"
	}
	return template.HTML(`<span class="` + class + `">` + template.HTMLEscapeString(o) + `</span>`)
}
