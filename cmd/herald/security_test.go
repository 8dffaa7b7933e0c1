package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/localstate"
	"github.com/heraldhq/herald/internal/testenv"
)

// lockedBuffer is a bytes.Buffer safe to read while a process writes it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// spawn starts herald with args and stateFile as its state file, its
// output in the returned buffer; a process still running when the test
// ends is killed.
func spawn(t *testing.T, stateFile string, args ...string) (*exec.Cmd, *lockedBuffer) {
	t.Helper()
	cmd := exec.Command(heraldBin, args...)
	cmd.Env = append(os.Environ(), "HERALD_STATE_FILE="+stateFile)
	out := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return cmd, out
}

// startHerald runs herald with args and a state file of its own, and waits
// until it recorded its addresses.
func startHerald(t *testing.T, args ...string) (localstate.State, string, *lockedBuffer) {
	t.Helper()
	stateFile := filepath.Join(t.TempDir(), "state.json")
	cmd, out := spawn(t, stateFile, args...)
	// Stopped gracefully first (cleanups run last-registered first); the
	// kill of spawn is for a process that did not stop.
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st localstate.State
		if b, err := os.ReadFile(stateFile); err == nil && json.Unmarshal(b, &st) == nil && st.PID == cmd.Process.Pid {
			return st, stateFile, out
		}
		if time.Now().After(deadline) {
			t.Fatalf("herald %v did not start in 60s:\n%s", args, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runWithState runs the CLI against the herald that wrote stateFile.
func runWithState(t *testing.T, stateFile string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, heraldBin, args...)
	env := []string{"HERALD_STATE_FILE=" + stateFile}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "HERALD_") {
			env = append(env, e)
		}
	}
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func mustRun(t *testing.T, stateFile string, args ...string) string {
	t.Helper()
	out, errOut, err := runWithState(t, stateFile, args...)
	if err != nil {
		t.Fatalf("herald %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

func TestServeRefusesAnOpenNetworkAddress(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--http-addr", "0.0.0.0:0"},
		{"--registry-addr", "[::]:0"},
		{"--nats-addr", "0.0.0.0:0", "--auth"},
	} {
		_, errOut, err := runHerald(t, "", append([]string{"serve", "--data-dir", t.TempDir(), "--nats-addr", "127.0.0.1:0",
			"--http-addr", "127.0.0.1:0", "--registry-addr", "127.0.0.1:0"}, args...)...)
		if err == nil || !strings.Contains(errOut, "--insecure") || !strings.Contains(errOut, "TLS") {
			t.Fatalf("serve %v: err %v, stderr %s", args, err, errOut)
		}
	}
}

func TestServeInsecureListensOnAnOpenAddress(t *testing.T) {
	t.Parallel()
	_, stateFile, out := startHerald(t, "serve", "--data-dir", t.TempDir(), "--nats-addr", "127.0.0.1:0",
		"--http-addr", "0.0.0.0:0", "--registry-addr", "127.0.0.1:0", "--insecure")
	got := mustRun(t, stateFile, "topic", "list", "-o", "json")
	if strings.TrimSpace(got) == "" {
		t.Fatalf("topic list through the open admin address printed nothing:\n%s", out)
	}
}

func TestDevTLSWithTheCLIAndTheShop(t *testing.T) {
	t.Parallel()
	testenv.Need(t, "PostgreSQL", testenv.HostPort(testenv.PostgresURL))
	st, stateFile, out := startHerald(t, "dev", "--tls", "--rate", "20", "--postgres", testenv.PostgresURL)
	if !strings.HasPrefix(st.NATSURL, "tls://") || !strings.HasPrefix(st.AdminURL, "https://") || st.CAFile == "" {
		t.Fatalf("state %+v", st)
	}
	topic := "tls-" + strings.ReplaceAll(t.Name(), "/", "-")
	mustRun(t, stateFile, "pub", "--topic", topic, "--type", "demo.hello.v1", `{"hello":"tls"}`)
	got := mustRun(t, stateFile, "sub", "--topic", topic, "--from", "first", "--count", "1", "-o", "json")
	if !strings.Contains(got, `"hello":"tls"`) {
		t.Fatalf("sub over TLS: %s", got)
	}
	// The shop runs over TLS: its groups consume, its failing consumer
	// fills a dead-letter topic.
	poll(t, "the shop's groups and dead letters over TLS", func() (bool, string) {
		lag, errOut, err := runWithState(t, stateFile, "lag", "-o", "json")
		if err != nil {
			return false, errOut
		}
		dlq, errOut, err := runWithState(t, stateFile, "dlq", "list", "-o", "json")
		if err != nil {
			return false, errOut
		}
		return strings.Contains(lag, `"payments"`) && strings.Contains(dlq, `"shop.orders.dlq"`), lag + dlq
	})
	// Without the CA a client refuses the server.
	if _, errOut, err := runHerald(t, "", "lag", "--admin-url", st.AdminURL); err == nil || !strings.Contains(errOut, "certificate") {
		t.Fatalf("lag without the CA: %v %s", err, errOut)
	}
	if !strings.Contains(out.String(), "HERALD_CA="+st.CAFile) {
		t.Fatalf("dev output does not say how to trust the CA:\n%s", out)
	}
}

func TestAuthCommands(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, stateFile, _ := startHerald(t, "serve", "--auth", "--data-dir", filepath.Join(dir, "data"), "--nats-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0", "--registry-addr", "127.0.0.1:0")
	if st.CredsFile == "" {
		t.Fatalf("state %+v: no admin credentials", st)
	}
	// The local CLI uses the admin credentials; a client pointed at the
	// same server by hand has none.
	mustRun(t, stateFile, "lag")
	if _, errOut, err := runHerald(t, "", "lag", "--admin-url", st.AdminURL); err == nil || !strings.Contains(errOut, "authentication required") {
		t.Fatalf("lag without credentials: %v %s", err, errOut)
	}
	creds := filepath.Join(dir, "orders.creds")
	out := mustRun(t, stateFile, "auth", "add-service", "orders", "--publish", "shop.orders.>", "--subscribe", "shop.payments.>,shop.inventory.>", "--out", creds)
	if !strings.Contains(out, creds) {
		t.Fatalf("add-service: %s", out)
	}
	if fi, err := os.Stat(creds); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials file: %v %v", fi, err)
	}
	list := mustRun(t, stateFile, "auth", "list")
	if !strings.Contains(list, "orders") || !strings.Contains(list, "shop.payments,shop.inventory") {
		t.Fatalf("list: %s", list)
	}
	mustRun(t, stateFile, "pub", "--creds", creds, "--topic", "shop.orders", "--type", "shop.order.placed.v1", `{"id":1}`)
	if _, errOut, err := runWithState(t, stateFile, "pub", "--creds", creds, "--topic", "shop.payments", "--type", "x.v1", `{}`); err == nil || !strings.Contains(errOut, "permission denied") {
		t.Fatalf("pub outside the allowance: %v %s", err, errOut)
	}
	// The service's token reads the registry, not the admin API.
	if _, errOut, err := runWithState(t, stateFile, "lag", "--creds", creds); err == nil || !strings.Contains(errOut, "needs reader") {
		t.Fatalf("lag with a service's credentials: %v %s", err, errOut)
	}
	mustRun(t, stateFile, "schema", "list", "--creds", creds)
	mustRun(t, stateFile, "auth", "rotate", "orders", "--out", creds)
	mustRun(t, stateFile, "pub", "--creds", creds, "--topic", "shop.orders", "--type", "shop.order.placed.v1", `{"id":2}`)
	mustRun(t, stateFile, "auth", "revoke", "orders")
	if _, _, err := runWithState(t, stateFile, "pub", "--creds", creds, "--topic", "shop.orders", "--type", "shop.order.placed.v1", `{"id":3}`); err == nil {
		t.Fatal("pub with revoked credentials succeeded")
	}
}
