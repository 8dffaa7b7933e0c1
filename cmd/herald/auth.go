package main

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/credentials"
	"github.com/heraldhq/herald/internal/localstate"
	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/auth"
)

// EnvStoreKey holds the store encryption key itself (the alternative to
// --store-key-file); keys never come from a flag, which other users of the
// machine could read in the process list.
const EnvStoreKey = "HERALD_STORE_KEY"

// securityFlags are serve's and dev's TLS, authentication and encryption
// settings.
type securityFlags struct {
	tlsCert, tlsKey, tlsClientCA string
	auth, insecure               bool
	allowedHosts                 []string
	oidcIssuer, oidcJWKS         string
	oidcAudience, oidcRoleClaim  string
	storeKeyFile, storeOldKey    string
	storeCipher                  string
}

func (f *securityFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.tlsCert, "tls-cert", "", "serve every listener (NATS, admin API, registry) over TLS with this PEM certificate (with --tls-key)")
	fl.StringVar(&f.tlsKey, "tls-key", "", "the PEM private key of --tls-cert")
	fl.StringVar(&f.tlsClientCA, "tls-client-ca", "", "require client certificates signed by the CA certificates in this PEM file (mutual TLS)")
	fl.BoolVar(&f.auth, "auth", false, "require credentials on every listener; the first admin's are written to DATA-DIR/auth/admin.creds; mint more with herald auth")
	fl.BoolVar(&f.insecure, "insecure", false, "allow listening beyond loopback without TLS and authentication")
	fl.StringSliceVar(&f.allowedHosts, "allowed-hosts", nil, "Host names the HTTP listeners answer besides IP addresses, localhost, this machine's name and the certificate's names; * for any")
	fl.StringVar(&f.oidcIssuer, "oidc-issuer", "", "accept OAuth2/OIDC bearer tokens of this issuer (its iss claim) on the admin API and registry")
	fl.StringVar(&f.oidcJWKS, "oidc-jwks", "", "the OIDC issuer's JSON Web Key Set: a file or an https URL")
	fl.StringVar(&f.oidcAudience, "oidc-audience", "", "the audience OIDC tokens must name (their aud claim)")
	fl.StringVar(&f.oidcRoleClaim, "oidc-role-claim", "roles", "the OIDC claim holding the role: admin, writer or reader (herald: or herald- prefixes accepted)")
	fl.StringVar(&f.storeKeyFile, "store-key-file", "", "encrypt the event store and KV buckets at rest with the key in this file (or set $"+EnvStoreKey+"); never pass the key itself as a flag")
	fl.StringVar(&f.storeOldKey, "store-old-key-file", "", "during a key rotation: the file of the previous store key, to read data written with it")
	fl.StringVar(&f.storeCipher, "store-cipher", server.CipherChaCha, "store cipher: chacha or aes")
}

func readKeyFile(flag, path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	k := strings.TrimSpace(string(b))
	if k == "" {
		return "", fmt.Errorf("%s: %s is empty", flag, path)
	}
	return k, nil
}

func (f *securityFlags) apply(cfg *server.Config) error {
	if f.tlsCert != "" || f.tlsKey != "" || f.tlsClientCA != "" {
		cfg.TLS = &auth.TLSFiles{CertFile: f.tlsCert, KeyFile: f.tlsKey, ClientCAFile: f.tlsClientCA}
	}
	cfg.Auth, cfg.Insecure, cfg.AllowedHosts = f.auth, f.insecure, f.allowedHosts
	if f.oidcIssuer != "" || f.oidcJWKS != "" {
		cfg.OIDC = &auth.OIDCConfig{Issuer: f.oidcIssuer, JWKS: f.oidcJWKS, Audience: f.oidcAudience, RoleClaim: f.oidcRoleClaim}
	}
	switch {
	case f.storeKeyFile != "":
		k, err := readKeyFile("--store-key-file", f.storeKeyFile)
		if err != nil {
			return err
		}
		cfg.StoreKey = k
	case os.Getenv(EnvStoreKey) != "":
		cfg.StoreKey = os.Getenv(EnvStoreKey)
	}
	if f.storeOldKey != "" {
		k, err := readKeyFile("--store-old-key-file", f.storeOldKey)
		if err != nil {
			return err
		}
		cfg.StoreOldKey = k
	}
	cfg.StoreCipher = f.storeCipher
	return nil
}

// clientFlags are the global flags with which CLI commands authenticate
// and trust the server.
type clientFlags struct {
	creds, ca, clientCert, clientKey string
}

func (f *clientFlags) register(root *cobra.Command) {
	pf := root.PersistentFlags()
	pf.StringVar(&f.creds, "creds", "", "credentials file to authenticate with (default: $HERALD_CREDS, else the local herald's admin credentials when it runs with --auth)")
	pf.StringVar(&f.ca, "ca", "", "PEM file of CA certificates to trust for Herald's TLS listeners (default: $HERALD_CA, else the local herald's dev CA)")
	pf.StringVar(&f.clientCert, "client-cert", "", "client certificate for mutual TLS (with --client-key)")
	pf.StringVar(&f.clientKey, "client-key", "", "the key of --client-cert")
}

