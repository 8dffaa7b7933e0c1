package gateway_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/server/gateway"
)

// FuzzIngest feeds arbitrary bodies, content types and attribute headers
// to the ingest endpoint (over the in-process memory broker): every answer
// is 202 or a 4xx problem document, never a panic or a 5xx.
func FuzzIngest(f *testing.F) {
	f.Add("application/cloudevents+json", "", []byte(`{"specversion":"1.0","id":"1","source":"s","type":"a.b","data":{"x":1}}`))
	f.Add(gateway.ContentTypeBatch, "", []byte(`[{"specversion":"1.0","id":"1","source":"s","type":"a.b","data_base64":"AAE="}]`))
	f.Add("application/json", "1.0", []byte(`{"x":1}`))
	f.Add("text/plain; charset=utf-8", "1.0", []byte("%zz"))
	f.Add(gateway.ContentTypeBatch, "", []byte(`[{"specversion":"1.0","id":"1","source":"s","type":"a..b"},null,7]`))
	f.Add("application/cloudevents+json", "", []byte(`{"specversion":"1.0","id":"1","source":"s","type":"a.b","time":"x","seq":{}}`))
	c, err := herald.Connect(f.Context(), herald.Config{URL: "memory://"})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = c.Close() })
	gw, err := gateway.New(c, gateway.WithMaxBody(1<<16))
	if err != nil {
		f.Fatal(err)
	}
	h := gw.Handler()
	f.Fuzz(func(t *testing.T, ct, spec string, body []byte) {
		req := httptest.NewRequest(http.MethodPost, "/v1/topics/fuzz/events", bytes.NewReader(body))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		if spec != "" {
			req.Header.Set("Ce-Specversion", spec)
			req.Header.Set("Ce-Id", "id-"+spec)
			req.Header.Set("Ce-Source", "fuzz")
			req.Header.Set("Ce-Type", "fuzz.type")
			req.Header.Set("Ce-Subject", spec)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		switch {
		case w.Code == http.StatusAccepted:
		case w.Code >= 400 && w.Code < 500:
			var p gateway.Problem
			if err := json.Unmarshal(w.Body.Bytes(), &p); err != nil || p.Status != w.Code || p.Detail == "" {
				t.Fatalf("status %d with body %q: want a problem document", w.Code, w.Body.String())
			}
		default:
			t.Fatalf("status %d: %s", w.Code, w.Body.String())
		}
	})
}
