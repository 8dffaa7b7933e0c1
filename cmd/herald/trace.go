package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/server/audit"
)

func newTraceCmd(a *app) *cobra.Command {
	var payload bool
	cmd := &cobra.Command{
		Use:   "trace CORRELATION-ID",
		Short: "Print the causation tree of a correlation id from the audit log",
		Long: `Print every event of a correlation id as a tree: each event under the event
that caused it (its causation id), in the order they happened. An event whose
cause is not in the audit log starts a tree of its own. Copies of an event in
a dead-letter topic, and its redriven copies, fold into the event and are
marked. -o json prints the tree as JSON.`,
		Example: `  herald trace 0197a9a2-7c1e-7d3e-9a53-6f3c2b1d0e4f
  herald trace order-1042-checkout --payload`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			tr, err := c.Trace(cmd.Context(), args[0], payload)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.output == "json" {
				return a.printJSON(out, tr)
			}
			fmt.Fprintf(out, "correlation %s: %d events\n", tr.CorrelationID, tr.Events)
			for i, n := range tr.Roots {
				printNode(out, n, "", i == len(tr.Roots)-1, payload)
			}
			if tr.Truncated {
				fmt.Fprintf(out, "(only the first %d events are shown)\n", tr.Events)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&payload, "payload", false, "print each event's payload")
	return cmd
}

// printNode prints n with tree branches, then its children.
func printNode(w io.Writer, n *audit.Node, indent string, last, payload bool) {
	branch, next := "├─ ", "│  "
	if last {
		branch, next = "└─ ", "   "
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s%s%s  %s  %s#%d  %s", indent, branch, n.Type, n.ID, n.Topic, n.Seq, n.Time.UTC().Format("15:04:05.000"))
	if n.Subject != "" {
		b.WriteString("  subject=" + n.Subject)
	}
	if n.Source != "" {
		b.WriteString("  source=" + n.Source)
	}
	if n.DeadLettered {
		b.WriteString("  [dead-lettered]")
	}
	if n.Redriven > 0 {
		fmt.Fprintf(&b, "  [redriven %d]", n.Redriven)
	}
	if payload && n.Payload != nil {
		b.WriteString("  " + payloadText(n.Payload))
	}
	fmt.Fprintln(w, b.String())
	for i, c := range n.Children {
		printNode(w, c, indent+next, i == len(n.Children)-1, payload)
	}
}
