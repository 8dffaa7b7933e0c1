package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// TestBenchE2EPrintsEverySide runs a short paced `herald bench e2e` and
// reads its table: one row per loop, the publish-call latency on the
// loops that wait for confirmations, nothing lost; --json carries the
// same figures.
func TestBenchE2EPrintsEverySide(t *testing.T) {
	args := []string{"bench", "e2e", "--duration", "300ms", "--rate", "400", "--publishers", "4", "--batch", "1", "--keys", "8"}
	out, errOut, err := runHerald(t, "", args...)
	if err != nil {
		t.Fatalf("bench e2e: %v\n%s%s", err, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) < 4 || !strings.Contains(lines[0], "pub p99 µs") {
		t.Fatalf("no table with publish latency:\n%s", out)
	}
	rows := map[string][]string{}
	for _, l := range lines[1:4] {
		f := strings.Fields(l)
		if len(f) != 10 {
			t.Fatalf("row %q has %d columns, want 10", l, len(f))
		}
		rows[f[0]] = f
	}
	for _, name := range []string{"plain", "raw", "herald"} {
		f, ok := rows[name]
		if !ok {
			t.Fatalf("no %s row:\n%s", name, out)
		}
		if f[7] != "0" {
			t.Errorf("%s lost %s events", name, f[7])
		}
		p99 := f[9]
		if name == "plain" {
			if p99 != "-" {
				t.Errorf("plain publishes asynchronously but shows a publish p99 of %s", p99)
			}
			continue
		}
		if v, err := strconv.Atoi(p99); err != nil || v <= 0 {
			t.Errorf("%s publish p99 %q, want a positive number of µs", name, p99)
		}
	}
	jsonOut, errOut, err := runHerald(t, "", append(args, "--json")...)
	if err != nil {
		t.Fatalf("bench e2e --json: %v\n%s", err, errOut)
	}
	var res struct {
		Herald struct {
			Handled  int     `json:"handled"`
			PubP99us float64 `json:"pub_p99_us"`
		} `json:"herald"`
		Plain struct {
			PubP99us float64 `json:"pub_p99_us"`
		} `json:"plain"`
	}
	if err := json.Unmarshal([]byte(jsonOut), &res); err != nil {
		t.Fatalf("--json: %v\n%s", err, jsonOut)
	}
	if res.Herald.Handled == 0 || res.Herald.PubP99us <= 0 || res.Plain.PubP99us != 0 {
		t.Errorf("--json: %+v", res)
	}
}
