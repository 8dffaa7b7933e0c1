package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

type issuer struct {
	key  *ecdsa.PrivateKey
	kid  string
	jwks string
}

func newIssuer(t testing.TB) *issuer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	iss := &issuer{key: k, kid: "k1"}
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.PublicKey, KeyID: iss.kid, Algorithm: "ES256", Use: "sig"}}}
	b, _ := json.Marshal(set)
	iss.jwks = filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(iss.jwks, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return iss
}

func (iss *issuer) token(t testing.TB, claims map[string]any) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: iss.key}, (&jose.SignerOptions{}).WithHeader("kid", iss.kid))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := josejwt.Signed(sig).Claims(claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestOIDC(t *testing.T) {
	t.Parallel()
	iss := newIssuer(t)
	other := newIssuer(t)
	o, err := NewOIDC(t.Context(), OIDCConfig{Issuer: "https://idp.example", Audience: "herald", JWKS: iss.jwks})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	base := func() map[string]any {
		return map[string]any{"iss": "https://idp.example", "aud": "herald", "sub": "u-1", "email": "ann@example.com",
			"exp": now.Add(time.Hour).Unix(), "iat": now.Unix(), "roles": []string{"herald:writer", "other"}, "herald_subjects": []string{"shop.orders"}}
	}
	with := func(k string, v any) map[string]any { c := base(); c[k] = v; return c }
	without := func(k string) map[string]any { c := base(); delete(c, k); return c }
	for _, tc := range []struct {
		name  string
		token string
		role  Role
		bad   bool
	}{
		{"valid writer", iss.token(t, base()), RoleWriter, false},
		{"admin wins", iss.token(t, with("roles", []string{"reader", "admin"})), RoleAdmin, false},
		{"string role", iss.token(t, with("roles", "reader")), RoleReader, false},
		{"expired", iss.token(t, with("exp", now.Add(-time.Hour).Unix())), "", true},
		{"no expiry", iss.token(t, without("exp")), "", true},
		{"future", iss.token(t, with("nbf", now.Add(time.Hour).Unix())), "", true},
		{"wrong issuer", iss.token(t, with("iss", "https://evil.example")), "", true},
		{"wrong audience", iss.token(t, with("aud", "other")), "", true},
		{"no role", iss.token(t, with("roles", []string{"viewer"})), "", true},
		{"other key", other.token(t, base()), "", true},
		{"tampered", iss.token(t, base())[:40] + "x" + iss.token(t, base())[41:], "", true},
		{"garbage", "a.b.c", "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := httptest.NewRequest("GET", "/", nil)
			r.Header.Set("Authorization", "Bearer "+tc.token)
			id, err := o.Authenticate(r)
			if tc.bad {
				if err == nil {
					t.Fatalf("accepted: %+v", id)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if id.Role != tc.role || id.Name != "ann@example.com" || id.Method != "oidc" {
				t.Fatalf("identity %+v", id)
			}
		})
	}
	// An unsigned token (alg none) is refused.
	hdr := `{"alg":"none"}`
	enc := func(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }
	b, _ := json.Marshal(base())
	r := httptest.NewRequest("GET", "/", nil)
	r.Header.Set("Authorization", "Bearer "+enc(hdr)+"."+enc(string(b))+".")
	if _, err := o.Authenticate(r); err == nil {
		t.Fatal("alg none accepted")
	}
}

func TestRoles(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		have, want Role
		ok         bool
	}{
		{RoleAdmin, RoleReader, true}, {RoleReader, RoleAdmin, false}, {RoleWriter, RoleReader, true},
		{RoleService, RoleReader, false}, {RoleService, RoleService, true}, {RoleReader, RoleService, true},
	} {
		if got := tc.have.AtLeast(tc.want); got != tc.ok {
			t.Fatalf("%s at least %s = %v", tc.have, tc.want, got)
		}
	}
	w := &Identity{Role: RoleWriter, Subjects: []string{"shop.orders"}}
	for s, ok := range map[string]bool{"shop.orders": true, "shop.orders-value": true, "shop.orders.x": true, "shop.ordersx": false, "shop.payments-value": false} {
		if w.MayRegister(s) != ok {
			t.Fatalf("MayRegister(%q) != %v", s, ok)
		}
	}
	if (&Identity{Role: RoleReader}).MayRegister("x") {
		t.Fatal("reader may register")
	}
}

// FuzzGuard sends arbitrary requests through the guard: no panic, no
// 5xx, and nothing reaches the handler without a valid identity.
func FuzzGuard(f *testing.F) {
	for _, s := range [][4]string{
		{"GET", "/api/v1/topics", "", ""}, {"POST", "/subjects/a%2Fb/versions", "Basic YTpi", "application/json"},
		{"DELETE", "/subjects/x", "Bearer hrd_x", ""}, {"GET", "/%2e%2e/x", "", ""}, {"POST", "/api/v1/replay", "Bearer a.b.c", "text/plain"},
		{"PUT", "/config", "Bearer eyJhbGciOiJub25lIn0.e30.", ""}, {"GET", "/healthz", "", ""},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	iss := newIssuer(f)
	o, err := NewOIDC(f.Context(), OIDCConfig{Issuer: "https://idp.example", JWKS: iss.jwks})
	if err != nil {
		f.Fatal(err)
	}
	policies := []Policy{(&AdminPolicy{}).Policy(), RegistryPolicy}
	guards := make([]http.Handler, len(policies))
	for i, pol := range policies {
		g := NewGuard(GuardConfig{Authenticators: []Authenticator{o}, Policy: pol})
		h := g.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, ok := FromContext(r.Context()); !ok && r.URL.Path != "/healthz" && r.URL.Path != "/readyz" {
				w.WriteHeader(http.StatusTeapot)
			}
		}))
		guards[i] = h
	}
	f.Fuzz(func(t *testing.T, method, path, authz, ctype string) {
		if !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \t\r\n#?") || len(path) > 1024 {
			return
		}
		req, err := http.NewRequest(method, "http://127.0.0.1"+path, strings.NewReader("{}"))
		if err != nil {
			return
		}
		req.Header.Set("Authorization", authz)
		req.Header.Set("Content-Type", ctype)
		for _, h := range guards {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code >= 500 || rec.Code == http.StatusTeapot {
				t.Fatalf("%s %s: %d (a teapot reached the handler without an identity)", method, path, rec.Code)
			}
		}
	})
}
