package testenv

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// PGPool connects to the local PostgreSQL with at most maxConns
// connections (0: pgxpool's default), skipping (or failing in CI) when it
// is unreachable. The pool is closed when the test ends.
func PGPool(t testing.TB, maxConns int32) *pgxpool.Pool {
	t.Helper()
	Need(t, "PostgreSQL", HostPort(PostgresURL))
	cfg, err := pgxpool.ParseConfig(PostgresURL)
	if err != nil {
		t.Fatalf("parse %s: %v", PostgresURL, err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	p, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatalf("connect to %s: %v", PostgresURL, err)
	}
	t.Cleanup(p.Close)
	return p
}

// SQLName returns a lower-case SQL identifier starting with prefix that no
// other test uses.
func SQLName(prefix string) string { return prefix + strings.ToLower(rand.Text()) }

// DropAfter drops the table (kind "TABLE") or schema (kind "SCHEMA", with
// CASCADE) called name when the test ends. Register it after PGPool so
// that it runs before the pool closes.
func DropAfter(t testing.TB, p *pgxpool.Pool, kind, name string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		q := fmt.Sprintf("DROP %s IF EXISTS %s", kind, pgx.Identifier(strings.Split(name, ".")).Sanitize())
		if kind == "SCHEMA" {
			q += " CASCADE"
		}
		if _, err := p.Exec(ctx, q); err != nil {
			t.Errorf("%s: %v", q, err)
		}
	})
}
