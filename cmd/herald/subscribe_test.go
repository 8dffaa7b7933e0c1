package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/heraldhq/herald/server/gateway"
)

func TestSubscribeCommands(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir(), "--audit", "off")
	p.herald(t, "", "topic", "retention", "orders", "--max-age", "1h")

	out := p.herald(t, "", "subscribe", "--group", "billing-hook", "--topic", "orders", "--push", "http://127.0.0.1:9/hook")
	if !strings.Contains(out, "pushes topic orders") || !strings.Contains(out, "secret: whsec_") {
		t.Fatalf("subscribe --push printed %q", out)
	}
	p.herald(t, "", "subscribe", "--group", "reports", "--topic", "orders", "--pull", "--lease", "1m")
	out = p.herald(t, "", "subscribe", "list")
	for _, want := range []string{"billing-hook", "http://127.0.0.1:9/hook", "reports", "/v1/groups/reports/events", "running"} {
		if !strings.Contains(out, want) {
			t.Fatalf("subscribe list lacks %q:\n%s", want, out)
		}
	}
	var subs []gateway.SubscriptionStatus
	if err := json.Unmarshal([]byte(p.herald(t, "", "subscribe", "list", "-o", "json")), &subs); err != nil || len(subs) != 2 ||
		subs[1].Group != "reports" || subs[1].Lease != gateway.Duration(60e9) || subs[0].Secret != "" {
		t.Fatalf("subscribe list -o json: %+v (%v)", subs, err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"subscribe", "--group", "x", "--topic", "orders"}, "either --push URL or --pull"},
		{[]string{"subscribe", "--group", "x", "--topic", "orders", "--push", "http://h/", "--pull"}, "either --push URL or --pull"},
		{[]string{"subscribe", "--topic", "orders", "--pull"}, "--group and --topic are required"},
		{[]string{"subscribe", "--group", "x", "--topic", "nope", "--pull"}, `topic "nope" does not exist`},
		{[]string{"subscribe", "--group", "reports", "--topic", "orders", "--pull"}, "already has a subscription"},
		{[]string{"subscribe", "--group", "x", "--topic", "orders", "--push", "mailto:a@b"}, "push URL"},
		{[]string{"subscribe", "delete", "nobody"}, "unknown group"},
	} {
		if errOut := p.heraldErr(t, "", tc.args...); !strings.Contains(errOut, tc.want) {
			t.Errorf("herald %s: stderr %q, want %q", strings.Join(tc.args, " "), errOut, tc.want)
		}
	}
	p.herald(t, "", "subscribe", "delete", "billing-hook")
	if out := p.herald(t, "", "subscribe", "list"); strings.Contains(out, "billing-hook") {
		t.Fatalf("deleted subscription still listed:\n%s", out)
	}
}
