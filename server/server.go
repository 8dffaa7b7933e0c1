// Package server composes the Herald platform that `herald serve` runs: the
// embedded NATS JetStream broker, the admin HTTP API (health checks,
// /metrics, dead letters, replay, lag, retention, audit; see
// server/admin), the dashboard at / (server/web), the audit indexer
// (server/audit), and the listeners of the other components. The SDK
// never imports it.
//
//	srv, err := server.New(server.Config{DataDir: dir})
//	if err != nil { ... }
//	if err := srv.Start(ctx); err != nil { ... }
//	defer srv.Shutdown(context.Background())
package server

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/server/admin"
	"github.com/heraldhq/herald/server/audit"
	"github.com/heraldhq/herald/server/auth"
	"github.com/heraldhq/herald/server/gateway"
	"github.com/heraldhq/herald/server/registry"
	"github.com/heraldhq/herald/server/web"
	"github.com/heraldhq/herald/telemetry"
)

// Default listen addresses.
const (
	DefaultNATSAddr     = "127.0.0.1:4222"
	DefaultHTTPAddr     = "127.0.0.1:8080"
	DefaultRegistryAddr = "127.0.0.1:8081"
)

// Config configures a Server. DataDir is required; empty addresses take
// the defaults above; port 0 picks a free port.
type Config struct {
	// DataDir holds the JetStream store and every other file Herald keeps.
	DataDir string
	// NATSAddr is where NATS clients connect.
	NATSAddr string
	// HTTPAddr serves the admin API, health checks, metrics and dashboard.
	HTTPAddr string
	// RegistryAddr serves the Confluent-compatible schema registry.
	RegistryAddr string
	// GatewayAddr, if set, serves the HTTP gateway (ingest under
	// /v1/topics/, pull under /v1/groups/, and /healthz, /readyz) on a
	// listener of its own, with the same TLS and authentication as the
	// admin address. Empty: the gateway is served on HTTPAddr. The
	// subscriptions API (/api/v1/subscriptions) stays on HTTPAddr.
	GatewayAddr string
	// Durability of confirmed messages: natsjs.Fast (default) or Sync.
	Durability natsjs.Durability
	// Cluster, when set, makes the embedded JetStream server one node of
	// a cluster (`herald serve --cluster`): topics and Herald's buckets
	// keep 3 copies and Start waits until a quorum of nodes runs.
	Cluster *natsjs.ClusterConfig
	// NodeName names this node in a cluster (the server's name). Default
	// "herald".
	NodeName string
	// BrokerURL selects where events live, by scheme. nats:// or tls://
	// (comma-separated URLs) runs the whole platform on an existing
	// JetStream server or cluster instead of the embedded one; NATSAddr
	// and Durability are then not used. kafka:// or amqp:// (amqps://)
	// point the platform at Kafka or RabbitMQ for events: the embedded
	// JetStream still keeps Herald's own state (registry, audit
	// positions), readiness checks the broker too, the CLI publishes and
	// subscribes there, and the dead-letter, replay, lag, retention and
	// metrics tools work on its topics and groups. The audit log indexes
	// Kafka topics too (audit.WithTopicReader), not RabbitMQ ones.
	BrokerURL string
	// Logger for the server. Default slog.Default().
	Logger *slog.Logger
	// TopicRetention sets the retention of these topics at start,
	// creating the ones that do not exist (serve --topic-retention).
	TopicRetention map[string]admin.Retention
	// Audit configures the audit log.
	Audit AuditConfig
	// ProjectionsURL, if set, is the PostgreSQL database projections keep
	// their state in (package projection): the admin API, the dashboard
	// and `herald projection` read it from there and ask for rebuilds
	// there (serve --projections-postgres-url).
	ProjectionsURL string

	// TLS, if set, serves every listener (NATS, admin, registry) over TLS
	// with this certificate; with ClientCAFile, clients must present a
	// certificate that CA signed (mutual TLS).
	TLS *auth.TLSFiles
	// Auth turns authentication on for every listener: NATS clients need
	// credentials minted by `herald auth add-service`/`add-user`, HTTP
	// clients their API token (basic or bearer) or an OIDC token. The
	// first admin's credentials are written to <DataDir>/auth/admin.creds.
	Auth bool
	// OIDC, if set, accepts the bearer tokens of this OAuth2/OIDC issuer
	// on the admin API and registry.
	OIDC *auth.OIDCConfig
	// AllowedHosts are the Host names the HTTP listeners answer besides
	// IP addresses, localhost, this machine's name and the TLS
	// certificate's names; "*" accepts any.
	AllowedHosts []string
	// Insecure lets the server listen beyond loopback without TLS and
	// authentication.
	Insecure bool
	// StoreKey encrypts the embedded JetStream store at rest (events and
	// KV buckets, including the registry's). Read it from a file or an
	// environment variable, never a flag. StoreOldKey is the previous key
	// during a rotation; StoreCipher is chacha (default) or aes.
	StoreKey, StoreOldKey, StoreCipher string
	// HTTPTimeouts bound the reading of HTTP requests; zero fields take
	// the defaults (headers 5s, whole request 30s, idle 2m).
	HTTPTimeouts HTTPTimeouts
	// Pprof serves the Go runtime's profiles (net/http/pprof: CPU, heap,
	// goroutines, ...) under /debug/pprof/ on the admin listener. With
	// Auth only admins may read them: they show the process's internals.
	Pprof bool
}

