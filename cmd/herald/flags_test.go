package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSettingsPrecedence checks flags > HERALD_* environment > config file
// > defaults, repeatable flags from arrays, and errors for bad files.
func TestSettingsPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "herald.json")
	if err := os.WriteFile(cfg, []byte(`{"data-dir": "/from/file", "nats-addr": "127.0.0.1:5000",
		"http-addr": "127.0.0.1:5001", "topic-retention": ["a=max-age:1h", "b=max-msgs:5"], "output": "json"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("HERALD_NATS_ADDR", "127.0.0.1:6000")
	root := newRootCmd()
	serve, _, err := root.Find([]string{"serve"})
	if err != nil {
		t.Fatal(err)
	}
	if err := serve.ParseFlags([]string{"--config", cfg, "--http-addr", "127.0.0.1:7001"}); err != nil {
		t.Fatal(err)
	}
	if err := applySettings(serve, cfg); err != nil {
		t.Fatal(err)
	}
	get := func(name string) string {
		f := serve.Flags().Lookup(name)
		if f == nil {
			f = serve.InheritedFlags().Lookup(name)
		}
		return f.Value.String()
	}
	for name, want := range map[string]string{
		"data-dir":        "/from/file",     // file
		"nats-addr":       "127.0.0.1:6000", // environment beats file
		"http-addr":       "127.0.0.1:7001", // flag beats file
		"topic-retention": "[a=max-age:1h,b=max-msgs:5]",
		"output":          "json",
	} {
		if got := get(name); got != want {
			t.Errorf("--%s = %q, want %q", name, got, want)
		}
	}

	for name, tc := range map[string]struct{ body, want string }{
		"not json":     {`{`, "want a JSON object"},
		"unknown key":  {`{"data-dri": "x"}`, `unknown setting "data-dri"`},
		"object value": {`{"data-dir": {"x": 1}}`, "want a string, number, boolean"},
		"bad number":   {`{"demo-rate": "fast"}`, "demo-rate"},
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "c.json")
			if err := os.WriteFile(p, []byte(tc.body), 0o600); err != nil {
				t.Fatal(err)
			}
			root := newRootCmd()
			cmd, _, _ := root.Find([]string{"dev"})
			_ = cmd.ParseFlags(nil)
			err := applySettings(cmd, p)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}
