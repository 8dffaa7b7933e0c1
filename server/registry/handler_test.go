package registry_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/server/registry"
)

func memHandler(t testing.TB) (*registry.Handler, *schema.Registry) {
	t.Helper()
	reg, err := schema.New(t.Context(), schema.NewMemoryStore())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	return registry.NewHandler(reg), reg
}

type response struct {
	status int
	body   string
	ctype  string
}

func do(t testing.TB, h http.Handler, method, path, body, ctype string) response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, "http://registry"+path, rd)
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return response{status: rec.Code, body: rec.Body.String(), ctype: rec.Header().Get("Content-Type")}
}

func TestHandlerResponses(t *testing.T) {
	t.Parallel()
	h, _ := memHandler(t)
	const ct = registry.ContentType
	avro := `{"schema":"{\"type\":\"record\",\"name\":\"A\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"}]}"}`
	if r := do(t, h, "POST", "/subjects/a%2Fb-value/versions", avro, ct); r.status != 200 || r.body != `{"id":1}` {
		t.Fatalf("register = %d %s", r.status, r.body)
	}
	tests := []struct {
		name, method, path, body, ctype string
		status, code                    int
		contains                        string
	}{
		{"subject with slash", "GET", "/subjects/a%2Fb-value/versions/1", "", "", 200, 0, `"subject":"a/b-value","version":1,"id":1,"schema":`},
		{"avro omits schemaType", "GET", "/schemas/ids/1", "", "", 200, 0, `{"schema":"{\"type\":\"record\"`},
		{"raw schema", "GET", "/schemas/ids/1/schema", "", "", 200, 0, `{"type":"record","name":"A"`},
		{"types", "GET", "/schemas/types", "", "", 200, 0, `["JSON","PROTOBUF","AVRO"]`},
		{"versions by id", "GET", "/schemas/ids/1/versions", "", "", 200, 0, `[{"subject":"a/b-value","version":1}]`},
		{"latest", "GET", "/subjects/a%2Fb-value/versions/latest", "", "", 200, 0, `"version":1`},
		{"unknown subject", "GET", "/subjects/nope/versions", "", "", 404, 40401, "nope"},
		{"unknown version", "GET", "/subjects/a%2Fb-value/versions/9", "", "", 404, 40402, "version 9"},
		{"bad version", "GET", "/subjects/a%2Fb-value/versions/zero", "", "", 422, 42202, "zero"},
		{"version 0", "GET", "/subjects/a%2Fb-value/versions/0", "", "", 422, 42202, ""},
		{"unknown id", "GET", "/schemas/ids/42", "", "", 404, 40403, "42"},
		{"bad id", "GET", "/schemas/ids/x", "", "", 404, 40403, ""},
		{"invalid schema", "POST", "/subjects/s/versions", `{"schema":"{\"type\":\"nope\"}"}`, ct, 422, 42201, "invalid schema"},
		{"empty schema", "POST", "/subjects/s/versions", `{}`, ct, 422, 42201, "empty"},
		{"unknown type", "POST", "/subjects/s/versions", `{"schema":"{}","schemaType":"XML"}`, ct, 422, 42201, "XML"},
		{"malformed JSON", "POST", "/subjects/s/versions", `{"schema":`, ct, 422, 422, "malformed"},
		{"wrong content type", "POST", "/subjects/s/versions", avro, "text/plain", 415, 415, ""},
		{"plain JSON accepted", "POST", "/subjects/s2/versions", avro, "application/json", 200, 0, `{"id":1}`},
		{"unknown fields ignored", "POST", "/subjects/s3/versions", `{"schema":"\"int\"","metadata":{"x":1},"ruleSet":null,"surprise":true}`, ct, 200, 0, `"id"`},
		{"bad level", "PUT", "/config", `{"compatibility":"SIDEWAYS"}`, ct, 422, 42203, "SIDEWAYS"},
		{"bad mode", "PUT", "/mode", `{"mode":"SOMETIMES"}`, ct, 422, 42204, "SOMETIMES"},
		{"config", "GET", "/config", "", "", 200, 0, `{"compatibilityLevel":"BACKWARD"}`},
		{"put config", "PUT", "/config/s", `{"compatibility":"full"}`, ct, 200, 0, `{"compatibility":"FULL"}`},
		{"subject config", "GET", "/config/s", "", "", 200, 0, `{"compatibilityLevel":"FULL"}`},
		{"no subject config", "GET", "/config/s2", "", "", 404, 40408, ""},
		{"mode", "GET", "/mode", "", "", 200, 0, `{"mode":"READWRITE"}`},
		{"check unknown subject version", "POST", "/compatibility/subjects/none/versions/1", avro, ct, 404, 40401, ""},
		{"check no versions", "POST", "/compatibility/subjects/none/versions", avro, ct, 200, 0, `{"is_compatible":true,"messages":[]}`},
		{"soft delete missing", "DELETE", "/subjects/none", "", "", 404, 40401, ""},
		{"hard delete live version", "DELETE", "/subjects/s2/versions/1?permanent=true", "", "", 404, 40407, ""},
		{"unknown path", "GET", "/nothing/here", "", "", 404, 404, ""},
		{"wrong method", "PATCH", "/subjects", "", "", 405, 405, ""},
		{"root", "GET", "/", "", "", 200, 0, `{}`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, h, tc.method, tc.path, tc.body, tc.ctype)
			if r.status != tc.status {
				t.Fatalf("status = %d, want %d (body %s)", r.status, tc.status, r.body)
			}
			if r.ctype != registry.ContentType {
				t.Fatalf("content type = %q", r.ctype)
			}
			if tc.code != 0 {
				var e struct {
					Code    int    `json:"error_code"`
					Message string `json:"message"`
				}
				if err := json.Unmarshal([]byte(r.body), &e); err != nil || e.Code != tc.code || e.Message == "" {
					t.Fatalf("error body %s: want error_code %d and a message", r.body, tc.code)
				}
			}
			if !strings.Contains(r.body, tc.contains) {
				t.Fatalf("body %s does not contain %s", r.body, tc.contains)
			}
		})
	}
}

