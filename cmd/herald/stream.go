package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/server/admin"
)

func newStreamCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "stream",
		Short: "Inspect event-sourced streams of the server's event store",
	}
	var (
		from  uint64
		limit int
		full  bool
	)
	show := &cobra.Command{
		Use:   "show STREAM [--from VERSION] [--limit N]",
		Short: "Show a stream's events: version, position, time, type, id and data",
		Long: "Show the events of an event-sourced stream of the server's event store (eventstore/natsjs on\n" +
			"the server's JetStream), oldest first, as far as the stream's metadata lets them be seen.\n" +
			"Text output shortens payloads to one line; -o json has them whole.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if limit < 1 || limit > admin.MaxStreamLimit {
				return fmt.Errorf("--limit %d: want 1 to %d", limit, admin.MaxStreamLimit)
			}
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			page, err := c.StreamEvents(cmd.Context(), args[0], from, limit)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.output == "json" {
				return a.printJSON(out, page)
			}
			fmt.Fprintf(out, "stream %s: version %d\n", page.Stream, page.Version)
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "VERSION\tPOSITION\tTIME\tTYPE\tID\tDATA\t")
			for _, e := range page.Events {
				fmt.Fprintf(tw, "%d\t%d\t%s\t%s\t%s\t%s\t\n", e.Version, e.Position, e.Time.UTC().Format(time.RFC3339Nano), e.Type, e.ID, payloadLine(e, full))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if page.Next > 0 {
				fmt.Fprintf(out, "more: herald stream show %s --from %d\n", page.Stream, page.Next)
			}
			return nil
		},
	}
	show.Flags().Uint64Var(&from, "from", 1, "first version to show")
	show.Flags().IntVar(&limit, "limit", admin.DefaultStreamLimit, fmt.Sprintf("most events to show (at most %d)", admin.MaxStreamLimit))
	show.Flags().BoolVar(&full, "full", false, "show payloads whole, not cut at 80 characters")
	cmd.AddCommand(show)
	return cmd
}

// payloadLine renders an event's payload on one line: compact JSON, or its
// size when it is not JSON; cut at 80 characters unless full.
func payloadLine(e admin.StreamEvent, full bool) string {
	var s string
	switch {
	case len(e.Data) > 0:
		var b bytes.Buffer
		if json.Compact(&b, e.Data) != nil {
			b.Reset()
			b.Write(e.Data)
		}
		s = b.String()
	case len(e.DataBase64) > 0:
		s = fmt.Sprintf("(%d bytes, %s)", len(e.DataBase64), e.ContentType)
	default:
		s = "(empty)"
	}
	if r := []rune(s); !full && len(r) > 80 {
		s = string(r[:79]) + "…"
	}
	return s
}
