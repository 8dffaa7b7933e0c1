//go:build stress

package consumer_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"testing"
)

// TestKeyOrderUnderContention runs the cross-instance ordering scenario
// again and again while busy processes keep every CPU loaded, so members
// are starved past their ack wait and handovers race redeliveries. It
// stops at the first event of a key handled out of order.
//
//	go test -tags stress -race -run TestKeyOrderUnderContention -timeout 60m ./consumer
//
// HERALD_STRESS_ITERATIONS sets the number of runs (default 50) and
// HERALD_STRESS_BUSY the busy processes (default two per CPU).
func TestKeyOrderUnderContention(t *testing.T) {
	iterations := envInt(t, "HERALD_STRESS_ITERATIONS", 50)
	busy := envInt(t, "HERALD_STRESS_BUSY", 2*runtime.NumCPU())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range busy {
		cmd := exec.CommandContext(ctx, "sh", "-c", "while :; do :; done")
		if err := cmd.Start(); err != nil {
			t.Fatalf("start a busy loop: %v", err)
		}
		t.Cleanup(func() { _ = cmd.Wait() })
	}
	for i := range iterations {
		if !t.Run(fmt.Sprintf("run%02d", i+1), keyOrderAcrossInstances) {
			t.Fatalf("order broke in run %d of %d with %d busy processes", i+1, iterations, busy)
		}
	}
	t.Logf("%d runs with %d busy processes: every key in order", iterations, busy)
}

func envInt(t *testing.T, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}
