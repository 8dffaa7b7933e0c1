package shop_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/examples/shop"
	"github.com/heraldhq/herald/internal/testenv"
)

// TestOrdersAPI checks the order API's answers, bad requests included:
// a clear 4xx naming what is wrong, never a 5xx.
func TestOrdersAPI(t *testing.T) {
	t.Parallel()
	p := startPlatform(t)
	o, err := shop.NewOrders(t.Context(), shop.Env{Client: p.client(t, "orders"), Registry: p.reg, DB: p.db, Tuning: testTuning})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("orders: %v", err)
		}
	})
	srv := httptest.NewServer(o.Handler())
	t.Cleanup(srv.Close)
	do := func(method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, srv.URL+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for name, c := range map[string]struct {
		method, path, body string
		status             int
		says               string
	}{
		"not JSON":       {"POST", "/orders", "total=5", 400, "body: want a JSON object"},
		"unknown field":  {"POST", "/orders", `{"customer":"a","sku":"mug","quantity":1,"total_cents":5,"coupon":"x"}`, 400, "coupon"},
		"unknown sku":    {"POST", "/orders", `{"customer":"a","sku":"car","quantity":1,"total_cents":5}`, 400, `sku \"car\"`},
		"no quantity":    {"POST", "/orders", `{"customer":"a","sku":"mug","total_cents":5}`, 400, "quantity 0"},
		"no customer":    {"POST", "/orders", `{"sku":"mug","quantity":1,"total_cents":5}`, 400, "customer"},
		"huge total":     {"POST", "/orders", `{"customer":"a","sku":"mug","quantity":1,"total_cents":99999999999}`, 400, "total_cents 99999999999"},
		"unknown order":  {"GET", "/orders/o-nope", "", 404, `no order \"o-nope\"`},
		"bad status":     {"GET", "/orders?status=lost", "", 400, `status \"lost\"`},
		"bad limit":      {"GET", "/orders?limit=0", "", 400, `limit \"0\"`},
		"wrong method":   {"DELETE", "/orders/o-1", "", 405, ""},
		"empty list":     {"GET", "/orders?status=shipped", "", 200, "[]"},
		"negative total": {"POST", "/orders", `{"customer":"a","sku":"mug","quantity":1,"total_cents":-1}`, 400, "total_cents -1"},
	} {
		status, body := do(c.method, c.path, c.body)
		if status != c.status || !strings.Contains(body, c.says) {
			t.Errorf("%s: %s %s: %d %s, want %d saying %q", name, c.method, c.path, status, body, c.status, c.says)
		}
	}
	status, body := do("POST", "/orders", `{"customer":"ada","sku":"mug","quantity":2,"total_cents":2400}`)
	var placed shop.Placed
	if status != 201 || json.Unmarshal([]byte(body), &placed) != nil || !strings.HasPrefix(placed.ID, "o-") ||
		placed.CorrelationID != "checkout-"+strings.TrimPrefix(placed.ID, "o-") || placed.Status != "placed" {
		t.Fatalf("POST /orders: %d %s", status, body)
	}
	testenv.Eventually(t, 30*time.Second, "the order in the read model", func() bool {
		status, body := do("GET", "/orders/"+placed.ID, "")
		var s shop.Summary
		return status == 200 && json.Unmarshal([]byte(body), &s) == nil && s.Customer == "ada" && s.Quantity == 2 &&
			s.Total == 2400 && s.CorrelationID == placed.CorrelationID && s.Version == 1
	})
	status, body = do("GET", "/orders?limit=10", "")
	var list []shop.Summary
	if status != 200 || json.Unmarshal([]byte(body), &list) != nil || len(list) != 1 || list[0].ID != placed.ID {
		t.Fatalf("GET /orders: %d %s", status, body)
	}
}
