package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/credentials"
)

// Bucket is the KV bucket identities are kept in. Only Herald and
// operators reach it.
const Bucket = "herald_auth"

// Errors the Manager returns (wrapped).
var (
	ErrExists   = errors.New("identity exists")
	ErrNotFound = errors.New("no such identity")
	ErrInvalid  = errors.New("invalid request")
)

// Kinds of identities.
const (
	KindService = "service"
	KindUser    = "user"
)

// Entry is a stored identity. Its secrets are not kept: the API token only
// as a SHA-256 hash, the NATS seed not at all.
type Entry struct {
	Name      string    `json:"name"`
	Kind      string    `json:"kind"`
	Role      Role      `json:"role"`
	Publish   []string  `json:"publish,omitempty"`
	Subscribe []string  `json:"subscribe,omitempty"`
	Subjects  []string  `json:"subjects,omitempty"`
	UserKey   string    `json:"user_key"`
	TokenHash string    `json:"token_hash"`
	Created   time.Time `json:"created"`
	Updated   time.Time `json:"updated"`
	By        string    `json:"by"`
}

// ServiceSpec describes a service identity.
type ServiceSpec struct {
	Name      string   `json:"name"`
	Publish   []string `json:"publish"`
	Subscribe []string `json:"subscribe"`
	// Subjects are the registry subject prefixes it may register under;
	// default its publish topics.
	Subjects []string `json:"subjects,omitempty"`
}

// UserSpec describes an operator identity.
type UserSpec struct {
	Name     string   `json:"name"`
	Role     Role     `json:"role"`
	Subjects []string `json:"subjects,omitempty"`
}

// Manager mints, stores, rotates and revokes identities, and
// authenticates API tokens. It is safe for concurrent use.
type Manager struct {
	a   *Authority
	kv  jetstream.KeyValue
	sys *nats.Conn
	log *slog.Logger
	// EnsureTopic, if set, creates a topic that does not exist yet: a
	// service may not create streams itself.
	ensureTopic func(ctx context.Context, topic string) error
	replicas    int

	mu      sync.Mutex // serialises writes
	entries map[string]*Entry
	byHash  map[string]*Entry
	revoked map[string]int64
}

// ManagerOption configures a Manager.
type ManagerOption func(*Manager)

// WithTopicCreator sets the function that creates the topics of a new
// service (its publish and subscribe topics and their dead-letter topics).
func WithTopicCreator(f func(ctx context.Context, topic string) error) ManagerOption {
	return func(m *Manager) { m.ensureTopic = f }
}

// WithManagerReplicas sets the identities bucket's replica count when
// NewManager creates it (a cluster: 3). Default 1.
func WithManagerReplicas(n int) ManagerOption { return func(m *Manager) { m.replicas = n } }

// WithManagerLogger sets the logger. Default slog.Default().
func WithManagerLogger(l *slog.Logger) ManagerOption { return func(m *Manager) { m.log = l } }

// NewManager opens the identities in js's Bucket; sys is a connection of
// the system account (Authority.SystemConnectOptions) used to push
// revocations.
func NewManager(ctx context.Context, a *Authority, js jetstream.JetStream, sys *nats.Conn, opts ...ManagerOption) (*Manager, error) {
	m := &Manager{a: a, sys: sys, log: slog.Default(), entries: map[string]*Entry{}, byHash: map[string]*Entry{}, revoked: map[string]int64{}}
	for _, o := range opts {
		o(m)
	}
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: Bucket, Description: "Herald identities (hashed API tokens, permissions)", History: 1,
		Replicas: max(m.replicas, 1)})
	if err != nil {
		return nil, fmt.Errorf("auth: bucket %s: %w", Bucket, err)
	}
	m.kv = kv
	if m.revoked, err = a.Revocations(); err != nil {
		return nil, err
	}
	if err := m.load(ctx); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *Manager) load(ctx context.Context) error {
	keys, err := m.kv.ListKeys(ctx)
	if err != nil {
		return fmt.Errorf("auth: list %s: %w", Bucket, err)
	}
	for k := range keys.Keys() {
		e, err := m.kv.Get(ctx, k)
		if err != nil {
			return fmt.Errorf("auth: read %s: %w", k, err)
		}
		var en Entry
		if err := json.Unmarshal(e.Value(), &en); err != nil {
			return fmt.Errorf("auth: decode %s: %w", k, err)
		}
		m.entries[en.Name] = &en
		m.byHash[en.TokenHash] = &en
	}
	return nil
}

