package natsjs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Durability says when JetStream reports a message as stored.
type Durability string

const (
	// Fast: a confirmed message is written to the operating system (it
	// survives a crash of the Herald process, not of the machine); files are
	// fsynced every SyncInterval (default 1s), never on JetStream's silent
	// 2-minute default.
	Fast Durability = "fast"
	// Sync: a confirmed message is fsynced to disk (it survives power
	// loss). Costs an fsync per publish; batching amortises it.
	Sync Durability = "sync"
)

// ParseDurability reads "fast" or "sync".
func ParseDurability(s string) (Durability, error) {
	switch Durability(s) {
	case Fast, Sync:
		return Durability(s), nil
	}
	return "", fmt.Errorf("durability %q: want fast or sync", s)
}

// EmbeddedConfig configures an in-process NATS server with JetStream.
type EmbeddedConfig struct {
	// DataDir holds the JetStream file store. Required. Created if missing.
	DataDir string
	// Addr is the host:port NATS clients connect to. Empty: no network
	// listener, in-process connections only. Port 0 picks a free port.
	Addr string
	// Durability of confirmed messages. Default Fast.
	Durability Durability
	// SyncInterval is how often Fast durability fsyncs. Default 1s.
	SyncInterval time.Duration
	// ServerName names the server in cluster and monitoring output.
	// Default "herald".
	ServerName string
	// ReadyTimeout bounds the wait for JetStream readiness. Default 30s.
	ReadyTimeout time.Duration
	// Logger receives the server's notices and errors. Default
	// slog.Default(); debug and trace output is dropped.
	Logger *slog.Logger
	// Configure, if set, adjusts the server's options before it starts:
	// TLS, authentication, encryption at rest.
	Configure func(*server.Options) error
	// ClientOptions come first in the options of every in-process
	// connection (Connect): the credentials to connect with when the
	// server authenticates its clients.
	ClientOptions []nats.Option
	// Cluster, when set, makes this server one node of a JetStream
	// cluster: RunEmbedded returns once the cluster has elected its meta
	// leader (a quorum of the nodes runs), and topics and buckets are
	// replicated (Replicas).
	Cluster *ClusterConfig
}

// ClusterConfig makes an embedded server a node of a JetStream cluster.
type ClusterConfig struct {
	// Name of the cluster; every node uses the same. Default "herald".
	Name string
	// Addr is the host:port this node listens on for the other nodes
	// (NATS routes). Required.
	Addr string
	// Peers are the route addresses (host:port) of the other nodes.
	// At least two: a cluster of three tolerates the loss of one node.
	Peers []string
}

// Nodes is the number of nodes in the cluster: this one and its peers.
func (c *ClusterConfig) Nodes() int { return len(c.Peers) + 1 }

// Replicas is how many copies a topic or bucket keeps in a cluster of n
// nodes: 3 (JetStream's usual choice: one node may fail) or n when
// there are fewer, 1 outside a cluster.
func Replicas(n int) int { return max(1, min(3, n)) }

// Embedded is a running in-process NATS server with JetStream.
type Embedded struct {
	srv *server.Server
	cfg EmbeddedConfig
	log *serverLogger
}

// ErrAddrInUse is returned (wrapped) when the NATS listen address is taken.
var ErrAddrInUse = errors.New("address already in use")

