package server

import (
	"strings"
	"testing"

	"github.com/heraldhq/herald/server/auth"
)

func TestOpenAddressNeedsTLSAndAuthOrInsecure(t *testing.T) {
	t.Parallel()
	dev, err := auth.GenerateDevTLS(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	files := &auth.TLSFiles{CertFile: dev.CertFile, KeyFile: dev.KeyFile}
	loop := Config{NATSAddr: "127.0.0.1:0", HTTPAddr: "127.0.0.1:0", RegistryAddr: "[::1]:0"}
	with := func(f func(*Config)) Config { c := loop; f(&c); return c }
	for _, tc := range []struct {
		name    string
		cfg     Config
		refused string // the flag the error names; "" when accepted
	}{
		{"loopback", loop, ""},
		{"localhost", with(func(c *Config) { c.HTTPAddr = "localhost:0" }), ""},
		{"open admin", with(func(c *Config) { c.HTTPAddr = "0.0.0.0:0" }), "--http-addr"},
		{"open registry", with(func(c *Config) { c.RegistryAddr = "[::]:0" }), "--registry-addr"},
		{"loopback gateway", with(func(c *Config) { c.GatewayAddr = "127.0.0.1:0" }), ""},
		{"open gateway", with(func(c *Config) { c.GatewayAddr = "0.0.0.0:0" }), "--gateway-addr"},
		{"open gateway, TLS and auth", with(func(c *Config) { c.GatewayAddr = "0.0.0.0:0"; c.TLS = files; c.Auth = true }), ""},
		{"open nats with auth only", with(func(c *Config) { c.NATSAddr = "0.0.0.0:0"; c.Auth = true }), "--nats-addr"},
		{"open nats with TLS only", with(func(c *Config) { c.NATSAddr = "0.0.0.0:0"; c.TLS = files }), "--nats-addr"},
		{"open, TLS and auth", with(func(c *Config) { c.NATSAddr = "0.0.0.0:0"; c.HTTPAddr = "0.0.0.0:0"; c.TLS = files; c.Auth = true }), ""},
		{"open, insecure", with(func(c *Config) {
			c.NATSAddr = "0.0.0.0:0"
			c.HTTPAddr = "0.0.0.0:0"
			c.RegistryAddr = "[::]:0"
			c.Insecure = true
		}), ""},
		{"unparsable address", with(func(c *Config) { c.HTTPAddr = "nonsense" }), "--http-addr"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			err := checkSecurity(&cfg)
			switch {
			case tc.refused == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.refused != "" && err == nil:
				t.Fatal("accepted")
			case tc.refused != "" && (!strings.Contains(err.Error(), tc.refused) || !strings.Contains(err.Error(), "--insecure")):
				t.Fatalf("error %q does not name %s and the way out", err, tc.refused)
			}
		})
	}
}