// Revocations returns the revoked user keys and their revocation times.
func (m *Manager) Revocations() map[string]int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make(map[string]int64, len(m.revoked))
	for k, v := range m.revoked {
		out[k] = v
	}
	return out
}

func newToken() (string, string) {
	var b [32]byte
	_, _ = rand.Read(b[:])
	tok := "hrd_" + base64.RawURLEncoding.EncodeToString(b[:])
	return tok, hashToken(tok)
}

func hashToken(tok string) string {
	h := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(h[:])
}

// AddService mints a service identity and returns its credentials file.
func (m *Manager) AddService(ctx context.Context, spec ServiceSpec, by string) ([]byte, *Entry, error) {
	if err := validName(spec.Name); err != nil {
		return nil, nil, fmt.Errorf("%w: service %w", ErrInvalid, err)
	}
	if len(spec.Publish) == 0 && len(spec.Subscribe) == 0 {
		return nil, nil, fmt.Errorf("%w: service %q: give the topics it publishes to and/or subscribes to", ErrInvalid, spec.Name)
	}
	var err error
	if spec.Publish, err = ParseTopics(strings.Join(spec.Publish, ",")); err != nil {
		return nil, nil, fmt.Errorf("%w: publish: %w", ErrInvalid, err)
	}
	if spec.Subscribe, err = ParseTopics(strings.Join(spec.Subscribe, ",")); err != nil {
		return nil, nil, fmt.Errorf("%w: subscribe: %w", ErrInvalid, err)
	}
	for _, t := range append(slices.Clone(spec.Publish), spec.Subscribe...) {
		if t == AuditTopic || strings.HasSuffix(t, ".dlq") {
			return nil, nil, fmt.Errorf("%w: topic %q: dead-letter and audit topics are for operators only", ErrInvalid, t)
		}
	}
	if spec.Subjects == nil {
		spec.Subjects = spec.Publish
	}
	if m.ensureTopic != nil {
		for _, t := range spec.Publish {
			if err := m.ensureTopic(ctx, t); err != nil {
				return nil, nil, err
			}
		}
		for _, t := range spec.Subscribe {
			if err := m.ensureTopic(ctx, t); err != nil {
				return nil, nil, err
			}
			if err := m.ensureTopic(ctx, t+".dlq"); err != nil {
				return nil, nil, err
			}
		}
	}
	e := &Entry{Name: spec.Name, Kind: KindService, Role: RoleService, Publish: spec.Publish,
		Subscribe: spec.Subscribe, Subjects: spec.Subjects, By: by}
	return m.create(ctx, e)
}

// AddUser mints an operator identity. Admins get a NATS user without
// restrictions; readers and writers one that can do nothing on NATS.
func (m *Manager) AddUser(ctx context.Context, spec UserSpec, by string) ([]byte, *Entry, error) {
	if err := validName(spec.Name); err != nil {
		return nil, nil, fmt.Errorf("%w: user %w", ErrInvalid, err)
	}
	r, err := ParseRole(string(spec.Role))
	if err != nil || r == RoleService {
		return nil, nil, fmt.Errorf("%w: user %q: role %q: want reader, writer or admin", ErrInvalid, spec.Name, spec.Role)
	}
	e := &Entry{Name: spec.Name, Kind: KindUser, Role: r, Subjects: spec.Subjects, By: by}
	return m.create(ctx, e)
}

func (m *Manager) perms(e *Entry) *jwt.Permissions {
	switch {
	case e.Kind == KindService:
		return ServicePermissions(InboxPrefix(e.Name), e.Publish, e.Subscribe)
	case e.Role == RoleAdmin:
		return nil
	}
	p := &jwt.Permissions{}
	p.Pub.Allow = []string{"$JS.API.INFO", natsjs.ServerInfoSubject}
	p.Sub.Allow = []string{InboxPrefix(e.Name) + ".>"}
	return p
}

func (m *Manager) create(ctx context.Context, e *Entry) ([]byte, *Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.entries[e.Name]; ok {
		return nil, nil, fmt.Errorf("%w: %q (rotate its credentials with herald auth rotate, or revoke it first)", ErrExists, e.Name)
	}
	e.Created = time.Now().UTC()
	return m.issueLocked(ctx, e)
}