// HTTPTimeouts bound how long an HTTP listener waits for a client.
type HTTPTimeouts struct {
	// ReadHeader bounds reading a request's headers. Default 5s.
	ReadHeader time.Duration
	// Read bounds reading a whole request, body included. Default 30s.
	Read time.Duration
	// Idle bounds how long a kept-alive connection waits for its next
	// request. Default 2m.
	Idle time.Duration
}

// Audit stores.
const (
	AuditSQLite   = "sqlite"
	AuditPostgres = "postgres"
	AuditOff      = "off"
)

// AuditConfig configures the audit log: an index of every event of every
// topic, kept by a server-side indexer.
type AuditConfig struct {
	// Store is AuditSQLite (default: <DataDir>/audit.db), AuditPostgres
	// (PostgresURL) or AuditOff.
	Store string
	// PostgresURL is the database of the AuditPostgres store.
	PostgresURL string
	// PostgresSchema holds the audit tables. Default "public".
	PostgresSchema string
	// MaxPayload keeps payloads up to this many bytes in the index; larger
	// ones are read from their topic while it holds them. Default 64 KiB;
	// negative keeps none.
	MaxPayload int
	// BusyRate caps indexing, in events per second, while events keep
	// arriving, bounding what the indexer takes from the broker at peak
	// load; the indexer catches up once the load drops (see
	// audit.WithBusyRate). Default 5000; negative: no cap.
	BusyRate int
}

// ErrAddrInUse is returned (wrapped) when a listen address is taken.
var ErrAddrInUse = natsjs.ErrAddrInUse

// Server is the running platform. Create it with New, then Start.
type Server struct {
	cfg Config
	log *slog.Logger

	emb      *natsjs.Embedded
	broker   *natsjs.Broker
	httpSrv  *http.Server
	httpLn   net.Listener
	regSrv   *http.Server
	regLn    net.Listener
	gwSrv    *http.Server
	gwLn     net.Listener // nil: the gateway is on the admin listener
	gwMux    *http.ServeMux
	registry *schema.Registry
	events   broker.Broker // Kafka or RabbitMQ, when Config.BrokerURL names one
	// eventsBinding is the CloudEvents binding of events' headers.
	eventsBinding event.Binding
	mux           *http.ServeMux
	metrics       *prometheus.Registry
	// telem holds the SDK-side metric families (publish, consume) on
	// metrics, registered once and shared by everything in the process
	// that publishes or consumes: the gateway and herald dev's services.
	telem    *telemetry.Metrics
	admin    *admin.Service
	started  time.Time
	wg       sync.WaitGroup
	shutOnce sync.Once

	auditStore audit.Store
	indexer    *audit.Indexer
	auditStop  context.CancelFunc
	auditWG    sync.WaitGroup

	tls       *tls.Config
	authority *auth.Authority
	auth      *auth.Manager
	sysConn   *nats.Conn
	policy    auth.AdminPolicy

	gateway *gateway.Gateway

	projections *pgxpool.Pool
}

