package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/projection"
	"github.com/heraldhq/herald/server/admin"
)

func newProjectionCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "projection",
		Short: "Inspect and rebuild projections (read models)",
		Long: "Inspect and rebuild the projections (package projection) whose state is in the database\n" +
			"herald serve was given with --projections-postgres-url.",
	}
	list := &cobra.Command{
		Use:   "list",
		Short: "List projections with their position, lag and state",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			ps, err := c.Projections(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.output == "json" {
				return a.printJSON(out, ps)
			}
			if len(ps) == 0 {
				fmt.Fprintln(out, "no projections")
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "NAME\tSTATE\tPOSITION\tHEAD\tLAG\tLAG_S\tTABLE\tHEARTBEAT\tERROR\t")
			for _, p := range ps {
				fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%.1f\t%s\t%s\t%s\t\n", p.Name, p.State, p.Checkpoint, p.Head, p.Lag, p.LagSeconds,
					p.Table, ago(p.Heartbeat), lastError(p))
			}
			return tw.Flush()
		},
	}
	status := &cobra.Command{
		Use:   "status NAME",
		Short: "Show a projection's position, lag, state and last rebuild",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			st, err := c.Projection(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(cmd.OutOrStdout(), st)
			}
			printStatus(cmd.OutOrStdout(), st)
			return nil
		},
	}
	var wait time.Duration
	rebuild := &cobra.Command{
		Use:   "rebuild NAME [--wait 10m]",
		Short: "Rebuild a projection from the first event, with a progress bar",
		Long: "Ask the projector running NAME (projection.Run, in the service that owns the projection) to\n" +
			"rebuild it: it fills a fresh table from the first event while the current one keeps serving,\n" +
			"then swaps them in one transaction. The command shows the progress until the swap, for at\n" +
			"most --wait (0: ask and return).",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if wait < 0 {
				return fmt.Errorf("--wait %v: must not be negative", wait)
			}
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			st, err := c.RebuildProjection(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if wait == 0 {
				if a.output == "json" {
					return a.printJSON(out, st)
				}
				fmt.Fprintf(out, "asked for a rebuild of projection %s\n", st.Name)
				return nil
			}
			st, err = followRebuild(cmd, c, st, wait)
			if err != nil {
				return err
			}
			if a.output == "json" {
				return a.printJSON(out, st)
			}
			r := st.Rebuild
			fmt.Fprintf(out, "rebuilt projection %s: %s events into table %s in %s\n", st.Name, humanize.Comma(int64(r.Applied)), st.Table,
				r.Ended.Sub(r.Started).Round(time.Millisecond))
			return nil
		},
	}
	rebuild.Flags().DurationVar(&wait, "wait", 10*time.Minute, "how long to follow the rebuild (0: ask and return)")
	cmd.AddCommand(list, status, rebuild)
	return cmd
}

// followRebuild polls a requested rebuild, drawing its progress on
// stderr, until it ends, fails or wait passes.
func followRebuild(cmd *cobra.Command, c *admin.Client, st *projection.Status, wait time.Duration) (*projection.Status, error) {
	requested := st.Rebuild.Requested
	name := st.Name
	bar := newProgressBar(cmd.ErrOrStderr())
	deadline := time.Now().Add(wait)
	told := false
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-cmd.Context().Done():
			return nil, cmd.Context().Err()
		case <-t.C:
		}
		cur, err := c.Projection(cmd.Context(), name)
		if err != nil {
			return nil, err
		}
		r := cur.Rebuild
		started := r != nil && !r.Started.IsZero() && !r.Started.Before(requested)
		switch {
		case started && !r.Ended.IsZero():
			bar.done(r)
			if r.Error != "" {
				return nil, fmt.Errorf("rebuild of projection %s failed: %s", name, r.Error)
			}
			return cur, nil
		case started:
			bar.draw(r)
		case !told && cur.State == projection.StateStopped:
			fmt.Fprintf(cmd.ErrOrStderr(), "waiting for a projector to start the rebuild: projection %s has no projector running (last heartbeat %s)\n", name, ago(cur.Heartbeat))
			told = true
		}
		if time.Now().After(deadline) {
			if !started {
				return nil, fmt.Errorf("no projector started the rebuild of projection %s within %v; the request stays until one runs (projection.Run)", name, wait)
			}
			return nil, fmt.Errorf("the rebuild of projection %s goes on after %v (%s of %s events); follow it with herald projection status %s",
				name, wait, humanize.Comma(int64(r.Applied)), humanize.Comma(int64(r.Target)), name)
		}
	}
}

