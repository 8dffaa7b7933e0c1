package registry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/schema/schematest"
	"github.com/heraldhq/herald/server/registry"
)

// TestImportIDBounds: in IMPORT mode, ids and versions beyond what the API
// can read back (int32) are refused, and registration keeps working after.
func TestImportIDBounds(t *testing.T) {
	t.Parallel()
	h, _ := memHandler(t)
	const ct = registry.ContentType
	if r := do(t, h, "PUT", "/mode?force=true", `{"mode":"IMPORT"}`, ct); r.status != 200 {
		t.Fatalf("mode = %d %s", r.status, r.body)
	}
	for _, tc := range []struct {
		name, body string
		code       int
	}{
		{"id 2^63-1", `{"schema":"\"int\"","id":9223372036854775807,"version":1}`, 42201},
		{"id 2^31", `{"schema":"\"int\"","id":2147483648,"version":1}`, 42201},
		{"id 2^64", `{"schema":"\"int\"","id":18446744073709551616,"version":1}`, 422},
		{"version 2^31", `{"schema":"\"int\"","id":5,"version":2147483648}`, 42202},
		{"version 2^63-1", `{"schema":"\"int\"","id":5,"version":9223372036854775807}`, 42202},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, h, "POST", "/subjects/imp/versions", tc.body, ct)
			if r.status != 422 || !strings.Contains(r.body, fmt.Sprintf(`"error_code":%d`, tc.code)) {
				t.Fatalf("register = %d %s, want 422 with code %d", r.status, r.body, tc.code)
			}
		})
	}
	// The largest readable id is fine, and the subject still takes a
	// schema with an id of its own after it.
	if r := do(t, h, "POST", "/subjects/imp/versions", `{"schema":"\"int\"","id":2147483647,"version":1}`, ct); r.status != 200 {
		t.Fatalf("register id 2^31-1 = %d %s", r.status, r.body)
	}
	if r := do(t, h, "GET", "/schemas/ids/2147483647", "", ""); r.status != 200 {
		t.Fatalf("get id 2^31-1 = %d %s", r.status, r.body)
	}
	if r := do(t, h, "PUT", "/mode", `{"mode":"READWRITE"}`, ct); r.status != 200 {
		t.Fatalf("mode = %d %s", r.status, r.body)
	}
	// Ids are exhausted: a clear 422, not a wrapped negative id.
	r := do(t, h, "POST", "/subjects/other/versions", `{"schema":"\"long\""}`, ct)
	if r.status != 422 || !strings.Contains(r.body, "exhausted") {
		t.Fatalf("register after the last id = %d %s, want 422 ids exhausted", r.status, r.body)
	}
}

// deepJSONSchema nests n object schemas, each the only property of the
// one above it.
func deepJSONSchema(n int) string {
	var b strings.Builder
	for range n {
		b.WriteString(`{"type":"object","properties":{"a":`)
	}
	b.WriteString(`{"type":"string"}`)
	for range n {
		b.WriteString(`}}`)
	}
	return b.String()
}

// TestDeepSchemaRefusedBeforeCompiling: a schema nested far deeper than
// any real one is refused by the nesting check, before any compiler sees
// it (the refusal names the nesting; a compiler's own error would not).
func TestDeepSchemaRefusedBeforeCompiling(t *testing.T) {
	t.Parallel()
	h, _ := memHandler(t)
	for _, n := range []int{1500, 9000} {
		for _, typ := range []string{"JSON", "AVRO"} {
			t.Run(fmt.Sprintf("%s %d", typ, n), func(t *testing.T) {
				text := deepJSONSchema(n)
				body, _ := json.Marshal(map[string]string{"schema": text, "schemaType": typ})
				for _, path := range []string{"/subjects/deep/versions", "/subjects/deep", "/compatibility/subjects/deep/versions"} {
					r := do(t, h, "POST", path, string(body), registry.ContentType)
					if r.status != 422 || !strings.Contains(r.body, "nest more than") {
						t.Fatalf("%s = %d %.200s, want 422 about nesting", path, r.status, r.body)
					}
				}
			})
		}
	}
	// A schema of ordinary depth still registers.
	body, _ := json.Marshal(map[string]string{"schema": deepJSONSchema(20), "schemaType": "JSON"})
	if r := do(t, h, "POST", "/subjects/ok/versions", string(body), registry.ContentType); r.status != 200 {
		t.Fatalf("register depth 20 = %d %s", r.status, r.body)
	}
}