// New validates cfg and returns a server that is not started yet.
func New(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("server: Config.DataDir is required (--data-dir)")
	}
	if cfg.NATSAddr == "" {
		cfg.NATSAddr = DefaultNATSAddr
	}
	if cfg.HTTPAddr == "" {
		cfg.HTTPAddr = DefaultHTTPAddr
	}
	if cfg.RegistryAddr == "" {
		cfg.RegistryAddr = DefaultRegistryAddr
	}
	if cfg.Durability == "" {
		cfg.Durability = natsjs.Fast
	}
	if _, err := natsjs.ParseDurability(string(cfg.Durability)); err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	if cfg.Cluster != nil && cfg.BrokerURL != "" {
		return nil, errors.New("server: --cluster runs the embedded JetStream as a cluster node; it cannot be combined with --broker")
	}
	if cfg.Cluster != nil && (cfg.Auth || cfg.OIDC != nil) {
		// Each node would make identities of its own: a service's
		// credentials would work on one node only.
		return nil, errors.New("server: --cluster does not go with --auth or --oidc-* yet: every node would issue identities of its own")
	}
	if cfg.BrokerURL != "" {
		scheme, _, _ := strings.Cut(cfg.BrokerURL, "://")
		switch scheme {
		case "nats", "tls", "kafka", "amqp", "amqps":
		default:
			return nil, fmt.Errorf("server: --broker %q: want nats://, tls://, kafka:// or amqp:// (amqps://)", cfg.BrokerURL)
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	switch cfg.Audit.Store {
	case "":
		cfg.Audit.Store = AuditSQLite
	case AuditSQLite, AuditOff:
	case AuditPostgres:
		if cfg.Audit.PostgresURL == "" {
			return nil, errors.New("server: the postgres audit store needs Config.Audit.PostgresURL (--audit-postgres-url)")
		}
	default:
		return nil, fmt.Errorf("server: audit store %q: want sqlite, postgres or off (--audit)", cfg.Audit.Store)
	}
	if err := checkSecurity(&cfg); err != nil {
		return nil, err
	}
	if cfg.Audit.MaxPayload == 0 {
		cfg.Audit.MaxPayload = 64 << 10
		if cfg.StoreKey != "" && cfg.Audit.Store == AuditSQLite {
			// The SQLite index is not encrypted: with the store encrypted
			// it keeps no payloads unless told to.
			cfg.Audit.MaxPayload = -1
		}
	}
	t := &cfg.HTTPTimeouts
	if t.ReadHeader <= 0 {
		t.ReadHeader = 5 * time.Second
	}
	if t.Read <= 0 {
		t.Read = 30 * time.Second
	}
	if t.Idle <= 0 {
		t.Idle = 2 * time.Minute
	}
	if cfg.Audit.BusyRate == 0 {
		cfg.Audit.BusyRate = 5000
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	telem, err := telemetry.NewMetrics(reg)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	return &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux(), metrics: reg, telem: telem}, nil
}

// Start opens the listeners, starts the broker and returns once JetStream
// is ready. On error everything started so far is stopped.
func (s *Server) Start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			_ = s.Shutdown(context.Background())
		}
	}()
	s.started = time.Now()
	// Take the HTTP port first: it fails fast and cheaply when busy.
	if s.httpLn, err = listen("http", "--http-addr", s.cfg.HTTPAddr); err != nil {
		return err
	}
	if s.regLn, err = listen("registry", "--registry-addr", s.cfg.RegistryAddr); err != nil {
		return err
	}
	if s.cfg.GatewayAddr != "" {
		if s.gwLn, err = listen("gateway", "--gateway-addr", s.cfg.GatewayAddr); err != nil {
			return err
		}
	}
	if s.externalNATS() {
		s.broker, err = natsjs.New(ctx, natsjs.WithURL(s.cfg.BrokerURL), natsjs.WithLogger(s.log))
		if err != nil {
			return fmt.Errorf("server: --broker: %w", err)
		}
	} else {
		ec := natsjs.EmbeddedConfig{
			DataDir:    s.cfg.DataDir,
			Addr:       s.cfg.NATSAddr,
			Durability: s.cfg.Durability,
			Logger:     s.log,
			Cluster:    s.cfg.Cluster,
			ServerName: s.cfg.NodeName,
		}
		if err := s.prepareSecurity(&ec); err != nil {
			return err
		}
		s.emb, err = natsjs.RunEmbedded(ctx, ec)
		if err != nil {
			return fmt.Errorf("server: %w", err)
		}
		s.broker, err = natsjs.New(ctx, natsjs.WithEmbedded(s.emb), natsjs.WithLogger(s.log))
		if err != nil {
			return fmt.Errorf("server: %w", err)
		}
		// Clients over the network learn the durability here: with
		// sync they group-commit their publishes.
		if _, err := natsjs.AnswerServerInfo(s.broker.Conn(), natsjs.ServerInfo{Durability: s.cfg.Durability}); err != nil {
			return fmt.Errorf("server: %w", err)
		}
	}
	if err := s.openEvents(ctx); err != nil {
		return err
	}
	if s.events == nil {
		// Routers with a circuit breaker report its state there, for the
		// dashboard; services may publish to it but not create it.
		if err := s.broker.EnsureTopic(ctx, consumer.BreakerTopic, consumer.BreakerTopicConfig); err != nil {
			return fmt.Errorf("server: topic %s: %w", consumer.BreakerTopic, err)
		}
	}
	if err := s.startAuth(ctx); err != nil {
		return err
	}
	// Every node of a cluster opens the same buckets at start, while the
	// cluster may still be electing leaders: natsjs.Retry asks again.
	var store *schema.KVStore
	if err := natsjs.Retry(ctx, func(ctx context.Context) (err error) {
		store, err = schema.NewKVStore(ctx, s.broker.JetStream(), schema.DefaultBucket, schema.WithKVReplicas(s.broker.Replicas()))
		return err
	}); err != nil {
		return fmt.Errorf("server: schema store: %w", err)
	}
	if err := natsjs.Retry(ctx, func(ctx context.Context) (err error) {
		s.registry, err = schema.New(ctx, store, schema.WithLogger(s.log))
		return err
	}); err != nil {
		return fmt.Errorf("server: schema registry: %w", err)
	}
	adminOpts := []admin.Option{admin.WithLogger(s.log)}
	if s.cfg.ProjectionsURL != "" {
		if s.projections, err = openPostgres(ctx, s.cfg.ProjectionsURL); err != nil {
			return fmt.Errorf("server: projections database (--projections-postgres-url): %w", err)
		}
		adminOpts = append(adminOpts, admin.WithProjections(s.projections))
	}
	if s.events != nil {
		// Operations act on the topics and groups of the broker events
		// live on; Herald's own state stays in the embedded JetStream.
		adminOpts = append(adminOpts, admin.WithEvents(s.events, s.eventsBinding))
	}
	if s.admin, err = admin.New(s.broker, adminOpts...); err != nil {
		return fmt.Errorf("server: %w", err)
	}
	for topic, r := range s.cfg.TopicRetention {
		if _, err := s.admin.SetRetention(ctx, topic, r); err != nil {
			return fmt.Errorf("server: retention of topic %q (--topic-retention): %w", topic, err)
		}
	}
	bc, err := telemetry.NewBrokerCollector(admin.BrokerStats{Service: s.admin}, telemetry.WithCollectLogger(s.log))
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	if err := s.metrics.Register(bc); err != nil {
		return fmt.Errorf("server: metrics: %w", err)
	}
	if err := s.startAudit(ctx); err != nil {
		return err
	}
	if err := s.startGateway(ctx); err != nil {
		return err
	}
	if err := s.routes(); err != nil {
		return err
	}
	adminGuard, regGuard, gwGuard, err := s.guards(ctx)
	if err != nil {
		return err
	}
	s.httpSrv = s.newHTTPServer(adminGuard.Wrap(s.mux))
	s.regSrv = s.newHTTPServer(regGuard.Wrap(registry.NewHandler(s.registry, registry.WithLogger(s.log))))
	if s.tls != nil {
		s.httpLn = tls.NewListener(s.httpLn, s.tls)
		s.regLn = tls.NewListener(s.regLn, s.tls)
	}
	s.serve(s.httpSrv, s.httpLn)
	s.serve(s.regSrv, s.regLn)
	if s.gwLn != nil {
		s.gwSrv = s.newHTTPServer(gwGuard.Wrap(s.gwMux))
		if s.tls != nil {
			s.gwLn = tls.NewListener(s.gwLn, s.tls)
		}
		s.serve(s.gwSrv, s.gwLn)
	}
	s.log.Info("herald started",
		"nats", s.NATSURL(), "events", s.EventsURL(), "http", s.AdminURL(), "registry", s.RegistryURL(),
		"gateway", s.GatewayURL(), "data_dir", s.cfg.DataDir, "durability", string(s.cfg.Durability))
	return nil
}

