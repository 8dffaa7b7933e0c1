package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/server/admin"
	"github.com/heraldhq/herald/server/auth"
	"github.com/heraldhq/herald/server/gateway"
	"github.com/heraldhq/herald/server/registry"
)

// Store ciphers for Config.StoreCipher.
const (
	CipherChaCha = "chacha"
	CipherAES    = "aes"
)

// AdminCredsFile is where, under <DataDir>/auth, a server with Auth on
// writes the credentials of its first admin.
const AdminCredsFile = "admin.creds"

// checkSecurity validates the security settings in New.
func checkSecurity(cfg *Config) error {
	if cfg.TLS != nil {
		if _, err := auth.ServerTLS(*cfg.TLS); err != nil {
			return fmt.Errorf("server: %w", err)
		}
	}
	if cfg.Auth && cfg.BrokerURL != "" && isNATSURL(cfg.BrokerURL) {
		return errors.New("server: --auth mints identities for the embedded broker; with --broker nats://, configure the cluster's own authentication")
	}
	switch cfg.StoreCipher {
	case "":
		cfg.StoreCipher = CipherChaCha
	case CipherChaCha, CipherAES:
	default:
		return fmt.Errorf("server: store cipher %q: want chacha or aes", cfg.StoreCipher)
	}
	if cfg.StoreOldKey != "" && cfg.StoreKey == "" {
		return errors.New("server: an old store key (for rotation) needs the new store key too")
	}
	if cfg.StoreKey != "" && len(cfg.StoreKey) < 16 {
		return errors.New("server: the store key must be at least 16 characters (use 32 random bytes, for example `openssl rand -hex 32`)")
	}
	if cfg.Insecure {
		return nil
	}
	secure := cfg.TLS != nil && (cfg.Auth || cfg.OIDC != nil)
	for _, l := range []struct{ flag, addr string }{{"--nats-addr", cfg.NATSAddr}, {"--http-addr", cfg.HTTPAddr}, {"--registry-addr", cfg.RegistryAddr}, {"--gateway-addr", cfg.GatewayAddr}} {
		if l.flag == "--nats-addr" && (cfg.BrokerURL != "" && isNATSURL(cfg.BrokerURL)) {
			continue
		}
		if l.flag == "--gateway-addr" && l.addr == "" {
			continue
		}
		if !loopback(l.addr) && !secure {
			return fmt.Errorf("server: %s %s listens beyond this machine, but without TLS and authentication anyone who reaches it can read, publish and delete every event: "+
				"turn on --tls-cert/--tls-key and --auth (see docs/security.md), listen on 127.0.0.1, or pass --insecure if a network you trust does the protecting", l.flag, l.addr)
		}
	}
	return nil
}

func isNATSURL(u string) bool {
	scheme, _, _ := strings.Cut(u, "://")
	return scheme == "nats" || scheme == "tls"
}

// loopback reports whether addr (host:port) listens on loopback only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// prepareSecurity sets up what the embedded server needs before it
// starts: the authority and the options of Herald's own connections,
// TLS on the NATS listener, and the store cipher.
func (s *Server) prepareSecurity(ec *natsjs.EmbeddedConfig) error {
	var tlsCfg *tls.Config
	if s.cfg.TLS != nil {
		var err error
		if tlsCfg, err = auth.ServerTLS(*s.cfg.TLS); err != nil {
			return fmt.Errorf("server: %w", err)
		}
		s.tls = tlsCfg
	}
	if s.cfg.Auth {
		a, err := auth.OpenAuthority(filepath.Join(s.cfg.DataDir, "auth"))
		if err != nil {
			return fmt.Errorf("server: %w", err)
		}
		s.authority = a
		if err := moveAccountStore(s.cfg.DataDir, "$G", a.AccountPublicKey(), s.cfg.StoreKey != ""); err != nil {
			return err
		}
		if ec.ClientOptions, err = a.ConnectOptions("herald"); err != nil {
			return fmt.Errorf("server: %w", err)
		}
	} else if a, err := existingAuthority(s.cfg.DataDir); err == nil && a != "" {
		if err := moveAccountStore(s.cfg.DataDir, a, "$G", s.cfg.StoreKey != ""); err != nil {
			return err
		}
	}
	ec.Configure = func(o *natsserver.Options) error {
		if tlsCfg != nil {
			o.TLSConfig = tlsCfg.Clone()
			o.TLS = true
			o.TLSVerify = s.cfg.TLS.ClientCAFile != ""
			o.TLSTimeout = 5
		}
		if s.cfg.StoreKey != "" {
			o.JetStreamKey = s.cfg.StoreKey
			o.JetStreamOldKey = s.cfg.StoreOldKey
			if s.cfg.StoreCipher == CipherAES {
				o.JetStreamCipher = natsserver.AES
			} else {
				o.JetStreamCipher = natsserver.ChaCha
			}
		}
		if s.authority != nil {
			return s.authority.ConfigureServer(o)
		}
		return nil
	}
	return nil
}

