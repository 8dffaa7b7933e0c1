package gateway_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/gateway"
)

func pull(t *testing.T, srv *server.Server, group, query string) (int, gateway.PullResponse, string) {
	t.Helper()
	resp, err := http.Get(srv.AdminURL() + "/v1/groups/" + group + "/events?" + query)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var pr gateway.PullResponse
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(b, &pr); err != nil {
			t.Fatalf("pull answer %s: %v", b, err)
		}
	}
	return resp.StatusCode, pr, string(b)
}

func settle(t *testing.T, srv *server.Server, group, verb string, req gateway.SettleRequest) gateway.SettleResponse {
	t.Helper()
	code, b := post(t, srv.AdminURL()+"/v1/groups/"+group+"/"+verb, map[string]string{"Content-Type": "application/json"}, mustJSON(t, req))
	if code != http.StatusOK {
		t.Fatalf("%s: status %d: %s", verb, code, b)
	}
	var res gateway.SettleResponse
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	return res
}

func leases(evs []gateway.Leased) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Lease)
	}
	return out
}

func TestPullLeasesAckNack(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{})
	topic := newTopic(t, srv)
	group := testenv.Unique("pull")
	subscribe(t, srv, gateway.Subscription{Group: group, Topic: topic, Start: "first", Lease: gateway.Duration(time.Second)})
	publish(t, srv, topic, "e", 0, 10, 3)

	// Collect the first 6, in at most a few pulls.
	var first []gateway.Leased
	eventually(t, 30*time.Second, "6 pulled events", func() (bool, string) {
		_, pr, _ := pull(t, srv, group, fmt.Sprintf("max=%d&wait=1", 6-len(first)))
		first = append(first, pr.Events...)
		return len(first) >= 6, fmt.Sprintf("%d pulled", len(first))
	})
	if len(first) != 6 {
		t.Fatalf("pulled %d events with max adding up to 6", len(first))
	}
	for _, l := range first {
		e, err := event.UnmarshalJSON(l.Event)
		if err != nil || !strings.HasPrefix(e.ID, "e-") || l.Attempt != 1 || l.Lease == "" || time.Until(l.Expires) > time.Second {
			t.Fatalf("leased event %+v (%v)", l, err)
		}
	}
	if res := settle(t, srv, group, "ack", gateway.SettleRequest{Leases: leases(first[:4])}); res.Settled != 4 {
		t.Fatalf("ack: %+v", res)
	}
	// A lease is settled once.
	if res := settle(t, srv, group, "ack", gateway.SettleRequest{Leases: leases(first[:1])}); res.Settled != 0 || len(res.Unknown) != 1 {
		t.Fatalf("second ack of a lease: %+v", res)
	}
	if res := settle(t, srv, group, "nack", gateway.SettleRequest{Leases: leases(first[4:5])}); res.Settled != 1 {
		t.Fatalf("nack: %+v", res)
	}
	// first[5] is left to expire. Everything not acked comes back: the
	// 4 never pulled, the nacked one and the expired one (attempt 2).
	got := map[string]gateway.Leased{}
	eventually(t, 30*time.Second, "the 6 events not acked", func() (bool, string) {
		_, pr, _ := pull(t, srv, group, "max=10&wait=1")
		for _, l := range pr.Events {
			e, _ := event.UnmarshalJSON(l.Event)
			got[e.ID] = l
		}
		_ = settleAll(t, srv, group, pr.Events)
		return len(got) >= 6, fmt.Sprintf("%d of 6", len(got))
	})
	for _, l := range first[4:] {
		e, _ := event.UnmarshalJSON(l.Event)
		if got[e.ID].Attempt != 2 {
			t.Errorf("event %s came back with attempt %d, want 2", e.ID, got[e.ID].Attempt)
		}
	}
	for _, l := range first[:4] {
		e, _ := event.UnmarshalJSON(l.Event)
		if _, again := got[e.ID]; again {
			t.Errorf("acked event %s delivered again", e.ID)
		}
	}
	// Nothing is left: a pull waits and answers no events.
	code, pr, body := pull(t, srv, group, "max=5&wait=200ms")
	if code != 200 || len(pr.Events) != 0 {
		t.Fatalf("empty group: status %d: %s", code, body)
	}
}

func settleAll(t *testing.T, srv *server.Server, group string, evs []gateway.Leased) gateway.SettleResponse {
	if len(evs) == 0 {
		return gateway.SettleResponse{}
	}
	return settle(t, srv, group, "ack", gateway.SettleRequest{Leases: leases(evs)})
}

