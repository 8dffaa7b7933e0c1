package main

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/outbox"
)

func TestOutboxStatus(t *testing.T) {
	pool := testenv.PGPool(t, 0)
	table := "outbox_cli_" + strings.ToLower(rand.Text())
	t.Cleanup(func() { _, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS "+table) })
	o, err := outbox.New(t.Context(), pool, outbox.WithTable(table), outbox.WithMigrate())
	if err != nil {
		t.Fatal(err)
	}
	err = pgx.BeginFunc(t.Context(), pool, func(tx pgx.Tx) error {
		return o.Add(t.Context(), tx, event.New("cli", "t.v1", nil), event.New("cli", "t.v1", nil), event.New("cli", "t.v1", nil))
	})
	if err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runHerald(t, "", "outbox", "status", "--postgres", testenv.PostgresURL, "--table", table)
	if err != nil || !strings.Contains(out, "table "+table+": 3 pending") || !strings.Contains(out, "PARTITION") {
		t.Fatalf("outbox status: %v\n%s%s", err, out, stderr)
	}
	out, stderr, err = runHerald(t, "", "outbox", "status", "--postgres", testenv.PostgresURL, "--table", table, "-o", "json")
	var st outbox.Status
	if err != nil || json.Unmarshal([]byte(out), &st) != nil || st.Pending != 3 {
		t.Fatalf("outbox status -o json: %v\n%s%s", err, out, stderr)
	}

	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"no url":        {[]string{"outbox", "status"}, "--postgres (or $HERALD_POSTGRES_URL) is required"},
		"bad url":       {[]string{"outbox", "status", "--postgres", "::not a url"}, "--postgres"},
		"bad table":     {[]string{"outbox", "status", "--postgres", testenv.PostgresURL, "--table", "a b"}, "must be a letter"},
		"missing table": {[]string{"outbox", "status", "--postgres", testenv.PostgresURL, "--table", table + "_none"}, "does not exist"},
	} {
		t.Run(name, func(t *testing.T) {
			_, stderr, err := runHerald(t, "", tc.args...)
			if err == nil || !strings.Contains(stderr, tc.want) || strings.Contains(stderr, "panic") {
				t.Fatalf("got %v, stderr %q; want a failure saying %q", err, stderr, tc.want)
			}
		})
	}
}
