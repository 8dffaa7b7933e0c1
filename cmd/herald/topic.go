package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/server/admin"
)

func newTopicCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "topic",
		Short: "List topics and set their retention",
	}
	cmd.AddCommand(newTopicListCmd(a), newTopicRetentionCmd(a))
	return cmd
}

func newTopicListCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the topics with their size and retention",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			ts, err := c.Topics(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.output == "json" {
				return a.printJSON(out, ts)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TOPIC\tPARTITIONS\tMESSAGES\tSIZE\tDLQ\tMAX AGE\tMAX SIZE\tMAX MESSAGES")
			for _, t := range ts {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%d\t%s\t%s\t%s\n", t.Topic, t.Partitions, t.Messages, humanize.Bytes(t.Bytes), t.DLQDepth,
					t.Retention.MaxAge, limitText(t.Retention.MaxBytes, true), limitText(t.Retention.MaxMsgs, false))
			}
			return tw.Flush()
		},
	}
}

func limitText(n int64, size bool) string {
	switch {
	case n < 0:
		return "unlimited"
	case size:
		return humanize.Bytes(uint64(n))
	}
	return fmt.Sprint(n)
}

func newTopicRetentionCmd(a *app) *cobra.Command {
	var r admin.RetentionRequest
	cmd := &cobra.Command{
		Use:   "retention TOPIC [--max-age D] [--max-bytes N] [--max-msgs N]",
		Short: "Set how long and how much a topic keeps (creates the topic if missing)",
		Long: `Set a topic's retention limits; the oldest events go when a limit is reached.
Limits not given are kept. "unlimited" lifts a limit. Lowering a limit drops the
events beyond it at once. The same can be set at start with
herald serve --topic-retention 'TOPIC=max-age:72h,max-bytes:1GB,max-msgs:1000000'.`,
		Example: `  herald topic retention orders --max-age 72h
  herald topic retention orders --max-bytes 10GB --max-msgs unlimited`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := r.Parse(); err != nil {
				return err
			}
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			t, err := c.SetRetention(cmd.Context(), args[0], r)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(cmd.OutOrStdout(), t)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: max age %s, max size %s, max messages %s (holds %d messages, %s)\n", t.Topic,
				t.Retention.MaxAge, limitText(t.Retention.MaxBytes, true), limitText(t.Retention.MaxMsgs, false), t.Messages, humanize.Bytes(t.Bytes))
			return nil
		},
	}
	cmd.Flags().StringVar(&r.MaxAge, "max-age", "", "drop events older than this: a duration (72h, 7d) or unlimited")
	cmd.Flags().StringVar(&r.MaxBytes, "max-bytes", "", "keep at most this much: 1GB, 512MiB, or unlimited")
	cmd.Flags().StringVar(&r.MaxMsgs, "max-msgs", "", "keep at most this many events, or unlimited")
	return cmd
}
