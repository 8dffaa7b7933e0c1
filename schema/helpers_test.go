package schema_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/heraldhq/herald/schema"
)

var subjectSeq atomic.Int64

// uniqueSubject returns a subject name no other test uses.
func uniqueSubject(t *testing.T) string {
	t.Helper()
	name := strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
	return fmt.Sprintf("%s-%d-value", name, subjectSeq.Add(1))
}

func newRegistry(t *testing.T, store schema.Store, opts ...schema.Option) *schema.Registry {
	t.Helper()
	if store == nil {
		store = schema.NewMemoryStore()
	}
	r, err := schema.New(t.Context(), store, opts...)
	if err != nil {
		t.Fatalf("schema.New: %v", err)
	}
	t.Cleanup(func() { _ = r.Close() })
	return r
}

func mustRegister(t *testing.T, r *schema.Registry, subject string, s schema.Schema) schema.SubjectVersion {
	t.Helper()
	sv, err := r.Register(context.Background(), subject, s, schema.RegisterOptions{})
	if err != nil {
		t.Fatalf("register %q: %v", subject, err)
	}
	return sv
}

// evolution is one schema change and whether it is compatible in each
// direction.
type evolution struct {
	name     string
	old, new string
	// backward: the new schema reads data written with the old one.
	backward bool
	// forward: the old schema reads data written with the new one.
	forward bool
	// msg is a substring every failing direction's message must contain.
	msg string
}

var levels = []schema.Level{schema.None, schema.Backward, schema.BackwardTransitive, schema.Forward,
	schema.ForwardTransitive, schema.Full, schema.FullTransitive}

func expected(l schema.Level, e evolution) bool {
	switch l {
	case schema.None:
		return true
	case schema.Backward, schema.BackwardTransitive:
		return e.backward
	case schema.Forward, schema.ForwardTransitive:
		return e.forward
	default:
		return e.backward && e.forward
	}
}

// runEvolutions checks every case at every level through the registry:
// register old, set the level, check new.
func runEvolutions(t *testing.T, typ schema.Type, cases []evolution) {
	t.Helper()
	if len(cases) < 15 {
		t.Fatalf("want at least 15 evolution cases, have %d", len(cases))
	}
	var compatible, incompatible int
	for _, e := range cases {
		if e.backward && e.forward {
			compatible++
		}
		if !e.backward || !e.forward {
			incompatible++
		}
	}
	if compatible == 0 || incompatible == 0 {
		t.Fatalf("cases must include compatible (%d) and incompatible (%d) changes", compatible, incompatible)
	}
	r := newRegistry(t, nil)
	for _, e := range cases {
		t.Run(e.name, func(t *testing.T) {
			t.Parallel()
			for _, level := range levels {
				subject := uniqueSubject(t)
				ctx := t.Context()
				if err := r.SetConfig(ctx, subject, schema.None); err != nil {
					t.Fatal(err)
				}
				mustRegister(t, r, subject, schema.Schema{Type: typ, Text: e.old})
				if err := r.SetConfig(ctx, subject, level); err != nil {
					t.Fatal(err)
				}
				res, err := r.Check(ctx, subject, schema.CheckAll, schema.Schema{Type: typ, Text: e.new}, false)
				if err != nil {
					t.Fatalf("%s: check: %v", level, err)
				}
				want := expected(level, e)
				if res.Compatible != want {
					t.Fatalf("%s: compatible = %v, want %v (messages %q)", level, res.Compatible, want, res.Messages)
				}
				if !want && e.msg != "" && !strings.Contains(strings.Join(res.Messages, "\n"), e.msg) {
					t.Fatalf("%s: messages %q do not mention %q", level, res.Messages, e.msg)
				}
				// Registration agrees with the check.
				_, err = r.Register(ctx, subject, schema.Schema{Type: typ, Text: e.new}, schema.RegisterOptions{})
				if want && err != nil {
					t.Fatalf("%s: register compatible schema: %v", level, err)
				}
				if !want && !isCode(err, 409) {
					t.Fatalf("%s: register incompatible schema: err = %v, want code 409", level, err)
				}
			}
		})
	}
}

func isCode(err error, code int) bool {
	se, ok := err.(*schema.Error)
	return ok && se.Code == code
}
