package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"
)

func newLagCmd(a *app) *cobra.Command {
	var topic, group string
	cmd := &cobra.Command{
		Use:   "lag [--topic T] [--group G]",
		Short: "Show how far each consumer group is behind",
		Long: `Show every consumer group of every topic (or of --topic, or only --group):
  PENDING   events stored and not yet delivered to the group
  IN FLIGHT events delivered and not yet acknowledged
  LAG       age of the oldest event not yet delivered (0 when none is pending)
  UNACKED   age of the oldest event not yet acknowledged, in flight included;
            it grows while a handler is stuck on an event
  DLQ       dead letters of the topic (of every group)
The partition consumers of a key-ordered group are summed into one row.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			lags, err := c.Lag(cmd.Context(), topic, group)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.output == "json" {
				return a.printJSON(out, lags)
			}
			if len(lags) == 0 {
				fmt.Fprintln(out, "no consumer groups")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TOPIC\tGROUP\tPENDING\tIN FLIGHT\tLAG\tUNACKED\tDLQ\t")
			for _, g := range lags {
				name := g.Group
				if g.Paused {
					name += " (paused)"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%d\t\n", g.Topic, name, g.Pending, g.InFlight,
					fmtSeconds(g.LagSeconds), fmtSeconds(g.UnackedSeconds), g.DLQDepth)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&topic, "topic", "", "only groups of this topic")
	cmd.Flags().StringVar(&group, "group", "", "only this group")
	return cmd
}

func fmtSeconds(s float64) string {
	switch {
	case s == 0:
		return "0s"
	case s < 10:
		return fmt.Sprintf("%.2fs", s)
	case s < 3600:
		return fmt.Sprintf("%.0fs", s)
	}
	return fmt.Sprintf("%.1fh", s/3600)
}