func (s *Server) serve(srv *http.Server, ln net.Listener) {
	s.wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("http server stopped", "addr", ln.Addr().String(), "error", err)
		}
	})
}

func (s *Server) newHTTPServer(h http.Handler) *http.Server {
	t := s.cfg.HTTPTimeouts
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: t.ReadHeader,
		ReadTimeout:       t.Read,
		IdleTimeout:       t.Idle,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

func listen(what, flag, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("server: %s address %s: %w: another process listens there; choose another with %s, or port 0 for any free port", what, addr, ErrAddrInUse, flag)
		}
		return nil, fmt.Errorf("server: %s address %s: %w", what, addr, err)
	}
	return ln, nil
}

// Handle mounts h on the admin HTTP server under pattern (a
// net/http.ServeMux pattern). Call it before Start. The admin listener's
// guard covers it: GET and HEAD need a reader, anything else an admin
// (see auth.AdminPolicy); HandleRole mounts with another requirement.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

// HandleRole mounts h like Handle, and has requests with method ("" for
// any) under path prefix need req instead of the defaults: for example
// auth.Requirement{Role: auth.RoleService} for an endpoint services call,
// which then checks the caller's topics with auth.FromContext.
func (s *Server) HandleRole(pattern, method, prefix string, req auth.Requirement, h http.Handler) {
	s.policy.Route(method, prefix, req)
	s.mux.Handle(pattern, h)
}

