package auth

import (
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"
)

// ErrNoCredentials is returned by an Authenticator for a request that
// carries no credentials of its kind.
var ErrNoCredentials = errors.New("no credentials")

// ErrBadCredentials is wrapped by an Authenticator's error for credentials
// it does not accept.
var ErrBadCredentials = errors.New("invalid credentials")

// Authenticator reads a request's credentials.
type Authenticator interface {
	// Authenticate returns the identity of r's credentials,
	// ErrNoCredentials when r carries none of its kind, or an error
	// wrapping ErrBadCredentials when they are wrong.
	Authenticate(r *http.Request) (*Identity, error)
}

// Requirement is what a request needs.
type Requirement struct {
	// Public requests need no identity (health checks).
	Public bool
	// Role is the least role the identity must have.
	Role Role
	// Check, if set, runs after the role check with the identity (a
	// writer's subject prefix, for example).
	Check func(id *Identity, r *http.Request) error
}

// Policy returns what a request needs.
type Policy func(r *http.Request) Requirement

// Action is a request that changed something, as the audit log records it.
type Action struct {
	Time     time.Time `json:"time"`
	Actor    string    `json:"actor"`
	Role     Role      `json:"role"`
	Method   string    `json:"method"`
	Path     string    `json:"path"`
	Query    string    `json:"query,omitempty"`
	Status   int       `json:"status"`
	Remote   string    `json:"remote"`
	Listener string    `json:"listener"`
}

// GuardConfig configures a Guard.
type GuardConfig struct {
	// Name names the listener in errors and audit records ("admin",
	// "registry").
	Name string
	// Authenticators are tried in order. None: the server runs without
	// authentication and every request is an admin named "anonymous".
	Authenticators []Authenticator
	// Policy says what each request needs. Default: admin for everything.
	Policy Policy
	// AllowedHosts are Host header names accepted besides IP addresses,
	// localhost and this machine's hostname; "*" accepts any. Checking
	// the Host keeps DNS-rebinding pages off a loopback server.
	AllowedHosts []string
	// WriteError writes an error answer in the listener's format.
	WriteError func(w http.ResponseWriter, status int, msg string)
	// OnAction is called after each request with a method other than GET,
	// HEAD and OPTIONS (redrive, purge, replay, schema deletes, config,
	// credentials) with what was done and by whom.
	OnAction func(r *http.Request, a Action)
	// Logger for refused requests at debug level. Default slog.Default().
	Logger *slog.Logger
}

// Guard is the HTTP middleware that checks the Host, refuses cross-site
// requests that change state, authenticates and authorises every request.
type Guard struct {
	cfg     GuardConfig
	hosts   map[string]bool
	anyHost bool
	xorigin *http.CrossOriginProtection
}

