package admin

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/internal/testenv"
)

// TestRedriveRefusesForgedOrigin: a dead letter whose Herald-Original-Topic
// names another topic than the one its dead-letter topic collects for is
// not redriven there.
func TestRedriveRefusesForgedOrigin(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	topic, victim := testenv.Unique("forge"), testenv.Unique("victim")
	e.dropTopic(t, topic)
	e.dropTopic(t, victim)
	e.publishEvents(t, victim, "v.v1", 1, 1)
	before := e.depth(t, victim)
	forged := &broker.Message{Topic: topic + ".dlq", Route: "x.v1", ID: "forged-1", Data: []byte(`{}`),
		Header: map[string]string{consumer.HeaderOriginalTopic: victim, consumer.HeaderError: "made up", "ce-id": "f-1", "ce-type": "x.v1"}}
	genuine := &broker.Message{Topic: topic + ".dlq", Route: "x.v1", ID: "genuine-1", Data: []byte(`{}`),
		Header: map[string]string{consumer.HeaderOriginalTopic: topic, consumer.HeaderError: "real", "ce-id": "g-1", "ce-type": "x.v1"}}
	if err := e.b.Publish(ctx, forged, genuine); err != nil {
		t.Fatal(err)
	}
	res, err := e.svc.Redrive(ctx, RedriveRequest{Topic: topic})
	if err != nil {
		t.Fatal(err)
	}
	if res.Matched != 2 || res.Redriven != 1 || res.Failed != 1 {
		t.Fatalf("redrive: %+v", res)
	}
	for _, it := range res.Items {
		if it.EventID == "f-1" && !strings.Contains(it.Failed, victim) {
			t.Fatalf("forged item: %+v", it)
		}
	}
	if got := e.depth(t, victim); got != before {
		t.Fatalf("victim topic holds %d messages, had %d: the forged dead letter went there", got, before)
	}
	if got := e.depth(t, topic); got != 1 {
		t.Fatalf("source topic holds %d messages, want the genuine one", got)
	}
}

func TestAdminBodyLimitsAndTypes(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	topic := testenv.Unique("limits")
	e.dropTopic(t, topic)
	e.publishEvents(t, topic, "t.v1", 1, 1)
	dl := &broker.Message{Topic: topic + ".dlq", Route: "t.v1", ID: "dl-1", Data: []byte(`{}`),
		Header: map[string]string{consumer.HeaderOriginalTopic: topic, consumer.HeaderError: "e"}}
	if err := e.b.Publish(t.Context(), dl); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(e.svc, nil))
	defer srv.Close()
	big := `{"filter":"` + strings.Repeat("x", maxBody) + `"}`
	for _, tc := range []struct {
		name, method, path, body, ctype string
		code                            int
		want                            string
	}{
		{"over 1 MiB", "POST", "/api/v1/dlq/redrive", big, "application/json", 413, "larger than"},
		{"text/plain", "POST", "/api/v1/dlq/redrive", `{"dry_run":true}`, "text/plain", 415, "application/json"},
		{"form", "POST", "/api/v1/replay", `group=g&to=first`, "application/x-www-form-urlencoded", 415, "application/json"},
		{"no content type", "POST", "/api/v1/dlq/redrive", `{"dry_run":true}`, "", 415, "application/json"},
		{"json with charset", "POST", "/api/v1/dlq/redrive", `{"dry_run":true,"topic":"` + topic + `"}`, "application/json; charset=utf-8", 200, `"matched":1`},
		{"after max uint64", "GET", "/api/v1/dlq/" + topic + "?after=18446744073709551615", "", "", 200, `"entries":[]`},
		{"after max uint64 - 1", "GET", "/api/v1/dlq/" + topic + "?after=18446744073709551614", "", "", 200, `"entries":[]`},
		{"after 0", "GET", "/api/v1/dlq/" + topic + "?after=0", "", "", 200, `"id":"` + topic + `.dlq:1"`},
		{"after overflow", "GET", "/api/v1/dlq/" + topic + "?after=18446744073709551616", "", "", 400, "after"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var b bytes.Buffer
			_, _ = b.ReadFrom(resp.Body)
			if resp.StatusCode != tc.code || !strings.Contains(b.String(), tc.want) {
				t.Fatalf("%d %.300s, want %d with %q", resp.StatusCode, b.String(), tc.code, tc.want)
			}
		})
	}
}
