package auth

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// AdminPolicy is the policy of the admin address. Health checks are
// public; GET and HEAD of the admin API, /metrics and the dashboard's
// pages need a reader; credentials management (/api/v1/auth/) and
// everything else, including routes it does not know, need an admin.
// Routes mounted with a role of their own (Route) take that role.
type AdminPolicy struct {
	mu     sync.RWMutex
	routes []route
}

type route struct {
	prefix string
	method string // "" any
	req    Requirement
}

// Route sets what requests under path prefix (with method, "" for any)
// need, overriding the defaults; the longest matching prefix wins.
func (p *AdminPolicy) Route(method, prefix string, req Requirement) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.routes = append(p.routes, route{prefix: prefix, method: method, req: req})
}

// Policy returns the policy function.
func (p *AdminPolicy) Policy() Policy {
	return func(r *http.Request) Requirement {
		path := r.URL.Path
		p.mu.RLock()
		best := -1
		var req Requirement
		for _, rt := range p.routes {
			if (rt.method == "" || rt.method == r.Method) && strings.HasPrefix(path, rt.prefix) && len(rt.prefix) > best {
				best, req = len(rt.prefix), rt.req
			}
		}
		p.mu.RUnlock()
		if best >= 0 {
			return req
		}
		read := r.Method == http.MethodGet || r.Method == http.MethodHead
		switch {
		case path == "/healthz" || path == "/readyz":
			return Requirement{Public: read}
		case strings.HasPrefix(path, "/api/v1/auth/") || path == "/api/v1/auth":
			return Requirement{Role: RoleAdmin}
		case read && strings.HasPrefix(path, "/api/"):
			return Requirement{Role: RoleReader}
		case read && path == "/metrics":
			return Requirement{Role: RoleReader}
		case read && !strings.HasPrefix(path, "/v1/"):
			return Requirement{Role: RoleReader} // dashboard pages
		}
		return Requirement{Role: RoleAdmin}
	}
}

// RegistryPolicy is the policy of the schema registry: every identity
// reads (GET, lookups, compatibility checks); registering a schema under a
// subject needs an admin, or a writer or service whose subject prefixes
// cover it; configuration, modes and deletes need an admin. Paths it does
// not know need an admin.
func RegistryPolicy(r *http.Request) Requirement {
	segs, ok := segments(r.URL.EscapedPath())
	if !ok {
		return Requirement{Role: RoleAdmin}
	}
	read := r.Method == http.MethodGet || r.Method == http.MethodHead
	if read {
		return Requirement{Role: RoleService}
	}
	switch {
	case r.Method == http.MethodPost && len(segs) == 3 && segs[0] == "subjects" && segs[2] == "versions":
		subject := segs[1]
		return Requirement{Role: RoleService, Check: func(id *Identity, _ *http.Request) error {
			if id.MayRegister(subject) {
				return nil
			}
			if len(id.Subjects) > 0 {
				return fmt.Errorf("%s (%s) may not register schemas under subject %q; allowed prefixes: %s", id.Name, id.Role, subject, strings.Join(id.Subjects, ", "))
			}
			return fmt.Errorf("%s (%s) may not register schemas", id.Name, id.Role)
		}}
	case r.Method == http.MethodPost && len(segs) == 2 && segs[0] == "subjects":
		return Requirement{Role: RoleService} // lookup
	case r.Method == http.MethodPost && len(segs) >= 4 && segs[0] == "compatibility":
		return Requirement{Role: RoleService}
	}
	return Requirement{Role: RoleAdmin}
}

// segments splits an escaped path into unescaped segments, without the
// leading empty one.
func segments(escaped string) ([]string, bool) {
	parts := strings.Split(strings.TrimPrefix(escaped, "/"), "/")
	out := make([]string, len(parts))
	for i, p := range parts {
		s, err := url.PathUnescape(p)
		if err != nil {
			return nil, false
		}
		out[i] = s
	}
	return out, true
}
