package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testenv"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/server/admin"
	"github.com/heraldhq/herald/server/audit"
)

// herald runs the CLI against p's admin API and fails the test on error.
func (p *proc) herald(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := runHerald(t, stdin, append(args, "--admin-url", p.state.AdminURL)...)
	if err != nil {
		t.Fatalf("herald %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// heraldErr runs the CLI expecting it to fail, and returns its stderr.
func (p *proc) heraldErr(t *testing.T, stdin string, args ...string) string {
	t.Helper()
	out, errOut, err := runHerald(t, stdin, append(args, "--admin-url", p.state.AdminURL)...)
	if err == nil {
		t.Fatalf("herald %s succeeded, want an error; stdout: %s", strings.Join(args, " "), out)
	}
	if strings.Contains(errOut, "panic") {
		t.Fatalf("panic: %s", errOut)
	}
	return errOut
}

// poll runs cond every 50ms until it holds or 30s pass.
func poll(t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; last state: %s", what, state)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func connect(t *testing.T, p *proc) *herald.Client {
	t.Helper()
	c, err := herald.Connect(t.Context(), herald.Config{URL: p.state.NATSURL, Source: "cli-test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// runRouter runs r until the test ends.
func runRouter(t *testing.T, r *consumer.Router) {
	t.Helper()
	testenv.RunRouter(t, r)
}

func publish(t *testing.T, c *herald.Client, topic, typ string, n int, corr string) []*event.Event {
	t.Helper()
	evs := make([]*event.Event, n)
	for i := range evs {
		e := event.New("cli-test", typ, []byte(fmt.Sprintf(`{"n":%d}`, i)))
		e.Subject = fmt.Sprintf("s-%d", i)
		e.DataContentType = "application/json"
		e.CorrelationID = corr
		evs[i] = e
	}
	if err := c.PublishTo(t.Context(), topic, evs...); err != nil {
		t.Fatal(err)
	}
	return evs
}

func TestDLQCommands(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir())
	c := connect(t, p)
	var broken atomic.Bool
	broken.Store(true)
	var handled atomic.Int64
	r, err := c.Router("billing", []string{"orders"}, consumer.WithoutRetry(), consumer.WithStart(broker.FromFirst))
	if err != nil {
		t.Fatal(err)
	}
	r.HandleAll(func(ctx context.Context, m *consumer.Message) error {
		if broken.Load() {
			return errors.New("card processor unreachable")
		}
		handled.Add(1)
		return nil
	})
	runRouter(t, r)
	publish(t, c, "orders", "shop.order.placed.v1", 5, "")

	var dlqs []admin.DLQ
	poll(t, "5 dead letters", func() (bool, string) {
		out := p.herald(t, "", "dlq", "list", "-o", "json")
		dlqs = nil
		_ = json.Unmarshal([]byte(out), &dlqs)
		return len(dlqs) == 1 && dlqs[0].Depth == 5, out
	})
	if out := p.herald(t, "", "dlq", "list"); !strings.Contains(out, "orders.dlq") || !strings.Contains(out, "DEPTH") {
		t.Fatalf("dlq list:\n%s", out)
	}
	out := p.herald(t, "", "dlq", "list", "--topic", "orders")
	if strings.Count(out, "orders.dlq:") != 5 || !strings.Contains(out, "card processor unreachable") || !strings.Contains(out, "billing") {
		t.Fatalf("dlq list --topic:\n%s", out)
	}
	var page admin.EntryPage
	if err := json.Unmarshal([]byte(p.herald(t, "", "dlq", "list", "--topic", "orders", "--limit", "2", "-o", "json")), &page); err != nil {
		t.Fatal(err)
	}
	if len(page.Entries) != 2 || page.Next == "" {
		t.Fatalf("page %+v", page)
	}
	out = p.herald(t, "", "dlq", "show", page.Entries[0].ID)
	for _, want := range []string{"card processor unreachable", "group:", "billing", page.Entries[0].EventID, `"n": `, "ce-type: shop.order.placed.v1"} {
		if !strings.Contains(out, want) {
			t.Fatalf("dlq show lacks %q:\n%s", want, out)
		}
	}

	out = p.herald(t, "", "dlq", "redrive", "--topic", "orders", "--filter", "type=shop.order.*,error~=unreachable", "--dry-run")
	if !strings.Contains(out, "would redrive 5") {
		t.Fatalf("dry run:\n%s", out)
	}
	broken.Store(false)
	out = p.herald(t, "", "dlq", "redrive", "--topic", "orders")
	if !strings.Contains(out, "redrove 5 of 5") {
		t.Fatalf("redrive:\n%s", out)
	}
	poll(t, "5 events handled after the redrive", func() (bool, string) {
		return handled.Load() == 5, fmt.Sprint(handled.Load())
	})
	if out := p.herald(t, "", "dlq", "redrive", "--topic", "orders"); !strings.Contains(out, "redrove 0 of 0") {
		t.Fatalf("second redrive:\n%s", out)
	}

	// Purge asks for the topic's name.
	broken.Store(true)
	publish(t, c, "orders", "shop.order.placed.v1", 2, "")
	poll(t, "2 new dead letters", func() (bool, string) {
		out := p.herald(t, "", "dlq", "list", "-o", "json")
		dlqs = nil
		_ = json.Unmarshal([]byte(out), &dlqs)
		return len(dlqs) == 1 && dlqs[0].Depth == 2, out
	})
	if e := p.heraldErr(t, "payments\n", "dlq", "purge", "--topic", "orders"); !strings.Contains(e, "purge cancelled") {
		t.Fatalf("purge with the wrong name: %s", e)
	}
	if e := p.heraldErr(t, "", "dlq", "purge", "--topic", "orders"); !strings.Contains(e, "--yes") {
		t.Fatalf("purge without an answer: %s", e)
	}
	if out := p.herald(t, "orders\n", "dlq", "purge", "--topic", "orders"); !strings.Contains(out, "purged 2 dead letters from orders.dlq") {
		t.Fatalf("purge:\n%s", out)
	}
	if out := p.herald(t, "", "dlq", "purge", "--topic", "orders", "--yes", "-o", "json"); !strings.Contains(out, `"purged": 0`) {
		t.Fatalf("purge --yes:\n%s", out)
	}

	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"bad id":         {[]string{"dlq", "show", "nonsense"}, "TOPIC:SEQ"},
		"missing entry":  {[]string{"dlq", "show", "orders.dlq:999"}, "not found"},
		"bad filter":     {[]string{"dlq", "redrive", "--filter", "colour=red"}, "unknown key"},
		"unknown topic":  {[]string{"dlq", "list", "--topic", "nowhere"}, "not found"},
		"purge no topic": {[]string{"dlq", "purge", "--yes"}, "--topic is required"},
	} {
		t.Run(name, func(t *testing.T) {
			if e := p.heraldErr(t, "", tc.args...); !strings.Contains(e, tc.want) {
				t.Fatalf("stderr %q lacks %q", e, tc.want)
			}
		})
	}
	for url, want := range map[string]string{"localhost": "--admin-url", "http://" + closedAddr(t): "cannot reach the admin API"} {
		_, errOut, err := runHerald(t, "", "dlq", "list", "--admin-url", url)
		if err == nil || !strings.Contains(errOut, want) {
			t.Fatalf("admin url %s: %v %q, want %q", url, err, errOut, want)
		}
	}
}

func TestReplayLagTopicCommands(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir(), "--topic-retention", "archive=max-age:48h,max-msgs:1000")
	c := connect(t, p)
	var mu sync.Mutex
	var seqs []uint64
	r, err := c.Router("proj", []string{"ledger"}, consumer.WithStart(broker.FromFirst), consumer.WithKeyOrder(false))
	if err != nil {
		t.Fatal(err)
	}
	r.HandleAll(func(ctx context.Context, m *consumer.Message) error {
		mu.Lock()
		seqs = append(seqs, m.Sequence)
		mu.Unlock()
		return nil
	})
	runRouter(t, r)
	publish(t, c, "ledger", "ledger.entry.v1", 6, "")
	handledN := func(n int) {
		t.Helper()
		poll(t, fmt.Sprintf("%d handled", n), func() (bool, string) {
			mu.Lock()
			defer mu.Unlock()
			return len(seqs) == n, fmt.Sprint(seqs)
		})
	}
	handledN(6)

	lag := func(group string) admin.GroupLag {
		t.Helper()
		var rows []admin.GroupLag
		out := p.herald(t, "", "lag", "--group", group, "-o", "json")
		if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 1 {
			t.Fatalf("lag -o json: %v\n%s", err, out)
		}
		return rows[0]
	}
	poll(t, "proj caught up", func() (bool, string) {
		l := lag("proj")
		return l.Pending == 0 && l.InFlight == 0, fmt.Sprintf("%+v", l)
	})
	if out := p.herald(t, "", "lag"); !strings.Contains(out, "ledger") || !strings.Contains(out, "proj") || !strings.Contains(out, "IN FLIGHT") {
		t.Fatalf("lag:\n%s", out)
	}

	out := p.herald(t, "", "replay", "--group", "proj", "--to", "seq:3")
	if !strings.Contains(out, "ledger") || !strings.Contains(out, "reset while running") {
		t.Fatalf("replay --group:\n%s", out)
	}
	handledN(10)
	mu.Lock()
	again := append([]uint64(nil), seqs[6:]...)
	mu.Unlock()
	slices.Sort(again)
	if fmt.Sprint(again) != "[3 4 5 6]" {
		t.Fatalf("after the rewind to seq:3 the group handled %v", again)
	}

	out = p.herald(t, "", "replay", "--topic", "ledger", "--from", "seq:2", "--into-group", "proj-rebuild")
	if !strings.Contains(out, "created group proj-rebuild on ledger at sequence 2") {
		t.Fatalf("replay --into-group:\n%s", out)
	}
	if l := lag("proj-rebuild"); l.Pending != 5 || !l.KeyOrdered || l.Consumers != 8 || l.LagSeconds <= 0 {
		t.Fatalf("lag of the new group: %+v", l)
	}
	if l := lag("proj"); l.Pending != 0 {
		t.Fatalf("the live group moved: %+v", l)
	}

	out = p.herald(t, "", "topic", "retention", "ledger", "--max-age", "72h", "--max-msgs", "100")
	if !strings.Contains(out, "max age 72h0m0s") || !strings.Contains(out, "max messages 100") {
		t.Fatalf("topic retention:\n%s", out)
	}
	var topics []admin.TopicInfo
	if err := json.Unmarshal([]byte(p.herald(t, "", "topic", "list", "-o", "json")), &topics); err != nil {
		t.Fatal(err)
	}
	got := map[string]admin.RetentionConfig{}
	for _, ti := range topics {
		got[ti.Topic] = ti.Retention
	}
	if got["ledger"] != (admin.RetentionConfig{MaxAge: "72h0m0s", MaxBytes: -1, MaxMsgs: 100}) ||
		got["archive"] != (admin.RetentionConfig{MaxAge: "48h0m0s", MaxBytes: -1, MaxMsgs: 1000}) {
		t.Fatalf("retention from the CLI and from serve --topic-retention: %+v", got)
	}
	if out := p.herald(t, "", "topic", "list"); !strings.Contains(out, "archive") || !strings.Contains(out, "MAX AGE") {
		t.Fatalf("topic list:\n%s", out)
	}

	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"nothing":               {[]string{"replay"}, "give --group"},
		"no to":                 {[]string{"replay", "--group", "proj"}, "--group needs --to"},
		"bad to":                {[]string{"replay", "--group", "proj", "--to", "yesterday"}, "--to"},
		"into without from":     {[]string{"replay", "--topic", "ledger", "--into-group", "x"}, "--from"},
		"into existing":         {[]string{"replay", "--topic", "ledger", "--from", "first", "--into-group", "proj"}, "already exists"},
		"unknown group":         {[]string{"replay", "--group", "nobody", "--to", "first"}, "no consumers"},
		"key order alone":       {[]string{"replay", "--group", "proj", "--to", "first", "--key-order=false"}, "--key-order goes with --into-group"},
		"retention no limit":    {[]string{"topic", "retention", "ledger"}, "at least one"},
		"retention bad size":    {[]string{"topic", "retention", "ledger", "--max-bytes", "lots"}, "max-bytes"},
		"retention bad topic":   {[]string{"topic", "retention", "bad topic", "--max-age", "1h"}, "topic name"},
		"serve bad retention":   {[]string{"serve", "--data-dir", t.TempDir(), "--topic-retention", "orders=forever"}, "--topic-retention"},
		"serve bad audit":       {[]string{"serve", "--data-dir", t.TempDir(), "--audit", "mysql"}, "--audit"},
		"serve postgres no url": {[]string{"serve", "--data-dir", t.TempDir(), "--audit", "postgres"}, "--audit-postgres-url"},
	} {
		t.Run(name, func(t *testing.T) {
			if e := p.heraldErr(t, "", tc.args...); !strings.Contains(e, tc.want) {
				t.Fatalf("stderr %q lacks %q", e, tc.want)
			}
		})
	}
}

func TestAuditCommands(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir())
	c := connect(t, p)
	ctx := t.Context()
	// A checkout: a command causes an order, which causes a payment and a
	// reservation; the reservation causes a shipment. Another correlation
	// runs beside it.
	mk := func(typ, corr string, cause *event.Event) *event.Event {
		e := event.New("shop", typ, []byte(`{"type":"`+typ+`"}`))
		e.DataContentType = "application/json"
		e.Subject = "order-1"
		e.CorrelationID = corr
		if cause != nil {
			e.CausationID = cause.ID
		}
		if err := c.PublishTo(ctx, "shop", e); err != nil {
			t.Fatal(err)
		}
		return e
	}
	cmd := mk("shop.checkout.requested.v1", "checkout-1", nil)
	placed := mk("shop.order.placed.v1", "checkout-1", cmd)
	mk("shop.payment.captured.v1", "checkout-1", placed)
	mk("other.thing.v1", "checkout-2", nil)
	reserved := mk("shop.stock.reserved.v1", "checkout-1", placed)
	mk("shop.order.shipped.v1", "checkout-1", reserved)

	var lines []string
	poll(t, "5 events of checkout-1 in the audit log", func() (bool, string) {
		out := p.herald(t, "", "audit", "--correlation", "checkout-1", "-o", "json")
		lines = strings.Split(strings.TrimSpace(out), "\n")
		return len(lines) == 5, out
	})
	var types []string
	for _, l := range lines {
		var r audit.Record
		if err := json.Unmarshal([]byte(l), &r); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		types = append(types, r.Type)
		if r.Topic != "shop" || r.Seq == 0 || string(r.Payload) != `{"type":"`+r.Type+`"}` {
			t.Fatalf("record %+v", r)
		}
	}
	if strings.Join(types, " ") != "shop.checkout.requested.v1 shop.order.placed.v1 shop.payment.captured.v1 shop.stock.reserved.v1 shop.order.shipped.v1" {
		t.Fatalf("order: %v", types)
	}
	out := p.herald(t, "", "audit", "--subject", "order-1", "--since", "1h")
	if strings.Count(out, "\n") != 6 || !strings.Contains(out, `{"type":"other.thing.v1"}`) || !strings.Contains(out, "shop#") {
		t.Fatalf("audit --subject:\n%s", out)
	}
	out = p.herald(t, "", "audit", "--type", "shop.order.placed.v1", "--until", time.Now().Add(time.Minute).UTC().Format(time.RFC3339), "--no-payload")
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, placed.ID) || strings.Contains(out, `{"type"`) {
		t.Fatalf("audit --type --no-payload:\n%s", out)
	}
	_, errOut, err := runHerald(t, "", "audit", "--type", "none.v1", "--admin-url", p.state.AdminURL)
	if err != nil || !strings.Contains(errOut, "no events found") {
		t.Fatalf("empty audit: %v %s", err, errOut)
	}

	out = p.herald(t, "", "trace", "checkout-1")
	want := []string{
		"correlation checkout-1: 5 events",
		"└─ shop.checkout.requested.v1",
		"   └─ shop.order.placed.v1",
		"      ├─ shop.payment.captured.v1",
		"      └─ shop.stock.reserved.v1",
		"         └─ shop.order.shipped.v1",
	}
	got := strings.Split(strings.TrimSpace(out), "\n")
	if len(got) != len(want) {
		t.Fatalf("trace:\n%s", out)
	}
	for i, w := range want {
		if !strings.HasPrefix(got[i], w) {
			t.Fatalf("trace line %d is %q, want it to start with %q; trace:\n%s", i, got[i], w, out)
		}
	}
	var tr admin.Trace
	if err := json.Unmarshal([]byte(p.herald(t, "", "trace", "checkout-1", "-o", "json")), &tr); err != nil {
		t.Fatal(err)
	}
	if len(tr.Roots) != 1 || tr.Roots[0].ID != cmd.ID || len(tr.Roots[0].Children[0].Children) != 2 {
		t.Fatalf("trace json: %+v", tr)
	}

	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"no filter":     {[]string{"audit"}, "give --correlation"},
		"bad since":     {[]string{"audit", "--type", "x", "--since", "yesterday"}, "--since"},
		"bad window":    {[]string{"audit", "--type", "x", "--since", "1h", "--until", "2h"}, "not after"},
		"bad limit":     {[]string{"audit", "--type", "x", "--limit", "0"}, "--limit"},
		"unknown trace": {[]string{"trace", "nobody"}, "no events with correlation id"},
	} {
		t.Run(name, func(t *testing.T) {
			if e := p.heraldErr(t, "", tc.args...); !strings.Contains(e, tc.want) {
				t.Fatalf("stderr %q lacks %q", e, tc.want)
			}
		})
	}

	off := startServe(t, t.TempDir(), "--audit", "off")
	if e := off.heraldErr(t, "", "audit", "--type", "x"); !strings.Contains(e, "audit log is off") {
		t.Fatalf("audit against a server without it: %s", e)
	}
}