// RunEmbedded starts a NATS server in this process and returns once it
// accepts connections and JetStream is ready. Stop it with Shutdown.
func RunEmbedded(ctx context.Context, cfg EmbeddedConfig) (*Embedded, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("natsjs: EmbeddedConfig.DataDir is required")
	}
	if cfg.Durability == "" {
		cfg.Durability = Fast
	}
	if _, err := ParseDurability(string(cfg.Durability)); err != nil {
		return nil, fmt.Errorf("natsjs: %w", err)
	}
	if cfg.SyncInterval <= 0 {
		cfg.SyncInterval = time.Second
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "herald"
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 30 * time.Second
		if cfg.Cluster != nil {
			// The first node of a cluster waits for the others to start.
			cfg.ReadyTimeout = 5 * time.Minute
		}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := checkDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	opts := &server.Options{
		ServerName:            cfg.ServerName,
		JetStream:             true,
		StoreDir:              cfg.DataDir,
		NoSigs:                true,
		MaxPayload:            8 << 20,
		SyncInterval:          cfg.SyncInterval,
		SyncAlways:            cfg.Durability == Sync,
		DisableShortFirstPing: true,
	}
	if cfg.Addr == "" {
		opts.DontListen = true
	} else {
		host, port, err := splitAddr(cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("natsjs: nats address %q: %w", cfg.Addr, err)
		}
		if port != 0 {
			// nats-server reports a busy port only in its log; probe first
			// so the caller gets an error that says what to do.
			if err := probeListen(net.JoinHostPort(host, strconv.Itoa(port))); err != nil {
				return nil, err
			}
		} else {
			port = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, port
	}
	if cfg.Cluster != nil {
		if err := configureCluster(opts, cfg.Cluster); err != nil {
			return nil, err
		}
	}
	if cfg.Configure != nil {
		if err := cfg.Configure(opts); err != nil {
			return nil, fmt.Errorf("natsjs: configure embedded server: %w", err)
		}
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("natsjs: configure embedded server: %w", err)
	}
	log := &serverLogger{log: cfg.Logger}
	srv.SetLogger(log, false, false)
	go srv.Start()
	e := &Embedded{srv: srv, cfg: cfg, log: log}
	if err := e.waitReady(ctx); err != nil {
		e.Shutdown()
		return nil, err
	}
	return e, nil
}

func (e *Embedded) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(e.cfg.ReadyTimeout)
	// In short steps: a fatal error (a route port taken since it was
	// chosen) ends the wait at once instead of after ReadyTimeout.
	for !e.srv.ReadyForConnections(100 * time.Millisecond) {
		if err := e.log.fatalErr(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("natsjs: embedded server not accepting connections after %v (is %q writable and the address free?)", e.cfg.ReadyTimeout, e.cfg.DataDir)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	for !e.srv.JetStreamEnabled() {
		if err := e.log.fatalErr(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("natsjs: JetStream not enabled after %v (data dir %q)", e.cfg.ReadyTimeout, e.cfg.DataDir)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}
	if e.cfg.Cluster != nil {
		return e.waitCluster(ctx, deadline)
	}
	return nil
}

// waitCluster waits until the cluster has a meta leader, so streams can
// be created, logging every 5s what it waits for.
func (e *Embedded) waitCluster(ctx context.Context, deadline time.Time) error {
	started, logged := time.Now(), time.Now()
	for {
		leader, peers := e.clusterState()
		if leader != "" {
			e.cfg.Logger.Info("cluster formed", "server", e.cfg.ServerName, "meta_leader", leader, "nodes_online", peers, "nodes", e.cfg.Cluster.Nodes())
			return nil
		}
		if err := e.log.fatalErr(); err != nil {
			return err
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("natsjs: cluster %q has no leader after %v: %d of %d nodes reachable from %s (are the other nodes running, and is each one's --cluster list the same?)",
				e.cfg.Cluster.Name, e.cfg.ReadyTimeout, e.routedNodes(), e.cfg.Cluster.Nodes(), e.cfg.ServerName)
		}
		if time.Since(logged) >= 5*time.Second {
			logged = time.Now()
			e.cfg.Logger.Info("waiting for the cluster's other nodes", "server", e.cfg.ServerName, "nodes_connected", e.routedNodes(),
				"nodes", e.cfg.Cluster.Nodes(), "waited", time.Since(started).Round(time.Second).String())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// routedNodes counts this node and the nodes it has a route to (a pair
// of nodes keeps several routes).
func (e *Embedded) routedNodes() int {
	rz, err := e.srv.Routez(&server.RoutezOptions{})
	if err != nil {
		return 1
	}
	names := map[string]bool{}
	for _, r := range rz.Routes {
		names[r.RemoteName] = true
	}
	return len(names) + 1
}

// clusterState returns the meta leader's name ("" while there is none) and
// how many peers it sees online.
func (e *Embedded) clusterState() (leader string, online int) {
	info, err := e.srv.Jsz(&server.JSzOptions{})
	if err != nil || info.Meta == nil {
		return "", 0
	}
	online = 1
	for _, p := range info.Meta.Replicas {
		if !p.Offline {
			online++
		}
	}
	return info.Meta.Leader, online
}

// Cluster returns the cluster configuration, nil for a single server.
func (e *Embedded) Cluster() *ClusterConfig { return e.cfg.Cluster }

// Replicas is how many copies topics and buckets keep on this server:
// 1 on a single server, up to 3 in a cluster.
func (e *Embedded) Replicas() int {
	if e.cfg.Cluster == nil {
		return 1
	}
	return Replicas(e.cfg.Cluster.Nodes())
}

func configureCluster(opts *server.Options, c *ClusterConfig) error {
	if c.Name == "" {
		c.Name = "herald"
	}
	if len(c.Peers) < 2 {
		return fmt.Errorf("natsjs: a cluster needs at least 3 nodes (this one and 2 peers), got %d peer(s)", len(c.Peers))
	}
	host, port, err := splitAddr(c.Addr)
	if err != nil || port == 0 {
		return fmt.Errorf("natsjs: cluster address %q: want host:port with a port other than 0", c.Addr)
	}
	opts.Cluster = server.ClusterOpts{Name: c.Name, Host: host, Port: port}
	var routes []*url.URL
	for _, p := range c.Peers {
		if _, pp, err := splitAddr(p); err != nil || pp == 0 {
			return fmt.Errorf("natsjs: cluster peer %q: want host:port with a port other than 0", p)
		}
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: p})
	}
	opts.Routes = routes
	return nil
}

// Server returns the underlying nats-server.
func (e *Embedded) Server() *server.Server { return e.srv }

// ClientURL returns the URL network clients use ("nats://127.0.0.1:4222"),
// or "" when the server has no listener.
func (e *Embedded) ClientURL() string {
	if e.cfg.Addr == "" {
		return ""
	}
	return e.srv.ClientURL()
}

// Addr returns the host:port clients connect to, or "" without a listener.
func (e *Embedded) Addr() string {
	if a, ok := e.srv.Addr().(*net.TCPAddr); ok && e.cfg.Addr != "" {
		return a.String()
	}
	return ""
}

// Durability returns the configured durability.
func (e *Embedded) Durability() Durability { return e.cfg.Durability }

// Connect opens an in-process client connection to the server.
func (e *Embedded) Connect(opts ...nats.Option) (*nats.Conn, error) {
	opts = append(append([]nats.Option{nats.InProcessServer(e.srv), nats.Name("herald-embedded")}, e.cfg.ClientOptions...), opts...)
	nc, err := nats.Connect("", opts...)
	if err != nil {
		return nil, fmt.Errorf("natsjs: in-process connection: %w", err)
	}
	return nc, nil
}

// Ready reports whether the server accepts connections and JetStream is on.
func (e *Embedded) Ready() bool {
	return e.srv.Running() && e.srv.JetStreamEnabled()
}

// Shutdown stops the server and waits until it has stopped. Messages it
// confirmed are on disk per the durability setting.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

func splitAddr(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("port %q is not a number from 0 to 65535", p)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	return host, port, nil
}

func probeListen(addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return fmt.Errorf("natsjs: nats address %s: %w: another process (often a NATS server) listens there; choose another with --nats-addr, for example 127.0.0.1:4223, or 127.0.0.1:0 for any free port", addr, ErrAddrInUse)
		}
		return fmt.Errorf("natsjs: nats address %s: %w", addr, err)
	}
	return l.Close()
}

func checkDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("natsjs: data dir %q: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".herald-write-check-*")
	if err != nil {
		return fmt.Errorf("natsjs: data dir %q is not writable: %w", dir, err)
	}
	name := f.Name()
	_ = f.Close()
	_ = os.Remove(name)
	if abs, err := filepath.Abs(dir); err == nil && abs == "/" {
		return errors.New("natsjs: data dir must not be /")
	}
	return nil
}

// serverLogger adapts nats-server's logger to slog.
type serverLogger struct {
	log      *slog.Logger
	routeErr atomic.Int64 // unix nanos of the last route error logged as a warning
	fatal    atomic.Pointer[string]
}

// fatalErr is the first fatal error the server reported (a listener that
// could not bind its port, JetStream that could not start): it says so
// only in its log and stops starting, so waiting for it is pointless.
func (l *serverLogger) fatalErr() error {
	msg := l.fatal.Load()
	if msg == nil {
		return nil
	}
	if strings.Contains(*msg, "address already in use") {
		return fmt.Errorf("natsjs: embedded server: %s: %w", *msg, ErrAddrInUse)
	}
	return fmt.Errorf("natsjs: embedded server: %s", *msg)
}

func (l *serverLogger) Noticef(format string, v ...any) {
	l.log.Debug(fmt.Sprintf(format, v...), "component", "nats")
}
func (l *serverLogger) Warnf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.HasPrefix(msg, "Failed to install snapshot") && strings.HasSuffix(msg, "store is closed") {
		// A cluster node says this for every replicated consumer as it
		// shuts down; it is not a problem.
		l.log.Debug(msg, "component", "nats")
		return
	}
	l.log.Warn(msg, "component", "nats")
}
func (l *serverLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.fatal.CompareAndSwap(nil, &msg)
	l.log.Error(msg, "component", "nats")
}
func (l *serverLogger) Errorf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	if strings.HasPrefix(msg, "Error trying to connect to route") {
		// Said every second for every route of a peer that is down:
		// once in routeErrorEvery at warning level is enough.
		now := time.Now().UnixNano()
		last := l.routeErr.Load()
		if now-last < int64(routeErrorEvery) || !l.routeErr.CompareAndSwap(last, now) {
			l.log.Debug(msg, "component", "nats")
			return
		}
		l.log.Warn(msg+" (repeats are logged at debug level for "+routeErrorEvery.String()+")", "component", "nats")
		return
	}
	l.log.Error(msg, "component", "nats")
}

// routeErrorEvery spaces the warnings about an unreachable cluster peer.
const routeErrorEvery = 30 * time.Second

func (l *serverLogger) Debugf(string, ...any) {}
func (l *serverLogger) Tracef(string, ...any) {}
