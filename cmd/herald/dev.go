package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/credentials"
	"github.com/heraldhq/herald/examples/shop"
	"github.com/heraldhq/herald/internal/netport"
	"github.com/heraldhq/herald/schema/serde"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/auth"
)

func newDevCmd(a *app) *cobra.Command {
	f := &serveFlags{}
	keep := false
	withTLS := false
	clustered := false
	rate := 2.0
	pg := os.Getenv("HERALD_POSTGRES")
	if pg == "" {
		pg = shop.DefaultPostgres
	}
	ordersAddr := "127.0.0.1:0"
	every := time.Duration(0)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run Herald with the reference shop: temporary data, free ports, a live summary",
		Long: `Run the whole platform on a temporary data directory and free ports (4222 and
8080 are often taken), with the reference shop (orders, inventory, payments,
shipping, notifications: event sourcing, a read model, the outbox, the inbox
and the order saga) and a load generator placing --rate orders per second.
It prints the addresses (admin, registry, NATS, the order API), then a summary
that refreshes in place on a terminal (orders placed, completed, compensated,
dead letters, the largest consumer lag, events per second) and is printed as
a line every --summary-every otherwise. Ctrl-C stops everything cleanly.

The shop keeps its tables in PostgreSQL (--postgres, $HERALD_POSTGRES), in a
schema of its own removed on exit like the data directory, unless --keep is
given. Without a reachable PostgreSQL, dev runs the platform alone.`,
		Example: `  herald dev
  herald dev --rate 0      # the shop without generated orders: place them with curl
  herald dev --rate 20 --postgres postgres://me@db.local:5432/dev`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if rate < 0 {
				return fmt.Errorf("--rate %g: must not be negative (0: no generated orders)", rate)
			}
			if cmd.Flags().Changed("demo-rate") && !cmd.Flags().Changed("rate") {
				rate, _ = cmd.Flags().GetFloat64("demo-rate")
			}
			log, err := f.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			if f.dataDir == "" {
				dir, err := os.MkdirTemp("", "herald-dev-")
				if err != nil {
					return fmt.Errorf("temporary data dir: %w", err)
				}
				f.dataDir = dir
				if !keep {
					defer os.RemoveAll(dir)
				}
			}
			cfg, err := f.config(log)
			if err != nil {
				return err
			}
			caFile := ""
			if withTLS {
				if cfg.TLS != nil {
					return errors.New("--tls makes a throwaway CA and certificate; it does not go with --tls-cert")
				}
				dev, err := auth.GenerateDevTLS(filepath.Join(cfg.DataDir, "tls"))
				if err != nil {
					return err
				}
				cfg.TLS = &auth.TLSFiles{CertFile: dev.CertFile, KeyFile: dev.KeyFile}
				caFile = dev.CAFile
			}
			var srv *server.Server
			var others []*server.Server
			if clustered {
				if withTLS {
					return errors.New("--cluster does not go with --tls yet")
				}
				srv, others, err = startDevCluster(cmd.Context(), cfg)
			} else {
				srv, err = startServer(cmd.Context(), cfg, caFile)
			}
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			shopLog := log
			if !cmd.Flags().Changed("log-level") {
				// The shop's services log what goes wrong, not every
				// late saga reply: the summary says how it goes.
				level := f.logLevel
				f.logLevel = "warn"
				shopLog, _ = f.logger(cmd.ErrOrStderr())
				f.logLevel = level
			}
			// The nodes of a cluster stop together: one by one, the last
			// ones would lose their quorum and complain.
			stopOthers := func() func() {
				var wg sync.WaitGroup
				for _, o := range others {
					wg.Go(func() { _ = waitAndStopNow(o) })
				}
				return wg.Wait
			}
			d, err := startShop(cmd.Context(), srv, shopLog, caFile, pg, ordersAddr, rate, keep)
			if err != nil {
				wait := stopOthers()
				_ = waitAndStopNow(srv)
				wait()
				return err
			}
			printDevBanner(out, srv, cfg.DataDir, keep, caFile, d, rate)
			if clustered {
				urls := []string{srv.NATSURL()}
				for _, o := range others {
					urls = append(urls, o.NATSURL())
				}
				fmt.Fprintf(out, "Cluster of 3 nodes (topics and buckets replicated 3 times); clients may use --url %s\n\n", strings.Join(urls, ","))
			}
			if every <= 0 {
				every = 10 * time.Second
				if isTerminal(out) {
					every = time.Second
				}
			}
			sumDone := make(chan struct{})
			go func() {
				defer close(sumDone)
				summarize(cmd.Context(), out, srv, d, every, isTerminal(out))
			}()
			<-cmd.Context().Done()
			<-sumDone
			derr := d.stop()
			wait := stopOthers()
			err = waitAndStop(cmd.Context(), srv)
			wait()
			if err != nil {
				return err
			}
			return derr
		},
	}
	f.register(cmd, serveFlags{natsAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", registryAddr: "127.0.0.1:0"})
	fl := cmd.Flags()
	fl.BoolVar(&clustered, "cluster", false, "run three JetStream nodes in this process, a cluster with every topic and bucket replicated three times (the first node serves the admin API, the registry and the shop)")
	fl.BoolVar(&keep, "keep", false, "keep the temporary data directory and the shop's PostgreSQL schema on exit")
	fl.BoolVar(&withTLS, "tls", false, "serve every listener over TLS with a throwaway CA made for this run (the CLI trusts it; other clients: $HERALD_CA)")
	fl.Float64Var(&rate, "rate", rate, "orders per second the load generator places (0: none)")
	fl.Float64("demo-rate", rate, "old name of --rate")
	_ = fl.MarkHidden("demo-rate")
	fl.StringVar(&pg, "postgres", pg, "PostgreSQL the shop keeps its tables in ($HERALD_POSTGRES)")
	fl.StringVar(&ordersAddr, "orders-addr", ordersAddr, "where the shop's order API listens")
	fl.DurationVar(&every, "summary-every", 0, "how often the summary is printed (default 1s on a terminal, else 10s)")
	return cmd
}

// devShop is the shop `herald dev` runs, if PostgreSQL was reachable.
type devShop struct {
	s      *shop.Shop
	c      *herald.Client
	schema string
	pgURL  string
	keep   bool
	cancel context.CancelFunc
	done   chan error
	note   string
}

func startShop(ctx context.Context, srv *server.Server, log *slog.Logger, caFile, pgURL, ordersAddr string, rate float64, keep bool) (*devShop, error) {
	var b [4]byte
	_, _ = rand.Read(b[:])
	d := &devShop{schema: "herald_dev_" + hex.EncodeToString(b[:]), pgURL: pgURL, keep: keep}
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	db, err := shop.OpenDB(pctx, pgURL, d.schema)
	cancel()
	if err != nil {
		d.note = fmt.Sprintf("off: %v\n             (the shop needs PostgreSQL: --postgres URL or $HERALD_POSTGRES)", err)
		return d, nil
	}
	m := srv.ServiceMetrics()
	hc := herald.Config{Broker: srv.Broker(), Source: "shop", Logger: log, Topics: shop.Topics, Hooks: []herald.PublishHook{m}}
	rt := http.DefaultTransport
	if caFile != "" {
		// The shop connects like a service would: over TLS, with
		// credentials when the server asks for them.
		tc, err := credentials.TLSConfig(caFile, "", "")
		if err != nil {
			db.Close()
			return nil, err
		}
		hc.Broker, hc.URL, hc.TLS, hc.Credentials = nil, srv.NATSURL(), tc, srv.AdminCredsPath()
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = tc
		rt = t
	}
	if p := srv.AdminCredsPath(); p != "" {
		c, err := credentials.Load(p)
		if err != nil {
			db.Close()
			return nil, err
		}
		rt = c.Transport(rt)
	}
	reg, err := serde.NewClient(srv.RegistryURL(), serde.WithHTTPClient(&http.Client{Timeout: 30 * time.Second, Transport: rt}))
	if err != nil {
		db.Close()
		return nil, err
	}
	c, err := herald.Connect(ctx, hc)
	if err != nil {
		db.Close()
		return nil, err
	}
	s, err := shop.New(ctx, shop.Config{
		Env:        shop.Env{Client: c, Registry: reg, DB: db, Logger: log, Options: []consumer.Option{consumer.WithObserver(m)}},
		OrdersAddr: ordersAddr, Rate: rate,
	})
	if err != nil {
		_ = c.Close()
		db.Close()
		return nil, err
	}
	d.s, d.c = s, c
	sctx, scancel := context.WithCancel(context.WithoutCancel(ctx))
	d.cancel, d.done = scancel, make(chan error, 1)
	go func() {
		d.done <- s.Run(sctx)
		db.Close()
	}()
	return d, nil
}

// stop stops the shop (before the broker it uses) and drops its schema
// unless it is kept.
func (d *devShop) stop() error {
	if d.s == nil {
		return nil
	}
	d.cancel()
	err := <-d.done
	_ = d.c.Close()
	if !d.keep {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if derr := shop.DropSchema(ctx, d.pgURL, d.schema); derr != nil {
			err = errors.Join(err, fmt.Errorf("drop the shop's schema %s: %w", d.schema, derr))
		}
	}
	return err
}

func waitAndStopNow(srv *server.Server) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	return srv.Shutdown(ctx)
}

