package main

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/saga"
)

func TestSagaListShow(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir())
	b, err := natsjs.New(t.Context(), natsjs.WithURL(p.state.NATSURL))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	st, err := saga.NewKVStore(t.Context(), b.JetStream(), "")
	if err != nil {
		t.Fatal(err)
	}
	sent := time.Now().UTC()
	for _, in := range []*saga.Instance{
		{ID: "o-1", Saga: "order", State: saga.Compensated, Error: `step "pay" failed`, Created: sent, History: []saga.Entry{
			{Step: "pay", Phase: saga.Do, Attempt: 1, Type: "pay.v1", Sent: sent, Ended: sent.Add(250 * time.Millisecond), Outcome: "failed", Reply: "pay.declined.v1"}}},
		{ID: "o-2", Saga: "order", State: saga.Running, Created: sent.Add(time.Second), History: []saga.Entry{{Step: "reserve", Phase: saga.Do, Attempt: 1, Type: "reserve.v1", Sent: sent}}},
	} {
		if err := st.Create(t.Context(), in); err != nil {
			t.Fatal(err)
		}
	}
	out := p.herald(t, "", "saga", "list")
	if !strings.Contains(out, "o-1") || !strings.Contains(out, "o-2") || !strings.Contains(out, "compensated") {
		t.Fatalf("saga list:\n%s", out)
	}
	out = p.herald(t, "", "saga", "list", "--state", "running", "-o", "json")
	var ins []map[string]any
	if err := json.Unmarshal([]byte(out), &ins); err != nil || len(ins) != 1 || ins[0]["id"] != "o-2" {
		t.Fatalf("saga list --state running -o json: %v\n%s", err, out)
	}
	out = p.herald(t, "", "saga", "show", "o-1")
	if !strings.Contains(out, "saga order o-1: compensated") || !strings.Contains(out, "250ms") || !strings.Contains(out, "pay.declined.v1") {
		t.Fatalf("saga show:\n%s", out)
	}
	if errOut := p.heraldErr(t, "", "saga", "show", "nope"); !strings.Contains(errOut, "not found") {
		t.Fatalf("saga show of an unknown id: %s", errOut)
	}
	if errOut := p.heraldErr(t, "", "saga", "list", "--state", "asleep"); !strings.Contains(errOut, "want running") {
		t.Fatalf("saga list with a bad state: %s", errOut)
	}
}
