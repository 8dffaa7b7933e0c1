package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/localstate"
	"github.com/heraldhq/herald/server"
)

// serveFlags are the flags serve and dev share.
type serveFlags struct {
	dataDir      string
	natsAddr     string
	httpAddr     string
	registryAddr string
	gatewayAddr  string
	durability   string
	brokerURL    string
	logLevel     string
	logFormat    string
	pprof        bool
	ops          opsFlags
	sec          securityFlags
	cluster      clusterFlags
}

func (f *serveFlags) register(cmd *cobra.Command, defaults serveFlags) {
	fl := cmd.Flags()
	fl.StringVar(&f.dataDir, "data-dir", defaults.dataDir, "directory for the event store and every file Herald keeps")
	fl.StringVar(&f.natsAddr, "nats-addr", defaults.natsAddr, "NATS client listen address (port 0: any free port)")
	fl.StringVar(&f.httpAddr, "http-addr", defaults.httpAddr, "admin API, health checks and metrics listen address")
	fl.StringVar(&f.registryAddr, "registry-addr", defaults.registryAddr, "schema registry listen address")
	fl.StringVar(&f.gatewayAddr, "gateway-addr", "", "HTTP gateway (publish and pull over HTTP, /v1/) listen address, with the admin address's TLS and authentication (default: served on --http-addr)")
	fl.StringVar(&f.durability, "durability", "fast", "when a publish is confirmed: fast (written to the OS, fsync every second) or sync (fsynced)")
	fl.StringVar(&f.brokerURL, "broker", "", "where events live: nats://host:port[,host:port] runs on an existing JetStream cluster instead of the embedded one; kafka://host:port or amqp://user:pass@host:port/vhost points pub/sub and readiness at Kafka or RabbitMQ (Herald's own state stays in the embedded JetStream)")
	fl.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fl.StringVar(&f.logFormat, "log-format", "text", "log format: text or json")
	fl.BoolVar(&f.pprof, "pprof", false, "serve Go's runtime profiles (CPU, heap, goroutines; go tool pprof) at /debug/pprof/ on --http-addr; with --auth only admins may read them")
	f.ops.register(cmd)
	f.sec.register(cmd)
}

func (f *serveFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", f.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch f.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", f.logFormat)
}

func (f *serveFlags) config(log *slog.Logger) (server.Config, error) {
	d, err := natsjs.ParseDurability(f.durability)
	if err != nil {
		return server.Config{}, fmt.Errorf("--durability: %w", err)
	}
	dir, err := filepath.Abs(f.dataDir)
	if err != nil {
		return server.Config{}, fmt.Errorf("--data-dir %q: %w", f.dataDir, err)
	}
	cfg := server.Config{
		DataDir:      dir,
		NATSAddr:     f.natsAddr,
		HTTPAddr:     f.httpAddr,
		RegistryAddr: f.registryAddr,
		GatewayAddr:  f.gatewayAddr,
		Durability:   d,
		BrokerURL:    f.brokerURL,
		Logger:       log,
		Pprof:        f.pprof,
	}
	if cfg.Cluster, err = f.cluster.parse(); err != nil {
		return server.Config{}, err
	}
	if cfg.Cluster != nil {
		cfg.NodeName = f.cluster.node
	}
	if err := f.sec.apply(&cfg); err != nil {
		return server.Config{}, err
	}
	return cfg, f.ops.apply(&cfg)
}

func defaultDataDir() string {
	if dir, err := os.UserHomeDir(); err == nil {
		return filepath.Join(dir, ".local", "share", "herald")
	}
	return "herald-data"
}

func newServeCmd(a *app) *cobra.Command {
	f := &serveFlags{}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the Herald platform: broker, schema registry, admin API",
		Long: `Run the Herald platform in the foreground: an embedded NATS JetStream broker
storing events in --data-dir, the admin API with /healthz and /readyz, and the
schema registry. Ctrl-C (SIGINT) or SIGTERM shuts it down gracefully.

With --broker kafka:// or amqp://, events live on Kafka or RabbitMQ, and the
dead-letter, replay, lag, retention and metrics tools work on their topics and
groups; Herald's own state (the schema registry, the audit log's positions,
which dead letters were redriven or purged) stays in the embedded JetStream in
--data-dir. The audit log indexes Kafka topics too, RabbitMQ ones not yet.

With --cluster and --node, the server is one node of a JetStream cluster of
three or more (on one machine or several): each node has its own --data-dir
and addresses, topics and Herald's key-value buckets keep 3 copies, and a
node waits at start until a quorum of the nodes runs. Clients may connect to
any node (nats://n1:4222,nats://n2:4222,...) and fail over when one dies.

Every flag can also be set by an environment variable: --data-dir by
HERALD_DATA_DIR, --nats-addr by HERALD_NATS_ADDR, and so on.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := f.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			cfg, err := f.config(log)
			if err != nil {
				return err
			}
			srv, err := startServer(cmd.Context(), cfg, "")
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "herald serving\n  nats:     %s\n  events:   %s\n  admin:    %s\n  registry: %s\n  gateway:  %s\n  data dir: %s\n",
				srv.NATSURL(), srv.EventsURL(), srv.AdminURL(), srv.RegistryURL(), srv.GatewayURL(), cfg.DataDir)
			if c := cfg.Cluster; c != nil {
				fmt.Fprintf(cmd.OutOrStdout(), "  cluster:  %s, node %s of %d\n", c.Name, cfg.NodeName, c.Nodes())
			}
			if p := srv.AdminCredsPath(); p != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "  admin credentials: %s\n", p)
			}
			return waitAndStop(cmd.Context(), srv)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.cluster.nodes, "cluster", "", "run as one node of a JetStream cluster: every node as name=host:port (the address the nodes reach each other on), e.g. n1=10.0.0.1:6222,n2=10.0.0.2:6222,n3=10.0.0.3:6222; topics and Herald's buckets keep 3 copies")
	fl.StringVar(&f.cluster.node, "node", "", "with --cluster: the name of this node")
	fl.StringVar(&f.cluster.name, "cluster-name", "herald", "with --cluster: the cluster's name, the same on every node")
	f.register(cmd, serveFlags{
		dataDir:      defaultDataDir(),
		natsAddr:     server.DefaultNATSAddr,
		httpAddr:     server.DefaultHTTPAddr,
		registryAddr: server.DefaultRegistryAddr,
	})
	return cmd
}

// startServer starts a server and records its addresses for the CLI;
// caFile is the CA of its TLS certificate when the CLI should trust it.
func startServer(ctx context.Context, cfg server.Config, caFile string) (*server.Server, error) {
	srv, err := server.New(cfg)
	if err != nil {
		return nil, err
	}
	if err := srv.Start(ctx); err != nil {
		return nil, err
	}
	st := localstate.State{PID: os.Getpid(), NATSURL: srv.NATSURL(), AdminURL: srv.AdminURL(), RegistryURL: srv.RegistryURL(), DataDir: cfg.DataDir,
		CAFile: caFile, CredsFile: srv.AdminCredsPath()}
	if u := srv.EventsURL(); u != srv.NATSURL() {
		st.BrokerURL = u
	}
	if err := localstate.Write(st); err != nil {
		cfg.Logger.Warn("cannot record the local addresses; CLI commands will need --url", "error", err)
	}
	return srv, nil
}

// waitAndStop blocks until ctx is cancelled (a signal), then shuts down.
func waitAndStop(ctx context.Context, srv *server.Server) error {
	<-ctx.Done()
	srv.Config().Logger.Info("shutting down")
	localstate.Remove()
	sctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
