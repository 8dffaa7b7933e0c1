package admin

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/server/audit"
)

func TestHandlerErrors(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	topic := testenv.Unique("http")
	e.dropTopic(t, topic)
	e.publishEvents(t, topic, "t.v1", 1, 1)
	srv := httptest.NewServer(Handler(e.svc, nil))
	defer srv.Close()
	big := `{"filter":"` + strings.Repeat("x", maxBody) + `"}`
	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		want                     string
	}{
		{"topics", "GET", "/api/v1/topics", "", 200, `"topics"`},
		{"dlqs", "GET", "/api/v1/dlq", "", 200, `"dlqs"`},
		{"groups", "GET", "/api/v1/groups?topic=" + topic, "", 200, `"groups":[]`},
		{"unknown endpoint", "GET", "/api/v1/nope", "", 404, "no admin API endpoint"},
		{"wrong method", "PATCH", "/api/v1/dlq", "", 404, "no admin API endpoint"},
		{"broken json", "POST", "/api/v1/dlq/redrive", "{", 400, "body"},
		{"empty body", "POST", "/api/v1/dlq/redrive", "", 400, "body is empty"},
		{"unknown field", "POST", "/api/v1/dlq/redrive", `{"topic":"x","bogus":1}`, 400, "bogus"},
		{"two values", "POST", "/api/v1/dlq/redrive", `{} {}`, 400, "more than one"},
		{"huge body", "POST", "/api/v1/dlq/redrive", big, 413, "larger than"},
		{"bad filter", "POST", "/api/v1/dlq/redrive", `{"filter":"colour=red"}`, 400, "unknown key"},
		{"bad regexp", "POST", "/api/v1/dlq/redrive", `{"filter":"error~=(("}`, 400, "missing closing"},
		{"bad id", "POST", "/api/v1/dlq/redrive", `{"ids":["orders"]}`, 400, "TOPIC:SEQ"},
		{"negative limit", "POST", "/api/v1/dlq/redrive", `{"limit":-1}`, 400, "negative"},
		{"redrive of unknown topic", "POST", "/api/v1/dlq/redrive", `{"topic":"` + testenv.Unique("none") + `"}`, 404, "not found"},
		{"purge unconfirmed", "DELETE", "/api/v1/dlq/" + topic + "?confirm=nope", "", 400, "confirm"},
		{"purge unknown", "DELETE", "/api/v1/dlq/nothing-here?confirm=nothing-here", "", 404, "not found"},
		{"bad topic name", "GET", "/api/v1/dlq/bad%20topic", "", 400, "topic name"},
		{"bad seq", "GET", "/api/v1/dlq/" + topic + "/abc", "", 400, "positive integer"},
		{"zero seq", "GET", "/api/v1/dlq/" + topic + "/0", "", 400, "positive integer"},
		{"bad limit", "GET", "/api/v1/dlq/" + topic + "?limit=0", "", 400, "limit"},
		{"bad after", "GET", "/api/v1/dlq/" + topic + "?after=x", "", 400, "after"},
		{"entries before any dead letter", "GET", "/api/v1/dlq/" + topic, "", 200, `"entries":[]`},
		{"entries of an unknown topic", "GET", "/api/v1/dlq/" + testenv.Unique("none"), "", 404, "not found"},
		{"purge before any dead letter", "DELETE", "/api/v1/dlq/" + topic + "?confirm=" + topic, "", 200, `"purged":0`},
		{"redrive before any dead letter", "POST", "/api/v1/dlq/redrive", `{"topic":"` + topic + `"}`, 200, `"matched":0`},
		{"replay nothing", "POST", "/api/v1/replay", `{}`, 400, "give group and to"},
		{"replay bad to", "POST", "/api/v1/replay", `{"group":"g","to":"yesterday"}`, 400, "want new, first"},
		{"replay no to", "POST", "/api/v1/replay", `{"group":"g"}`, 400, "to is required"},
		{"replay mixed", "POST", "/api/v1/replay", `{"group":"g","into_group":"h","topic":"t","from":"first"}`, 400, "not with group"},
		{"replay into without from", "POST", "/api/v1/replay", `{"into_group":"x","topic":"t"}`, 400, "required"},
		{"replay unknown group", "POST", "/api/v1/replay", `{"group":"nobody","to":"first"}`, 404, "no consumers"},
		{"replay into unknown topic", "POST", "/api/v1/replay", `{"into_group":"x","topic":"` + testenv.Unique("none") + `","from":"first"}`, 404, "not found"},
		{"retention nothing", "PUT", "/api/v1/topics/" + topic + "/retention", `{}`, 400, "at least one"},
		{"retention bad age", "PUT", "/api/v1/topics/" + topic + "/retention", `{"max_age":"soon"}`, 400, "max-age"},
		{"retention bad topic", "PUT", "/api/v1/topics/bad%20name/retention", `{"max_age":"1h"}`, 400, "topic name"},
		{"audit off", "GET", "/api/v1/audit?type=x", "", 503, "audit log is off"},
		{"trace off", "GET", "/api/v1/trace/c-1", "", 503, "audit log is off"},
		{"stream bad from", "GET", "/api/v1/streams/order-1?from=x", "", 400, "from"},
		{"stream bad limit", "GET", "/api/v1/streams/order-1?limit=1001", "", 400, "limit"},
		{"stream bad name", "GET", "/api/v1/streams/order..1", "", 400, "stream name"},
		{"projections off", "GET", "/api/v1/projections", "", 503, "--projections-postgres-url"},
		{"projection off", "GET", "/api/v1/projections/summary", "", 503, "--projections-postgres-url"},
		{"rebuild off", "POST", "/api/v1/projections/summary/rebuild", "", 503, "--projections-postgres-url"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", "application/json")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var b bytes.Buffer
			_, _ = b.ReadFrom(resp.Body)
			if resp.StatusCode != tc.code || !strings.Contains(b.String(), tc.want) {
				t.Fatalf("%s %s: %d %s, want %d with %q", tc.method, tc.path, resp.StatusCode, b.String(), tc.code, tc.want)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Fatalf("content type %q", ct)
			}
			if tc.code >= 400 {
				var eb ErrorBody
				if err := json.Unmarshal(b.Bytes(), &eb); err != nil || eb.Error == "" {
					t.Fatalf("error body %s: %v", b.String(), err)
				}
			}
		})
	}
}

