package schema_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/heraldhq/herald/schema"
)

func avroRecord(name string, fields ...string) schema.Schema {
	return schema.Schema{Text: fmt.Sprintf(`{"type":"record","name":%q,"fields":[%s]}`, name, strings.Join(fields, ","))}
}

func TestRegisterAssignsStableIDs(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, nil)
	ctx := t.Context()
	a, b := uniqueSubject(t), uniqueSubject(t)
	s1 := avroRecord("A", `{"name":"x","type":"int"}`)
	v1 := mustRegister(t, r, a, s1)
	if v1.Version != 1 || v1.ID <= 0 {
		t.Fatalf("first registration = %+v, want version 1 and a positive id", v1)
	}
	// Identical schema (other whitespace): same id, same version.
	again := mustRegister(t, r, a, schema.Schema{Text: "  " + strings.ReplaceAll(s1.Text, ",", " , ") + "\n"})
	if again.ID != v1.ID || again.Version != 1 {
		t.Fatalf("re-registration = %+v, want id %d version 1", again, v1.ID)
	}
	// Same schema in another subject keeps its id.
	other := mustRegister(t, r, b, s1)
	if other.ID != v1.ID || other.Version != 1 {
		t.Fatalf("same schema in subject %q = %+v, want id %d version 1", b, other, v1.ID)
	}
	v2 := mustRegister(t, r, a, avroRecord("A", `{"name":"x","type":"int"}`, `{"name":"y","type":"int","default":0}`))
	if v2.Version != 2 || v2.ID == v1.ID {
		t.Fatalf("second schema = %+v, want version 2 and a new id", v2)
	}
	got, err := r.SchemaByID(v2.ID)
	if err != nil || !strings.Contains(got.Text, `"y"`) {
		t.Fatalf("SchemaByID(%d) = %+v, %v", v2.ID, got, err)
	}
	subs, err := r.SubjectsByID(v1.ID, false)
	if err != nil || !slices.Equal(subs, []string{a, b}) && !slices.Equal(subs, []string{b, a}) {
		t.Fatalf("SubjectsByID = %v, %v; want %q and %q", subs, err, a, b)
	}
	latest, err := r.Version(a, schema.Latest, false)
	if err != nil || latest.Version != 2 || latest.ID != v2.ID {
		t.Fatalf("latest = %+v, %v", latest, err)
	}
	if _, err := r.Version(a, 7, false); !errors.Is(err, schema.ErrVersionNotFound) {
		t.Fatalf("version 7: err = %v, want ErrVersionNotFound", err)
	}
	if _, err := r.Versions("nope-"+a, false); !errors.Is(err, schema.ErrSubjectNotFound) {
		t.Fatalf("unknown subject: err = %v, want ErrSubjectNotFound", err)
	}
	sv, err := r.Lookup(a, s1, false, false)
	if err != nil || sv.Version != 1 || sv.ID != v1.ID {
		t.Fatalf("Lookup = %+v, %v", sv, err)
	}
	if _, err := r.Lookup(a, avroRecord("Z", `{"name":"q","type":"int"}`), false, false); !errors.Is(err, schema.ErrSchemaNotFound) {
		t.Fatalf("Lookup of an unknown schema: err = %v, want ErrSchemaNotFound", err)
	}
	if _, err := r.Register(ctx, a, schema.Schema{Text: `{"type":"record"`}, schema.RegisterOptions{}); !errors.Is(err, schema.ErrInvalidSchema) {
		t.Fatalf("broken schema: err = %v, want ErrInvalidSchema", err)
	}
	if _, err := r.Register(ctx, "", s1, schema.RegisterOptions{}); !errors.Is(err, schema.ErrInvalidSubject) {
		t.Fatalf("empty subject: err = %v, want ErrInvalidSubject", err)
	}
}

func TestIncompatibleRegistrationNamesVersionAndField(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, nil)
	ctx := t.Context()
	subject := uniqueSubject(t)
	mustRegister(t, r, subject, avroRecord("Order", `{"name":"id","type":"string"}`, `{"name":"total","type":"long"}`))
	if err := r.SetConfig(ctx, subject, schema.Forward); err != nil {
		t.Fatal(err)
	}
	_, err := r.Register(ctx, subject, avroRecord("Order", `{"name":"id","type":"string"}`), schema.RegisterOptions{})
	if !errors.Is(err, schema.ErrIncompatible) {
		t.Fatalf("err = %v, want ErrIncompatible", err)
	}
	for _, want := range []string{`version 1`, `field "total" removed without a default`, "FORWARD"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestTransitiveChecksNewestFirst(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, nil)
	ctx := t.Context()
	subject := uniqueSubject(t)
	if err := r.SetConfig(ctx, subject, schema.None); err != nil {
		t.Fatal(err)
	}
	mustRegister(t, r, subject, avroRecord("R", `{"name":"a","type":"int"}`))
	mustRegister(t, r, subject, avroRecord("R", `{"name":"a","type":"string"}`))
	next := avroRecord("R", `{"name":"a","type":"string"}`, `{"name":"b","type":"int","default":0}`)
	for _, tc := range []struct {
		level schema.Level
		want  bool
	}{{schema.Backward, true}, {schema.BackwardTransitive, false}, {schema.Full, true}, {schema.FullTransitive, false}, {schema.ForwardTransitive, false}} {
		if err := r.SetConfig(ctx, subject, tc.level); err != nil {
			t.Fatal(err)
		}
		res, err := r.Check(ctx, subject, schema.CheckAll, next, false)
		if err != nil {
			t.Fatal(err)
		}
		if res.Compatible != tc.want {
			t.Fatalf("%s: compatible = %v, want %v (%q)", tc.level, res.Compatible, tc.want, res.Messages)
		}
		if !tc.want && !strings.Contains(res.Messages[0], "version 1") {
			t.Fatalf("%s: messages %q do not name version 1", tc.level, res.Messages)
		}
	}
	// Both versions incompatible: version 2 is reported before version 1.
	if err := r.SetConfig(ctx, subject, schema.BackwardTransitive); err != nil {
		t.Fatal(err)
	}
	res, err := r.Check(ctx, subject, schema.CheckAll, avroRecord("R", `{"name":"a","type":"boolean"}`), false)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Messages) != 2 || !strings.HasPrefix(res.Messages[0], "version 2") || !strings.HasPrefix(res.Messages[1], "version 1") {
		t.Fatalf("messages = %q, want version 2 then version 1", res.Messages)
	}
	// Against one version only.
	res, err = r.Check(ctx, subject, 2, next, false)
	if err != nil || !res.Compatible {
		t.Fatalf("check against version 2 = %+v, %v; want compatible", res, err)
	}
}

func TestDeleteSoftThenPermanent(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, nil)
	ctx := t.Context()
	subject := uniqueSubject(t)
	v1 := mustRegister(t, r, subject, avroRecord("D", `{"name":"a","type":"int"}`))
	v2 := mustRegister(t, r, subject, avroRecord("D", `{"name":"a","type":"int"}`, `{"name":"b","type":"int","default":1}`))

	if _, err := r.DeleteVersion(ctx, subject, 1, true); !errors.Is(err, schema.ErrVersionNotSoftDeleted) {
		t.Fatalf("permanent delete first: err = %v, want ErrVersionNotSoftDeleted", err)
	}
	if v, err := r.DeleteVersion(ctx, subject, 1, false); err != nil || v != 1 {
		t.Fatalf("soft delete = %d, %v", v, err)
	}
	if _, err := r.DeleteVersion(ctx, subject, 1, false); !errors.Is(err, schema.ErrVersionSoftDeleted) {
		t.Fatalf("soft delete twice: err = %v, want ErrVersionSoftDeleted", err)
	}
	if vs, _ := r.Versions(subject, false); !slices.Equal(vs, []int{2}) {
		t.Fatalf("live versions = %v, want [2]", vs)
	}
	if vs, _ := r.Versions(subject, true); !slices.Equal(vs, []int{1, 2}) {
		t.Fatalf("versions with deleted = %v, want [1 2]", vs)
	}
	// A soft-deleted version's schema stays readable by id.
	if _, err := r.SchemaByID(v1.ID); err != nil {
		t.Fatalf("SchemaByID of soft-deleted: %v", err)
	}
	if _, err := r.DeleteSubject(ctx, subject, true); !errors.Is(err, schema.ErrSubjectNotSoftDeleted) {
		t.Fatalf("permanent subject delete first: err = %v", err)
	}
	if vs, err := r.DeleteSubject(ctx, subject, false); err != nil || !slices.Equal(vs, []int{2}) {
		t.Fatalf("soft subject delete = %v, %v; want [2]", vs, err)
	}
	if _, err := r.DeleteSubject(ctx, subject, false); !errors.Is(err, schema.ErrSubjectSoftDeleted) {
		t.Fatalf("soft subject delete twice: err = %v", err)
	}
	if slices.Contains(r.Subjects(false, ""), subject) || !slices.Contains(r.Subjects(true, ""), subject) {
		t.Fatalf("subjects listing does not reflect the soft delete")
	}
	if vs, err := r.DeleteSubject(ctx, subject, true); err != nil || !slices.Equal(vs, []int{1, 2}) {
		t.Fatalf("permanent subject delete = %v, %v; want [1 2]", vs, err)
	}
	if _, err := r.SchemaByID(v2.ID); !errors.Is(err, schema.ErrSchemaNotFound) {
		t.Fatalf("SchemaByID after permanent delete: err = %v, want ErrSchemaNotFound", err)
	}
	// Ids are never reused, and the same schema gets its old id back.
	v3 := mustRegister(t, r, subject, avroRecord("D", `{"name":"c","type":"int"}`))
	if v3.ID <= v2.ID || v3.Version != 1 {
		t.Fatalf("after permanent delete: %+v, want a fresh id above %d and version 1", v3, v2.ID)
	}
	back := mustRegister(t, r, uniqueSubject(t), avroRecord("D", `{"name":"a","type":"int"}`))
	if back.ID != v1.ID {
		t.Fatalf("re-registered schema got id %d, want its old id %d", back.ID, v1.ID)
	}
}

func TestReferences(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, nil)
	ctx := t.Context()
	cust := uniqueSubject(t)
	order := uniqueSubject(t)
	c := mustRegister(t, r, cust, schema.Schema{Text: `{"type":"record","name":"Customer","namespace":"shop","fields":[{"name":"name","type":"string"}]}`})
	o := mustRegister(t, r, order, schema.Schema{
		Text:       `{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"customer","type":"shop.Customer"}]}`,
		References: []schema.Reference{{Name: "shop.Customer", Subject: cust, Version: 1}},
	})
	ids, err := r.ReferencedBy(cust, 1)
	if err != nil || !slices.Equal(ids, []int{o.ID}) {
		t.Fatalf("ReferencedBy = %v, %v; want [%d]", ids, err, o.ID)
	}
	if _, err := r.DeleteVersion(ctx, cust, 1, false); !errors.Is(err, schema.ErrReferenceExists) {
		t.Fatalf("deleting a referenced version: err = %v, want ErrReferenceExists", err)
	}
	if _, err := r.Register(ctx, uniqueSubject(t), schema.Schema{
		Text:       `{"type":"record","name":"X","fields":[{"name":"c","type":"shop.Customer"}]}`,
		References: []schema.Reference{{Name: "shop.Customer", Subject: cust, Version: 9}},
	}, schema.RegisterOptions{}); !errors.Is(err, schema.ErrInvalidSchema) {
		t.Fatalf("reference to a missing version: err = %v, want ErrInvalidSchema", err)
	}
	if _, err := r.Register(ctx, uniqueSubject(t), schema.Schema{
		Text: `{"type":"record","name":"X","fields":[{"name":"c","type":"shop.Customer"}]}`,
	}, schema.RegisterOptions{}); !errors.Is(err, schema.ErrInvalidSchema) {
		t.Fatalf("unresolved name without reference: err = %v, want ErrInvalidSchema", err)
	}
	if _, err := r.DeleteVersion(ctx, order, 1, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.DeleteVersion(ctx, cust, 1, false); err != nil {
		t.Fatalf("delete once no live schema references it: %v", err)
	}
	_ = c
}

