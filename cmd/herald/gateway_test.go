package main

import (
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"
)

// herald serve --gateway-addr serves the HTTP gateway on its own address,
// prints it, and events posted there reach the topic.
func TestServeGatewayAddr(t *testing.T) {
	t.Parallel()
	st, stateFile, out := startHerald(t, "serve", "--data-dir", t.TempDir(), "--nats-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0", "--registry-addr", "127.0.0.1:0", "--gateway-addr", "127.0.0.1:0", "--audit", "off")
	line := regexp.MustCompile(`gateway: +(http://\S+)`)
	var gw string
	deadline := time.Now().Add(30 * time.Second)
	for gw == "" {
		if m := line.FindStringSubmatch(out.String()); m != nil {
			gw = m[1]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("herald serve printed no gateway address in 30s:\n%s", out)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if gw == st.AdminURL {
		t.Fatalf("gateway %s is the admin address", gw)
	}
	mustRun(t, stateFile, "topic", "retention", "gw-orders", "--max-age", "1h")
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, gw+"/v1/topics/gw-orders/events", strings.NewReader(`{"total":42}`))
	for k, v := range map[string]string{"ce-specversion": "1.0", "ce-id": "gw-1", "ce-source": "test", "ce-type": "shop.order.placed.v1",
		"Content-Type": "application/json"} {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST to the gateway address: %d", resp.StatusCode)
	}
	got := mustRun(t, stateFile, "sub", "--topic", "gw-orders", "--from", "first", "--count", "1", "-o", "json")
	if !strings.Contains(got, `"gw-1"`) || !strings.Contains(got, `42`) {
		t.Fatalf("sub printed %q, want event gw-1", got)
	}
}