func TestClientErrors(t *testing.T) {
	t.Parallel()
	if _, err := NewClient("localhost:8080", nil); err == nil {
		t.Fatal("a URL without scheme was accepted")
	}
	c, err := NewClient("http://"+closedAddr(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.DLQs(t.Context())
	if err == nil || !strings.Contains(err.Error(), "cannot reach the admin API") {
		t.Fatalf("unreachable: %v", err)
	}
	e := newEnv(t)
	srv := httptest.NewServer(Handler(e.svc, nil))
	defer srv.Close()
	c, _ = NewClient(srv.URL, nil)
	_, err = c.DLQEntry(t.Context(), "nothing-here:1")
	if !IsNotFound(err) {
		t.Fatalf("missing entry: %v", err)
	}
	if _, err := c.DLQEntry(t.Context(), "nonsense"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad id: %v", err)
	}
}

func closedAddr(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.NotFoundHandler())
	addr := srv.Listener.Addr().String()
	srv.Close()
	return addr
}

func TestParseFilter(t *testing.T) {
	t.Parallel()
	en := &Entry{Type: "shop.order.placed.v1", Error: "dial tcp: timeout, giving up", Group: "billing", Subject: "o-1", EventID: "e-1", Key: "k"}
	for _, tc := range []struct {
		filter string
		ok     bool
		match  bool
	}{
		{"", true, true},
		{"type=shop.order.placed.v1", true, true},
		{"type=shop.order.*", true, true},
		{"type=shop.*.v2", true, false},
		{"type=shop", true, false},
		{"error~=timeout", true, true},
		{"error~=time(out|d out), giving", true, true},
		{"type=shop.*,error~=timeout,group=billing", true, true},
		{"type=shop.*, group=other", true, false},
		{"subject=o-1,id=e-1,key=k,handler=", true, true},
		{"correlation~=.+", true, false},
		{"colour=red", false, false},
		{"type", false, false},
		{"=x", false, false},
		{"error~=((", false, false},
		{"type~x", false, false},
	} {
		t.Run(tc.filter, func(t *testing.T) {
			f, err := ParseFilter(tc.filter)
			if (err == nil) != tc.ok {
				t.Fatalf("err %v, want ok %v", err, tc.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("%v does not wrap ErrInvalid", err)
				}
				return
			}
			if got := f.Match(en); got != tc.match {
				t.Fatalf("match %v, want %v", got, tc.match)
			}
		})
	}
}

func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{"type=a.*,error~=x,y", "error~=[,]", "group=", "*", "type=*.*", "key~=^$"} {
		f.Add(s)
	}
	en := &Entry{Type: "a.b", Error: "x,y", Group: "g"}
	f.Fuzz(func(t *testing.T, s string) {
		flt, err := ParseFilter(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		_ = flt.Match(en)
		if flt.String() != strings.TrimSpace(s) {
			t.Fatalf("String %q of %q", flt.String(), s)
		}
	})
}

func FuzzParseEntryID(f *testing.F) {
	for _, s := range []string{"orders.dlq:42", "orders:1", ":1", "a:", "a.b.c.dlq:18446744073709551615", "x:y:3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		topic, seq, err := ParseEntryID(s)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			return
		}
		t2, s2, err := ParseEntryID(FormatEntryID(topic, seq))
		if err != nil || t2 != topic || s2 != seq || seq == 0 || !strings.HasSuffix(topic, ".dlq") {
			t.Fatalf("%q -> %q %d -> %q %d %v", s, topic, seq, t2, s2, err)
		}
	})
}