func printDevBanner(out io.Writer, srv *server.Server, dataDir string, keep bool, caFile string, d *devShop, rate float64) {
	url := srv.NATSURL()
	fmt.Fprintf(out, `
Herald dev is running.

  NATS:      %s
  Admin API: %s  (/healthz, /readyz; the dashboard at /)
  Registry:  %s  (Confluent-compatible)
  Data dir:  %s%s
`, url, srv.AdminURL(), srv.RegistryURL(), dataDir, keptNote(keep))
	if d.s == nil {
		fmt.Fprintf(out, "  Shop:      %s\n", d.note)
	} else {
		load := fmt.Sprintf("%g orders/s generated", rate)
		if rate == 0 {
			load = "no generated orders (--rate 0)"
		}
		fmt.Fprintf(out, "  Order API: %s  (POST /orders, GET /orders/{id}, GET /orders?status=)\n", d.s.URL())
		fmt.Fprintf(out, "  Shop:      %s; PostgreSQL schema %s; the SMS notifier fails on purpose into %s\n",
			load, d.schema, consumer.DeadLetterTopic(shop.TopicOrders))
	}
	fmt.Fprintf(out, `
Try it in another terminal:

  go run ./cmd/herald sub --url %s --topic %s --from first
`, url, shop.TopicOrders)
	if d.s != nil {
		fmt.Fprintf(out, `  curl -s -X POST %s/orders -d '{"customer":"ada","sku":"mug","quantity":1,"total_cents":1200}'
  go run ./cmd/herald saga list --state compensated
  go run ./cmd/herald dlq redrive --topic %s
`, d.s.URL(), consumer.DeadLetterTopic(shop.TopicOrders))
	}
	fmt.Fprintf(out, "\n%sPress Ctrl-C to stop.\n\n", securityNote(caFile, srv.AdminCredsPath()))
}