// issueLocked mints credentials for e, stores it and returns the file.
func (m *Manager) issueLocked(ctx context.Context, e *Entry) ([]byte, *Entry, error) {
	u, err := m.a.MintUser(e.Name, m.perms(e))
	if err != nil {
		return nil, nil, err
	}
	tok, hash := newToken()
	creds, err := credentials.Format(u.JWT, u.Seed, tok)
	if err != nil {
		return nil, nil, err
	}
	e.UserKey, e.TokenHash, e.Updated = u.PublicKey, hash, time.Now().UTC()
	b, _ := json.Marshal(e)
	if _, err := m.kv.Put(ctx, "id."+e.Name, b); err != nil {
		return nil, nil, fmt.Errorf("auth: store %q: %w", e.Name, err)
	}
	if old := m.entries[e.Name]; old != nil {
		delete(m.byHash, old.TokenHash)
	}
	m.entries[e.Name] = e
	m.byHash[hash] = e
	cp := *e
	return creds, &cp, nil
}

// Rotate mints new credentials for name and revokes the old ones: their
// NATS connections are closed and their token stops working.
func (m *Manager) Rotate(ctx context.Context, name, by string) ([]byte, *Entry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	old, ok := m.entries[name]
	if !ok {
		return nil, nil, fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	oldKey := old.UserKey
	e := *old
	e.By = by
	creds, out, err := m.issueLocked(ctx, &e)
	if err != nil {
		return nil, nil, err
	}
	if err := m.revokeKeyLocked(ctx, oldKey); err != nil {
		return nil, nil, err
	}
	return creds, out, nil
}

// Revoke removes name: its NATS connections are closed within a moment
// (the account JWT with the revocation is pushed to the servers) and its
// token stops working at once.
func (m *Manager) Revoke(ctx context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[name]
	if !ok {
		return fmt.Errorf("%w: %q", ErrNotFound, name)
	}
	delete(m.entries, name)
	delete(m.byHash, e.TokenHash)
	if err := m.kv.Purge(ctx, "id."+name); err != nil {
		return fmt.Errorf("auth: remove %q: %w", name, err)
	}
	return m.revokeKeyLocked(ctx, e.UserKey)
}

func (m *Manager) revokeKeyLocked(ctx context.Context, key string) error {
	m.revoked[key] = time.Now().Unix()
	if err := m.a.SaveRevocations(m.revoked); err != nil {
		return err
	}
	if m.sys == nil {
		return nil
	}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return m.a.PushAccount(pctx, m.sys, m.revoked)
}

// List returns the identities, by name.
func (m *Manager) List() []Entry {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Entry, 0, len(m.entries))
	for _, e := range m.entries {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Get returns the identity named name.
func (m *Manager) Get(name string) (Entry, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[name]
	if !ok {
		return Entry{}, false
	}
	return *e, true
}

// Authenticate implements Authenticator for Herald API tokens: HTTP basic
// auth with the identity's name and token (what Confluent clients send
// for basic.auth.user.info NAME:TOKEN), or a bearer token starting with
// "hrd_".
func (m *Manager) Authenticate(r *http.Request) (*Identity, error) {
	var user, tok string
	if u, p, ok := r.BasicAuth(); ok {
		user, tok = u, p
	} else if h := r.Header.Get("Authorization"); len(h) > 7 && strings.EqualFold(h[:7], "bearer ") && strings.HasPrefix(strings.TrimSpace(h[7:]), "hrd_") {
		tok = strings.TrimSpace(h[7:])
	} else {
		return nil, ErrNoCredentials
	}
	hash := hashToken(tok)
	m.mu.Lock()
	e := m.byHash[hash]
	m.mu.Unlock()
	if e == nil || subtle.ConstantTimeCompare([]byte(e.TokenHash), []byte(hash)) != 1 || (user != "" && user != e.Name) {
		return nil, fmt.Errorf("%w: unknown or revoked token", ErrBadCredentials)
	}
	return &Identity{Name: e.Name, Role: e.Role, Subjects: e.Subjects, Publish: e.Publish, Subscribe: e.Subscribe, Method: "token"}, nil
}