func TestPullBadInput(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{})
	topic := newTopic(t, srv)
	group := testenv.Unique("pull")
	subscribe(t, srv, gateway.Subscription{Group: group, Topic: topic})
	_, hs := newHook(t, nil)
	pushGroup := testenv.Unique("push")
	subscribe(t, srv, gateway.Subscription{Group: pushGroup, Topic: topic, Push: hs.URL})
	for _, tc := range []struct {
		name, group, query string
		status             int
		detail             string
	}{
		{"unknown group", "nobody", "", 404, "has no subscription"},
		{"push group", pushGroup, "", 409, "push subscription"},
		{"max not a number", group, "max=lots", 400, "max="},
		{"max too big", group, "max=100000", 400, "max="},
		{"wait too long", group, "wait=1h", 400, "wait="},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := pull(t, srv, tc.group, tc.query)
			var p gateway.Problem
			if code != tc.status || json.Unmarshal([]byte(body), &p) != nil || !strings.Contains(p.Detail, tc.detail) {
				t.Fatalf("status %d: %s; want %d with %q", code, body, tc.status, tc.detail)
			}
		})
	}
	ackURL := srv.AdminURL() + "/v1/groups/" + group + "/ack"
	for _, tc := range []struct {
		name   string
		ct     string
		body   string
		status int
	}{
		{"not JSON", "text/plain", `x`, 415},
		{"bad JSON", "application/json", `{`, 400},
		{"unknown field", "application/json", `{"lease":"x"}`, 400},
		{"no leases", "application/json", `{"leases":[]}`, 400},
		{"negative delay", "application/json", `{"leases":["a"],"delay":"-1s"}`, 400},
	} {
		t.Run("ack "+tc.name, func(t *testing.T) {
			code, b := post(t, ackURL, map[string]string{"Content-Type": tc.ct}, []byte(tc.body))
			if code != tc.status {
				t.Fatalf("status %d, want %d: %s", code, tc.status, b)
			}
		})
	}
}

func TestSubscriptionsAPI(t *testing.T) {
	t.Parallel()
	srv := startServer(t, server.Config{})
	topic := newTopic(t, srv)
	api := srv.AdminURL() + "/api/v1/subscriptions"
	js := map[string]string{"Content-Type": "application/json"}
	for _, tc := range []struct {
		name   string
		h      map[string]string
		body   string
		status int
		detail string
	}{
		{"not JSON", map[string]string{"Content-Type": "text/plain"}, `{}`, 415, "application/json"},
		{"bad group", js, `{"group":"a b","topic":"` + topic + `"}`, 400, "group"},
		{"bad URL", js, `{"group":"g1","topic":"` + topic + `","push":"ftp://x"}`, 400, "push URL"},
		{"short secret", js, `{"group":"g1","topic":"` + topic + `","push":"http://x/","secret":"abc"}`, 400, "secret"},
		{"secret on pull", js, `{"group":"g1","topic":"` + topic + `","secret":"0123456789abcdef"}`, 400, "only push"},
		{"bad duration", js, `{"group":"g1","topic":"` + topic + `","timeout":"soon"}`, 400, "duration"},
		{"bad start", js, `{"group":"g1","topic":"` + topic + `","start":"yesterday"}`, 400, "start"},
		{"unknown topic", js, `{"group":"g1","topic":"nope"}`, 404, "does not exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, b := post(t, api, tc.h, []byte(tc.body))
			var p gateway.Problem
			if code != tc.status || json.Unmarshal(b, &p) != nil || !strings.Contains(p.Detail, tc.detail) {
				t.Fatalf("status %d: %s; want %d with %q", code, b, tc.status, tc.detail)
			}
		})
	}
	group := testenv.Unique("g")
	st := subscribe(t, srv, gateway.Subscription{Group: group, Topic: topic, Push: "http://127.0.0.1:1/hook"})
	if !strings.HasPrefix(st.Secret, "whsec_") || st.Concurrency != gateway.DefaultConcurrency || st.MaxAttempts != gateway.DefaultMaxAttempts {
		t.Fatalf("created %+v: want a generated secret and defaults", st)
	}
	if code, b := post(t, api, js, mustJSON(t, gateway.Subscription{Group: group, Topic: topic})); code != http.StatusConflict {
		t.Fatalf("second create: status %d: %s", code, b)
	}
	resp, err := http.Get(api + "/" + group)
	if err != nil {
		t.Fatal(err)
	}
	var got gateway.SubscriptionStatus
	_ = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if got.Group != group || got.Secret != "" || got.State != "running" {
		t.Fatalf("get: %+v", got)
	}
	req, _ := http.NewRequest(http.MethodDelete, api+"/"+group, nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("delete: status %d", resp.StatusCode)
	}
	if _, ok := srv.Gateway().GroupTopic(group); ok {
		t.Fatal("deleted subscription still runs")
	}
	resp, err = http.Get(api + "/" + group)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("get after delete: status %d", resp.StatusCode)
	}
}