func FuzzParseAuditQuery(f *testing.F) {
	for _, s := range []string{
		"correlation=c-1", "type=t&since=2026-01-02T15:04:05Z&until=2026-01-03T00:00:00Z&limit=10",
		"subject=o-1&after=1700000000000000000-42&payload=false", "type=x&limit=0", "type=x&after=abc", "since=x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := ParseAuditQuery(v)
		if err != nil {
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, audit.ErrInvalidQuery) {
				t.Fatalf("error %v wraps neither ErrInvalid nor audit.ErrInvalidQuery", err)
			}
			return
		}
		q2, err := ParseAuditQuery(AuditQueryValues(q))
		if err != nil {
			t.Fatalf("round trip of %+v: %v", q, err)
		}
		if q2.CorrelationID != q.CorrelationID || q2.Type != q.Type || q2.Subject != q.Subject || q2.Limit != q.Limit ||
			!q2.Since.Equal(q.Since) || !q2.Until.Equal(q.Until) || q2.After != q.After || q2.NoPayload != q.NoPayload {
			t.Fatalf("round trip %+v -> %+v", q, q2)
		}
	})
}

// FuzzDecodeRequests feeds bodies to the decoding and checking of every
// POST and PUT endpoint: errors wrap ErrInvalid, nothing panics.
func FuzzDecodeRequests(f *testing.F) {
	for _, s := range []string{
		`{"group":"g","to":"time:2026-01-02T15:04:05Z"}`, `{"topic":"t","from":"seq:3","into_group":"n","key_order":false}`,
		`{"topic":"t","filter":"type=x","dry_run":true,"limit":3,"ids":["t.dlq:1"]}`, `{"max_age":"7d","max_bytes":"1GB","max_msgs":"10"}`,
		`[]`, `null`, `{"group":1}`, `{"to":"seq:0","group":"g"}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		check := func(v any, validate func() error) {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			err := decode(r, httptest.NewRecorder(), v)
			if err == nil {
				err = validate()
			}
			if err != nil && !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("%T: error %v does not wrap ErrInvalid", v, err)
			}
		}
		var rp ReplayRequest
		check(&rp, func() error {
			p, err := rp.plan()
			if err == nil && p.into == nil && p.group == "" {
				t.Fatalf("plan of %q has nothing to do", body)
			}
			return err
		})
		var rr RedriveRequest
		check(&rr, func() error { _, err := rr.check(); return err })
		var rt RetentionRequest
		check(&rt, func() error { _, err := rt.Parse(); return err })
	})
}

func TestAuditQueryValidation(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, tc := range []struct {
		raw string
		ok  bool
	}{
		{"correlation=c", true},
		{"topic=t", false},
		{"", false},
		{"type=t&limit=10001", false},
		{"type=t&limit=2000", false},
		{"type=t&limit=2000&payload=false", true},
		{"type=t&since=" + now.Format(time.RFC3339) + "&until=" + now.Format(time.RFC3339), false},
		{"type=t&since=yesterday", false},
		{"type=t&payload=maybe", false},
		{"type=t&after=5-5", true},
		{"type=t&after=5", false},
	} {
		v, _ := url.ParseQuery(tc.raw)
		_, err := ParseAuditQuery(v)
		if (err == nil) != tc.ok {
			t.Errorf("%q: %v, want ok %v", tc.raw, err, tc.ok)
		}
	}
}
