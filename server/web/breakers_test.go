package web_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/admin"
	"github.com/heraldhq/herald/server/servertest"
)

// TestOverviewShowsBreakers runs two instances of a group with a circuit
// breaker, one of them against a downstream that is down: the overview
// and the admin API show the breaker open on one of two instances, and
// the instance that stopped drops out.
func TestOverviewShowsBreakers(t *testing.T) {
	t.Parallel()
	srv := servertest.Start(t, server.Config{})
	base := srv.AdminURL()
	topic, group := testenv.Unique("payments"), testenv.Unique("billing")
	code, body := get(t, base, "/")
	if code != http.StatusOK || !strings.Contains(body, "No running router with a circuit breaker") {
		t.Fatalf("overview before any breaker: %d, want the empty breakers section:\n%s", code, body)
	}
	start := func(failing bool) (r *consumer.Router, stop func()) {
		c := connect(t, srv, "billing")
		r, err := c.Router(group, []string{topic}, consumer.WithStart(broker.FromFirst), consumer.WithKeyOrder(false),
			consumer.WithConcurrency(1), consumer.WithoutDeadLetter(),
			consumer.WithBreaker(consumer.BreakerConfig{Failures: 1, OpenFor: time.Hour}))
		if err != nil {
			t.Fatal(err)
		}
		r.HandleAll(func(context.Context, *consumer.Message) error {
			if failing {
				return errors.New("payment provider down")
			}
			return nil
		})
		return r, testenv.RunRouter(t, r)
	}
	// A group without a breaker shows none.
	plain := testenv.Unique("plain")
	pc := connect(t, srv, "plain")
	pr, err := pc.Router(plain, []string{topic}, consumer.WithStart(broker.FromFirst))
	if err != nil {
		t.Fatal(err)
	}
	pr.HandleAll(func(context.Context, *consumer.Message) error { return nil })
	testenv.RunRouter(t, pr)
	// The failing instance runs alone until its breaker opened, so it
	// gets events of the group's work queue; then the healthy one joins.
	failing, stopFailing := start(true)
	c := connect(t, srv, "orders")
	publish(t, c, "orders", topic, "shop.order.placed.v1", "", 5)
	eventually(t, 30*time.Second, "the failing instance's breaker to open", func() (bool, string) {
		st := failing.Breaker().State()
		return st != consumer.BreakerClosed, st.String()
	})
	start(false)

	var state string
	eventually(t, 30*time.Second, "the overview to show the breaker open on 1 of 2", func() (bool, string) {
		code, body := get(t, base, "/")
		state = body
		return code == http.StatusOK && strings.Contains(body, "open on 1 of 2"), body
	})
	if !strings.Contains(state, `href="/groups/`+group+`"`) {
		t.Fatalf("overview does not link the group:\n%s", state)
	}
	if strings.Contains(state, "closed on 0") || strings.Contains(state, `href="/topics/herald.breakers"`) {
		t.Fatalf("overview shows a breaker for a group without one, or the reports topic as a topic:\n%s", state)
	}
	res, err := http.Get(base + "/api/v1/breakers")
	if err != nil {
		t.Fatal(err)
	}
	var resp struct {
		Groups []admin.GroupBreakers `json:"groups"`
	}
	err = json.NewDecoder(res.Body).Decode(&resp)
	res.Body.Close()
	if res.StatusCode != http.StatusOK || err != nil {
		t.Fatalf("GET /api/v1/breakers: %d, %v", res.StatusCode, err)
	}
	var mine *admin.GroupBreakers
	for i := range resp.Groups {
		if resp.Groups[i].Group == group {
			mine = &resp.Groups[i]
		}
	}
	if mine == nil || mine.Open != 1 || mine.Closed != 1 || len(mine.Instances) != 2 {
		t.Fatalf("breakers of %s: %+v, want one open and one closed instance", group, mine)
	}
	stopFailing()
	eventually(t, 30*time.Second, "the stopped instance to drop out", func() (bool, string) {
		code, body := get(t, base, "/")
		return code == http.StatusOK && strings.Contains(body, "closed on 1") && !strings.Contains(body, "open on 1 of 2"), body
	})
}
