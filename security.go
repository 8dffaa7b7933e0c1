package herald

import (
	"errors"
	"fmt"
	"os"

	"github.com/nats-io/nats.go"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/credentials"
)

// ErrPermission is returned (wrapped) when the client's credentials do not
// allow an operation: the broker would refuse it, so the client refuses
// it first with a clear message.
var ErrPermission = errors.New("permission denied")

// security loads the credentials and TLS settings and returns the NATS
// options they need (none when neither is set).
func (c *Client) security() ([]nats.Option, error) {
	var opts []nats.Option
	path := c.cfg.Credentials
	if path == "" {
		path = os.Getenv(credentials.EnvCreds)
	}
	if path != "" {
		cr, err := credentials.Load(path)
		if err != nil {
			return nil, fmt.Errorf("herald: Config.Credentials: %w", err)
		}
		c.creds = cr
		opts = append(opts, cr.NATSOptions()...)
	}
	tc := c.cfg.TLS
	if tc == nil {
		if ca := os.Getenv(credentials.EnvCA); ca != "" {
			var err error
			if tc, err = credentials.TLSConfig(ca, "", ""); err != nil {
				return nil, fmt.Errorf("herald: $%s: %w", credentials.EnvCA, err)
			}
		}
	}
	if tc != nil {
		opts = append(opts, nats.Secure(tc))
	}
	return opts, nil
}

// mayPublish checks topics against the credentials' publish permissions.
func (c *Client) mayPublish(topics []string) error {
	if !c.creds.Restricted() {
		return nil
	}
	for _, t := range topics {
		if !c.creds.MayPublish(natsjs.StreamName(t) + ".0.x") {
			return fmt.Errorf("herald: publish to topic %q: %w: the credentials of %q (%s) do not allow it; ask an operator for `herald auth add-service %s --publish ...` to include it",
				t, ErrPermission, c.creds.Name(), c.creds.Path(), c.creds.Name())
		}
	}
	return nil
}

// Credentials returns the credentials the client connected with, or nil.
func (c *Client) Credentials() *credentials.Creds { return c.creds }
