package shop_test

import (
	"context"
	"testing"

	"github.com/heraldhq/herald/examples/shop"
)

// TestShopThousandOrders runs the shop in this process for 1,000 orders
// with a fifth of the payments declined and some shipments never
// answered; midway the payments service loses its connection without
// settling what it holds (as a killed process would) and a new one takes
// over. Every order must end completed or compensated with the books
// balanced.
func TestShopThousandOrders(t *testing.T) {
	if testing.Short() {
		t.Skip("1,000 orders through five services")
	}
	p := startPlatform(t)
	env := shop.Env{Client: p.client(t, "shop"), Registry: p.reg, DB: p.db, Tuning: testTuning}
	s, err := shop.New(t.Context(), shop.Config{Env: env, Services: []string{"orders", "inventory", "shipping", "notifications"}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("shop: %v", err)
		}
	})

	// payments, in a "process" of its own: its own connection.
	runPayments := func() (kill func()) {
		c := p.client(t, "payments")
		pctx, pcancel := context.WithCancel(context.Background())
		pdone := make(chan error, 1)
		go func() {
			pdone <- shop.RunPayments(pctx, shop.Env{Client: c, Registry: p.reg, DB: p.db, Tuning: testTuning})
		}()
		return func() {
			// The connection goes first, so nothing in flight is acked.
			_ = c.Broker().Close()
			pcancel()
			<-pdone
		}
	}
	kill := runPayments()
	killed := make(chan struct{})
	ids := placeOrders(t, s.URL(), orderCount, func(n int64) {
		if n == orderCount*3/10 {
			kill()
			close(killed)
		}
	})
	<-killed
	kill = runPayments()
	t.Cleanup(kill)
	verify(t, p, ids, testTuning)
}
