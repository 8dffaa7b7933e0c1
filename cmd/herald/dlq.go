package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/internal/localstate"
	"github.com/heraldhq/herald/server/admin"
)

// adminBaseURL resolves the admin API URL: --admin-url, $HERALD_ADMIN_URL
// (via applyEnv), the local herald recorded by serve/dev, then
// http://127.0.0.1:8080.
func (a *app) adminBaseURL() string {
	if a.adminURL != "" {
		return a.adminURL
	}
	if s, err := localstate.Read(); err == nil && s.AdminURL != "" {
		return s.AdminURL
	}
	return "http://127.0.0.1:8080"
}

func (a *app) adminClient() (*admin.Client, error) {
	if a.timeout <= 0 {
		return nil, fmt.Errorf("--timeout %v: must be positive", a.timeout)
	}
	hc, err := a.httpClient(a.adminBaseURL(), a.timeout)
	if err != nil {
		return nil, err
	}
	c, err := admin.NewClient(a.adminBaseURL(), hc)
	if err != nil {
		return nil, fmt.Errorf("--admin-url: %w", err)
	}
	return c, nil
}

func newDLQCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "dlq",
		Short: "Inspect, redrive and purge dead letters",
		Long: `Dead letters are events a consumer group gave up on (retries exhausted, a
permanent error, a message it could not decode). Each is kept in the topic's
dead-letter topic (<topic>.dlq) with the failure's context: error, attempts,
first and last failure, group, handler, original topic and position.

A dead letter's id is <dead-letter topic>:<sequence>, for example orders.dlq:42
(orders:42 is accepted too). Every subcommand prints JSON with -o json.`,
	}
	cmd.AddCommand(newDLQListCmd(a), newDLQShowCmd(a), newDLQRedriveCmd(a), newDLQPurgeCmd(a))
	return cmd
}

