package registry_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/schema/schematest"
	"github.com/heraldhq/herald/server/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// startRegistry serves a registry on a JetStream KV store at a loopback
// address and returns its URL.
func startRegistry(t *testing.T) (string, *schema.Registry) {
	t.Helper()
	ns := schematest.Start(t, "")
	js := ns.Connect(t)
	store, err := schema.NewKVStore(t.Context(), js, "schemas_"+strings.ReplaceAll(t.Name(), "/", "_"))
	if err != nil {
		t.Fatal(err)
	}
	reg, err := schema.New(t.Context(), store)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(registry.NewHandler(reg))
	t.Cleanup(func() {
		srv.Close()
		_ = reg.Close()
	})
	return srv.URL, reg
}

const orderV1 = `{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"total","type":"long"}]}`
const orderV2 = `{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"},{"name":"total","type":"long"},{"name":"note","type":["null","string"],"default":null}]}`
const orderBad = `{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"id","type":"string"}]}`

func srCode(t *testing.T, err error) int {
	t.Helper()
	var re *sr.ResponseError
	if !errors.As(err, &re) {
		t.Fatalf("err = %v (%T), want *sr.ResponseError", err, err)
	}
	return re.ErrorCode
}

// TestFranzGoClient drives the registry with franz-go's sr client, a real
// third-party Confluent client.
func TestFranzGoClient(t *testing.T) {
	t.Parallel()
	url, _ := startRegistry(t)
	cl, err := sr.NewClient(sr.URLs(url))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	const subject = "orders-value"

	types, err := cl.SupportedTypes(ctx)
	if err != nil || len(types) != 3 {
		t.Fatalf("SupportedTypes = %v, %v", types, err)
	}

	// Register, and re-register the identical schema.
	ss1, err := cl.CreateSchema(ctx, subject, sr.Schema{Schema: orderV1})
	if err != nil {
		t.Fatalf("CreateSchema: %v", err)
	}
	if ss1.Version != 1 || ss1.ID <= 0 || ss1.Subject != subject || ss1.Type != sr.TypeAvro {
		t.Fatalf("CreateSchema = %+v", ss1)
	}
	id, err := cl.RegisterSchema(ctx, subject, sr.Schema{Schema: orderV1}, -1, -1)
	if err != nil || id != ss1.ID {
		t.Fatalf("re-register = %d, %v; want id %d", id, err, ss1.ID)
	}

	// Look up by id.
	byID, err := cl.SchemaByID(ctx, ss1.ID)
	if err != nil || byID.Schema != orderV1 || byID.Type != sr.TypeAvro {
		t.Fatalf("SchemaByID = %+v, %v", byID, err)
	}
	text, err := cl.SchemaTextByID(ctx, ss1.ID)
	if err != nil || text != orderV1 {
		t.Fatalf("SchemaTextByID = %q, %v", text, err)
	}
	if subs, err := cl.SubjectsByID(ctx, ss1.ID); err != nil || !slices.Equal(subs, []string{subject}) {
		t.Fatalf("SubjectsByID = %v, %v", subs, err)
	}
	if _, err := cl.SchemaByID(ctx, 999999); srCode(t, err) != 40403 {
		t.Fatalf("unknown id: code %d, want 40403", srCode(t, err))
	}

	// Versions.
	ss2, err := cl.CreateSchema(ctx, subject, sr.Schema{Schema: orderV2})
	if err != nil || ss2.Version != 2 {
		t.Fatalf("second version = %+v, %v", ss2, err)
	}
	vs, err := cl.SubjectVersions(ctx, subject)
	if err != nil || !slices.Equal(vs, []int{1, 2}) {
		t.Fatalf("SubjectVersions = %v, %v", vs, err)
	}
	latest, err := cl.SchemaByVersion(ctx, subject, -1)
	if err != nil || latest.Version != 2 || latest.ID != ss2.ID {
		t.Fatalf("latest = %+v, %v", latest, err)
	}
	found, err := cl.LookupSchema(ctx, subject, sr.Schema{Schema: orderV1})
	if err != nil || found.Version != 1 || found.ID != ss1.ID {
		t.Fatalf("LookupSchema = %+v, %v", found, err)
	}
	subs, err := cl.Subjects(ctx)
	if err != nil || !slices.Equal(subs, []string{subject}) {
		t.Fatalf("Subjects = %v, %v", subs, err)
	}
	all, err := cl.Schemas(ctx, subject)
	if err != nil || len(all) != 2 {
		t.Fatalf("Schemas = %v, %v", all, err)
	}

	// Compatibility checks.
	res, err := cl.CheckCompatibility(ctx, subject, -1, sr.Schema{Schema: orderV2})
	if err != nil || !res.Is {
		t.Fatalf("compatible check = %+v, %v", res, err)
	}
	if err := firstErr(cl.SetCompatibility(ctx, sr.SetCompatibility{Level: sr.CompatForward}, subject)); err != nil {
		t.Fatalf("SetCompatibility: %v", err)
	}
	res, err = cl.CheckCompatibility(sr.WithParams(ctx, sr.Verbose), subject, -2, sr.Schema{Schema: orderBad})
	if err != nil || res.Is || len(res.Messages) == 0 || !strings.Contains(res.Messages[0], `field "total" removed without a default`) {
		t.Fatalf("incompatible check = %+v, %v", res, err)
	}
	_, err = cl.CreateSchema(ctx, subject, sr.Schema{Schema: orderBad})
	if srCode(t, err) != 409 {
		t.Fatalf("registering an incompatible schema: code %d, want 409", srCode(t, err))
	}
	if _, err = cl.CreateSchema(ctx, subject, sr.Schema{Schema: `{"type":"nope"}`}); srCode(t, err) != 42201 {
		t.Fatalf("registering an invalid schema: code %d, want 42201", srCode(t, err))
	}

	// Config.
	cfg := cl.Compatibility(ctx, subject)
	if cfg[0].Err != nil || cfg[0].Level != sr.CompatForward {
		t.Fatalf("subject compatibility = %+v", cfg[0])
	}
	global := cl.Compatibility(ctx)
	if global[0].Err != nil || global[0].Level != sr.CompatBackward {
		t.Fatalf("global compatibility = %+v", global[0])
	}
	if err := firstErr(cl.SetCompatibility(ctx, sr.SetCompatibility{Level: sr.CompatFullTransitive})); err != nil {
		t.Fatal(err)
	}
	reset := cl.ResetCompatibility(ctx, subject)
	if reset[0].Err != nil || reset[0].Level != sr.CompatForward {
		t.Fatalf("ResetCompatibility = %+v", reset[0])
	}
	if c := cl.Compatibility(ctx, subject); srCode(t, c[0].Err) != 40408 {
		t.Fatalf("subject compatibility after reset: %v", c[0].Err)
	}
	if c := cl.Compatibility(sr.WithParams(ctx, sr.DefaultToGlobal), subject); c[0].Err != nil || c[0].Level != sr.CompatFullTransitive {
		t.Fatalf("defaultToGlobal = %+v", c[0])
	}
	if m := cl.SetMode(ctx, sr.ModeReadOnly, subject); m[0].Err != nil || m[0].Mode != sr.ModeReadOnly {
		t.Fatalf("SetMode = %+v", m[0])
	}
	if m := cl.Mode(ctx, subject); m[0].Err != nil || m[0].Mode != sr.ModeReadOnly {
		t.Fatalf("Mode = %+v", m[0])
	}
	if err := cl.DeleteSchema(ctx, subject, 1, sr.SoftDelete); srCode(t, err) != 42205 {
		t.Fatalf("delete in READONLY: %v", err)
	}
	if m := cl.ResetMode(ctx, subject); m[0].Err != nil {
		t.Fatalf("ResetMode: %v", m[0].Err)
	}

	// Soft and permanent delete.
	if err := cl.DeleteSchema(ctx, subject, 1, sr.HardDelete); srCode(t, err) != 40407 {
		t.Fatalf("hard delete before soft: %v", err)
	}
	if err := cl.DeleteSchema(ctx, subject, 1, sr.SoftDelete); err != nil {
		t.Fatalf("soft delete version 1: %v", err)
	}
	if err := cl.DeleteSchema(ctx, subject, 1, sr.SoftDelete); srCode(t, err) != 40406 {
		t.Fatalf("soft delete twice: %v", err)
	}
	if vs, _ := cl.SubjectVersions(ctx, subject); !slices.Equal(vs, []int{2}) {
		t.Fatalf("versions after soft delete = %v", vs)
	}
	if vs, _ := cl.SubjectVersions(sr.WithParams(ctx, sr.ShowDeleted), subject); !slices.Equal(vs, []int{1, 2}) {
		t.Fatalf("versions with deleted = %v", vs)
	}
	if _, err := cl.SchemaByID(ctx, ss1.ID); err != nil {
		t.Fatalf("a soft-deleted version's id must stay readable: %v", err)
	}
	if _, err := cl.DeleteSubject(ctx, subject, sr.HardDelete); srCode(t, err) != 40405 {
		t.Fatalf("hard subject delete before soft: %v", err)
	}
	deleted, err := cl.DeleteSubject(ctx, subject, sr.SoftDelete)
	if err != nil || !slices.Equal(deleted, []int{2}) {
		t.Fatalf("soft DeleteSubject = %v, %v", deleted, err)
	}
	if _, err := cl.SubjectVersions(ctx, subject); srCode(t, err) != 40401 {
		t.Fatalf("versions of a soft-deleted subject: %v", err)
	}
	if _, err := cl.DeleteSubject(ctx, subject, sr.SoftDelete); srCode(t, err) != 40404 {
		t.Fatalf("soft delete twice: %v", err)
	}
	deleted, err = cl.DeleteSubject(ctx, subject, sr.HardDelete)
	if err != nil || !slices.Equal(deleted, []int{1, 2}) {
		t.Fatalf("hard DeleteSubject = %v, %v", deleted, err)
	}
	if _, err := cl.SchemaByID(ctx, ss2.ID); srCode(t, err) != 40403 {
		t.Fatalf("id after permanent delete: %v", err)
	}
	subs, err = cl.Subjects(sr.WithParams(ctx, sr.ShowDeleted))
	if err != nil || len(subs) != 0 {
		t.Fatalf("subjects after permanent delete = %v, %v", subs, err)
	}
	// A new schema never reuses an id.
	ss3, err := cl.CreateSchema(ctx, subject, sr.Schema{Schema: orderBad})
	if err != nil || ss3.ID <= ss2.ID || ss3.Version != 1 {
		t.Fatalf("after permanent delete: %+v, %v", ss3, err)
	}
}

