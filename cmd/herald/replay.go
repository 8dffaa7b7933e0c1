package main

import (
	"fmt"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/server/admin"
)

func newReplayCmd(a *app) *cobra.Command {
	var (
		group, to, topic, from, into string
		keyOrder                     bool
	)
	cmd := &cobra.Command{
		Use:   "replay --group G --to POS [--topic T] | --topic T --from POS --into-group NEW",
		Short: "Rewind a consumer group, or replay a topic into a new group",
		Long: `Rewind a group: --group G --to POS moves G on every topic it consumes (or on
--topic only) to POS; its running members receive the events from there. The
group is paused while it moves. A group created to start at new messages (the
router's default) can be moved below its start only while its members are
stopped: the command says so; stop them, run it again, start them.

Replay into a new group: --topic T --from POS --into-group NEW creates the group
NEW positioned at POS without touching any other group; start a service with a
router for NEW to process the events. --key-order=false creates it as a plain
work queue; it must match how the service's router subscribes (key-ordered by
default).

POS is first, new, seq:N (a topic sequence) or time:RFC3339 (the first event
stored at or after that time).`,
		Example: `  herald replay --group billing --to time:2026-03-01T09:00:00Z
  herald replay --group billing --topic orders --to seq:1200
  herald replay --topic orders --from first --into-group billing-rebuild`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := admin.ReplayRequest{Group: group, To: to, Topic: topic, From: from, IntoGroup: into}
			if into != "" {
				req.KeyOrder = &keyOrder
			} else if cmd.Flags().Changed("key-order") {
				return fmt.Errorf("--key-order goes with --into-group")
			}
			switch {
			case into == "" && group == "":
				return fmt.Errorf("give --group G --to POS to rewind a group, or --topic T --from POS --into-group NEW to replay into a new group")
			case into != "" && (group != "" || to != ""):
				return fmt.Errorf("--into-group goes with --topic and --from, not with --group and --to")
			case into != "" && (topic == "" || from == ""):
				return fmt.Errorf("--into-group needs --topic and --from")
			case group != "" && to == "":
				return fmt.Errorf("--group needs --to (first, new, seq:N or time:RFC3339)")
			case group != "" && from != "":
				return fmt.Errorf("--from goes with --into-group; to rewind --group use --to")
			}
			for flag, v := range map[string]string{"--to": to, "--from": from} {
				if v != "" {
					if _, err := broker.ParseStart(v); err != nil {
						return fmt.Errorf("%s: %w", flag, err)
					}
				}
			}
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			res, err := c.Replay(cmd.Context(), req)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.output == "json" {
				return a.printJSON(out, res)
			}
			if into != "" {
				fmt.Fprintf(out, "created group %s on %s at sequence %d (%d consumers); start its service to process the replay\n",
					res.Group, res.Topics[0].Topic, res.Topics[0].Seq, res.Topics[0].Consumers)
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "TOPIC\tGROUP\tNEXT SEQUENCE\tCONSUMERS\tHOW")
			for _, t := range res.Topics {
				how := "reset while running"
				if t.Recreated {
					how = "consumers recreated"
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", t.Topic, res.Group, t.Seq, t.Consumers, how)
			}
			return tw.Flush()
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&group, "group", "", "the group to rewind")
	fl.StringVar(&to, "to", "", "where to move --group: first, new, seq:N or time:RFC3339")
	fl.StringVar(&topic, "topic", "", "the topic to replay (with --into-group), or the only topic to rewind --group on")
	fl.StringVar(&from, "from", "", "where the new group starts: first, seq:N or time:RFC3339")
	fl.StringVar(&into, "into-group", "", "create this new group and replay --topic into it")
	fl.BoolVar(&keyOrder, "key-order", true, "with --into-group: create the group key-ordered (one consumer per partition), like the router's default")
	return cmd
}
