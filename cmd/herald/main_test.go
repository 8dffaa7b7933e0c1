package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/internal/localstate"
	"github.com/heraldhq/herald/internal/testenv"
)

// heraldBin is the binary under test, built once by TestMain.
var heraldBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "herald-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	heraldBin = filepath.Join(dir, "herald")
	out, err := exec.Command("go", "build", "-o", heraldBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build herald: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running `herald serve`.
type proc struct {
	cmd    *exec.Cmd
	state  localstate.State
	stderr *bytes.Buffer
}

// startServe runs herald serve on dataDir with free ports and waits until it
// records its addresses and /readyz answers 200.
func startServe(t *testing.T, dataDir string, extra ...string) *proc {
	t.Helper()
	stateFile := filepath.Join(t.TempDir(), "state.json")
	args := append([]string{"serve", "--data-dir", dataDir, "--nats-addr", "127.0.0.1:0",
		"--http-addr", "127.0.0.1:0", "--registry-addr", "127.0.0.1:0"}, extra...)
	cmd := exec.Command(heraldBin, args...)
	cmd.Env = append(os.Environ(), "HERALD_STATE_FILE="+stateFile)
	p := &proc{cmd: cmd, stderr: &bytes.Buffer{}}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if time.Now().After(deadline) {
			t.Fatalf("herald serve did not become ready in 30s; stderr:\n%s", p.stderr)
		}
		b, err := os.ReadFile(stateFile)
		if err == nil && json.Unmarshal(b, &p.state) == nil && p.state.PID == cmd.Process.Pid {
			resp, err := http.Get(p.state.AdminURL + "/readyz")
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					return p
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func runHerald(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, heraldBin, args...)
	cmd.Env = append(os.Environ(), "HERALD_STATE_FILE="+filepath.Join(t.TempDir(), "none.json"))
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

func TestServePubSubRoundTrip(t *testing.T) {
	t.Parallel()
	p := startServe(t, t.TempDir())
	url := p.state.NATSURL
	out, errOut, err := runHerald(t, "", "pub", "--url", url, "--topic", "orders", "--type", "shop.order.placed.v1",
		"--subject", "o-1", "--correlation-id", "c-1", "-o", "json", `{"total":42}`)
	if err != nil {
		t.Fatalf("pub: %v\n%s", err, errOut)
	}
	var pub struct{ ID, Topic string }
	if err := json.Unmarshal([]byte(out), &pub); err != nil || pub.ID == "" {
		t.Fatalf("pub output %q: %v", out, err)
	}
	if _, errOut, err := runHerald(t, `{"total":7}`, "pub", "--url", url, "--topic", "orders", "--type", "shop.order.placed.v1", "-"); err != nil {
		t.Fatalf("pub from stdin: %v\n%s", err, errOut)
	}
	out, errOut, err = runHerald(t, "", "sub", "--url", url, "--topic", "orders", "--from", "first", "--count", "2", "-o", "json")
	if err != nil {
		t.Fatalf("sub: %v\n%s", err, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Fatalf("sub printed %d lines, want 2:\n%s", len(lines), out)
	}
	var ev map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &ev); err != nil {
		t.Fatalf("line %q: %v", lines[0], err)
	}
	if ev["id"] != pub.ID || ev["type"] != "shop.order.placed.v1" || ev["subject"] != "o-1" || ev["correlationid"] != "c-1" {
		t.Fatalf("sub printed %v", ev)
	}
	if data, _ := json.Marshal(ev["data"]); string(data) != `{"total":42}` {
		t.Fatalf("data %s", data)
	}
	// Text output, and a type filter that excludes everything.
	out, _, err = runHerald(t, "", "sub", "--url", url, "--topic", "orders", "--from", "first", "--count", "1")
	if err != nil || !strings.Contains(out, "shop.order.placed.v1") || !strings.Contains(out, `{"total":42}`) {
		t.Fatalf("text sub: %v %q", err, out)
	}
	out, _, err = runHerald(t, "", "sub", "--url", url, "--topic", "orders", "--from", "first", "--type", "other.v1", "--idle-timeout", "500ms")
	if err != nil || out != "" {
		t.Fatalf("filtered sub: %v %q", err, out)
	}
	// Graceful shutdown on SIGINT.
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("serve exited with %v after SIGINT; stderr:\n%s", err, p.stderr)
	}
}

// TestSIGKILLLosesNoConfirmedEvent kills serve with SIGKILL while events
// are confirmed, restarts it on the same data dir and counts them.
func TestSIGKILLLosesNoConfirmedEvent(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	p := startServe(t, dir)
	ctx := t.Context()
	b, err := natsjs.New(ctx, natsjs.WithURL(p.state.NATSURL))
	if err != nil {
		t.Fatal(err)
	}
	const batch = 200
	confirmed := 0
	stop := time.Now().Add(2 * time.Second)
	// Publish until shortly after the kill: every batch that returned
	// without error is confirmed and must survive.
	killed := false
	for i := 0; ; i++ {
		if !killed && time.Now().After(stop) {
			if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			killed = true
		}
		msgs := make([]*broker.Message, batch)
		for j := range msgs {
			n := i*batch + j
			msgs[j] = &broker.Message{Topic: "durable", Route: "t.v1", ID: fmt.Sprint(n), Data: []byte(fmt.Sprint(n))}
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := b.Publish(pctx, msgs...)
		cancel()
		if err != nil {
			if !killed {
				t.Fatalf("publish before the kill: %v", err)
			}
			break
		}
		confirmed += batch
	}
	_ = p.cmd.Wait()
	_ = b.Close()
	if confirmed == 0 {
		t.Fatal("nothing was confirmed before the kill")
	}
	p2 := startServe(t, dir)
	b2, err := natsjs.New(ctx, natsjs.WithURL(p2.state.NATSURL))
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	s, err := b2.JetStream().Stream(ctx, "durable")
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs < uint64(confirmed) {
		t.Fatalf("after SIGKILL and restart the topic holds %d events, %d were confirmed", info.State.Msgs, confirmed)
	}
	// Every confirmed id is there: read them all.
	sub, err := b2.Subscribe(ctx, "durable", broker.SubscribeOptions{Group: "check", Start: broker.FromFirst})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	seen := make(map[string]bool, info.State.Msgs)
	for uint64(len(seen)) < info.State.Msgs {
		nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		d, err := sub.Next(nctx)
		cancel()
		if err != nil {
			t.Fatalf("read back after %d: %v", len(seen), err)
		}
		seen[string(d.Message().Data)] = true
		_ = d.Ack(ctx)
	}
	for n := range confirmed {
		if !seen[fmt.Sprint(n)] {
			t.Fatalf("confirmed event %d is missing after SIGKILL", n)
		}
	}
	t.Logf("%d events confirmed before SIGKILL, %d stored after restart", confirmed, info.State.Msgs)
}

func TestServeErrors(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, tc := range map[string]struct {
		args []string
		want string
	}{
		"busy nats port": {[]string{"serve", "--data-dir", t.TempDir(), "--nats-addr", busy.Addr().String(), "--http-addr", "127.0.0.1:0"}, "--nats-addr"},
		"busy http port": {[]string{"serve", "--data-dir", t.TempDir(), "--nats-addr", "127.0.0.1:0", "--http-addr", busy.Addr().String()}, "--http-addr"},
		"busy gateway port": {[]string{"serve", "--data-dir", t.TempDir(), "--nats-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
			"--registry-addr", "127.0.0.1:0", "--gateway-addr", busy.Addr().String()}, "--gateway-addr"},
		"open gateway port": {[]string{"serve", "--data-dir", t.TempDir(), "--nats-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0",
			"--registry-addr", "127.0.0.1:0", "--gateway-addr", "0.0.0.0:0"}, "--gateway-addr"},
		"bad data dir":   {[]string{"serve", "--data-dir", file + "/sub", "--nats-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"}, "data dir"},
		"bad durability": {[]string{"serve", "--data-dir", t.TempDir(), "--durability", "maybe"}, "want fast or sync"},
		"unreachable":    {[]string{"pub", "--url", "nats://" + closedAddr(t), "--topic", "t", "--type", "x.v1", "data"}, "cannot reach the broker"},
		"no type":        {[]string{"pub", "--topic", "t", "data"}, "--type is required"},
		"bad from":       {[]string{"sub", "--topic", "t", "--from", "yesterday"}, "--from"},
		"bad output":     {[]string{"version", "-o", "yaml"}, "--output"},
		"bad structured": {[]string{"pub", "--topic", "t", "--structured", "{}"}, "specversion"},
	} {
		t.Run(name, func(t *testing.T) {
			_, errOut, err := runHerald(t, "", tc.args...)
			if err == nil {
				t.Fatalf("herald %v succeeded, want an error", tc.args)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Fatalf("stderr %q does not mention %q", errOut, tc.want)
			}
			if strings.Contains(errOut, "panic") {
				t.Fatalf("panic: %s", errOut)
			}
		})
	}
}

func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestEnvSetsFlags(t *testing.T) {
	t.Parallel()
	cmd := exec.Command(heraldBin, "version")
	cmd.Env = append(os.Environ(), "HERALD_OUTPUT=json")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	var v map[string]string
	if err := json.Unmarshal(out, &v); err != nil || v["version"] == "" {
		t.Fatalf("HERALD_OUTPUT=json gave %q (%v)", out, err)
	}
}

// TestServeRegistryKeepsSchemasAcrossRestart registers a schema with the
// CLI against a running serve, restarts serve on the same data dir and
// reads it back by subject and by id.
func TestServeRegistryKeepsSchemasAcrossRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	avsc := filepath.Join(t.TempDir(), "order.avsc")
	if err := os.WriteFile(avsc, []byte(`{"type":"record","name":"Order","fields":[{"name":"id","type":"string"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startServe(t, dir)
	out, errOut, err := runHerald(t, "", "schema", "register", "--registry-url", p.state.RegistryURL, "orders-value", avsc, "-o", "json")
	if err != nil {
		t.Fatalf("schema register: %v\n%s", err, errOut)
	}
	var reg struct{ ID int }
	if err := json.Unmarshal([]byte(out), &reg); err != nil || reg.ID == 0 {
		t.Fatalf("register output %q: %v", out, err)
	}
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Wait(); err != nil {
		t.Fatalf("serve exited with %v; stderr:\n%s", err, p.stderr)
	}
	p2 := startServe(t, dir)
	out, errOut, err = runHerald(t, "", "schema", "get", "--registry-url", p2.state.RegistryURL, "--id", fmt.Sprint(reg.ID), "-o", "json")
	if err != nil {
		t.Fatalf("schema get after restart: %v\n%s", err, errOut)
	}
	if !strings.Contains(out, `Order`) {
		t.Fatalf("schema %d after restart: %s", reg.ID, out)
	}
	out, _, err = runHerald(t, "", "schema", "list", "--registry-url", p2.state.RegistryURL)
	if err != nil || !strings.Contains(out, "orders-value") {
		t.Fatalf("schema list after restart: %v %q", err, out)
	}
}

// TestServeOnAnExistingNATS runs serve on a NATS server it did not start
// (--broker): the registry keeps its schemas there.
func TestServeOnAnExistingNATS(t *testing.T) {
	t.Parallel()
	emb, err := natsjs.RunEmbedded(t.Context(), natsjs.EmbeddedConfig{DataDir: t.TempDir(), Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	p := startServe(t, t.TempDir(), "--broker", emb.ClientURL())
	if p.state.NATSURL != emb.ClientURL() {
		t.Fatalf("serve reports NATS at %s, want the existing server %s", p.state.NATSURL, emb.ClientURL())
	}
	avsc := filepath.Join(t.TempDir(), "a.avsc")
	if err := os.WriteFile(avsc, []byte(`{"type":"record","name":"A","fields":[{"name":"x","type":"int"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, err := runHerald(t, "", "schema", "register", "--registry-url", p.state.RegistryURL, "a-value", avsc); err != nil {
		t.Fatalf("schema register: %v\n%s", err, errOut)
	}
	b, err := natsjs.New(t.Context(), natsjs.WithEmbedded(emb))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if _, err := b.JetStream().KeyValue(t.Context(), "herald_schemas"); err != nil {
		t.Fatalf("the registry's bucket is not on the existing server: %v", err)
	}
}

// TestServeWithKafkaEvents points serve at Kafka (kfake, in this process):
// readiness checks it, the state file names it for the CLI, and pub/sub
// round-trip an event through it.
func TestServeWithKafkaEvents(t *testing.T) {
	t.Parallel()
	url := testenv.Kafka(t)
	p := startServe(t, t.TempDir(), "--broker", url)
	if p.state.BrokerURL != url {
		t.Fatalf("state names broker %q, want %q", p.state.BrokerURL, url)
	}
	if _, errOut, err := runHerald(t, "", "pub", "--url", p.state.BrokerURL, "--topic", "orders", "--type", "shop.order.placed.v1", "--subject", "o-1", `{"total":1}`); err != nil {
		t.Fatalf("pub to kafka: %v\n%s", err, errOut)
	}
	out, errOut, err := runHerald(t, "", "sub", "--url", p.state.BrokerURL, "--topic", "orders", "--from", "first", "--count", "1", "-o", "json")
	if err != nil {
		t.Fatalf("sub from kafka: %v\n%s", err, errOut)
	}
	if !strings.Contains(out, `"subject":"o-1"`) || !strings.Contains(out, `"type":"shop.order.placed.v1"`) {
		t.Fatalf("sub printed %q", out)
	}
}

// TestServeHelpSaysWhereStateLives checks that herald serve --help tells
// an operator who points events at Kafka or RabbitMQ where Herald's own
// state stays.
func TestServeHelpSaysWhereStateLives(t *testing.T) {
	t.Parallel()
	out, errOut, err := runHerald(t, "", "serve", "--help")
	if err != nil {
		t.Fatalf("serve --help: %v\n%s", err, errOut)
	}
	help := strings.Join(strings.Fields(out), " ")
	for _, want := range []string{
		"--broker kafka:// or amqp://",
		"Herald's own state (the schema registry, the audit log's positions, which dead letters were redriven or purged) stays in the embedded JetStream in --data-dir",
		"The audit log indexes Kafka topics too, RabbitMQ ones not yet",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("serve --help does not say %q:\n%s", want, out)
		}
	}
}
