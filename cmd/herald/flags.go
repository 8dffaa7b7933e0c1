package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/heraldhq/herald/internal/localstate"
)

// applyEnv gives every flag of cmd that the user did not set the value of
// its HERALD_* environment variable (--data-dir reads HERALD_DATA_DIR), so
// the precedence is flags > environment > defaults.
func applyEnv(cmd *cobra.Command) error {
	var err error
	apply := func(f *pflag.Flag) {
		if err != nil || f.Changed {
			return
		}
		key := "HERALD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(key); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", key, v, e)
			}
		}
	}
	cmd.Flags().VisitAll(apply)
	cmd.InheritedFlags().VisitAll(apply)
	return err
}

// brokerURL resolves the broker URL: --url, $HERALD_URL (via applyEnv), the
// local herald recorded by serve/dev, then nats://127.0.0.1:4222.
func (a *app) brokerURL() string {
	if a.url != "" {
		return a.url
	}
	if s, err := localstate.Read(); err == nil {
		if s.BrokerURL != "" {
			return s.BrokerURL
		}
		if s.NATSURL != "" {
			return s.NATSURL
		}
	}
	return "nats://127.0.0.1:4222"
}

// checkOutput validates -o.
func (a *app) checkOutput() error {
	switch a.output {
	case "text", "json":
		return nil
	}
	return fmt.Errorf("--output %q: want text or json", a.output)
}