// TestCancelledRequestStopsWork: a registration whose client went away is
// not worked on.
func TestCancelledRequestStopsWork(t *testing.T) {
	t.Parallel()
	h, reg := memHandler(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	body, _ := json.Marshal(map[string]string{"schema": deepJSONSchema(30), "schemaType": "JSON"})
	req := httptest.NewRequestWithContext(ctx, "POST", "http://registry/subjects/gone/versions", strings.NewReader(string(body)))
	req.Header.Set("Content-Type", registry.ContentType)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code >= 500 && rec.Code != 499 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
	}
	if subs := reg.Subjects(true, ""); len(subs) != 0 {
		t.Fatalf("subjects = %v: a cancelled registration was stored", subs)
	}
}

// TestVersionOfMissingID: a version whose schema id the store does not
// hold is an error, not a 200 with an empty schema.
func TestVersionOfMissingID(t *testing.T) {
	t.Parallel()
	store := schema.NewMemoryStore()
	doc := `{"subject":"broken","version":1,"id":99}`
	if _, err := store.Put(t.Context(), "subjects.YnJva2Vu.1", []byte(doc)); err != nil {
		t.Fatal(err)
	}
	reg, err := schema.New(t.Context(), store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	h := registry.NewHandler(reg)
	for _, path := range []string{"/subjects/broken/versions/1", "/subjects/broken/versions/latest", "/subjects/broken/versions/1/schema"} {
		r := do(t, h, "GET", path, "", "")
		if r.status != 404 || !strings.Contains(r.body, `"error_code":40403`) || !strings.Contains(r.body, "99") {
			t.Fatalf("GET %s = %d %s, want 404 40403 naming id 99", path, r.status, r.body)
		}
	}
	if r := do(t, h, "GET", "/schemas", "", ""); r.status != 200 || strings.Contains(r.body, `"id":99`) {
		t.Fatalf("GET /schemas = %d %s: lists a version without a schema", r.status, r.body)
	}
}

// TestDeletedBucket: with its KV bucket deleted under it, the registry
// answers 503 (the store is unavailable), never 500.
func TestDeletedBucket(t *testing.T) {
	t.Parallel()
	ns := schematest.Start(t, "")
	js := ns.Connect(t)
	bucket := "schemas_deleted_bucket"
	store, err := schema.NewKVStore(t.Context(), js, bucket)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := schema.New(t.Context(), store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	h := registry.NewHandler(reg)
	const ct = registry.ContentType
	if r := do(t, h, "POST", "/subjects/a/versions", `{"schema":"\"int\""}`, ct); r.status != 200 {
		t.Fatalf("register = %d %s", r.status, r.body)
	}
	if err := js.DeleteKeyValue(t.Context(), bucket); err != nil {
		t.Fatal(err)
	}
	if _, err := js.KeyValue(t.Context(), bucket); err != jetstream.ErrBucketNotFound {
		t.Fatalf("bucket still there: %v", err)
	}
	for _, tc := range []struct{ method, path, body string }{
		{"POST", "/subjects/b/versions", `{"schema":"\"long\""}`},
		{"PUT", "/config/a", `{"compatibility":"FULL"}`},
		{"DELETE", "/subjects/a", ""},
	} {
		start := time.Now()
		r := do(t, h, tc.method, tc.path, tc.body, ct)
		if r.status != http.StatusServiceUnavailable {
			t.Fatalf("%s %s = %d %s, want 503", tc.method, tc.path, r.status, r.body)
		}
		if d := time.Since(start); d > 15*time.Second {
			t.Fatalf("%s %s took %v", tc.method, tc.path, d)
		}
	}
}
