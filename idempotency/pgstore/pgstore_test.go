package pgstore_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/idempotency"
	"github.com/heraldhq/herald/idempotency/pgstore"
	"github.com/heraldhq/herald/idempotency/storetest"
	"github.com/heraldhq/herald/internal/testenv"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// newStore returns a store on a fresh inbox table dropped after the test.
func newStore(t testing.TB, p *pgxpool.Pool) *pgstore.Store {
	t.Helper()
	table := testenv.SQLName("idem_test_")
	testenv.DropAfter(t, p, "TABLE", table)
	s, err := pgstore.New(t.Context(), p, pgstore.WithTable(table), pgstore.WithMigrate())
	if err != nil {
		t.Fatalf("new store on table %q: %v", table, err)
	}
	return s
}

// sibling returns another store (another owner) on s's table.
func sibling(t testing.TB, p *pgxpool.Pool, s *pgstore.Store) *pgstore.Store {
	t.Helper()
	o, err := pgstore.New(t.Context(), p, pgstore.WithTable(s.Table()))
	if err != nil {
		t.Fatalf("new store on table %q: %v", s.Table(), err)
	}
	return o
}

func TestConformance(t *testing.T) {
	p := testenv.PGPool(t, 8)
	first := newStore(t, p)
	storetest.Run(t, func(t *testing.T) idempotency.Store { return sibling(t, p, first) })
}

// orders is a business table a handler writes in the same transaction as
// the inbox row.
func orders(t *testing.T, p *pgxpool.Pool) string {
	t.Helper()
	name := testenv.SQLName("idem_test_orders_")
	testenv.DropAfter(t, p, "TABLE", name)
	if _, err := p.Exec(t.Context(), "CREATE TABLE "+name+" (id text PRIMARY KEY, n int NOT NULL DEFAULT 0)"); err != nil {
		t.Fatal(err)
	}
	return name
}

func count(t *testing.T, p *pgxpool.Pool, table string) (rows, sum int) {
	t.Helper()
	if err := p.QueryRow(t.Context(), "SELECT count(*), coalesce(sum(n), 0) FROM "+table).Scan(&rows, &sum); err != nil {
		t.Fatal(err)
	}
	return rows, sum
}

