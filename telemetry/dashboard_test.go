package telemetry_test

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/telemetry"
)

const dashboardPath = "../deploy/grafana/herald.json"

// registered returns every metric telemetry exports, by name, with its
// label names: what a PromQL expression may select. Histograms are listed
// by their _bucket (with le), _sum and _count series.
func registered(t *testing.T) map[string]map[string]bool {
	t.Helper()
	reg := prometheus.NewRegistry()
	m, err := telemetry.NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	// Touch every code path so every family has a series to gather.
	d := msg("orders", "billing", "order.placed", 2, time.Second)
	m.Received(d)
	m.Settled(d, consumer.OutcomeAck, nil, time.Millisecond)
	_, done := m.Before(context.Background(), []*event.Event{d.Event}, []string{"orders"})
	done(nil)
	m.BreakerObserver("billing")
	bc, err := telemetry.NewBrokerCollector(&fixedStats{
		groups: []telemetry.GroupStats{{Topic: "orders", Group: "billing", Pending: 1}},
		topics: []telemetry.TopicStats{{Topic: "orders", Messages: 1}, {Topic: "orders.dlq", Messages: 1, IsDLQ: true}},
	})
	if err != nil {
		t.Fatal(err)
	}
	reg.MustRegister(bc)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]map[string]bool{}
	add := func(name string, labels map[string]bool) {
		if out[name] == nil {
			out[name] = map[string]bool{}
		}
		for l := range labels {
			out[name][l] = true
		}
	}
	for _, mf := range mfs {
		labels := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = true
			}
		}
		if mf.GetType() == dto.MetricType_HISTOGRAM {
			add(mf.GetName()+"_sum", labels)
			add(mf.GetName()+"_count", labels)
			labels["le"] = true
			add(mf.GetName()+"_bucket", labels)
			continue
		}
		add(mf.GetName(), labels)
	}
	return out
}

// queries returns every PromQL expression in the dashboard (panel targets
// and template variable queries), keyed by where it is.
func queries(v any, where string, out map[string]string) {
	switch v := v.(type) {
	case map[string]any:
		title, _ := v["title"].(string)
		if title == "" {
			title, _ = v["name"].(string)
		}
		if title != "" {
			where += "/" + title
		}
		for k, c := range v {
			switch {
			case k == "expr":
				if s, ok := c.(string); ok {
					out[where+"/"+stringOr(v["refId"], "?")] = s
				}
			case k == "query" && v["definition"] != nil:
				// A template variable: its query is a string or an object.
				if s, ok := c.(string); ok {
					out[where+"/query"] = s
				} else if o, ok := c.(map[string]any); ok {
					out[where+"/query"] = stringOr(o["query"], "")
				}
			default:
				queries(c, where, out)
			}
		}
	case []any:
		for _, c := range v {
			queries(c, where, out)
		}
	}
}

func stringOr(v any, def string) string {
	if s, ok := v.(string); ok {
		return s
	}
	return def
}

var (
	// selectorRe finds a metric name and its label matchers, if any.
	selectorRe = regexp.MustCompile(`\b(herald_[a-zA-Z0-9_]+)(\{([^}]*)\})?`)
	matcherRe  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)`)
	byRe       = regexp.MustCompile(`\b(?:by|without)\s*\(([^)]*)\)`)
	wordRe     = regexp.MustCompile(`\b[a-zA-Z_:][a-zA-Z0-9_:]*\b`)
)

// TestDashboard keeps deploy/grafana/herald.json in step with the metrics:
// every expression selects only metrics telemetry registers, by labels
// they have, and every panel the operators need is there.
func TestDashboard(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash map[string]any
	if err := json.Unmarshal(raw, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if v, _ := dash["schemaVersion"].(float64); v < 36 {
		t.Errorf("schemaVersion %v, want >= 36", dash["schemaVersion"])
	}
	var hasInput bool
	inputs, _ := dash["__inputs"].([]any)
	for _, in := range inputs {
		in, _ := in.(map[string]any)
		if in["name"] == "DS_PROMETHEUS" && in["type"] == "datasource" && in["pluginId"] == "prometheus" {
			hasInput = true
		}
	}
	if !hasInput {
		t.Error("no DS_PROMETHEUS datasource input")
	}

	panels, _ := dash["panels"].([]any)
	titles := map[string]bool{}
	for _, p := range panels {
		p, _ := p.(map[string]any)
		title, _ := p["title"].(string)
		titles[title] = true
		if p["type"] == "row" {
			continue
		}
		ds, _ := p["datasource"].(map[string]any)
		if ds["uid"] != "${DS_PROMETHEUS}" {
			t.Errorf("panel %q: datasource %v, want ${DS_PROMETHEUS}", title, p["datasource"])
		}
		if targets, _ := p["targets"].([]any); len(targets) == 0 {
			t.Errorf("panel %q has no query", title)
		}
	}
	for _, want := range []string{
		"Publish rate", "Consume rate by outcome", "Handler duration p50 / p95 / p99", "End-to-end latency p99",
		"Consumer lag (messages)", "Consumer lag (seconds)", "DLQ depth", "Circuit breakers", "Redeliveries",
	} {
		if !titles[want] {
			t.Errorf("no panel %q", want)
		}
	}

	known := registered(t)
	exprs := map[string]string{}
	queries(dash, "", exprs)
	if len(exprs) < 15 {
		t.Fatalf("found %d expressions; the walk over the dashboard is broken", len(exprs))
	}
	used := map[string]bool{}
	for where, expr := range exprs {
		labelsHere := map[string]bool{"le": strings.Contains(expr, "_bucket")}
		sels := selectorRe.FindAllStringSubmatch(expr, -1)
		if len(sels) == 0 {
			t.Errorf("%s: %q selects no herald_ metric", where, expr)
		}
		for _, s := range sels {
			name := s[1]
			labels, ok := known[name]
			if !ok {
				t.Errorf("%s: %q uses %s, which telemetry does not export", where, expr, name)
				continue
			}
			used[name] = true
			for l := range labels {
				labelsHere[l] = true
			}
			for _, mm := range matcherRe.FindAllStringSubmatch(s[3], -1) {
				if !labels[mm[1]] {
					t.Errorf("%s: %s has no label %q", where, name, mm[1])
				}
			}
		}
		for _, by := range byRe.FindAllStringSubmatch(expr, -1) {
			for _, l := range wordRe.FindAllString(by[1], -1) {
				if !labelsHere[l] {
					t.Errorf("%s: groups by %q, which none of its metrics has", where, l)
				}
			}
		}
		// label_values(metric, label) in template variables.
		if strings.HasPrefix(expr, "label_values(") {
			args := strings.TrimSuffix(strings.TrimPrefix(expr, "label_values("), ")")
			l := strings.TrimSpace(args[strings.LastIndex(args, ",")+1:])
			if !labelsHere[l] {
				t.Errorf("%s: label_values of %q, which its metric lacks", where, l)
			}
		}
	}
	for _, name := range []string{
		"herald_published_total", "herald_consumed_total", "herald_handler_duration_seconds_bucket",
		"herald_end_to_end_latency_seconds_bucket", "herald_consumer_pending_messages",
		"herald_consumer_inflight_messages", "herald_consumer_lag_seconds", "herald_dlq_depth_messages",
		"herald_breaker_state", "herald_redeliveries_total",
	} {
		if !used[name] {
			t.Errorf("the dashboard does not show %s", name)
		}
	}
}