// FuzzHandler sends arbitrary requests: every answer is a well-formed
// response below 500, never a panic.
func FuzzHandler(f *testing.F) {
	seeds := []struct{ method, path, body string }{
		{"POST", "/subjects/s/versions", `{"schema":"{\"type\":\"record\",\"name\":\"A\",\"fields\":[{\"name\":\"a\",\"type\":\"int\"}]}"}`},
		{"POST", "/subjects/s/versions", `{"schema":"{\"type\":\"object\",\"properties\":{\"a\":{\"type\":\"string\"}}}","schemaType":"JSON"}`},
		{"POST", "/subjects/s/versions", `{"schema":"syntax = \"proto3\"; message M { string a = 1; }","schemaType":"PROTOBUF"}`},
		{"POST", "/subjects/s/versions", `{"schema":"\"int\"","references":[{"name":"x","subject":"s","version":-1}]}`},
		{"POST", "/subjects/s/versions", `{"schema":"\"int\"","id":7,"version":3}`},
		{"POST", "/compatibility/subjects/s/versions/latest?verbose=true", `{"schema":"\"long\""}`},
		{"POST", "/subjects/s", `{"schema":"\"int\""}`},
		{"GET", "/subjects/s/versions/latest/referencedby", ""},
		{"DELETE", "/subjects/s/versions/1?permanent=true", ""},
		{"DELETE", "/subjects/s", ""},
		{"PUT", "/config/s", `{"compatibility":"FULL_TRANSITIVE"}`},
		{"PUT", "/mode/s?force=true", `{"mode":"IMPORT"}`},
		{"GET", "/schemas/ids/1/subjects?deleted=true", ""},
		{"GET", "/schemas?latestOnly=true", ""},
	}
	for _, s := range seeds {
		f.Add(s.method, s.path, s.body)
	}
	h, _ := memHandler(f)
	f.Fuzz(func(t *testing.T, method, path, body string) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \t\r\n#") || len(path) > 2048 {
			return
		}
		switch method {
		case "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD":
		default:
			return
		}
		req, err := http.NewRequest(method, "http://registry"+path, strings.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", registry.ContentType)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code >= 500 {
			t.Fatalf("%s %s %q: status %d: %s", method, path, body, rec.Code, rec.Body.String())
		}
		if rec.Code >= 400 && method != "HEAD" {
			var e struct {
				Code int `json:"error_code"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code == 0 {
				t.Fatalf("%s %s: status %d without an error body: %s", method, path, rec.Code, rec.Body.String())
			}
		}
	})
}
