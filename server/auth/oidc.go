package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

// OIDCConfig configures OAuth2 / OpenID Connect bearer tokens.
type OIDCConfig struct {
	// Issuer must equal the tokens' "iss" claim. Required.
	Issuer string
	// Audience, if set, must be one of the tokens' "aud" values.
	Audience string
	// JWKS is the issuer's key set: a file path or an http(s) URL
	// (fetched at start, then every Refresh and when a token names a key
	// it does not hold, at most once a minute). Required.
	JWKS string
	// RoleClaim names the claim holding the role: a string or a list of
	// strings; "admin", "writer" and "reader" count, also with a "herald:"
	// or "herald-" prefix, and the highest one wins. Default "roles".
	RoleClaim string
	// SubjectsClaim names the claim listing a writer's registry subject
	// prefixes; without it a writer may register under any subject.
	// Default "herald_subjects".
	SubjectsClaim string
	// Refresh is how often a JWKS URL is fetched again. Default 10m.
	Refresh time.Duration
	// HTTPClient fetches a JWKS URL. Default a client with a 10s timeout.
	HTTPClient *http.Client
}

// OIDC validates bearer JWTs signed by a configured issuer's keys. It is
// safe for concurrent use.
type OIDC struct {
	cfg OIDCConfig

	mu      sync.Mutex
	keys    jose.JSONWebKeySet
	fetched time.Time
}

var oidcAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA}

// NewOIDC loads the key set and returns the validator.
func NewOIDC(ctx context.Context, cfg OIDCConfig) (*OIDC, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("auth: OIDC needs the issuer (--oidc-issuer)")
	}
	if cfg.JWKS == "" {
		return nil, errors.New("auth: OIDC needs the issuer's key set, a file or URL (--oidc-jwks)")
	}
	if cfg.RoleClaim == "" {
		cfg.RoleClaim = "roles"
	}
	if cfg.SubjectsClaim == "" {
		cfg.SubjectsClaim = "herald_subjects"
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = 10 * time.Minute
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	o := &OIDC{cfg: cfg}
	if err := o.load(ctx); err != nil {
		return nil, err
	}
	return o, nil
}

func (o *OIDC) load(ctx context.Context) error {
	var b []byte
	var err error
	src := o.cfg.JWKS
	if strings.HasPrefix(src, "https://") || strings.HasPrefix(src, "http://") {
		req, rerr := http.NewRequestWithContext(ctx, http.MethodGet, src, nil)
		if rerr != nil {
			return fmt.Errorf("auth: JWKS %s: %w", src, rerr)
		}
		resp, rerr := o.cfg.HTTPClient.Do(req)
		if rerr != nil {
			return fmt.Errorf("auth: fetch JWKS %s: %w", src, rerr)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("auth: fetch JWKS %s: %s", src, resp.Status)
		}
		b, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	} else {
		b, err = os.ReadFile(src)
	}
	if err != nil {
		return fmt.Errorf("auth: JWKS %s: %w", src, err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		return fmt.Errorf("auth: JWKS %s: %w", src, err)
	}
	if len(set.Keys) == 0 {
		return fmt.Errorf("auth: JWKS %s holds no keys", src)
	}
	for _, k := range set.Keys {
		if !k.IsPublic() {
			return fmt.Errorf("auth: JWKS %s holds a private key (kid %q): publish public keys only", src, k.KeyID)
		}
	}
	o.mu.Lock()
	o.keys, o.fetched = set, time.Now()
	o.mu.Unlock()
	return nil
}

// key returns the verification key for kid, fetching the set again when
// it is due or the kid is unknown (at most once a minute).
func (o *OIDC) key(ctx context.Context, kid string) (*jose.JSONWebKey, error) {
	find := func() *jose.JSONWebKey {
		o.mu.Lock()
		defer o.mu.Unlock()
		if kid == "" && len(o.keys.Keys) == 1 {
			return &o.keys.Keys[0]
		}
		if ks := o.keys.Key(kid); len(ks) > 0 {
			return &ks[0]
		}
		return nil
	}
	k := find()
	o.mu.Lock()
	age := time.Since(o.fetched)
	o.mu.Unlock()
	isURL := strings.Contains(o.cfg.JWKS, "://")
	if isURL && (age > o.cfg.Refresh || k == nil && age > time.Minute) {
		if err := o.load(ctx); err == nil {
			k = find()
		}
	}
	if k == nil {
		return nil, fmt.Errorf("%w: token signed with key %q, which the issuer's key set does not hold", ErrBadCredentials, kid)
	}
	return k, nil
}

// Authenticate implements Authenticator for bearer JWTs.
func (o *OIDC) Authenticate(r *http.Request) (*Identity, error) {
	h := r.Header.Get("Authorization")
	if len(h) < 8 || !strings.EqualFold(h[:7], "bearer ") {
		return nil, ErrNoCredentials
	}
	raw := strings.TrimSpace(h[7:])
	if strings.Count(raw, ".") != 2 {
		return nil, ErrNoCredentials // not a JWT: another authenticator's token
	}
	tok, err := josejwt.ParseSigned(raw, oidcAlgs)
	if err != nil {
		return nil, fmt.Errorf("%w: bearer token: %w", ErrBadCredentials, err)
	}
	kid := ""
	if len(tok.Headers) > 0 {
		kid = tok.Headers[0].KeyID
	}
	k, err := o.key(r.Context(), kid)
	if err != nil {
		return nil, err
	}
	var std josejwt.Claims
	var custom map[string]any
	if err := tok.Claims(k.Key, &std, &custom); err != nil {
		return nil, fmt.Errorf("%w: bearer token signature: %w", ErrBadCredentials, err)
	}
	if std.Expiry == nil {
		return nil, fmt.Errorf("%w: bearer token has no expiry", ErrBadCredentials)
	}
	exp := josejwt.Expected{Issuer: o.cfg.Issuer, Time: time.Now()}
	if o.cfg.Audience != "" {
		exp.AnyAudience = josejwt.Audience{o.cfg.Audience}
	}
	if err := std.ValidateWithLeeway(exp, time.Minute); err != nil {
		return nil, fmt.Errorf("%w: bearer token: %w", ErrBadCredentials, err)
	}
	role := roleOf(custom[o.cfg.RoleClaim])
	if role == "" {
		return nil, fmt.Errorf("%w: bearer token of %q has no Herald role in claim %q (want admin, writer or reader)", ErrBadCredentials, std.Subject, o.cfg.RoleClaim)
	}
	id := &Identity{Name: std.Subject, Role: role, Method: "oidc"}
	if email, ok := custom["email"].(string); ok && email != "" {
		id.Name = email
	}
	if subs := strings.Join(stringsOf(custom[o.cfg.SubjectsClaim]), ","); subs != "" {
		id.Subjects = strings.Split(subs, ",")
	}
	return id, nil
}

func stringsOf(v any) []string {
	switch t := v.(type) {
	case string:
		return strings.Fields(strings.ReplaceAll(t, ",", " "))
	case []any:
		var out []string
		for _, x := range t {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func roleOf(v any) Role {
	var best Role
	for _, s := range stringsOf(v) {
		s = strings.ToLower(s)
		s = strings.TrimPrefix(strings.TrimPrefix(s, "herald:"), "herald-")
		r := Role(s)
		switch r {
		case RoleReader, RoleWriter, RoleAdmin:
			if best == "" || r.level() > best.level() {
				best = r
			}
		}
	}
	return best
}