// NewGuard returns a guard for cfg.
func NewGuard(cfg GuardConfig) *Guard {
	if cfg.Policy == nil {
		cfg.Policy = func(*http.Request) Requirement { return Requirement{Role: RoleAdmin} }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.WriteError == nil {
		cfg.WriteError = func(w http.ResponseWriter, status int, msg string) { http.Error(w, msg, status) }
	}
	g := &Guard{cfg: cfg, hosts: map[string]bool{"localhost": true}, xorigin: http.NewCrossOriginProtection()}
	if h, err := os.Hostname(); err == nil {
		g.hosts[strings.ToLower(h)] = true
	}
	for _, h := range cfg.AllowedHosts {
		h = strings.ToLower(strings.TrimSpace(h))
		if h == "*" {
			g.anyHost = true
		}
		if h != "" {
			g.hosts[h] = true
		}
	}
	return g
}

// Enabled reports whether the guard authenticates requests.
func (g *Guard) Enabled() bool { return len(g.cfg.Authenticators) > 0 }

func (g *Guard) hostAllowed(host string) bool {
	if g.anyHost {
		return true
	}
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.ToLower(strings.TrimSuffix(strings.Trim(h, "[]"), "."))
	if h == "" {
		return false
	}
	if net.ParseIP(h) != nil || g.hosts[h] || strings.HasSuffix(h, ".localhost") {
		return true
	}
	return false
}

// pathTrick reports a path with dot segments or control characters, in
// its escaped or unescaped form; such paths are refused before routing so
// the policy and the router cannot read them differently.
func pathTrick(r *http.Request) bool {
	raw := r.URL.EscapedPath()
	for _, seg := range strings.Split(raw, "/") {
		dec, err := url.PathUnescape(seg)
		if err != nil {
			return true
		}
		if dec == "." || dec == ".." || strings.ContainsAny(dec, "\x00\r\n") {
			return true
		}
		for _, part := range strings.Split(dec, "/") {
			if part == "." || part == ".." {
				return true
			}
		}
	}
	return false
}

// Wrap returns next behind the guard.
func (g *Guard) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !g.hostAllowed(r.Host) {
			g.refuse(w, r, http.StatusMisdirectedRequest, "host "+quote(r.Host)+" is not served here (add it to --allowed-hosts if it names this server)")
			return
		}
		if pathTrick(r) {
			g.refuse(w, r, http.StatusBadRequest, "path "+quote(r.URL.EscapedPath())+" has dot segments or control characters")
			return
		}
		if err := g.xorigin.Check(r); err != nil {
			g.refuse(w, r, http.StatusForbidden, "cross-site request refused: "+err.Error())
			return
		}
		req := g.cfg.Policy(r)
		id, err := g.authenticate(r)
		if err != nil && !req.Public {
			w.Header().Set("WWW-Authenticate", `Basic realm="herald", charset="UTF-8"`)
			w.Header().Add("WWW-Authenticate", `Bearer realm="herald"`)
			g.refuse(w, r, http.StatusUnauthorized, err.Error())
			return
		}
		if id != nil && !req.Public {
			if !id.Role.AtLeast(req.Role) {
				g.refuse(w, r, http.StatusForbidden, id.Name+" has role "+string(id.Role)+"; "+r.Method+" "+r.URL.Path+" needs "+string(req.Role))
				return
			}
			if req.Check != nil {
				if err := req.Check(id, r); err != nil {
					g.refuse(w, r, http.StatusForbidden, err.Error())
					return
				}
			}
		}
		if id != nil {
			r = r.WithContext(WithIdentity(r.Context(), id))
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
			return
		}
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		if g.cfg.OnAction != nil {
			a := Action{Time: time.Now().UTC(), Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery,
				Status: sw.status, Remote: r.RemoteAddr, Listener: g.cfg.Name}
			if id != nil {
				a.Actor, a.Role = id.Name, id.Role
			}
			g.cfg.OnAction(r, a)
		}
	})
}

var anonymous = &Identity{Name: "anonymous", Role: RoleAdmin, Method: "none"}

// authenticate returns the request's identity. Without authenticators
// every request is the anonymous admin.
func (g *Guard) authenticate(r *http.Request) (*Identity, error) {
	if len(g.cfg.Authenticators) == 0 {
		return anonymous, nil
	}
	for _, a := range g.cfg.Authenticators {
		id, err := a.Authenticate(r)
		if errors.Is(err, ErrNoCredentials) {
			continue
		}
		if err != nil {
			return nil, err
		}
		return id, nil
	}
	return nil, errors.New("authentication required: send HTTP basic auth (NAME:TOKEN from a credentials file) or a bearer token")
}

func (g *Guard) refuse(w http.ResponseWriter, r *http.Request, status int, msg string) {
	g.cfg.Logger.Debug("request refused", "listener", g.cfg.Name, "method", r.Method, "path", r.URL.Path,
		"remote", r.RemoteAddr, "status", status, "reason", msg)
	g.cfg.WriteError(w, status, msg)
}

func quote(s string) string {
	if len(s) > 100 {
		s = s[:100] + "..."
	}
	return `"` + strings.ToValidUTF8(s, "?") + `"`
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.wrote {
		s.status, s.wrote = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.wrote = true
	return s.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }
