package admin

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/saga"
)

// A saga bucket written through saga.KVStore, read over the API.
func TestSagaEndpoints(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	bucket := strings.ReplaceAll(testenv.Unique("sagas"), "-", "_")
	st, err := saga.NewKVStore(ctx, e.b.JetStream(), bucket)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.b.JetStream().DeleteKeyValue(context.Background(), bucket)
		_ = e.b.JetStream().DeleteKeyValue(context.Background(), bucket+"_active")
	})
	sent := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, in := range []*saga.Instance{
		{ID: "o-1", Saga: "order", State: saga.Completed, Created: sent, History: []saga.Entry{{Step: "pay", Phase: saga.Do, Attempt: 1, Sent: sent, Ended: sent.Add(1500 * time.Millisecond), Outcome: "done"}}},
		{ID: "o-2", Saga: "order", State: saga.Compensating, Created: sent.Add(time.Second), History: []saga.Entry{{Step: "pay", Phase: saga.Undo, Attempt: 1, Sent: sent}}},
	} {
		if err := st.Create(ctx, in); err != nil {
			t.Fatal(err)
		}
	}
	srv := httptest.NewServer(Handler(e.svc, nil))
	defer srv.Close()
	c, err := NewClient(srv.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	all, err := c.Sagas(ctx, bucket, "")
	if err != nil || len(all) != 2 || all[0].ID != "o-1" || all[1].Step != "pay" {
		t.Fatalf("Sagas = %+v, %v; want o-1 then o-2", all, err)
	}
	comp, err := c.Sagas(ctx, bucket, saga.Compensating)
	if err != nil || len(comp) != 1 || comp[0].ID != "o-2" {
		t.Fatalf("Sagas(compensating) = %+v, %v; want o-2", comp, err)
	}
	d, err := c.Saga(ctx, bucket, "o-1")
	if err != nil || d.State != saga.Completed || len(d.History) != 1 || d.History[0].DurationSeconds != 1.5 || d.History[0].Outcome != "done" {
		t.Fatalf("Saga(o-1) = %+v, %v; want completed with a 1.5s step", d, err)
	}
	for name, tc := range map[string]struct {
		call func() error
		code int
	}{
		"bad state":      {func() error { _, err := c.Sagas(ctx, bucket, "sleeping"); return err }, 400},
		"unknown id":     {func() error { _, err := c.Saga(ctx, bucket, "nope"); return err }, 404},
		"bad id":         {func() error { _, err := c.Saga(ctx, bucket, "a b*"); return err }, 400},
		"unknown bucket": {func() error { _, err := c.Sagas(ctx, bucket+"_none", ""); return err }, 404},
	} {
		t.Run(name, func(t *testing.T) {
			var apiErr *APIError
			if err := tc.call(); !errors.As(err, &apiErr) || apiErr.Status != tc.code {
				t.Fatalf("got %v, want HTTP %d", err, tc.code)
			}
		})
	}
}
