package saga_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/saga"
)

const (
	childBaseEnv = "HERALD_SAGA_CHILD_BASE"
	childNATSEnv = "HERALD_SAGA_CHILD_NATS"
)

// runEngineChild runs an engine and its reply consumer on base's topics
// until killed.
func runEngineChild(base string) int {
	ctx := context.Background()
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "saga child:", err); return 1 }
	b, err := natsjs.New(ctx, natsjs.WithURL(os.Getenv(childNATSEnv)))
	if err != nil {
		return fail(err)
	}
	c, store, err := wire(ctx, b, namesOf(base))
	if err != nil {
		return fail(err)
	}
	eng, err := saga.New(store, c, []saga.Definition{definition(time.Minute)}, saga.WithTick(50*time.Millisecond))
	if err != nil {
		return fail(err)
	}
	r, err := c.Router("orchestrator", []string{namesOf(base).replies}, consumer.WithStart(broker.FromFirst), consumer.WithAckWait(time.Second))
	if err != nil {
		return fail(err)
	}
	r.HandleAll(func(ctx context.Context, m *consumer.Message) error { return eng.HandleReply(ctx, m.Event) })
	go func() { _ = eng.Run(ctx) }()
	go func() { <-r.Ready(); fmt.Println("ready") }()
	if err := r.Run(ctx); err != nil {
		return fail(err)
	}
	return 0
}

// The engine process is SIGKILLed while instances compensate, three
// times; restarted, it resumes them: every instance ends compensated, its
// compensations sent in reverse order, none skipped.
func TestSIGKILLMidCompensationResumes(t *testing.T) {
	base := unique("saga_kill_")
	h := newHarnessOn(t, base, false, nil, time.Minute)
	undos := make(chan struct{}, 1024)
	h.mu.Lock()
	h.onUndo = func() {
		select {
		case undos <- struct{}{}:
		default:
		}
	}
	h.mu.Unlock()

	const instances = 50
	ids := make([]string, instances)
	for i := range ids {
		ids[i] = unique("o-")
		if err := h.eng.Start(t.Context(), "order", ids[i], orderData{Fail: "ship"}); err != nil {
			t.Fatal(err)
		}
	}
	var stderr bytes.Buffer
	start := func() *exec.Cmd {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childBaseEnv+"="+base, childNATSEnv+"="+emb.ClientURL())
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		ready := make(chan error, 1)
		go func() {
			line, err := bufio.NewReader(out).ReadString('\n')
			if err == nil && line != "ready\n" {
				err = fmt.Errorf("child said %q", line)
			}
			ready <- err
			_, _ = io.Copy(io.Discard, out)
		}()
		select {
		case err := <-ready:
			if err != nil {
				t.Fatalf("engine child did not start: %v\n%s", err, stderr.String())
			}
		case <-time.After(time.Minute):
			t.Fatalf("engine child not ready after a minute\n%s", stderr.String())
		}
		return cmd
	}
	kills := 0
	for kill := range 3 {
		cmd := start()
		for len(undos) > 0 {
			<-undos // from before this process
		}
		select {
		case <-undos: // this process is compensating
		case <-time.After(20 * time.Second):
			if kill == 0 {
				t.Fatalf("no compensation command within 20s\n%s", stderr.String())
			}
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		kills++
	}
	t.Logf("engine killed %d times", kills)
	cmd := start()
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	want := "[t.reserve.v1 t.charge.v1 t.ship.v1 t.charge.undo.v1 t.reserve.undo.v1]"
	for _, id := range ids {
		in := h.await(t, id, saga.Compensated)
		if got := fmt.Sprint(h.commands(id)); got != want {
			t.Fatalf("instance %s: services saw %s, want %s (history %v)", id, got, want, outcomes(in))
		}
	}
}