func newDLQListCmd(a *app) *cobra.Command {
	var (
		topic string
		limit int
		after uint64
	)
	cmd := &cobra.Command{
		Use:   "list [--topic T]",
		Short: "List the dead-letter topics, or the dead letters of one topic",
		Example: `  herald dlq list
  herald dlq list --topic orders
  herald dlq list --topic orders --limit 20 --after 140 -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if topic == "" {
				ds, err := c.DLQs(cmd.Context())
				if err != nil {
					return err
				}
				if a.output == "json" {
					return a.printJSON(out, ds)
				}
				if len(ds) == 0 {
					fmt.Fprintln(out, "no dead-letter topics")
					return nil
				}
				tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "TOPIC\tDEAD-LETTER TOPIC\tDEPTH\tOLDEST\tNEWEST")
				for _, d := range ds {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", d.Topic, d.DLQTopic, d.Depth, fmtTimePtr(d.Oldest), fmtTimePtr(d.Newest))
				}
				return tw.Flush()
			}
			page, err := c.DLQEntries(cmd.Context(), topic, after, limit)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(out, page)
			}
			if len(page.Entries) == 0 {
				fmt.Fprintf(out, "no dead letters in %s\n", admin.DeadLetterTopicOf(topic))
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tLAST FAILURE\tTYPE\tGROUP\tATTEMPTS\tERROR")
			for _, e := range page.Entries {
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", e.ID, fmtTime(e.LastFailure), e.Type, e.Group, e.Attempts, oneLine(e.Error, 80))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if page.Next != "" {
				fmt.Fprintf(out, "more: herald dlq list --topic %s --after %s\n", topic, page.Next)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&topic, "topic", "", "list the dead letters of this topic (or dead-letter topic)")
	cmd.Flags().IntVar(&limit, "limit", 100, "at most this many dead letters")
	cmd.Flags().Uint64Var(&after, "after", 0, "start after this sequence (from the previous page)")
	return cmd
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func fmtTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return fmtTime(*t)
}

// oneLine flattens s to one line of at most n runes.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func newDLQShowCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "show ID",
		Short:   "Show a dead letter: the failure's context, the event's headers and payload",
		Example: `  herald dlq show orders.dlq:42`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			e, err := c.DLQEntry(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.output == "json" {
				return a.printJSON(out, e)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			for _, kv := range [][2]string{
				{"id", e.ID}, {"stored", fmtTime(e.Stored)}, {"topic", fmt.Sprintf("%s (sequence %d)", e.Topic, e.OriginalSeq)},
				{"group", e.Group}, {"handler", e.Handler}, {"attempts", fmt.Sprint(e.Attempts)},
				{"first failure", fmtTime(e.FirstFailure)}, {"last failure", fmtTime(e.LastFailure)},
				{"redrives", fmt.Sprint(e.Redrives)}, {"event id", e.EventID}, {"type", e.Type}, {"source", e.Source},
				{"subject", e.Subject}, {"correlation id", e.CorrelationID}, {"key", e.Key},
			} {
				if kv[1] != "" {
					fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
				}
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(out, "error:\n  %s\n", strings.ReplaceAll(e.Error, "\n", "\n  "))
			fmt.Fprintln(out, "headers:")
			keys := make([]string, 0, len(e.Headers))
			for k := range e.Headers {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				fmt.Fprintf(out, "  %s: %s\n", k, e.Headers[k])
			}
			fmt.Fprintf(out, "payload (%d bytes):\n", e.Size)
			printPayload(out, e.Data, e.DataBase64)
			return nil
		},
	}
}

// printPayload prints JSON indented, other payloads as text when they are
// printable, else as base64.
func printPayload(w io.Writer, data json.RawMessage, raw []byte) {
	if data != nil {
		var v any
		if json.Unmarshal(data, &v) == nil {
			if b, err := json.MarshalIndent(v, "  ", "  "); err == nil {
				fmt.Fprintf(w, "  %s\n", b)
				return
			}
		}
		fmt.Fprintf(w, "  %s\n", data)
		return
	}
	if isPrintable(raw) {
		fmt.Fprintf(w, "  %s\n", raw)
		return
	}
	b, _ := json.Marshal(raw) // base64
	fmt.Fprintf(w, "  base64 %s\n", strings.Trim(string(b), `"`))
}

func isPrintable(b []byte) bool {
	for _, r := range string(b) {
		if r == '\uFFFD' || r < ' ' && r != '\n' && r != '\t' && r != '\r' {
			return false
		}
	}
	return true
}

func newDLQRedriveCmd(a *app) *cobra.Command {
	var (
		topic, filter string
		dryRun        bool
		limit         int
	)
	cmd := &cobra.Command{
		Use:   "redrive [--topic T] [--filter F] [--dry-run] [ID...]",
		Short: "Republish dead letters to their original topics after a fix",
		Long: `Republish dead letters to the topic they failed on, with their original type,
key, headers and payload, without the failure headers and with Herald-Redrives
one higher, then remove them from the dead-letter topic. Consumers see each as a
new delivery (attempts start again at 1).

Running a redrive twice does not deliver an event twice: the first removes what
it republished, and a redrive repeated after a crash republishes with the same
message id, which the topic's dedup window (2 minutes by default) drops. Every
group of the topic receives the event again, not only the group that failed.

--filter takes comma-separated conditions, all of which must hold:
KEY=VALUE ('*' matches anything) or KEY~=REGEXP, with KEY one of type, error,
group, handler, subject, source, id, key, correlation.`,
		Example: `  herald dlq redrive --topic orders --dry-run
  herald dlq redrive --topic orders --filter 'type=shop.order.*,error~=timeout'
  herald dlq redrive orders.dlq:42 orders.dlq:43`,
		RunE: func(cmd *cobra.Command, args []string) error {
			for _, id := range args {
				if _, _, err := admin.ParseEntryID(id); err != nil {
					return err
				}
			}
			if _, err := admin.ParseFilter(filter); err != nil {
				return fmt.Errorf("--filter: %w", err)
			}
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			res, err := c.Redrive(cmd.Context(), admin.RedriveRequest{Topic: topic, IDs: args, Filter: filter, DryRun: dryRun, Limit: limit})
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.output == "json" {
				if err := a.printJSON(out, res); err != nil {
					return err
				}
			} else {
				printRedrive(out, res)
			}
			if res.Failed > 0 {
				return fmt.Errorf("%d of %d dead letters were not redriven", res.Failed, res.Matched)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&topic, "topic", "", "the topic (or dead-letter topic) to redrive (default: every dead-letter topic)")
	cmd.Flags().StringVar(&filter, "filter", "", "only dead letters matching this filter, e.g. type=shop.order.*,error~=timeout")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "list what would be redriven and change nothing")
	cmd.Flags().IntVar(&limit, "limit", 0, "redrive at most this many (0: all)")
	return cmd
}

func printRedrive(w io.Writer, res *admin.RedriveResult) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if len(res.Items) > 0 {
		fmt.Fprintln(tw, "ID\tTOPIC\tTYPE\tGROUP\tERROR\tRESULT")
		for _, it := range res.Items {
			result := "redriven"
			switch {
			case it.Failed != "":
				result = "FAILED: " + it.Failed
			case res.DryRun:
				result = "would redrive"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", it.ID, it.Topic, it.Type, it.Group, oneLine(it.Error, 60), result)
		}
		_ = tw.Flush()
	}
	if res.Truncated {
		fmt.Fprintf(w, "(only the first %d are listed)\n", len(res.Items))
	}
	if res.DryRun {
		fmt.Fprintf(w, "dry run: would redrive %d dead letters\n", res.Matched-res.Failed)
		return
	}
	fmt.Fprintf(w, "redrove %d of %d matching dead letters\n", res.Redriven, res.Matched)
}

func newDLQPurgeCmd(a *app) *cobra.Command {
	var (
		topic string
		yes   bool
	)
	cmd := &cobra.Command{
		Use:   "purge --topic T [--yes]",
		Short: "Delete every dead letter of a topic (asks for the topic name unless --yes)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if topic == "" {
				return fmt.Errorf("--topic is required")
			}
			confirm := topic
			if !yes {
				fmt.Fprintf(cmd.ErrOrStderr(), "This deletes every dead letter of %s; they cannot be redriven afterwards.\nType the topic name (%s) to confirm: ",
					admin.DeadLetterTopicOf(topic), topic)
				line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
				if err != nil && line == "" {
					return fmt.Errorf("purge cancelled: no confirmation read (use --yes to skip it)")
				}
				confirm = strings.TrimSpace(line)
				if confirm != topic && confirm != admin.DeadLetterTopicOf(topic) {
					return fmt.Errorf("purge cancelled: %q is not %q", confirm, topic)
				}
			}
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			res, err := c.Purge(cmd.Context(), topic, confirm)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "purged %d dead letters from %s\n", res.Purged, res.DLQTopic)
			return nil
		},
	}
	cmd.Flags().StringVar(&topic, "topic", "", "the topic (or dead-letter topic) whose dead letters to delete")
	cmd.Flags().BoolVar(&yes, "yes", false, "do not ask for confirmation")
	return cmd
}
