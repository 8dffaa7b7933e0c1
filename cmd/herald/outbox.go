package main

import (
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/outbox"
)

func newOutboxCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "outbox",
		Short: "Inspect transactional outbox tables",
	}
	cmd.AddCommand(newOutboxStatusCmd(a))
	return cmd
}

func newOutboxStatusCmd(a *app) *cobra.Command {
	var dsn, table string
	cmd := &cobra.Command{
		Use:   "status [--postgres URL] [--table T]",
		Short: "Show an outbox table's backlog",
		Long: `Show the events an outbox table holds that no relay has published yet:
  PENDING  events waiting to be published
  LAG      how long the oldest of them has waited
and the same for each partition that has any. A LAG that keeps growing means
no relay is running on the table, or its broker refuses the events.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dsn == "" {
				dsn = os.Getenv("HERALD_POSTGRES_URL")
			}
			if dsn == "" {
				return errors.New("outbox status: --postgres (or $HERALD_POSTGRES_URL) is required, for example postgres://user@127.0.0.1:5432/shop")
			}
			cfg, err := pgxpool.ParseConfig(dsn)
			if err != nil {
				return fmt.Errorf("outbox status: --postgres: %w", err)
			}
			cfg.MaxConns = 2
			pool, err := pgxpool.NewWithConfig(cmd.Context(), cfg)
			if err != nil {
				return fmt.Errorf("outbox status: %w", err)
			}
			defer pool.Close()
			o, err := outbox.New(cmd.Context(), pool, outbox.WithTable(table))
			if err != nil {
				return err
			}
			st, err := o.Status(cmd.Context())
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if a.output == "json" {
				return a.printJSON(out, st)
			}
			fmt.Fprintf(out, "table %s: %d pending, lag %s\n", st.Table, st.Pending, st.Lag.Round(time.Millisecond))
			if len(st.Partitions) == 0 {
				return nil
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PARTITION\tPENDING\tLAG\t")
			for _, p := range st.Partitions {
				fmt.Fprintf(tw, "%d\t%d\t%s\t\n", p.Partition, p.Pending, p.Lag.Round(time.Millisecond))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&dsn, "postgres", "", "PostgreSQL URL of the outbox's database (default $HERALD_POSTGRES_URL)")
	cmd.Flags().StringVar(&table, "table", outbox.DefaultTable, "outbox table, optionally schema-qualified")
	return cmd
}