func TestConfigAndModes(t *testing.T) {
	t.Parallel()
	r := newRegistry(t, nil)
	ctx := t.Context()
	subject := uniqueSubject(t)
	if l, err := r.Config("", false); err != nil || l != schema.Backward {
		t.Fatalf("global level = %q, %v; want BACKWARD", l, err)
	}
	if _, err := r.Config(subject, false); !errors.Is(err, schema.ErrSubjectLevelConfigMissing) {
		t.Fatalf("subject level unset: err = %v", err)
	}
	if l, _ := r.Config(subject, true); l != schema.Backward {
		t.Fatalf("defaultToGlobal = %q", l)
	}
	if err := r.SetConfig(ctx, subject, "SIDEWAYS"); !errors.Is(err, schema.ErrInvalidCompatibilityLevel) {
		t.Fatalf("bad level: err = %v", err)
	}
	if err := r.SetConfig(ctx, subject, schema.FullTransitive); err != nil {
		t.Fatal(err)
	}
	if l, _ := r.Config(subject, false); l != schema.FullTransitive {
		t.Fatalf("subject level = %q", l)
	}
	if prev, err := r.DeleteConfig(ctx, subject); err != nil || prev != schema.FullTransitive {
		t.Fatalf("DeleteConfig = %q, %v", prev, err)
	}

	mustRegister(t, r, subject, avroRecord("M", `{"name":"a","type":"int"}`))
	if err := r.SetMode(ctx, subject, "WRITEONLY", false); !errors.Is(err, schema.ErrInvalidMode) {
		t.Fatalf("bad mode: err = %v", err)
	}
	if err := r.SetMode(ctx, subject, schema.ReadOnly, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Register(ctx, subject, avroRecord("M", `{"name":"b","type":"int","default":0}`), schema.RegisterOptions{}); !errors.Is(err, schema.ErrOperationNotPermitted) {
		t.Fatalf("register in READONLY: err = %v", err)
	}
	if _, err := r.DeleteVersion(ctx, subject, 1, false); !errors.Is(err, schema.ErrOperationNotPermitted) {
		t.Fatalf("delete in READONLY: err = %v", err)
	}
	if err := r.SetMode(ctx, subject, schema.Import, false); !errors.Is(err, schema.ErrOperationNotPermitted) {
		t.Fatalf("IMPORT on a non-empty subject without force: err = %v", err)
	}
	if _, err := r.DeleteMode(ctx, subject); err != nil {
		t.Fatal(err)
	}

	// IMPORT: chosen id and version, no compatibility check; later ids go above it.
	imp := uniqueSubject(t)
	if err := r.SetMode(ctx, imp, schema.Import, false); err != nil {
		t.Fatal(err)
	}
	sv, err := r.Register(ctx, imp, avroRecord("I", `{"name":"a","type":"int"}`), schema.RegisterOptions{ID: 5000, Version: 7})
	if err != nil || sv.ID != 5000 || sv.Version != 7 {
		t.Fatalf("import = %+v, %v", sv, err)
	}
	if _, err := r.Register(ctx, imp, avroRecord("I2", `{"name":"z","type":"int"}`), schema.RegisterOptions{ID: 5000}); !errors.Is(err, schema.ErrIDDoesNotMatch) {
		t.Fatalf("import with a taken id: err = %v", err)
	}
	if _, err := r.Register(ctx, subject, avroRecord("N", `{"name":"a","type":"int"}`), schema.RegisterOptions{ID: 77}); !errors.Is(err, schema.ErrOperationNotPermitted) {
		t.Fatalf("choosing an id in READWRITE: err = %v", err)
	}
	// The same schema imported under another id into another subject keeps that id.
	imp2 := uniqueSubject(t)
	if err := r.SetMode(ctx, imp2, schema.Import, false); err != nil {
		t.Fatal(err)
	}
	sv2, err := r.Register(ctx, imp2, avroRecord("I", `{"name":"a","type":"int"}`), schema.RegisterOptions{ID: 6000})
	if err != nil || sv2.ID != 6000 || sv2.Version != 1 {
		t.Fatalf("import of a known schema under a new id = %+v, %v", sv2, err)
	}
	next := mustRegister(t, r, uniqueSubject(t), avroRecord("After", `{"name":"a","type":"int"}`))
	if next.ID <= 6000 {
		t.Fatalf("id after an import of 6000 = %d, want above", next.ID)
	}
}

func TestRestartKeepsEverything(t *testing.T) {
	t.Parallel()
	store := schema.NewMemoryStore()
	ctx := t.Context()
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
	if err := r1.Close(); err != nil {
		t.Fatal(err)
	}
	r2 := newRegistry(t, store)
	assertState(t, r2, subject, v1, v2)
}

// assertState checks what TestRestartKeepsEverything and the KV restart
// test wrote.
func assertState(t *testing.T, r *schema.Registry, subject string, v1, v2 schema.SubjectVersion) {
	t.Helper()
	if vs, err := r.Versions(subject, true); err != nil || !slices.Equal(vs, []int{1, 2}) {
		t.Fatalf("versions after restart = %v, %v", vs, err)
	}
	if vs, _ := r.Versions(subject, false); !slices.Equal(vs, []int{2}) {
		t.Fatalf("live versions after restart = %v, want [2] (version 1 soft-deleted)", vs)
	}
	for _, v := range []schema.SubjectVersion{v1, v2} {
		got, err := r.SchemaByID(v.ID)
		if err != nil || got.Text != v.Schema.Text {
			t.Fatalf("SchemaByID(%d) after restart = %+v, %v", v.ID, got, err)
		}
	}
	if l, _ := r.Config(subject, false); l != schema.Full {
		t.Fatalf("level after restart = %q, want FULL", l)
	}
	v3 := mustRegister(t, r, subject, avroRecord("P", `{"name":"a","type":"int"}`, `{"name":"b","type":"int","default":0}`, `{"name":"c","type":"int","default":0}`))
	if v3.Version != 3 || v3.ID <= v2.ID {
		t.Fatalf("after restart: %+v, want version 3 and an id above %d", v3, v2.ID)
	}
}

func TestTwoRegistriesShareAStore(t *testing.T) {
	t.Parallel()
	store := schema.NewMemoryStore()
	a := newRegistry(t, store)
	b := newRegistry(t, store)
	ctx := t.Context()
	const n = 20
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
			sv, err := reg.Register(ctx, fmt.Sprintf("%s-%d", t.Name(), i), avroRecord(fmt.Sprintf("T%d", i), `{"name":"a","type":"int"}`), schema.RegisterOptions{})
			if err != nil {
				t.Errorf("register %d: %v", i, err)
				return
			}
			ids[i] = sv.ID
		}()
	}
	wg.Wait()
	seen := map[int]bool{}
	for i, id := range ids {
		if seen[id] {
			t.Fatalf("id %d handed out twice (registration %d)", id, i)
		}
		seen[id] = true
	}
	// Each registry sees the other's writes once the watch delivers them.
	last := ids[2*n-1]
	if err := pollUntil(ctx, "registry a sees an id registered through b", func() bool {
		_, err := a.SchemaByID(last)
		return err == nil
	}); err != nil {
		t.Fatal(err)
	}
	// Both register one schema into one subject at once: one version.
	subject := uniqueSubject(t)
	s := avroRecord("Same", `{"name":"a","type":"int"}`)
	var sa, sb schema.SubjectVersion
	var ea, eb error
	wg.Add(2)
	go func() { defer wg.Done(); sa, ea = a.Register(ctx, subject, s, schema.RegisterOptions{}) }()
	go func() { defer wg.Done(); sb, eb = b.Register(ctx, subject, s, schema.RegisterOptions{}) }()
	wg.Wait()
	if ea != nil || eb != nil {
		t.Fatalf("concurrent registration: %v, %v", ea, eb)
	}
	if sa.ID != sb.ID {
		t.Fatalf("one schema got two ids: %d and %d", sa.ID, sb.ID)
	}
	_ = context.Background
}
