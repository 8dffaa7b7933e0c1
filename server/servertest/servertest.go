// Package servertest starts a Herald platform for tests: free loopback
// ports, a temporary data directory and a shutdown when the test ends.
package servertest

import (
	"context"
	"testing"
	"time"

	"github.com/heraldhq/herald/server"
)

// Start runs a platform with cfg on ports the system picks (NATS, admin and
// registry on 127.0.0.1:0, and the gateway too when cfg gives it a
// listener of its own) and, unless cfg names one, in a temporary data
// directory. It is shut down when the test ends; a failed shutdown fails
// the test.
func Start(t testing.TB, cfg server.Config) *server.Server {
	t.Helper()
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	cfg.NATSAddr, cfg.HTTPAddr, cfg.RegistryAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	if cfg.GatewayAddr != "" {
		cfg.GatewayAddr = "127.0.0.1:0" // asked for a gateway listener of its own
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return srv
}
