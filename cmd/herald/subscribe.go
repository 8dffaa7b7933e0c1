package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/server/gateway"
)

func (a *app) gatewayClient() (*gateway.APIClient, error) {
	if a.timeout <= 0 {
		return nil, fmt.Errorf("--timeout %v: must be positive", a.timeout)
	}
	hc, err := a.httpClient(a.adminBaseURL(), a.timeout)
	if err != nil {
		return nil, err
	}
	c, err := gateway.NewAPIClient(a.adminBaseURL(), hc)
	if err != nil {
		return nil, fmt.Errorf("--admin-url: %w", err)
	}
	return c, nil
}

func newSubscribeCmd(a *app) *cobra.Command {
	var (
		s                                      gateway.Subscription
		pull                                   bool
		timeout, retryInitial, retryMax, lease time.Duration
	)
	cmd := &cobra.Command{
		Use:   "subscribe --group G --topic T (--push URL [--secret S] | --pull)",
		Short: "Deliver a topic to a webhook (push) or over HTTP pulls",
		Long: `Create a durable HTTP subscription of consumer group G to topic T.

With --push, Herald delivers each event to URL as a CloudEvents binary-mode
POST signed with the Standard Webhooks headers (webhook-id, webhook-timestamp,
webhook-signature: HMAC-SHA256 under the secret). Events of one key arrive one
at a time, in order; 5xx, 408, 429 and timeouts are retried with backoff, other
4xx answers and exhausted retries go to the dead-letter queue (T.dlq). Without
--secret a secret is generated and printed once.

With --pull, the service fetches events itself:
GET /v1/groups/G/events?max=N&wait=S, then POST /v1/groups/G/ack (or nack)
with the leases; an event not acked within its lease is delivered again.

Subscriptions survive restarts; see herald subscribe list.`,
		Example: `  herald subscribe --group billing-hook --topic orders --push https://billing.internal/hooks/herald
  herald subscribe --group reports --topic orders --pull --lease 1m`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if s.Group == "" || s.Topic == "" {
				return fmt.Errorf("--group and --topic are required")
			}
			if (s.Push == "") == !pull {
				return fmt.Errorf("give either --push URL or --pull")
			}
			s.Timeout, s.RetryInitial, s.RetryMax, s.Lease = gateway.Duration(timeout), gateway.Duration(retryInitial), gateway.Duration(retryMax), gateway.Duration(lease)
			c, err := a.gatewayClient()
			if err != nil {
				return err
			}
			st, err := c.Create(cmd.Context(), s)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.output == "json" {
				return a.printJSON(out, st)
			}
			if st.Push != "" {
				fmt.Fprintf(out, "group %s pushes topic %s to %s (%s)\n", st.Group, st.Topic, st.Push, st.State)
				fmt.Fprintf(out, "secret: %s\n", st.Secret)
				if s.Secret == "" {
					fmt.Fprintln(out, "keep the secret: it is not shown again")
				}
				return nil
			}
			fmt.Fprintf(out, "group %s pulls topic %s (%s): GET %s/v1/groups/%s/events\n", st.Group, st.Topic, st.State, a.adminBaseURL(), st.Group)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&s.Group, "group", "", "consumer group (names the subscription)")
	f.StringVar(&s.Topic, "topic", "", "topic to consume")
	f.StringVar(&s.Push, "push", "", "webhook URL events are POSTed to")
	f.StringVar(&s.Secret, "secret", "", "webhook signing secret (whsec_ and base64, or 16+ characters; default: generated)")
	f.BoolVar(&pull, "pull", false, "serve the group over HTTP pulls instead of pushing")
	f.StringVar(&s.Start, "start", "", "where a new group begins: new (default), first, seq:N or time:RFC3339")
	f.IntVar(&s.Concurrency, "concurrency", 0, "push: deliveries in flight (default 16; one per key at a time)")
	f.IntVar(&s.MaxAttempts, "max-attempts", 0, "tries of an event before it goes to the dead-letter queue (default 10)")
	f.DurationVar(&timeout, "request-timeout", 0, "push: bound of one webhook request (default 10s)")
	f.DurationVar(&retryInitial, "retry-initial", 0, "push: first retry delay, doubling (default 1s)")
	f.DurationVar(&retryMax, "retry-max", 0, "push: longest retry delay (default 1m)")
	f.DurationVar(&lease, "lease", 0, "pull: how long a pulled event is leased before it is delivered again (default 30s)")
	cmd.AddCommand(newSubscribeListCmd(a), newSubscribeDeleteCmd(a))
	return cmd
}

func newSubscribeListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the HTTP subscriptions",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.gatewayClient()
			if err != nil {
				return err
			}
			subs, err := c.List(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.output == "json" {
				return a.printJSON(out, subs)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "GROUP\tTOPIC\tMODE\tTARGET\tSTATE\tCREATED")
			for _, s := range subs {
				mode, target := "push", s.Push
				if s.Push == "" {
					mode, target = "pull", "/v1/groups/"+s.Group+"/events"
				}
				state := s.State
				if s.Error != "" {
					state += ": " + s.Error
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Group, s.Topic, mode, target, state, s.Created.Format(time.RFC3339))
			}
			return tw.Flush()
		},
	}
}

func newSubscribeDeleteCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "delete GROUP",
		Short: "Stop an HTTP subscription (the group keeps its position in the topic)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.gatewayClient()
			if err != nil {
				return err
			}
			if err := c.Delete(cmd.Context(), args[0]); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "subscription %s deleted\n", args[0])
			return nil
		},
	}
}
