package testenv

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
)

// NATSLeaks are the goroutines nats-server keeps process-wide after
// Shutdown, which goleak must ignore, plus extra.
func NATSLeaks(extra ...goleak.Option) []goleak.Option {
	return append([]goleak.Option{
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server.(*Server).startGoRoutine.func1"),
		goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*fileStore).flushLoop"),
		goleak.IgnoreAnyFunction("github.com/nats-io/nats-server/v2/server/stree.init"),
	}, extra...)
}

// MainWithNATS runs a package's tests around one embedded JetStream server
// in a temporary directory: it starts the server, hands it to set, runs
// the tests, stops the server, fails the run on leaked goroutines (besides
// NATSLeaks and extra) and exits. Call it from TestMain.
func MainWithNATS(m *testing.M, cfg natsjs.EmbeddedConfig, set func(*natsjs.Embedded), extra ...goleak.Option) {
	dir, err := os.MkdirTemp("", "herald-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv:", err)
		os.Exit(1)
	}
	cfg.DataDir = dir
	emb, err := natsjs.RunEmbedded(context.Background(), cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testenv: embedded server:", err)
		os.Exit(1)
	}
	set(emb)
	code := m.Run()
	emb.Shutdown()
	_ = os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(NATSLeaks(extra...)...); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// Eventually polls cond every 10ms until it holds, failing the test after
// timeout with what was awaited.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// RunRouter runs r in the background and returns a function that cancels
// it and waits for Run to return (an error fails the test); the function
// also runs at cleanup. It returns once r has joined its group.
func RunRouter(t testing.TB, r *consumer.Router) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() {
		once.Do(func() {
			cancel()
			if runErr = <-done; runErr != nil {
				t.Errorf("Run: %v", runErr)
			}
		})
	}
	t.Cleanup(stop)
	select {
	case <-r.Ready():
	case err := <-done:
		once.Do(func() { cancel() })
		t.Fatalf("Run returned before joining its group: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatalf("router %s did not join its group in 30s", r.Group())
	}
	return stop
}