// startAudit opens the audit store and starts the indexer.
func (s *Server) startAudit(ctx context.Context) error {
	var err error
	switch s.cfg.Audit.Store {
	case AuditOff:
		return nil
	case AuditPostgres:
		var opts []audit.PostgresOption
		if s.cfg.Audit.PostgresSchema != "" {
			opts = append(opts, audit.WithSchema(s.cfg.Audit.PostgresSchema))
		}
		s.auditStore, err = audit.OpenPostgres(ctx, s.cfg.Audit.PostgresURL, opts...)
	default:
		s.auditStore, err = audit.OpenSQLite(ctx, filepath.Join(s.cfg.DataDir, "audit.db"))
	}
	if err != nil {
		return fmt.Errorf("server: audit log: %w", err)
	}
	opts := []audit.Option{audit.WithLogger(s.log), audit.WithMaxPayload(max(s.cfg.Audit.MaxPayload, 0)),
		audit.WithBusyRate(max(s.cfg.Audit.BusyRate, 0))}
	if tr, ok := s.events.(audit.TopicReader); ok && s.eventsBinding == event.Kafka {
		// Kafka topics are read with a client of their own; RabbitMQ's
		// topic log would take a marker per read, so it is not polled.
		opts = append(opts, audit.WithTopicReader("kafka", tr, s.eventsBinding))
	}
	s.indexer, err = audit.NewIndexer(s.broker.JetStream(), s.auditStore, opts...)
	if err != nil {
		return fmt.Errorf("server: audit log: %w", err)
	}
	ix := s.indexer
	s.metrics.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "herald_audit_indexed_events_total",
			Help: "Events the audit indexer wrote to the audit log since the server started.",
		}, func() float64 { return float64(ix.Indexed()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "herald_audit_behind_messages",
			Help: "Stored messages the audit log does not hold yet.",
		}, func() float64 {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			n, err := ix.Behind(ctx)
			if err != nil {
				return -1
			}
			return float64(n)
		}),
	)
	actx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.auditStop = stop
	s.auditWG.Go(func() {
		if err := ix.Run(actx); err != nil {
			s.log.Error("audit indexer stopped", "error", err)
		}
	})
	return nil
}

