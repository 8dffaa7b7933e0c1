package main

import (
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/saga"
)

func newSagaCmd(a *app) *cobra.Command {
	var bucket string
	cmd := &cobra.Command{
		Use:   "saga",
		Short: "Inspect saga instances",
	}
	cmd.PersistentFlags().StringVar(&bucket, "bucket", saga.DefaultBucket, "JetStream KV bucket the saga engine keeps its instances in")

	var state string
	list := &cobra.Command{
		Use:   "list [--state S]",
		Short: "List saga instances, oldest first",
		Long:  "List saga instances, oldest first, with the step each is at.\nStates: running, compensating, completed, compensated, failed.",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var st saga.State
			if state != "" {
				var err error
				if st, err = saga.ParseState(state); err != nil {
					return err
				}
			}
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			ins, err := c.Sagas(cmd.Context(), bucket, st)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.output == "json" {
				return a.printJSON(out, ins)
			}
			if len(ins) == 0 {
				fmt.Fprintln(out, "no saga instances")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tSAGA\tSTATE\tSTEP\tSTARTED\tUPDATED\tERROR\t")
			for _, in := range ins {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", in.ID, in.Saga, in.State, in.Step,
					in.Created.Format(time.RFC3339), in.Updated.Format(time.RFC3339), in.Error)
			}
			return tw.Flush()
		},
	}
	list.Flags().StringVar(&state, "state", "", "only instances in this state")

	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a saga instance and the history of its steps",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			d, err := c.Saga(cmd.Context(), bucket, args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.output == "json" {
				return a.printJSON(out, d)
			}
			fmt.Fprintf(out, "saga %s %s: %s\n", d.Saga, d.ID, d.State)
			if d.Error != "" {
				fmt.Fprintf(out, "error: %s\n", d.Error)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "STEP\tPHASE\tATTEMPT\tCOMMAND\tSENT\tTOOK\tOUTCOME\tREPLY\t")
			for _, e := range d.History {
				took := "waiting"
				if !e.Ended.IsZero() {
					took = time.Duration(e.DurationSeconds * float64(time.Second)).Round(time.Millisecond).String()
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t\n", e.Step, e.Phase, e.Attempt, e.Type,
					e.Sent.Format(time.RFC3339Nano), took, e.Outcome, e.Reply)
			}
			return tw.Flush()
		},
	}
	cmd.AddCommand(list, show)
	return cmd
}