// devSummary is one reading of the summary.
type devSummary struct {
	placed, completed, compensated int64
	dlq                            uint64
	maxLag                         float64
	events                         uint64
}

func readSummary(ctx context.Context, srv *server.Server, d *devShop) (devSummary, error) {
	var s devSummary
	if d.s != nil {
		counts, err := d.s.Orders().Counts(ctx)
		if err != nil {
			return s, err
		}
		for _, n := range counts {
			s.placed += n
		}
		s.completed, s.compensated = counts[shop.StatusShipped], counts[shop.StatusCancelled]
	}
	topics, err := srv.Admin().Topics(ctx)
	if err != nil {
		return s, err
	}
	for _, t := range topics {
		if t.DeadLetter {
			s.dlq += t.Messages
		} else {
			s.events += t.LastSeq
		}
	}
	lags, err := srv.Admin().Lag(ctx, "", "")
	if err != nil {
		return s, err
	}
	for _, l := range lags {
		s.maxLag = max(s.maxLag, l.LagSeconds)
	}
	return s, nil
}

// summarize prints the summary every interval until ctx ends: in place on
// a terminal, as lines otherwise.
func summarize(ctx context.Context, out io.Writer, srv *server.Server, d *devShop, every time.Duration, tty bool) {
	t := time.NewTicker(every)
	defer t.Stop()
	var prev devSummary
	prevAt := time.Now()
	first := true
	for {
		select {
		case <-ctx.Done():
			if tty {
				fmt.Fprintln(out)
			}
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, every)
		s, err := readSummary(rctx, srv, d)
		cancel()
		if err != nil {
			if ctx.Err() == nil {
				fmt.Fprintf(out, "summary: %v\n", err)
			}
			continue
		}
		now := time.Now()
		rate := 0.0
		if !first && s.events >= prev.events {
			rate = float64(s.events-prev.events) / now.Sub(prevAt).Seconds()
		}
		prev, prevAt, first = s, now, false
		line := fmt.Sprintf("orders placed %d  completed %d  compensated %d  in progress %d | dead letters %d | max lag %s | %.0f events/s",
			s.placed, s.completed, s.compensated, s.placed-s.completed-s.compensated, s.dlq, fmtSeconds(s.maxLag), rate)
		if tty {
			fmt.Fprintf(out, "\r\033[K%s", line)
		} else {
			fmt.Fprintf(out, "%s %s\n", now.Format("15:04:05"), line)
		}
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func securityNote(caFile, creds string) string {
	var b strings.Builder
	if caFile != "" {
		fmt.Fprintf(&b, "TLS is on. The CLI on this machine trusts the dev CA; other clients: export HERALD_CA=%s\n", caFile)
	}
	if creds != "" {
		fmt.Fprintf(&b, "Authentication is on. The CLI on this machine uses the admin credentials; other clients: export HERALD_CREDS=%s\n", creds)
	}
	if b.Len() > 0 {
		b.WriteString("\n")
	}
	return b.String()
}

func keptNote(keep bool) string {
	if keep {
		return " (kept on exit)"
	}
	return " (removed on exit; --keep keeps it)"
}

// startDevCluster runs three cluster nodes in this process: cfg's node
// (n1, the one the CLI and the shop use) and two more on free ports, each
// with a data dir of its own under cfg.DataDir.
func startDevCluster(ctx context.Context, cfg server.Config) (*server.Server, []*server.Server, error) {
	// Another program may take a chosen port before its node listens on
	// it; the nodes then start again on other ports.
	for attempt := 1; ; attempt++ {
		first, others, err := startDevClusterOnce(ctx, cfg)
		if err == nil || !errors.Is(err, natsjs.ErrAddrInUse) || attempt == 3 {
			return first, others, err
		}
		cfg.Logger.Info("a route port was taken; starting the cluster on other ports", "error", err)
	}
}

func startDevClusterOnce(ctx context.Context, cfg server.Config) (*server.Server, []*server.Server, error) {
	// The route ports are chosen outside the range of outgoing
	// connections: the nodes dial each other while they start, and a
	// dialled connection could take a port from that range before the
	// node that should listen on it does.
	routes, err := netport.LoopbackAddrs(3)
	if err != nil {
		return nil, nil, fmt.Errorf("--cluster: route ports: %w", err)
	}
	cfgs := make([]server.Config, 3)
	for i := range cfgs {
		c := cfg
		c.DataDir = filepath.Join(cfg.DataDir, fmt.Sprintf("n%d", i+1))
		c.NodeName = fmt.Sprintf("n%d", i+1)
		c.Cluster = &natsjs.ClusterConfig{Name: "herald-dev", Addr: routes[i]}
		for j, r := range routes {
			if j != i {
				c.Cluster.Peers = append(c.Cluster.Peers, r)
			}
		}
		if i > 0 {
			c.NATSAddr, c.HTTPAddr, c.RegistryAddr, c.GatewayAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", ""
			c.Logger = cfg.Logger.With("node", c.NodeName)
		}
		cfgs[i] = c
	}
	servers := make([]*server.Server, 3)
	errs := make([]error, 3)
	var wg sync.WaitGroup
	for i := range cfgs {
		wg.Go(func() {
			if i == 0 {
				servers[i], errs[i] = startServer(ctx, cfgs[i], "")
				return
			}
			s, err := server.New(cfgs[i])
			if err == nil {
				err = s.Start(ctx)
			}
			servers[i], errs[i] = s, err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for i, s := range servers {
			if s != nil && errs[i] == nil {
				_ = waitAndStopNow(s)
			}
		}
		return nil, nil, fmt.Errorf("--cluster: %w", err)
	}
	return servers[0], servers[1:], nil
}