func (s *Server) routes() error {
	var auditLog admin.AuditLog
	if s.indexer != nil {
		auditLog = s.indexer
	}
	dashboard, err := web.New(web.Sources{Admin: s.admin, Audit: auditLog, Registry: s.registry}, web.WithLogger(s.log), web.WithBrokerURL(s.EventsURL()))
	if err != nil {
		return fmt.Errorf("server: dashboard: %w", err)
	}
	s.mux.Handle("/", dashboard)
	s.mux.Handle("/api/v1/", admin.Handler(s.admin, auditLog))
	s.mux.Handle("/api/v1/auth/", auth.Handler(s.auth))
	s.mux.Handle("GET /metrics", telemetry.Handler(s.metrics))
	s.mux.HandleFunc("GET /healthz", s.healthz)
	s.mux.HandleFunc("GET /readyz", s.readyz)
	if s.cfg.Pprof {
		s.HandleRole("/debug/pprof/", "", "/debug/pprof/", auth.Requirement{Role: auth.RoleAdmin}, pprofHandler())
	}
	return nil
}

// pprofHandler serves net/http/pprof's pages under /debug/pprof/: the
// index and every named profile (heap, goroutine, ...), the CPU profile
// and the execution trace.
func pprofHandler() http.Handler {
	m := http.NewServeMux()
	m.HandleFunc("/debug/pprof/", pprof.Index)
	m.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	m.HandleFunc("/debug/pprof/profile", pprof.Profile)
	m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	m.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return m
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "uptime_s": int(time.Since(s.started).Seconds())})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.Ready(r.Context()); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": "ready"})
}

// externalNATS reports whether the platform runs on a JetStream it did
// not start.
func (s *Server) externalNATS() bool {
	scheme, _, _ := strings.Cut(s.cfg.BrokerURL, "://")
	return scheme == "nats" || scheme == "tls"
}

// openEvents connects to the Kafka or RabbitMQ broker events live on,
// if Config.BrokerURL names one.
func (s *Server) openEvents(ctx context.Context) error {
	if s.cfg.BrokerURL == "" || s.externalNATS() {
		return nil
	}
	b, binding, err := herald.OpenBroker(ctx, s.cfg.BrokerURL, s.log)
	if err != nil {
		return fmt.Errorf("server: --broker: %w", err)
	}
	s.events, s.eventsBinding = b, binding
	return nil
}

// EventsURL returns the URL of the broker events live on: the Kafka or
// RabbitMQ URL given, else the NATS URL.
func (s *Server) EventsURL() string {
	if s.events != nil {
		return s.cfg.BrokerURL
	}
	return s.NATSURL()
}

// pinger is implemented by brokers that can check their connection.
type pinger interface {
	Ping(ctx context.Context) error
}

