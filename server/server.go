// Package server composes the Herald platform that `herald serve` runs: the
// embedded NATS JetStream broker, the admin HTTP API with health checks, and
// the listeners of the other components. The SDK never imports it.
//
//	srv, err := server.New(server.Config{DataDir: dir})
//	if err != nil { ... }
//	if err := srv.Start(ctx); err != nil { ... }
//	defer srv.Shutdown(context.Background())
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"syscall"
	"time"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/server/registry"
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
	// Durability of confirmed messages: natsjs.Fast (default) or Sync.
	Durability natsjs.Durability
	// Logger for the server. Default slog.Default().
	Logger *slog.Logger
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
	registry *schema.Registry
	mux      *http.ServeMux
	started  time.Time
	wg       sync.WaitGroup
	shutOnce sync.Once
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
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Server{cfg: cfg, log: cfg.Logger, mux: http.NewServeMux()}, nil
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
	s.emb, err = natsjs.RunEmbedded(ctx, natsjs.EmbeddedConfig{
		DataDir:    s.cfg.DataDir,
		Addr:       s.cfg.NATSAddr,
		Durability: s.cfg.Durability,
		Logger:     s.log,
	})
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	s.broker, err = natsjs.New(ctx, natsjs.WithEmbedded(s.emb), natsjs.WithLogger(s.log))
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	store, err := schema.NewKVStore(ctx, s.broker.JetStream(), schema.DefaultBucket)
	if err != nil {
		return fmt.Errorf("server: schema store: %w", err)
	}
	if s.registry, err = schema.New(ctx, store, schema.WithLogger(s.log)); err != nil {
		return fmt.Errorf("server: schema registry: %w", err)
	}
	s.routes()
	s.httpSrv = s.newHTTPServer(s.mux)
	s.regSrv = s.newHTTPServer(registry.NewHandler(s.registry, registry.WithLogger(s.log)))
	s.serve(s.httpSrv, s.httpLn)
	s.serve(s.regSrv, s.regLn)
	s.log.Info("herald started",
		"nats", s.emb.ClientURL(), "http", s.AdminURL(), "registry", s.RegistryURL(),
		"data_dir", s.cfg.DataDir, "durability", string(s.cfg.Durability))
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
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
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
// net/http.ServeMux pattern). Call it before Start.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, h) }

func (s *Server) routes() {
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "uptime_s": int(time.Since(s.started).Seconds())})
	})
	s.mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if err := s.Ready(r.Context()); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "error": err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"status": "ready"})
	})
}

// Ready reports nil when the broker accepts work: the embedded server runs
// and JetStream answers.
func (s *Server) Ready(ctx context.Context) error {
	if s.emb == nil || !s.emb.Ready() {
		return errors.New("jetstream is not running")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := s.broker.JetStream().AccountInfo(ctx); err != nil {
		return fmt.Errorf("jetstream does not answer: %w", err)
	}
	return nil
}

// Broker returns the in-process broker connection.
func (s *Server) Broker() *natsjs.Broker { return s.broker }

// Embedded returns the embedded NATS server.
func (s *Server) Embedded() *natsjs.Embedded { return s.emb }

// NATSURL returns the URL NATS clients use.
func (s *Server) NATSURL() string { return s.emb.ClientURL() }

// AdminURL returns the base URL of the admin HTTP server.
func (s *Server) AdminURL() string {
	if s.httpLn == nil {
		return ""
	}
	return "http://" + s.httpLn.Addr().String()
}

// RegistryURL returns the base URL of the schema registry.
func (s *Server) RegistryURL() string {
	if s.regLn == nil {
		return ""
	}
	return "http://" + s.regLn.Addr().String()
}

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
		}{{s.httpSrv, s.httpLn}, {s.regSrv, s.regLn}} {
			if hs.srv != nil {
				if err := hs.srv.Shutdown(ctx); err != nil {
					errs = append(errs, err)
				}
			} else if hs.ln != nil {
				_ = hs.ln.Close()
			}
		}
		s.wg.Wait()
		if s.registry != nil {
			_ = s.registry.Close()
		}
		if s.broker != nil {
			_ = s.broker.Close()
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
