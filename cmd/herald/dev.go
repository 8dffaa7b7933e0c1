package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/credentials"
	"github.com/heraldhq/herald/examples/shop"
	"github.com/heraldhq/herald/server/auth"
)

func newDevCmd(a *app) *cobra.Command {
	f := &serveFlags{}
	keep := false
	withTLS := false
	demoRate := 5.0
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run Herald for development: temporary data, free ports, ready-to-paste commands",
		Long: `Run the whole platform on a temporary data directory and free ports (4222 and
8080 are often taken), then print the addresses and a herald pub / herald sub
pair to paste into another terminal. The data directory is removed on exit
unless --keep is given.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
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
			srv, err := startServer(cmd.Context(), cfg, caFile)
			if err != nil {
				return err
			}
			url := srv.NATSURL()
			out := cmd.OutOrStdout()
			demoDone := make(chan error, 1)
			var demoClient *herald.Client
			demoNote := "off (--demo-rate 0)"
			if demoRate > 0 {
				// The demo reports to the server's /metrics like a service would.
				m := srv.ServiceMetrics()
				hc := herald.Config{Broker: srv.Broker(), Source: "shop", Logger: log, Hooks: []herald.PublishHook{m}}
				if caFile != "" {
					// The shop connects like a service would: over TLS, with
					// credentials when the server asks for them.
					tc, err := credentials.TLSConfig(caFile, "", "")
					if err != nil {
						return err
					}
					hc.Broker, hc.URL, hc.TLS, hc.Credentials = nil, srv.NATSURL(), tc, srv.AdminCredsPath()
				}
				c, err := herald.Connect(cmd.Context(), hc)
				if err != nil {
					return err
				}
				demoClient = c
				demo := shop.New(c, shop.Config{Rate: demoRate, Logger: log, Options: []consumer.Option{consumer.WithObserver(m)}})
				go func() { demoDone <- demo.Run(cmd.Context()) }()
				demoNote = fmt.Sprintf("the shop example at %g orders/s; every 7th notification fails on purpose into %s", demoRate, consumer.DeadLetterTopic(shop.TopicShipping))
			} else {
				close(demoDone)
			}
			fmt.Fprintf(out, `
Herald dev is running.

  NATS:      %s
  Admin API: %s  (/healthz, /readyz)
  Registry:  %s  (Confluent-compatible)
  Data dir:  %s%s
  Demo:      %s

Try it in another terminal:

  go run ./cmd/herald sub --url %s --topic demo --from first
  go run ./cmd/herald pub --url %s --topic demo --type demo.hello.v1 '{"hello":"world"}'

The demo's dead letters:

  go run ./cmd/herald sub --url %s --topic %s --from first

%sPress Ctrl-C to stop.
`, url, srv.AdminURL(), srv.RegistryURL(), cfg.DataDir, keptNote(keep), demoNote, url, url, url, consumer.DeadLetterTopic(shop.TopicShipping), securityNote(caFile, srv.AdminCredsPath()))
			// The demo's routers drain before the broker they use stops.
			<-cmd.Context().Done()
			derr := <-demoDone
			if demoClient != nil {
				_ = demoClient.Close()
			}
			if err := waitAndStop(cmd.Context(), srv); err != nil {
				return err
			}
			return derr
		},
	}
	f.register(cmd, serveFlags{natsAddr: "127.0.0.1:0", httpAddr: "127.0.0.1:0", registryAddr: "127.0.0.1:0"})
	cmd.Flags().BoolVar(&keep, "keep", false, "keep the temporary data directory on exit")
	cmd.Flags().BoolVar(&withTLS, "tls", false, "serve every listener over TLS with a throwaway CA made for this run (the CLI trusts it; other clients: $HERALD_CA)")
	cmd.Flags().Float64Var(&demoRate, "demo-rate", demoRate, "orders per second the shop example generates (0: no demo)")
	return cmd
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
