package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldhq/herald/schema"
	"github.com/heraldhq/herald/server/registry"
)

// startSchemaRegistry serves an in-memory registry on a loopback port.
func startSchemaRegistry(t *testing.T) string {
	t.Helper()
	reg, err := schema.New(t.Context(), schema.NewMemoryStore())
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(registry.NewHandler(reg))
	t.Cleanup(func() {
		srv.Close()
		_ = reg.Close()
	})
	return srv.URL
}

// runSchema runs `herald --registry-url URL args...` in process.
func runSchema(t *testing.T, url string, args ...string) (string, error) {
	t.Helper()
	root := newRootCmd()
	var out, errb bytes.Buffer
	root.SetOut(&out)
	root.SetErr(&errb)
	root.SetArgs(append([]string{"--registry-url", url}, args...))
	err := root.ExecuteContext(t.Context())
	return out.String(), err
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestSchemaCommands(t *testing.T) {
	t.Parallel()
	url := startSchemaRegistry(t)
	v1 := writeFile(t, "order.avsc", `{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"total","type":"long"}]}`)
	v2 := writeFile(t, "order2.avsc", `{"type":"record","name":"Order","fields":[{"name":"id","type":"string"},{"name":"total","type":"long"},{"name":"note","type":"string","default":""}]}`)
	bad := writeFile(t, "bad.avsc", `{"type":"record","name":"Order","fields":[{"name":"id","type":"string"}]}`)

	out, err := runSchema(t, url, "schema", "register", "orders-value", v1)
	if err != nil || !strings.Contains(out, "under orders-value: id 1") {
		t.Fatalf("register: %q, %v", out, err)
	}
	out, err = runSchema(t, url, "schema", "register", "orders-value", v2, "-o", "json")
	var reg struct {
		Subject string `json:"subject"`
		ID      int    `json:"id"`
	}
	if err != nil || json.Unmarshal([]byte(out), &reg) != nil || reg.ID != 2 || reg.Subject != "orders-value" {
		t.Fatalf("register -o json: %q, %v", out, err)
	}

	out, err = runSchema(t, url, "schema", "list")
	if err != nil || out != "orders-value\n" {
		t.Fatalf("list: %q, %v", out, err)
	}
	out, err = runSchema(t, url, "schema", "list", "orders-value", "-o", "json")
	if err != nil || strings.Join(strings.Fields(out), "") != "[1,2]" {
		t.Fatalf("list versions: %q, %v", out, err)
	}
	out, err = runSchema(t, url, "schema", "get", "orders-value", "1", "-o", "json")
	var got struct {
		Version    int         `json:"version"`
		ID         int         `json:"id"`
		SchemaType schema.Type `json:"schemaType"`
		Schema     string      `json:"schema"`
	}
	if err != nil || json.Unmarshal([]byte(out), &got) != nil || got.Version != 1 || got.ID != 1 || got.SchemaType != schema.Avro {
		t.Fatalf("get: %q, %v", out, err)
	}
	out, err = runSchema(t, url, "schema", "get", "--id", "2")
	if err != nil || !strings.Contains(out, `"note"`) {
		t.Fatalf("get --id: %q, %v", out, err)
	}

	out, err = runSchema(t, url, "schema", "config", "orders-value", "FORWARD")
	if err != nil || out != "orders-value: FORWARD\n" {
		t.Fatalf("config set: %q, %v", out, err)
	}
	out, err = runSchema(t, url, "schema", "config", "-o", "json")
	if err != nil || !strings.Contains(out, `"compatibilityLevel": "BACKWARD"`) {
		t.Fatalf("config global: %q, %v", out, err)
	}

	out, err = runSchema(t, url, "schema", "check", "orders-value", v2)
	if err != nil || !strings.Contains(out, "compatible with orders-value") {
		t.Fatalf("check compatible: %q, %v", out, err)
	}
	out, err = runSchema(t, url, "schema", "check", "orders-value", bad, "-o", "json")
	var ex exitError
	if !errors.As(err, &ex) || ex.code != 1 || !strings.Contains(out, `field \"total\" removed without a default`) {
		t.Fatalf("check incompatible: %q, %v", out, err)
	}

	out, err = runSchema(t, url, "schema", "diff", "orders-value", "1", "latest")
	if err != nil || !strings.Contains(out, "backward: compatible") || !strings.Contains(out, "forward: compatible") {
		t.Fatalf("diff 1 latest: %q, %v", out, err)
	}
	out, err = runSchema(t, url, "schema", "diff", "orders-value", "latest", bad, "-o", "json")
	var d diffOut
	if err != nil || json.Unmarshal([]byte(out), &d) != nil || len(d.Backward) != 0 || len(d.Forward) != 1 ||
		!strings.Contains(d.Forward[0], `field "total" removed without a default`) {
		t.Fatalf("diff latest file: %q, %v", out, err)
	}

	_, err = runSchema(t, url, "schema", "register", "orders-value", bad)
	if !errors.Is(err, schema.ErrIncompatible) || !strings.Contains(err.Error(), "removed without a default") {
		t.Fatalf("register incompatible: %v", err)
	}
}

func TestSchemaCommandErrors(t *testing.T) {
	t.Parallel()
	url := startSchemaRegistry(t)
	noext := writeFile(t, "schema.txt", `"int"`)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"schema", "register", "s", noext}, "--type"},
		{[]string{"schema", "register", "s", noext, "--type", "xml"}, "unknown schema type"},
		{[]string{"schema", "register", "s", filepath.Join(t.TempDir(), "missing.avsc")}, "read schema"},
		{[]string{"schema", "register", "s", noext, "--type", "avro", "--ref", "nonsense"}, "NAME=SUBJECT:VERSION"},
		{[]string{"schema", "get", "nope"}, "40401"},
		{[]string{"schema", "get", "s", "zero"}, "positive number"},
		{[]string{"schema", "config", "s", "SIDEWAYS"}, "invalid compatibility level"},
		{[]string{"schema", "diff", "s", "nothing-here", "1"}, "neither a schema file nor a version"},
	} {
		_, err := runSchema(t, url, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
	if _, err := runSchema(t, "ftp://nowhere", "schema", "list"); err == nil || !strings.Contains(err.Error(), "registry URL") {
		t.Errorf("bad registry URL: err = %v", err)
	}
}
