// Package auth secures Herald's listeners: NATS users minted from an
// operator and account Herald holds (Authority), per-service publish and
// subscribe permissions enforced by the broker (ServicePermissions), the
// identities and API tokens of services and operators (Manager), OAuth2 /
// OIDC bearer tokens (OIDC), and the HTTP middleware that authenticates
// every request of the admin API and the schema registry and checks its
// role (Guard). See docs/security.md.
package auth

import (
	"context"
	"fmt"
	"strings"
)

// Role is what an HTTP identity may do.
type Role string

// Roles, from least to most. A service reads schemas and registers them
// under its subjects; a reader reads everything on the admin API
// (including dead letters and the audit log); a writer also registers
// schemas under its subject prefixes; an admin does everything (config,
// deletes, redrive, purge, replay, credentials).
const (
	RoleService Role = "service"
	RoleReader  Role = "reader"
	RoleWriter  Role = "writer"
	RoleAdmin   Role = "admin"
)

// ParseRole reads a role name.
func ParseRole(s string) (Role, error) {
	switch r := Role(strings.ToLower(strings.TrimSpace(s))); r {
	case RoleService, RoleReader, RoleWriter, RoleAdmin:
		return r, nil
	}
	return "", fmt.Errorf("role %q: want reader, writer or admin", s)
}

func (r Role) level() int {
	switch r {
	case RoleReader:
		return 1
	case RoleWriter:
		return 2
	case RoleAdmin:
		return 3
	}
	return 0
}

// AtLeast reports whether r grants everything want does. A service role
// grants nothing of the operator roles.
func (r Role) AtLeast(want Role) bool {
	if want == RoleService {
		return r != ""
	}
	return r != RoleService && r.level() >= want.level()
}

// Identity is who made a request.
type Identity struct {
	// Name is the service, user or token subject.
	Name string `json:"name"`
	Role Role   `json:"role"`
	// Subjects are the registry subject prefixes a writer or service may
	// register under; nil for a writer means any subject.
	Subjects []string `json:"subjects,omitempty"`
	// Publish and Subscribe are a service's topics.
	Publish   []string `json:"publish,omitempty"`
	Subscribe []string `json:"subscribe,omitempty"`
	// Method says how it authenticated: "token", "oidc" or "none" (the
	// server runs without authentication).
	Method string `json:"method"`
}

// MayRegister reports whether the identity may register a schema under
// subject.
func (id *Identity) MayRegister(subject string) bool {
	switch id.Role {
	case RoleAdmin:
		return true
	case RoleWriter:
		if id.Subjects == nil {
			return true
		}
	case RoleService:
	default:
		return false
	}
	for _, p := range id.Subjects {
		if subject == p || strings.HasPrefix(subject, p) && (strings.HasSuffix(p, "-") || strings.HasSuffix(p, ".") ||
			strings.HasPrefix(subject[len(p):], "-") || strings.HasPrefix(subject[len(p):], ".")) {
			return true
		}
	}
	return false
}

type ctxKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id *Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// FromContext returns the identity of the request ctx belongs to.
func FromContext(ctx context.Context) (*Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(*Identity)
	return id, ok
}
