package main

import (
	"os"
	"time"

	"github.com/spf13/cobra"
)

// app holds what every subcommand shares: the global flags.
type app struct {
	// url is the broker URL clients connect to (nats://, kafka://, amqp://).
	url string
	// registryURL is the schema registry's base URL.
	registryURL string
	// adminURL is the admin API's base URL.
	adminURL string
	// output is the output format: "text" or "json".
	output string
	// config is the path of a JSON settings file.
	config string
	// timeout bounds the wait for an answer of the admin API.
	timeout time.Duration
	// client holds the credentials and TLS flags.
	client clientFlags
}

func newRootCmd() *cobra.Command {
	a := &app{}
	root := &cobra.Command{
		Use:           "herald",
		Short:         "Herald: the event backbone for Go microservices",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.url, "url", "", "broker URL (default: $HERALD_URL, else the local herald started by serve/dev, else nats://127.0.0.1:4222)")
	pf.StringVar(&a.registryURL, "registry-url", "", "schema registry URL (default: $HERALD_REGISTRY_URL, else the local herald's)")
	pf.StringVar(&a.adminURL, "admin-url", "", "admin API URL (default: $HERALD_ADMIN_URL, else the local herald's)")
	pf.StringVarP(&a.output, "output", "o", "text", "output format: text or json")
	a.client.register(root)
	pf.DurationVar(&a.timeout, "timeout", 30*time.Second, "how long a command waits for the admin API to answer (raise it for a redrive of a very large dead-letter queue)")
	pf.StringVar(&a.config, "config", "", `JSON file of settings: flag names to values, e.g. {"data-dir": "/var/lib/herald", "topic-retention": ["orders=max-age:72h"]} (also $HERALD_CONFIG; flags and HERALD_* variables take precedence)`)
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if a.config == "" {
			a.config = os.Getenv("HERALD_CONFIG")
		}
		if err := applySettings(cmd, a.config); err != nil {
			return err
		}
		return a.checkOutput()
	}
	root.AddCommand(
		newVersionCmd(a),
		newServeCmd(a),
		newDevCmd(a),
		newPubCmd(a),
		newSubCmd(a),
		newBenchCmd(a),
		newSchemaCmd(a),
		newDLQCmd(a),
		newReplayCmd(a),
		newLagCmd(a),
		newAuditCmd(a),
		newTraceCmd(a),
		newTopicCmd(a),
		newAuthCmd(a),
		newOutboxCmd(a),
		newSagaCmd(a),
		newStreamCmd(a),
		newProjectionCmd(a),
		newSubscribeCmd(a),
		newAsyncAPICmd(a),
	)
	return root
}
