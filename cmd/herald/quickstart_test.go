package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testenv"
)

// quickStartLines returns the commands of the README's quick start: the
// lines of the sh block between the quickstart markers.
func quickStartLines(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(b), "<!-- quickstart -->")
	block, _, ok2 := strings.Cut(rest, "<!-- /quickstart -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no <!-- quickstart --> ... <!-- /quickstart --> block")
	}
	var lines []string
	for _, l := range strings.Split(block, "\n") {
		l = strings.TrimSpace(l)
		if l != "" && !strings.HasPrefix(l, "```") {
			lines = append(lines, l)
		}
	}
	return lines
}

// TestReadmeQuickStart runs the README's quick-start lines, as a shell
// would, against `herald dev` with `herald` on the PATH, and checks what
// each prints. Lines that set ORDERS and ID stand for what the reader
// copies from the output; the test sets them from the same output.
func TestReadmeQuickStart(t *testing.T) {
	t.Parallel()
	testenv.Need(t, "PostgreSQL", testenv.HostPort(testenv.PostgresURL))
	_, stateFile, logs := startHerald(t, "dev", "--rate", "2", "--postgres", testenv.PostgresURL)
	apiLine := regexp.MustCompile(`Order API: (http://\S+)`)
	var orders string
	poll(t, "herald dev to print the order API", func() (bool, string) {
		if m := apiLine.FindStringSubmatch(logs.String()); m != nil {
			orders = m[1]
			return true, ""
		}
		return false, logs.String()
	})
	env := []string{"HERALD_STATE_FILE=" + stateFile, "PATH=" + filepath.Dir(heraldBin) + string(os.PathListSeparator) + os.Getenv("PATH"), "ORDERS=" + orders}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "HERALD_") && !strings.HasPrefix(e, "PATH=") {
			env = append(env, e)
		}
	}
	run := func(line string) (string, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "sh", "-c", line)
		cmd.Env = env
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		if err != nil {
			return out.String() + errb.String(), err
		}
		return out.String(), nil
	}
	// until runs line until check accepts its output (the shop moves on
	// in the background), for at most a minute.
	until := func(line, what string, check func(out string) bool) string {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			out, err := run(line)
			if err == nil && check(out) {
				return out
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s\n  want: %s\n  last output (%v):\n%s\nherald dev:\n%s", line, what, err, out, logs)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	var id string
	lines := quickStartLines(t)
	if len(lines) < 8 {
		t.Fatalf("the quick start has %d lines: %q", len(lines), lines)
	}
	for _, line := range lines {
		switch {
		case strings.HasPrefix(line, "ORDERS="), strings.HasPrefix(line, "ID="):
			// set from herald dev's output and the order placed
		case strings.HasPrefix(line, "curl -s -X POST"):
			out, err := run(line)
			var p struct{ ID, CorrelationID, Status string }
			if err != nil || json.Unmarshal([]byte(strings.ReplaceAll(out, "correlation_id", "correlationid")), &p) != nil ||
				!strings.HasPrefix(p.ID, "o-") || p.CorrelationID != "checkout-"+strings.TrimPrefix(p.ID, "o-") || p.Status != "placed" {
				t.Fatalf("%s: %v\n%s", line, err, out)
			}
			id = strings.TrimPrefix(p.ID, "o-")
			env = append(env, "ID="+id)
		case strings.Contains(line, "/orders/o-$ID"):
			until(line, "the order's summary, shipped or cancelled", func(out string) bool {
				var s struct{ ID, Status string }
				return json.Unmarshal([]byte(out), &s) == nil && s.ID == "o-"+id && (s.Status == "shipped" || s.Status == "cancelled")
			})
		case strings.Contains(line, "status=cancelled"):
			until(line, "cancelled orders with their reason", func(out string) bool {
				var list []struct{ Status, Reason string }
				return json.Unmarshal([]byte(out), &list) == nil && len(list) > 0 && list[0].Status == "cancelled" && list[0].Reason != ""
			})
		case strings.HasPrefix(line, "herald saga show"):
			until(line, "the finished saga with its steps", func(out string) bool {
				return strings.Contains(out, "checkout-"+id) && (strings.Contains(out, ": completed") || strings.Contains(out, ": compensated")) &&
					strings.Contains(out, "reserve") && strings.Contains(out, "charge")
			})
		case strings.HasPrefix(line, "herald audit --correlation"):
			until(line, "the checkout's events, placed to shipped or cancelled", func(out string) bool {
				return strings.Contains(out, "shop.order.placed.v1") && strings.Contains(out, "shop.stock.reserve.v1") &&
					(strings.Contains(out, "shop.order.shipped.v1") || strings.Contains(out, "shop.order.cancelled.v1"))
			})
		case strings.HasPrefix(line, "herald trace"):
			until(line, "the checkout's causation tree", func(out string) bool {
				return strings.Contains(out, "correlation checkout-"+id) && strings.Contains(out, "shop.order.placed.v1") && strings.Contains(out, "└─ ")
			})
		case strings.HasPrefix(line, "herald sub"):
			until(line, "three events of shop.orders", func(out string) bool {
				return strings.Count(strings.TrimSpace(out), "\n") == 2 && strings.Contains(out, "shop.order.placed.v1")
			})
		case strings.HasPrefix(line, "herald dlq list"):
			until(line, "the SMS notifier's dead letters", func(out string) bool {
				return regexp.MustCompile(`shop\.orders\s+shop\.orders\.dlq\s+[1-9]`).MatchString(out)
			})
		case strings.HasPrefix(line, "herald dlq redrive"):
			until(line, "dead letters redriven", func(out string) bool { return regexp.MustCompile(`redriven`).MatchString(out) })
		case strings.HasPrefix(line, "herald lag"):
			until(line, "the shop's groups", func(out string) bool {
				return strings.Contains(out, "notify-sms") && strings.Contains(out, "payments") && strings.Contains(out, "order-saga")
			})
		default:
			t.Fatalf("the quick start has a line this test does not check: %q", line)
		}
	}
}