func firstErr(rs []sr.CompatibilityResult) error {
	for _, r := range rs {
		if r.Err != nil {
			return r.Err
		}
	}
	return nil
}

// TestFranzGoSerde encodes and decodes through franz-go's Serde with ids
// from this registry.
func TestFranzGoReferences(t *testing.T) {
	t.Parallel()
	url, _ := startRegistry(t)
	cl, err := sr.NewClient(sr.URLs(url))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cust, err := cl.CreateSchema(ctx, "customer", sr.Schema{Schema: `{"type":"record","name":"Customer","namespace":"shop","fields":[{"name":"name","type":"string"}]}`})
	if err != nil {
		t.Fatal(err)
	}
	ord, err := cl.CreateSchema(ctx, "order", sr.Schema{
		Schema:     `{"type":"record","name":"Order","namespace":"shop","fields":[{"name":"customer","type":"shop.Customer"}]}`,
		References: []sr.SchemaReference{{Name: "shop.Customer", Subject: "customer", Version: cust.Version}},
	})
	if err != nil {
		t.Fatalf("schema with a reference: %v", err)
	}
	if len(ord.References) != 1 || ord.References[0].Subject != "customer" {
		t.Fatalf("references = %+v", ord.References)
	}
	refs, err := cl.SchemaReferences(ctx, "customer", 1)
	if err != nil || len(refs) != 1 || refs[0].ID != ord.ID {
		t.Fatalf("SchemaReferences = %+v, %v", refs, err)
	}
	if err := cl.DeleteSchema(ctx, "customer", 1, sr.SoftDelete); srCode(t, err) != 42206 {
		t.Fatalf("deleting a referenced version: %v", err)
	}
}