// progressBar draws a rebuild's progress: redrawn in place on a terminal,
// a line per tenth done elsewhere.
type progressBar struct {
	w    io.Writer
	tty  bool
	last int // last tenth printed, off a terminal
}

func newProgressBar(w io.Writer) *progressBar {
	tty := false
	if f, ok := w.(*os.File); ok {
		if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progressBar{w: w, tty: tty, last: -1}
}

func (b *progressBar) line(r *projection.RebuildStatus) (string, int) {
	const width = 30
	pct := 100
	if r.Target > 0 {
		pct = int(min(100, r.Position*100/r.Target))
	}
	n := pct * width / 100
	return fmt.Sprintf("[%s%s] %3d%%  %s events, position %d of %d", strings.Repeat("#", n), strings.Repeat(".", width-n), pct,
		humanize.Comma(int64(r.Applied)), r.Position, r.Target), pct
}

func (b *progressBar) draw(r *projection.RebuildStatus) {
	s, pct := b.line(r)
	if b.tty {
		fmt.Fprintf(b.w, "\r%s", s)
		return
	}
	if pct/10 > b.last {
		b.last = pct / 10
		fmt.Fprintln(b.w, s)
	}
}

func (b *progressBar) done(r *projection.RebuildStatus) {
	if r.Error == "" {
		r2 := *r
		r2.Position = max(r2.Position, r2.Target)
		b.draw(&r2)
	}
	if b.tty {
		fmt.Fprintln(b.w)
	}
}

func printStatus(w io.Writer, st *projection.Status) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "projection\t%s\n", st.Name)
	fmt.Fprintf(tw, "state\t%s\n", st.State)
	fmt.Fprintf(tw, "position\t%d\n", st.Checkpoint)
	fmt.Fprintf(tw, "head\t%d\n", st.Head)
	fmt.Fprintf(tw, "lag\t%d positions, %.1fs\n", st.Lag, st.LagSeconds)
	fmt.Fprintf(tw, "table\t%s (generation %d)\n", st.Table, st.Generation)
	fmt.Fprintf(tw, "heartbeat\t%s\n", ago(st.Heartbeat))
	fmt.Fprintf(tw, "updated\t%s\n", st.Updated.UTC().Format(time.RFC3339))
	if st.LastError != "" {
		fmt.Fprintf(tw, "last error\t%s\n", st.LastError)
	}
	if r := st.Rebuild; r != nil {
		switch {
		case !r.Requested.IsZero():
			fmt.Fprintf(tw, "rebuild\trequested %s, waiting for the projector\n", r.Requested.UTC().Format(time.RFC3339))
		case r.Running():
			fmt.Fprintf(tw, "rebuild\trunning since %s: %s events, position %d of %d\n", r.Started.UTC().Format(time.RFC3339),
				humanize.Comma(int64(r.Applied)), r.Position, r.Target)
		case r.Error != "":
			fmt.Fprintf(tw, "rebuild\tfailed %s: %s\n", r.Ended.UTC().Format(time.RFC3339), r.Error)
		default:
			fmt.Fprintf(tw, "rebuild\tdone %s: %s events in %s\n", r.Ended.UTC().Format(time.RFC3339),
				humanize.Comma(int64(r.Applied)), r.Ended.Sub(r.Started).Round(time.Millisecond))
		}
	}
	_ = tw.Flush()
}

func lastError(p projection.Status) string {
	if p.LastError != "" {
		return p.LastError
	}
	if p.Rebuild != nil && p.Rebuild.Error != "" {
		return "rebuild: " + p.Rebuild.Error
	}
	return ""
}

// ago renders how long ago t was, "never" for the zero time.
func ago(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return time.Since(t).Round(100*time.Millisecond).String() + " ago"
}