// local returns the record of the local herald, if one runs.
func local() (localstate.State, bool) {
	s, err := localstate.Read()
	return s, err == nil
}

// usesLocal reports whether url names the local herald: only then are its
// admin credentials and CA used without being asked for.
func usesLocal(url string) bool {
	s, ok := local()
	if !ok || url == "" {
		return false
	}
	return url == s.AdminURL || url == s.RegistryURL || url == s.NATSURL || url == s.BrokerURL
}

// credsFor returns the credentials to use with the server at url, or nil.
func (a *app) credsFor(url string) (*credentials.Creds, error) {
	path := a.client.creds
	if path == "" && usesLocal(url) {
		s, _ := local()
		path = s.CredsFile
	}
	if path == "" {
		return nil, nil
	}
	c, err := credentials.Load(path)
	if err != nil {
		return nil, fmt.Errorf("--creds: %w", err)
	}
	return c, nil
}

// tlsFor returns the TLS configuration for the server at url, or nil to
// use the defaults.
func (a *app) tlsFor(url string) (*tls.Config, error) {
	ca := a.client.ca
	if ca == "" && usesLocal(url) {
		s, _ := local()
		ca = s.CAFile
	}
	if ca == "" && a.client.clientCert == "" {
		return nil, nil
	}
	return credentials.TLSConfig(ca, a.client.clientCert, a.client.clientKey)
}

// httpClient returns a client for the HTTP server at base with the
// command's timeout, TLS and credentials.
func (a *app) httpClient(base string, timeout time.Duration) (*http.Client, error) {
	tc, err := a.tlsFor(base)
	if err != nil {
		return nil, err
	}
	var rt http.RoundTripper = http.DefaultTransport
	if tc != nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.TLSClientConfig = tc
		rt = t
	}
	c, err := a.credsFor(base)
	if err != nil {
		return nil, err
	}
	if c != nil {
		rt = c.Transport(rt)
	}
	return &http.Client{Timeout: timeout, Transport: rt}, nil
}

// natsOptions returns the options to connect to the NATS server at url.
func (a *app) natsOptions(url string) ([]nats.Option, error) {
	var opts []nats.Option
	c, err := a.credsFor(url)
	if err != nil {
		return nil, err
	}
	if c != nil {
		opts = append(opts, c.NATSOptions()...)
	}
	tc, err := a.tlsFor(url)
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}

func newAuthCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth",
		Short: "Mint, list, rotate and revoke credentials (server started with --auth)",
		Long: `Manage the identities of a Herald started with --auth. A service identity may
publish to its --publish topics and consume its --subscribe topics (and
dead-letter their failures), nothing else: the broker refuses the rest. An
operator identity has a role on the admin API and registry: reader, writer
(registers schemas under --subjects prefixes) or admin.

Each command that mints credentials writes a credentials file (mode 0600): a
NATS credentials file plus the identity's API token. Give it to the service
as herald.Config.Credentials or $HERALD_CREDS, to the CLI as --creds, to a
Confluent client as basic.auth.user.info NAME:TOKEN.`,
	}
	cmd.AddCommand(newAuthAddServiceCmd(a), newAuthAddUserCmd(a), newAuthListCmd(a), newAuthRotateCmd(a), newAuthRevokeCmd(a))
	return cmd
}

// authCall sends a request to the credentials API.
func (a *app) authCall(cmd *cobra.Command, method, path string, body, out any) error {
	base := strings.TrimRight(a.adminBaseURL(), "/")
	hc, err := a.httpClient(base, a.timeout)
	if err != nil {
		return err
	}
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(cmd.Context(), method, base+path, rd)
	if err != nil {
		return err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("cannot reach the admin API at %s: %w", base, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		var eb struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
			eb.Error = fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(b))
		}
		return fmt.Errorf("%s %s: %s", method, path, eb.Error)
	}
	return json.Unmarshal(b, out)
}

// writeCreds writes the credentials of resp to out and says so.
func (a *app) writeCreds(cmd *cobra.Command, resp auth.CredentialsResponse, out string) error {
	if out == "" {
		out = resp.Identity.Name + ".creds"
	}
	if out == "-" {
		_, err := io.WriteString(cmd.OutOrStdout(), resp.Credentials)
		return err
	}
	if err := os.WriteFile(out, []byte(resp.Credentials), 0o600); err != nil {
		return fmt.Errorf("write %s: %w", out, err)
	}
	if a.output == "json" {
		return a.printJSON(cmd.OutOrStdout(), map[string]any{"identity": resp.Identity, "file": out})
	}
	fmt.Fprintf(cmd.OutOrStdout(), "wrote the credentials of %s (%s) to %s\n", resp.Identity.Name, resp.Identity.Role, out)
	return nil
}