// Ready reports nil when the broker accepts work: the embedded server runs
// and JetStream answers, and a Kafka or RabbitMQ broker events live on
// answers too.
func (s *Server) Ready(ctx context.Context) error {
	if s.broker == nil || (s.emb != nil && !s.emb.Ready()) || (s.emb == nil && !s.broker.Conn().IsConnected()) {
		return errors.New("jetstream is not running")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := s.broker.JetStream().AccountInfo(ctx); err != nil {
		return fmt.Errorf("jetstream does not answer: %w", err)
	}
	if _, err := s.broker.JetStream().Stream(ctx, "KV_"+schema.DefaultBucket); err != nil {
		return fmt.Errorf("the schema registry's bucket %s is not available: %w", schema.DefaultBucket, err)
	}
	if p, ok := s.events.(pinger); ok {
		if err := p.Ping(ctx); err != nil {
			return fmt.Errorf("broker %s does not answer: %w", s.cfg.BrokerURL, err)
		}
	}
	return nil
}

// Broker returns the in-process broker connection.
func (s *Server) Broker() *natsjs.Broker { return s.broker }

// Embedded returns the embedded NATS server.
func (s *Server) Embedded() *natsjs.Embedded { return s.emb }

// NATSURL returns the URL NATS clients use.
func (s *Server) NATSURL() string {
	if s.emb == nil {
		return s.cfg.BrokerURL
	}
	return s.emb.ClientURL()
}

// AdminURL returns the base URL of the admin HTTP server.
func (s *Server) AdminURL() string {
	if s.httpLn == nil {
		return ""
	}
	return s.scheme() + "://" + s.httpLn.Addr().String()
}

// RegistryURL returns the base URL of the schema registry.
func (s *Server) RegistryURL() string {
	if s.regLn == nil {
		return ""
	}
	return s.scheme() + "://" + s.regLn.Addr().String()
}

// GatewayURL returns the base URL of the HTTP gateway: its own listener
// with Config.GatewayAddr, else the admin address.
func (s *Server) GatewayURL() string {
	if s.gwLn == nil {
		return s.AdminURL()
	}
	return s.scheme() + "://" + s.gwLn.Addr().String()
}

// Admin returns the operations service behind the admin API.
func (s *Server) Admin() *admin.Service { return s.admin }

// AuditIndexer returns the audit indexer, or nil when the audit log is off.
func (s *Server) AuditIndexer() *audit.Indexer { return s.indexer }

// Metrics returns the registry /metrics serves; register a collector with
// it to export more.
func (s *Server) Metrics() *prometheus.Registry { return s.metrics }

// ServiceMetrics returns the publish and consume metrics registered on
// Metrics. Code running inside the server process that publishes or
// consumes (a gateway, a demo service) reports through it: registering a
// second set on the same registry fails.
func (s *Server) ServiceMetrics() *telemetry.Metrics { return s.telem }

// Registry returns the schema registry.
func (s *Server) Registry() *schema.Registry { return s.registry }

// Config returns the server's configuration with defaults applied.
func (s *Server) Config() Config { return s.cfg }

// Shutdown stops serving HTTP (waiting for requests in flight until ctx is
// done), closes the broker connection and stops the embedded server.
func (s *Server) Shutdown(ctx context.Context) error {
	var errs []error
	s.shutOnce.Do(func() {
		for _, hs := range []struct {
			srv *http.Server
			ln  net.Listener
		}{{s.httpSrv, s.httpLn}, {s.regSrv, s.regLn}, {s.gwSrv, s.gwLn}} {
			if hs.srv != nil {
				if err := hs.srv.Shutdown(ctx); err != nil {
					errs = append(errs, err)
				}
			} else if hs.ln != nil {
				_ = hs.ln.Close()
			}
		}
		s.wg.Wait()
		if s.gateway != nil {
			_ = s.gateway.Close()
		}
		if s.auditStop != nil {
			s.auditStop()
			s.auditWG.Wait()
		}
		if s.auditStore != nil {
			if err := s.auditStore.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close audit log: %w", err))
			}
		}
		if s.registry != nil {
			_ = s.registry.Close()
		}
		if s.projections != nil {
			s.projections.Close()
		}
		if s.events != nil {
			_ = s.events.Close()
		}
		if s.broker != nil {
			_ = s.broker.Close()
		}
		if s.sysConn != nil {
			s.sysConn.Close()
		}
		if s.emb != nil {
			s.emb.Shutdown()
		}
		s.log.Info("herald stopped")
	})
	return errors.Join(errs...)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// openPostgres connects a small pool to url and checks that it answers.
func openPostgres(ctx context.Context, url string) (*pgxpool.Pool, error) {
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("parse URL: %w", err)
	}
	cfg.MaxConns = 4
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Ping(pctx); err != nil {
		pool.Close()
		return nil, err
	}
	return pool, nil
}