// existingAuthority returns the account public key of an authority kept
// in the data dir by an earlier start with --auth, or "".
func existingAuthority(dataDir string) (string, error) {
	if _, err := os.Stat(filepath.Join(dataDir, "auth", "keys.json")); err != nil {
		return "", err
	}
	a, err := auth.OpenAuthority(filepath.Join(dataDir, "auth"))
	if err != nil {
		return "", err
	}
	return a.AccountPublicKey(), nil
}

// moveAccountStore moves the JetStream store of account from to account
// to, when only from has one: streams written without authentication
// live in the global account, with it in Herald's account. An encrypted
// store cannot move (its keys are derived from the account's name).
func moveAccountStore(dataDir, from, to string, encrypted bool) error {
	src := filepath.Join(dataDir, "jetstream", from)
	dst := filepath.Join(dataDir, "jetstream", to)
	if _, err := os.Stat(src); err != nil {
		return nil
	}
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	if encrypted {
		return fmt.Errorf("server: the data dir's topics were written with authentication %s; an encrypted store cannot move between the accounts with and without --auth: start as before, or with a fresh --data-dir",
			map[bool]string{true: "on", false: "off"}[from != "$G"])
	}
	if err := os.Rename(src, dst); err != nil {
		return fmt.Errorf("server: move the topics to the account of --auth %s: %w", map[bool]string{true: "on", false: "off"}[to != "$G"], err)
	}
	return nil
}

// startAuth opens the identities once the broker runs, and writes the
// first admin's credentials.
func (s *Server) startAuth(ctx context.Context) error {
	if s.authority == nil {
		return nil
	}
	sysOpts, err := s.authority.SystemConnectOptions()
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if s.sysConn, err = s.emb.Connect(append(sysOpts, nats.Name("herald-system"))...); err != nil {
		return fmt.Errorf("server: system account connection: %w", err)
	}
	js := s.broker.JetStream()
	// Key-ordered groups share these buckets; services may use them but
	// not create them.
	for _, b := range []struct {
		name, desc string
		ttl        time.Duration
	}{{"herald_members", "Herald group members (heartbeats)", 3 * time.Second},
		{"herald_handover", "Herald partitions released with everything settled", 24 * time.Hour}} {
		if err := natsjs.Retry(ctx, func(ctx context.Context) error {
			_, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: b.name, Description: b.desc, TTL: b.ttl, History: 1, Storage: jetstream.MemoryStorage, Replicas: s.broker.Replicas()})
			return err
		}); err != nil {
			return fmt.Errorf("server: bucket %s: %w", b.name, err)
		}
	}
	if err := natsjs.Retry(ctx, func(ctx context.Context) (err error) {
		s.auth, err = auth.NewManager(ctx, s.authority, js, s.sysConn,
			auth.WithManagerLogger(s.log), auth.WithTopicCreator(s.createTopic), auth.WithManagerReplicas(s.broker.Replicas()))
		return err
	}); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	path := s.AdminCredsPath()
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	var creds []byte
	if _, ok := s.auth.Get("admin"); ok {
		creds, _, err = s.auth.Rotate(ctx, "admin", "herald")
	} else {
		creds, _, err = s.auth.AddUser(ctx, auth.UserSpec{Name: "admin", Role: auth.RoleAdmin}, "herald")
	}
	if err != nil {
		return fmt.Errorf("server: first admin: %w", err)
	}
	if err := os.WriteFile(path, creds, 0o600); err != nil {
		return fmt.Errorf("server: write %s: %w", path, err)
	}
	s.log.Info("wrote the credentials of the first admin", "path", path)
	return nil
}