func newAuthAddServiceCmd(a *app) *cobra.Command {
	var publish, subscribe, subjects, out string
	cmd := &cobra.Command{
		Use:   "add-service NAME --publish TOPICS --subscribe TOPICS",
		Short: "Mint the credentials of a service",
		Example: `  herald auth add-service orders --publish 'shop.orders.>' --subscribe 'shop.payments.>,shop.inventory.>'
  HERALD_CREDS=orders.creds ./orders`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec := auth.ServiceSpec{Name: args[0]}
			var err error
			if spec.Publish, err = auth.ParseTopics(publish); err != nil {
				return fmt.Errorf("--publish: %w", err)
			}
			if spec.Subscribe, err = auth.ParseTopics(subscribe); err != nil {
				return fmt.Errorf("--subscribe: %w", err)
			}
			if len(spec.Publish) == 0 && len(spec.Subscribe) == 0 {
				return errors.New("give --publish and/or --subscribe: the topics the service may use")
			}
			if cmd.Flags().Changed("subjects") {
				spec.Subjects = splitList(subjects)
			}
			var resp auth.CredentialsResponse
			if err := a.authCall(cmd, http.MethodPost, "/api/v1/auth/services", spec, &resp); err != nil {
				return err
			}
			return a.writeCreds(cmd, resp, out)
		},
	}
	cmd.Flags().StringVar(&publish, "publish", "", "topics it may publish to, comma-separated ('shop.orders.>' means topic shop.orders)")
	cmd.Flags().StringVar(&subscribe, "subscribe", "", "topics it may consume, comma-separated")
	cmd.Flags().StringVar(&subjects, "subjects", "", "registry subject prefixes it may register schemas under (default: its publish topics)")
	cmd.Flags().StringVar(&out, "out", "", "credentials file to write (default NAME.creds; - for standard output)")
	return cmd
}

func splitList(s string) []string {
	out := []string{}
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func newAuthAddUserCmd(a *app) *cobra.Command {
	var role, subjects, out string
	cmd := &cobra.Command{
		Use:   "add-user NAME --role reader|writer|admin",
		Short: "Mint the credentials of an operator",
		Example: `  herald auth add-user rita --role reader
  herald auth add-user wes --role writer --subjects shop.orders,shop.payments`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			r, err := auth.ParseRole(role)
			if err != nil || r == auth.RoleService {
				return fmt.Errorf("--role %q: want reader, writer or admin", role)
			}
			spec := auth.UserSpec{Name: args[0], Role: r}
			if subjects != "" {
				spec.Subjects = splitList(subjects)
			}
			var resp auth.CredentialsResponse
			if err := a.authCall(cmd, http.MethodPost, "/api/v1/auth/users", spec, &resp); err != nil {
				return err
			}
			return a.writeCreds(cmd, resp, out)
		},
	}
	cmd.Flags().StringVar(&role, "role", "reader", "reader, writer or admin")
	cmd.Flags().StringVar(&subjects, "subjects", "", "a writer's registry subject prefixes, comma-separated (default: any subject)")
	cmd.Flags().StringVar(&out, "out", "", "credentials file to write (default NAME.creds; - for standard output)")
	return cmd
}

func newAuthListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the identities",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var resp struct {
				Identities []auth.Entry `json:"identities"`
			}
			if err := a.authCall(cmd, http.MethodGet, "/api/v1/auth/identities", nil, &resp); err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(cmd.OutOrStdout(), resp.Identities)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tKIND\tROLE\tPUBLISH\tSUBSCRIBE\tUPDATED\tBY")
			for _, e := range resp.Identities {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Name, e.Kind, e.Role, strings.Join(e.Publish, ","),
					strings.Join(e.Subscribe, ","), e.Updated.Format(time.RFC3339), e.By)
			}
			return tw.Flush()
		},
	}
}

func newAuthRotateCmd(a *app) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "rotate NAME",
		Short: "Mint new credentials for NAME and revoke its current ones",
		Long: `Mint new credentials for NAME and revoke the current ones at once: connections
made with them are closed within a few seconds. A service that reads its
credentials file on reconnect (the SDK does) picks up the new file without a
restart once it is in place.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp auth.CredentialsResponse
			if err := a.authCall(cmd, http.MethodPost, "/api/v1/auth/identities/"+url.PathEscape(args[0])+"/rotate", nil, &resp); err != nil {
				return err
			}
			return a.writeCreds(cmd, resp, out)
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "credentials file to write (default NAME.creds; - for standard output)")
	return cmd
}

func newAuthRevokeCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "revoke NAME",
		Short: "Revoke NAME's credentials: its connections close within seconds, its token stops working",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var resp map[string]string
			if err := a.authCall(cmd, http.MethodDelete, "/api/v1/auth/identities/"+url.PathEscape(args[0]), nil, &resp); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revoked %s\n", args[0])
			return nil
		},
	}
}
