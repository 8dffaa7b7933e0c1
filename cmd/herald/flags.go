package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/heraldhq/herald/internal/localstate"
)

// applySettings gives every flag of cmd that the user did not set on the
// command line the value of its HERALD_* environment variable (--data-dir
// reads HERALD_DATA_DIR), else the value of the same key in the config
// file (--config, $HERALD_CONFIG), so the precedence is flags >
// environment > config file > defaults.
func applySettings(cmd *cobra.Command, configPath string) error {
	file, err := readConfig(configPath)
	if err != nil {
		return err
	}
	apply := func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "config" {
			return
		}
		key := "HERALD_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(key); ok {
			if e := f.Value.Set(v); e != nil {
				err = fmt.Errorf("%s=%q: %w", key, v, e)
			}
			return
		}
		v, ok := file[f.Name]
		if !ok {
			return
		}
		delete(file, f.Name)
		for _, s := range v {
			if e := f.Value.Set(s); e != nil {
				err = fmt.Errorf("config %s: %q: %q: %w", configPath, f.Name, s, e)
				return
			}
		}
	}
	cmd.Flags().VisitAll(apply)
	cmd.InheritedFlags().VisitAll(apply)
	if err != nil {
		return err
	}
	for k := range file {
		if cmd.Flags().Lookup(k) == nil && cmd.InheritedFlags().Lookup(k) == nil && !knownFlag(cmd.Root(), k) {
			return fmt.Errorf("config %s: unknown setting %q (keys are flag names, for example \"data-dir\")", configPath, k)
		}
	}
	return nil
}

// readConfig reads a JSON object whose keys are flag names and whose
// values are strings, numbers, booleans or (for repeatable flags) arrays
// of those. An empty path reads nothing.
func readConfig(path string) (map[string][]string, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var raw map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("config %s: want a JSON object of flag names to values: %w", path, err)
	}
	out := make(map[string][]string, len(raw))
	for k, v := range raw {
		vals := []any{v}
		if arr, ok := v.([]any); ok {
			vals = arr
		}
		for _, x := range vals {
			switch t := x.(type) {
			case string:
				out[k] = append(out[k], t)
			case json.Number:
				out[k] = append(out[k], t.String())
			case bool:
				out[k] = append(out[k], strconv.FormatBool(t))
			default:
				return nil, fmt.Errorf("config %s: %q: want a string, number, boolean or an array of those", path, k)
			}
		}
	}
	return out, nil
}

// knownFlag reports whether any command under root has a flag named name,
// so one config file can serve several commands.
func knownFlag(root *cobra.Command, name string) bool {
	if root.Flags().Lookup(name) != nil || root.PersistentFlags().Lookup(name) != nil {
		return true
	}
	for _, c := range root.Commands() {
		if knownFlag(c, name) {
			return true
		}
	}
	return false
}

// brokerURL resolves the broker URL: --url, $HERALD_URL (via applyEnv), the
// local herald recorded by serve/dev, then nats://127.0.0.1:4222.
func (a *app) brokerURL() string {
	if a.url != "" {
		return a.url
	}
	if s, err := localstate.Read(); err == nil {
		if s.BrokerURL != "" {
			return s.BrokerURL
		}
		if s.NATSURL != "" {
			return s.NATSURL
		}
	}
	return "nats://127.0.0.1:4222"
}

// checkOutput validates -o.
func (a *app) checkOutput() error {
	switch a.output {
	case "text", "json":
		return nil
	}
	return fmt.Errorf("--output %q: want text or json", a.output)
}