func TestCompleteTx(t *testing.T) {
	t.Parallel()
	p := testenv.PGPool(t, 4)
	s := newStore(t, p)
	ord := orders(t, p)
	tests := []struct {
		name     string
		commit   bool
		wantRows int
		wantErr  error // of a Claim after the transaction
	}{
		{"commit keeps the business write and the completion", true, 1, idempotency.ErrDuplicate},
		{"rollback drops both", false, 0, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := t.Context()
			key := testenv.SQLName("order-created/")
			tx, err := p.Begin(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer func() { _ = tx.Rollback(ctx) }()
			if _, err := tx.Exec(ctx, "INSERT INTO "+ord+" (id, n) VALUES ($1, 1)", key); err != nil {
				t.Fatal(err)
			}
			if err := s.CompleteTx(ctx, tx, key, time.Hour); err != nil {
				t.Fatalf("complete in transaction: %v", err)
			}
			if tc.commit {
				err = tx.Commit(ctx)
			} else {
				err = tx.Rollback(ctx)
			}
			if err != nil {
				t.Fatal(err)
			}
			var rows int
			if err := p.QueryRow(ctx, "SELECT count(*) FROM "+ord+" WHERE id = $1", key).Scan(&rows); err != nil {
				t.Fatal(err)
			}
			if rows != tc.wantRows {
				t.Fatalf("business rows: %d, want %d", rows, tc.wantRows)
			}
			if err := s.Claim(ctx, key, time.Minute); !errors.Is(err, tc.wantErr) {
				t.Fatalf("claim after the transaction: got %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestOnceRunsOnce(t *testing.T) {
	t.Parallel()
	p := testenv.PGPool(t, 8)
	s := newStore(t, p)
	tests := []struct {
		name  string
		setup func(ctx context.Context, key string) error // the row Once finds
	}{
		{"new key", func(context.Context, string) error { return nil }},
		{"key under a live lease", func(ctx context.Context, key string) error {
			return s.Claim(ctx, key, time.Hour)
		}},
		{"key whose lease expired", func(ctx context.Context, key string) error {
			return s.Claim(ctx, key, time.Microsecond)
		}},
		{"key whose completion expired", func(ctx context.Context, key string) error {
			return s.Complete(ctx, key, time.Microsecond)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ord := orders(t, p)
			ctx := t.Context()
			key := testenv.SQLName("payments/")
			if err := tc.setup(ctx, key); err != nil {
				t.Fatalf("setup: %v", err)
			}
			const callers = 20
			var (
				wg    sync.WaitGroup
				calls atomic.Int32
				errs  = make([]error, callers)
				start = make(chan struct{})
			)
			for i := range callers {
				o := sibling(t, p, s)
				wg.Go(func() {
					<-start
					errs[i] = o.Once(ctx, key, time.Hour, func(tx pgx.Tx) error {
						calls.Add(1)
						_, err := tx.Exec(ctx, "INSERT INTO "+ord+" (id, n) VALUES ('balance', 1) ON CONFLICT (id) DO UPDATE SET n = "+ord+".n + 1")
						return err
					})
				})
			}
			close(start)
			wg.Wait()
			won := 0
			for _, err := range errs {
				switch {
				case err == nil:
					won++
				case !errors.Is(err, idempotency.ErrDuplicate):
					t.Fatalf("once: %v", err)
				}
			}
			if won != 1 || calls.Load() != 1 {
				t.Fatalf("%d of %d concurrent Once calls succeeded and fn ran %d times; want 1 and 1", won, callers, calls.Load())
			}
			if _, sum := count(t, p, ord); sum != 1 {
				t.Fatalf("balance incremented %d times, want 1", sum)
			}
			if err := s.Claim(ctx, key, time.Minute); !errors.Is(err, idempotency.ErrDuplicate) {
				t.Fatalf("claim after Once: got %v, want ErrDuplicate", err)
			}
		})
	}
}

func TestOnceFailureRollsBack(t *testing.T) {
	t.Parallel()
	p := testenv.PGPool(t, 4)
	s := newStore(t, p)
	ord := orders(t, p)
	ctx := t.Context()
	key := "payments/evt-2"
	boom := errors.New("downstream refused")
	insert := func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+ord+" (id, n) VALUES ('a', 1)")
		return err
	}

	err := s.Once(ctx, key, time.Hour, func(tx pgx.Tx) error {
		if err := insert(tx); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("once with a failing fn: got %v, want its error", err)
	}
	if rows, _ := count(t, p, ord); rows != 0 {
		t.Fatalf("failed Once left %d business rows", rows)
	}
	if err := s.Once(ctx, key, time.Hour, insert); err != nil {
		t.Fatalf("once after the failure: %v", err)
	}
	if rows, _ := count(t, p, ord); rows != 1 {
		t.Fatalf("after the retry: %d business rows, want 1", rows)
	}
	if err := s.Once(ctx, key, time.Hour, func(pgx.Tx) error {
		t.Error("fn ran for a done key")
		return nil
	}); !errors.Is(err, idempotency.ErrDuplicate) {
		t.Fatalf("once on a done key: got %v, want ErrDuplicate", err)
	}
	// A committed transaction without CompleteTx must not block the key.
	tx, err := p.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ClaimTx(ctx, tx, "abandoned"); err != nil {
		t.Fatalf("claim in transaction: %v", err)
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Claim(ctx, "abandoned", time.Minute); err != nil {
		t.Fatalf("claim after a transaction that claimed without completing: %v", err)
	}
}

func TestOnceAfterTTL(t *testing.T) {
	t.Parallel()
	p := testenv.PGPool(t, 4)
	s := newStore(t, p)
	ctx := t.Context()
	key := "short-lived"
	runs := 0
	fn := func(pgx.Tx) error { runs++; return nil }
	if err := s.Once(ctx, key, 300*time.Millisecond, fn); err != nil {
		t.Fatal(err)
	}
	if err := s.Once(ctx, key, 300*time.Millisecond, fn); !errors.Is(err, idempotency.ErrDuplicate) {
		t.Fatalf("once within the TTL: got %v, want ErrDuplicate", err)
	}
	// Wait for the 300ms completion TTL to pass, then the key runs again.
	deadline := time.Now().Add(10 * time.Second)
	for runs < 2 {
		err := s.Once(ctx, key, time.Hour, fn)
		if err != nil && !errors.Is(err, idempotency.ErrDuplicate) {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for the 300ms completion TTL to pass: Once still returns %v after 10s", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConsumerFlow plays the consumer runtime around a transactional
// handler: the runtime claims with a lease, the handler uses Once, the
// process dies before Complete and the ack, and the redelivery on another
// instance is recognised as a duplicate.
func TestConsumerFlow(t *testing.T) {
	t.Parallel()
	p := testenv.PGPool(t, 4)
	runtime := newStore(t, p)
	handler := sibling(t, p, runtime)
	other := sibling(t, p, runtime)
	ord := orders(t, p)
	ctx := t.Context()
	key := "billing/evt-7"

	if err := runtime.Claim(ctx, key, 300*time.Millisecond); err != nil {
		t.Fatalf("runtime claim: %v", err)
	}
	if err := handler.Once(ctx, key, time.Hour, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, "INSERT INTO "+ord+" (id, n) VALUES ('invoice', 1)")
		return err
	}); err != nil {
		t.Fatalf("handler under a live lease: %v", err)
	}
	// Crash: no Complete, no ack. The redelivery finds the key done, the
	// handler's transaction having replaced the lease with the completion.
	if err := other.Claim(ctx, key, time.Minute); !errors.Is(err, idempotency.ErrDuplicate) {
		t.Fatalf("redelivery claim: got %v, want ErrDuplicate", err)
	}
	if rows, _ := count(t, p, ord); rows != 1 {
		t.Fatalf("business rows: %d, want 1", rows)
	}
}

func TestPurge(t *testing.T) {
	t.Parallel()
	p := testenv.PGPool(t, 4)
	s := newStore(t, p)
	ctx := t.Context()
	for i := range 5 {
		if err := s.Complete(ctx, fmt.Sprint("short-done-", i), time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if err := s.Claim(ctx, fmt.Sprint("short-claim-", i), time.Millisecond); err != nil {
			t.Fatal(err)
		}
		if err := s.Complete(ctx, fmt.Sprint("long-done-", i), time.Hour); err != nil {
			t.Fatal(err)
		}
		if err := s.Claim(ctx, fmt.Sprint("long-claim-", i), time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	// Wait for the 1ms records to expire by the database's clock.
	deadline := time.Now().Add(10 * time.Second)
	var total int64
	for total < 10 {
		n, err := s.Purge(ctx)
		if err != nil {
			t.Fatalf("purge: %v", err)
		}
		total += n
		if time.Now().After(deadline) {
			t.Fatalf("waiting for 10 expired rows to purge: %d purged after 10s", total)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if total != 10 {
		t.Fatalf("purged %d rows, want the 10 expired ones", total)
	}
	var left int
	if err := p.QueryRow(ctx, "SELECT count(*) FROM "+pgx.Identifier{s.Table()}.Sanitize()).Scan(&left); err != nil {
		t.Fatal(err)
	}
	if left != 10 {
		t.Fatalf("%d rows left, want the 10 live ones", left)
	}
	if err := s.Claim(ctx, "long-done-0", time.Minute); !errors.Is(err, idempotency.ErrDuplicate) {
		t.Fatalf("live completion after purge: got %v, want ErrDuplicate", err)
	}
}

func TestMigrate(t *testing.T) {
	t.Parallel()
	p := testenv.PGPool(t, 8)
	ctx := t.Context()

	table := testenv.SQLName("idem_test_")
	testenv.DropAfter(t, p, "TABLE", table)
	if _, err := pgstore.New(ctx, p, pgstore.WithTable(table)); err == nil || !strings.Contains(err.Error(), "Migrate") {
		t.Fatalf("New on a missing table: got %v, want an error naming Migrate", err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 5)
	for i := range errs {
		wg.Go(func() {
			_, errs[i] = pgstore.New(ctx, p, pgstore.WithTable(table), pgstore.WithMigrate())
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("concurrent migrate %d: %v", i, err)
		}
	}
	s, err := pgstore.New(ctx, p, pgstore.WithTable(table))
	if err != nil {
		t.Fatalf("New on the migrated table: %v", err)
	}
	if err := s.Migrate(ctx); err != nil {
		t.Fatalf("migrate an existing table: %v", err)
	}

	schema := testenv.SQLName("idem_test_schema_")
	testenv.DropAfter(t, p, "SCHEMA", schema)
	if _, err := p.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatal(err)
	}
	qs, err := pgstore.New(ctx, p, pgstore.WithTable(schema+".Inbox"), pgstore.WithMigrate())
	if err != nil {
		t.Fatalf("schema-qualified table: %v", err)
	}
	if err := qs.Claim(ctx, "k", time.Minute); err != nil {
		t.Fatalf("claim in %s.Inbox: %v", schema, err)
	}
	var n int
	if err := p.QueryRow(ctx, fmt.Sprintf(`SELECT count(*) FROM %s."Inbox"`, schema)).Scan(&n); err != nil || n != 1 {
		t.Fatalf(`rows in %s."Inbox": %d, %v; want 1`, schema, n, err)
	}
}

func TestNewInvalid(t *testing.T) {
	t.Parallel()
	p := testenv.PGPool(t, 2)
	tests := []struct {
		name  string
		pool  *pgxpool.Pool
		table string
		want  string
	}{
		{"nil pool", nil, "t", "pool is nil"},
		{"empty table", p, "", `part ""`},
		{"three parts", p, "a.b.c", "schema.name"},
		{"injection", p, `inbox"; DROP TABLE x; --`, "must be a letter"},
		{"leading digit", p, "1inbox", "must be a letter"},
		{"too long", p, strings.Repeat("a", 49), "up to 47"},
		{"empty schema", p, ".inbox", `part ""`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pgstore.New(t.Context(), tc.pool, pgstore.WithTable(tc.table), pgstore.WithMigrate())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestKeysPostgresCannotHold(t *testing.T) {
	t.Parallel()
	p := testenv.PGPool(t, 2)
	s := newStore(t, p)
	ctx := t.Context()
	tests := []struct {
		name, key, want string
	}{
		{"NUL byte", "a\x00b", "NUL"},
		{"invalid UTF-8", "a\xffb", "UTF-8"},
		{"too long", strings.Repeat("k", pgstore.MaxKeyBytes+1), "more than the 2048 allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for op, err := range map[string]error{
				"claim":    s.Claim(ctx, tc.key, time.Minute),
				"complete": s.Complete(ctx, tc.key, time.Minute),
				"release":  s.Release(ctx, tc.key),
				"once":     s.Once(ctx, tc.key, time.Minute, func(pgx.Tx) error { return nil }),
			} {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s: got %v, want an error containing %q", op, err, tc.want)
				}
			}
		})
	}
	if err := s.Claim(ctx, strings.Repeat("k", pgstore.MaxKeyBytes), time.Minute); err != nil {
		t.Fatalf("claim of a %d-byte key: %v", pgstore.MaxKeyBytes, err)
	}
}
