package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sj "github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/heraldhq/herald/internal/testenv"
)

// TestAsyncAPIOfTheShop exports the AsyncAPI document of `herald dev`
// running the shop example and validates it against the AsyncAPI 3.0.0
// JSON Schema shipped in server/web/testdata.
func TestAsyncAPIOfTheShop(t *testing.T) {
	t.Parallel()
	testenv.Need(t, "PostgreSQL", testenv.HostPort(testenv.PostgresURL))
	_, stateFile, logs := startHerald(t, "dev", "--rate", "20", "--postgres", testenv.PostgresURL)
	wantTypes := []string{"shop.order.placed.v1", "shop.payment.taken.v1", "shop.stock.reserved.v1", "shop.order.shipped.v1"}
	var out string
	deadline := time.Now().Add(60 * time.Second)
	for {
		var errOut string
		var err error
		out, errOut, err = runWithState(t, stateFile, "asyncapi")
		if err != nil {
			t.Fatalf("herald asyncapi: %v\n%s\nlogs:\n%s", err, errOut, logs)
		}
		missing := ""
		for _, typ := range wantTypes {
			if !strings.Contains(out, `"name": "`+typ+`"`) {
				missing = typ
			}
		}
		if missing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the export has no message %s after 60s of the shop's traffic:\n%s", missing, out)
		}
		time.Sleep(200 * time.Millisecond)
	}

	f, err := os.Open(filepath.Join("..", "..", "server", "web", "testdata", "asyncapi-3.0.0.json"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sdoc, err := sj.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := sj.NewCompiler()
	if err := c.AddResource("asyncapi-3.0.0.json", sdoc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("asyncapi-3.0.0.json")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := sj.UnmarshalJSON(bytes.NewReader([]byte(out)))
	if err != nil {
		t.Fatalf("the export is not JSON: %v\n%s", err, out)
	}
	if err := sch.Validate(doc); err != nil {
		t.Fatalf("the shop's export does not validate against AsyncAPI 3.0.0: %v\n%s", err, out)
	}
	var got struct {
		AsyncAPI   string `json:"asyncapi"`
		Channels   map[string]struct{ Address string }
		Operations map[string]struct{ Action string }
	}
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatal(err)
	}
	if got.AsyncAPI != "3.0.0" {
		t.Fatalf("asyncapi %q", got.AsyncAPI)
	}
	for _, topic := range []string{"shop.orders", "shop.payments", "shop.inventory", "shop.shipping"} {
		if got.Channels[topic].Address != topic {
			t.Fatalf("no channel for topic %s: %v", topic, got.Channels)
		}
	}
	var sends, receives int
	for _, op := range got.Operations {
		switch op.Action {
		case "send":
			sends++
		case "receive":
			receives++
		}
	}
	if sends < len(wantTypes) || receives == 0 {
		t.Fatalf("%d send and %d receive operations, want at least %d and 1", sends, receives, len(wantTypes))
	}

	file := filepath.Join(t.TempDir(), "shop.asyncapi.json")
	if _, errOut, err := runWithState(t, stateFile, "asyncapi", "--out", file, "--sample", "10"); err != nil {
		t.Fatalf("asyncapi --out: %v\n%s", err, errOut)
	}
	if b, err := os.ReadFile(file); err != nil || !json.Valid(b) {
		t.Fatalf("asyncapi --out wrote %d bytes: %v", len(b), err)
	}
	if _, errOut, err := runWithState(t, stateFile, "asyncapi", "--sample", "0"); err == nil || !strings.Contains(errOut, "--sample 0") {
		t.Fatalf("asyncapi --sample 0: %v\n%s", err, errOut)
	}
}