// AdminCredsPath returns the file holding the first admin's credentials,
// or "" when authentication is off.
func (s *Server) AdminCredsPath() string {
	if !s.cfg.Auth {
		return ""
	}
	return filepath.Join(s.cfg.DataDir, "auth", AdminCredsFile)
}

// Auth returns the identities manager, or nil when authentication is off.
func (s *Server) Auth() *auth.Manager { return s.auth }

// createTopic creates topic with the default settings unless it exists.
func (s *Server) createTopic(ctx context.Context, topic string) error {
	_, err := s.broker.JetStream().Stream(ctx, natsjs.StreamName(topic))
	if err == nil {
		return nil
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("server: topic %q: %w", topic, err)
	}
	return s.broker.EnsureTopic(ctx, topic, broker.TopicConfig{})
}

// guards builds the middleware of the admin, registry and gateway
// listeners.
func (s *Server) guards(ctx context.Context) (adminGuard, regGuard, gwGuard *auth.Guard, err error) {
	var authn []auth.Authenticator
	if s.auth != nil {
		authn = append(authn, s.auth)
	}
	if s.cfg.OIDC != nil {
		o, err := auth.NewOIDC(ctx, *s.cfg.OIDC)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("server: %w", err)
		}
		authn = append(authn, o)
	}
	hosts := append([]string(nil), s.cfg.AllowedHosts...)
	if s.tls != nil {
		for _, c := range s.tls.Certificates {
			if c.Leaf != nil {
				hosts = append(hosts, c.Leaf.DNSNames...)
			}
		}
	}
	adminGuard = auth.NewGuard(auth.GuardConfig{
		Name: "admin", Authenticators: authn, Policy: s.policy.Policy(), AllowedHosts: hosts, Logger: s.log,
		WriteError: func(w http.ResponseWriter, status int, msg string) { writeJSON(w, status, admin.ErrorBody{Error: msg}) },
		OnAction:   s.recordAction,
	})
	regGuard = auth.NewGuard(auth.GuardConfig{
		Name: "registry", Authenticators: authn, Policy: auth.RegistryPolicy, AllowedHosts: hosts, Logger: s.log,
		WriteError: registry.WriteError,
		OnAction:   s.recordAction,
	})
	// Publishing and pulling are the data plane, not administrative
	// actions: the gateway listener records none.
	gwGuard = auth.NewGuard(auth.GuardConfig{
		Name: "gateway", Authenticators: authn, Policy: s.gatewayPolicy, AllowedHosts: hosts, Logger: s.log,
		WriteError: gateway.WriteProblem,
	})
	return adminGuard, regGuard, gwGuard, nil
}

// ActionType is the event type of administrative actions in the audit
// topic.
const ActionType = "herald.admin.action.v1"

// recordAction publishes an administrative action to the audit topic,
// where the audit log indexes it: `herald audit --type
// herald.admin.action.v1`, or --subject with the actor's name.
func (s *Server) recordAction(r *http.Request, a auth.Action) {
	if s.broker == nil || strings.HasPrefix(a.Path, "/v1/") {
		// The gateway's publishes, acks and nacks are the data plane.
		return
	}
	data, _ := json.Marshal(a)
	ev := event.New("herald", ActionType, data)
	ev.Subject = a.Actor
	ev.DataContentType = "application/json"
	h := map[string]string{}
	event.NATS.Encode(ev, h)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 5*time.Second)
	defer cancel()
	if err := s.broker.Publish(ctx, &broker.Message{Topic: auth.AuditTopic, Route: ActionType, Key: a.Actor, ID: ev.ID, Header: h, Data: ev.Data}); err != nil {
		s.log.Error("cannot record an administrative action in the audit topic", "actor", a.Actor, "method", a.Method, "path", a.Path, "error", err)
	}
}

// scheme returns "https" when the HTTP listeners use TLS.
func (s *Server) scheme() string {
	if s.tls != nil {
		return "https"
	}
	return "http"
}
