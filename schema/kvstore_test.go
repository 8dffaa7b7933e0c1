package schema_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/schema/schematest"
)

// TestKVRestartKeepsEverything writes through one registry, stops it and
// the NATS server, starts both again on the same directory, and finds every
// subject, version, id and config.
func TestKVRestartKeepsEverything(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ctx := t.Context()
	ns := schematest.Start(t, dir)
	store, err := schema.NewKVStore(ctx, ns.Connect(t), schema.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	r1, err := schema.New(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	subject := uniqueSubject(t)
	v1 := mustRegister(t, r1, subject, avroRecord("P", `{"name":"a","type":"int"}`))
	v2 := mustRegister(t, r1, subject, avroRecord("P", `{"name":"a","type":"int"}`, `{"name":"b","type":"int","default":0}`))
	if _, err := r1.DeleteVersion(ctx, subject, 1, false); err != nil {
		t.Fatal(err)
	}
	if err := r1.SetConfig(ctx, subject, schema.Full); err != nil {
		t.Fatal(err)
	}
	// A permanently deleted schema's id must not come back either.
	gone := uniqueSubject(t)
	g := mustRegister(t, r1, gone, avroRecord("Gone", `{"name":"a","type":"int"}`))
	if _, err := r1.DeleteSubject(ctx, gone, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r1.DeleteSubject(ctx, gone, true); err != nil {
		t.Fatal(err)
	}
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}

	// Same server, new registry.
	r2 := newRegistry(t, store)
	if vs, err := r2.Versions(subject, true); err != nil || len(vs) != 2 {
		t.Fatalf("new registry on the same bucket: versions = %v, %v", vs, err)
	}
	_ = r2.Close()

	// New server process state from the same directory.
	ns.Stop()
	ns2 := schematest.Start(t, dir)
	store2, err := schema.NewKVStore(ctx, ns2.Connect(t), schema.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	r3 := newRegistry(t, store2)
	assertState(t, r3, subject, v1, v2)
	if _, err := r3.SchemaByID(g.ID); err == nil {
		t.Fatalf("permanently deleted id %d readable after restart", g.ID)
	}
	fresh := mustRegister(t, r3, uniqueSubject(t), avroRecord("Fresh", `{"name":"z","type":"int"}`))
	if fresh.ID <= g.ID {
		t.Fatalf("id %d after restart reuses or precedes the deleted id %d", fresh.ID, g.ID)
	}
}

// TestKVTwoRegistriesNeverShareAnID registers from two registries on one
// bucket at once.
func TestKVTwoRegistriesNeverShareAnID(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	ns := schematest.Start(t, "")
	storeA, err := schema.NewKVStore(ctx, ns.Connect(t), "shared")
	if err != nil {
		t.Fatal(err)
	}
	storeB, err := schema.NewKVStore(ctx, ns.Connect(t), "shared")
	if err != nil {
		t.Fatal(err)
	}
	a, b := newRegistry(t, storeA), newRegistry(t, storeB)
	const n = 16
	ids := make([]int, 2*n)
	var wg sync.WaitGroup
	for i := range 2 * n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			reg := a
			if i%2 == 1 {
				reg = b
			}
			sv, err := reg.Register(ctx, fmt.Sprintf("kv-%d", i), avroRecord(fmt.Sprintf("K%d", i), `{"name":"a","type":"int"}`), schema.RegisterOptions{})
			if err != nil {
				t.Errorf("register %d: %v", i, err)
				return
			}
			ids[i] = sv.ID
		}()
	}
	wg.Wait()
	seen := map[int]int{}
	for i, id := range ids {
		if j, dup := seen[id]; dup {
			t.Fatalf("id %d handed out to registrations %d and %d", id, j, i)
		}
		seen[id] = i
	}
	// Both see every subject once the watch delivers.
	if err := pollUntil(ctx, fmt.Sprintf("both registries list %d subjects", 2*n), func() bool {
		return len(a.Subjects(false, "kv-")) == 2*n && len(b.Subjects(false, "kv-")) == 2*n
	}); err != nil {
		t.Fatal(err)
	}
}
