package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/heraldhq/herald/server"
	"github.com/heraldhq/herald/server/admin"
	"github.com/heraldhq/herald/server/audit"
)

// opsFlags are the serve and dev flags of the operations features: topic
// retention and the audit log.
type opsFlags struct {
	retention   []string
	audit       string
	postgresURL string
	busyRate    int
	projections string
}

func (f *opsFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringArrayVar(&f.retention, "topic-retention", nil,
		"set a topic's retention at start, creating it if missing: TOPIC=max-age:72h,max-bytes:1GB,max-msgs:1000000 (repeatable)")
	fl.StringVar(&f.audit, "audit", server.AuditSQLite, "audit log store: sqlite (in --data-dir), postgres (--audit-postgres-url) or off")
	fl.StringVar(&f.postgresURL, "audit-postgres-url", "", "PostgreSQL URL of the postgres audit store")
	fl.StringVar(&f.projections, "projections-postgres-url", "", "PostgreSQL URL of the database projections keep their state in, for herald projection and the dashboard")
	fl.IntVar(&f.busyRate, "audit-busy-rate", 5000, "while events keep arriving, index at most this many per second (the index catches up when the load drops); 0: no cap")
}

// apply sets the operations part of cfg.
func (f *opsFlags) apply(cfg *server.Config) error {
	for _, s := range f.retention {
		topic, r, err := admin.ParseTopicRetention(s)
		if err != nil {
			return fmt.Errorf("--topic-retention: %w", err)
		}
		if cfg.TopicRetention == nil {
			cfg.TopicRetention = map[string]admin.Retention{}
		}
		if _, dup := cfg.TopicRetention[topic]; dup {
			return fmt.Errorf("--topic-retention: topic %q given twice", topic)
		}
		cfg.TopicRetention[topic] = r
	}
	switch f.audit {
	case server.AuditSQLite, server.AuditOff:
	case server.AuditPostgres:
		if f.postgresURL == "" {
			return fmt.Errorf("--audit postgres needs --audit-postgres-url")
		}
	default:
		return fmt.Errorf("--audit %q: want sqlite, postgres or off", f.audit)
	}
	if f.busyRate < 0 {
		return fmt.Errorf("--audit-busy-rate %d: must not be negative", f.busyRate)
	}
	cfg.ProjectionsURL = f.projections
	cfg.Audit = server.AuditConfig{Store: f.audit, PostgresURL: f.postgresURL, BusyRate: f.busyRate}
	if f.busyRate == 0 {
		cfg.Audit.BusyRate = -1 // no cap
	}
	return nil
}

// parseWhen reads an RFC 3339 time, or a duration meaning that long ago.
func parseWhen(flag, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%s %q: want an RFC 3339 time (2026-03-01T09:00:00Z) or a duration ago (2h)", flag, s)
}

func newAuditCmd(a *app) *cobra.Command {
	var (
		q            audit.Query
		since, until string
		limit        int
		noPayload    bool
	)
	cmd := &cobra.Command{
		Use:   "audit --correlation C | --subject S | --type T [--since --until]",
		Short: "Find events in the audit log: by correlation id, subject or type",
		Long: `Print the events the audit log holds for a correlation id (a business
transaction), a subject (an aggregate) or a type, in the order they happened,
with their payloads. --since and --until (exclusive) take an RFC 3339 time or a
duration ago (2h). Dead-letter copies and redriven copies of an event are marked.
With -o json every event is a JSON object on its own line.`,
		Example: `  herald audit --correlation 0197a9a2-7c1e-7d3e-9a53-6f3c2b1d0e4f
  herald audit --subject order-1042 --since 24h
  herald audit --type shop.order.placed.v1 --since 2026-03-01T09:00:00Z --until 2026-03-01T10:00:00Z -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if q.CorrelationID == "" && q.Subject == "" && q.Type == "" {
				return fmt.Errorf("give --correlation, --subject or --type")
			}
			if limit < 1 {
				return fmt.Errorf("--limit %d: must be at least 1", limit)
			}
			now := time.Now()
			var err error
			if q.Since, err = parseWhen("--since", since, now); err != nil {
				return err
			}
			if q.Until, err = parseWhen("--until", until, now); err != nil {
				return err
			}
			q.NoPayload = noPayload
			c, err := a.adminClient()
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			n := 0
			page := 1000 // the most the API returns with payloads
			if noPayload {
				page = audit.MaxLimit
			}
			for n < limit {
				q.Limit = min(limit-n, page)
				res, err := c.Audit(cmd.Context(), q)
				if err != nil {
					return err
				}
				for _, r := range res.Events {
					if err := printRecord(out, r, a.output); err != nil {
						return err
					}
				}
				n += len(res.Events)
				if res.Next == "" {
					break
				}
				q.After = res.Next
			}
			if n == 0 && a.output != "json" {
				fmt.Fprintln(cmd.ErrOrStderr(), "no events found")
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&q.CorrelationID, "correlation", "", "events with this correlation id")
	fl.StringVar(&q.Subject, "subject", "", "events about this subject (aggregate id)")
	fl.StringVar(&q.Type, "type", "", "events of this type")
	fl.StringVar(&q.Topic, "topic", "", "only events of this topic")
	fl.StringVar(&since, "since", "", "only events at or after this time (RFC 3339, or a duration ago: 2h)")
	fl.StringVar(&until, "until", "", "only events before this time (RFC 3339, or a duration ago)")
	fl.IntVar(&limit, "limit", 10_000, "print at most this many events")
	fl.BoolVar(&noPayload, "no-payload", false, "leave the payloads out")
	return cmd
}

// printRecord writes one event: a JSON line, or a text line.
func printRecord(w io.Writer, r audit.Record, output string) error {
	if output == "json" {
		b, err := json.Marshal(r)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "%s\n", b)
		return err
	}
	_, err := fmt.Fprintln(w, recordLine(r))
	return err
}

func recordLine(r audit.Record) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %s#%d  %s  id=%s", r.Time.UTC().Format("2006-01-02T15:04:05.000Z07:00"), r.Topic, r.Seq, r.Type, r.ID)
	if r.Subject != "" {
		b.WriteString("  subject=" + r.Subject)
	}
	if r.CausationID != "" {
		b.WriteString("  cause=" + r.CausationID)
	}
	if r.DeadLetter {
		b.WriteString("  [dead letter]")
	}
	if r.Redrives > 0 {
		fmt.Fprintf(&b, "  [redrive %d]", r.Redrives)
	}
	if r.Payload != nil {
		b.WriteString("  " + payloadText(r.Payload))
	} else if r.PayloadSize > 0 {
		fmt.Fprintf(&b, "  (%d bytes, no longer stored)", r.PayloadSize)
	}
	return b.String()
}

// payloadText is a payload on one line: compact JSON, printable text, or
// its size.
func payloadText(p []byte) string {
	if json.Valid(p) {
		var v any
		if json.Unmarshal(p, &v) == nil {
			if b, err := json.Marshal(v); err == nil {
				return oneLine(string(b), 400)
			}
		}
	}
	if isPrintable(p) {
		return oneLine(string(p), 400)
	}
	return fmt.Sprintf("(%d bytes of binary)", len(p))
}
