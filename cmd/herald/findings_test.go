package main

import (
	"net"
	"strings"
	"testing"
	"time"
)

// TestPubRefusesInvalidJSON: data that is not JSON is not published as
// application/json.
func TestPubRefusesInvalidJSON(t *testing.T) {
	t.Parallel()
	for _, ct := range []string{"application/json", "application/cloudevents+json", "application/vnd.shop+json"} {
		_, errOut, err := runHerald(t, "", "pub", "--url", "nats://"+closedPort(t), "--topic", "t", "--type", "x.v1", "--content-type", ct, "{not json")
		if err == nil || !strings.Contains(errOut, "not valid JSON") {
			t.Fatalf("--content-type %s with invalid data: err %v, stderr %s", ct, err, errOut)
		}
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// TestAdminCommandsGiveUpOnASilentServer: lag and dlq stop waiting for a
// server that accepts connections and never answers.
func TestAdminCommandsGiveUpOnASilentServer(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { _ = c.Close() }) // hold it open, say nothing
		}
	}()
	url := "http://" + ln.Addr().String()
	for _, args := range [][]string{{"lag"}, {"dlq", "list"}, {"dlq", "show", "orders.dlq:1"}} {
		start := time.Now()
		_, errOut, err := runHerald(t, "", append(args, "--admin-url", url, "--timeout", "1s")...)
		d := time.Since(start)
		if err == nil || !strings.Contains(errOut, "did not answer") {
			t.Fatalf("herald %v: err %v, stderr %s", args, err, errOut)
		}
		if d > 15*time.Second {
			t.Fatalf("herald %v took %v with --timeout 1s", args, d)
		}
	}
	// The default is bounded too.
	cmd := newRootCmd()
	if f := cmd.PersistentFlags().Lookup("timeout"); f == nil || f.DefValue != "30s" {
		t.Fatalf("--timeout default: %+v", f)
	}
}
