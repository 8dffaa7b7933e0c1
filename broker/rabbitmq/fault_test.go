package rabbitmq

import (
	"bufio"

	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
)

func uniq(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// rabbitmqctl runs the CLI against the local node, skipping the test (or
// failing it with CI=true) when the CLI is not installed.
func rabbitmqctl(t *testing.T, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("rabbitmqctl")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("rabbitmqctl not found with CI=true")
		}
		t.Skip("rabbitmqctl not found: the fault test drives the broker with it")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("rabbitmqctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// closeConnections closes, on the broker side, the connections whose
// client-provided name starts with prefix: a connection-loss fault that
// touches no one else's connections.
func closeConnections(t *testing.T, prefix string) int {
	t.Helper()
	out := rabbitmqctl(t, "list_connections", "--no-table-headers", "pid", "client_properties")
	n := 0
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.Contains(line, `{"connection_name","`+prefix) {
			continue
		}
		pid, _, _ := strings.Cut(line, "\t")
		rabbitmqctl(t, "close_connection", strings.TrimSpace(pid), "herald fault test")
		n++
	}
	return n
}

// faultRun publishes n messages in batches while a consumer acks them,
// injects fault once a third is confirmed, and checks that every confirmed
// message was delivered. Publish failures caused by the fault are
// retried, as a caller would.
func faultRun(t *testing.T, b *tracked, n int, fault func()) {
	t.Helper()
	topic := uniq("fault")
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	sub, err := b.Subscribe(ctx, topic, broker.SubscribeOptions{Group: "g", AckWait: 10 * time.Second})
	if err != nil {
		t.Fatalf("subscribe: %v", err)
	}
	defer sub.Close()

	var mu sync.Mutex
	seen := make([]bool, n)
	got := 0
	allSeen := make(chan struct{})
	consumed := make(chan error, 1)
	go func() {
		for {
			d, err := sub.Next(ctx)
			if err != nil {
				consumed <- err
				return
			}
			i, err := strconv.Atoi(string(d.Message().Data))
			if err != nil || i < 0 || i >= n {
				consumed <- errors.New("bad payload " + string(d.Message().Data))
				return
			}
			// An ack can fail while the connection is down; the message
			// then comes again, which the seen set absorbs.
			_ = d.Ack(ctx)
			mu.Lock()
			if !seen[i] {
				seen[i] = true
				got++
				if got == n {
					close(allSeen)
				}
			}
			mu.Unlock()
		}
	}()

	// The first third goes at full speed; then the fault starts and the
	// second third is paced (a batch every 20ms) while it runs, so that
	// publishes are in flight during it; the last third goes after it.
	const batch = 200
	confirmed := 0
	retries := 0
	faultDone := make(chan struct{})
	var faultWG sync.WaitGroup
	defer faultWG.Wait()
	pace := time.NewTicker(20 * time.Millisecond)
	defer pace.Stop()
	start := time.Now()
	for i := 0; i < n; i += batch {
		switch {
		case i >= n/3 && i-batch < n/3:
			faultWG.Go(func() { defer close(faultDone); fault() })
		case i >= 2*n/3 && i-batch < 2*n/3:
			<-faultDone
		}
		if i >= n/3 && i < 2*n/3 {
			select {
			case <-pace.C:
			case <-faultDone:
			}
		}
		msgs := make([]*broker.Message, 0, batch)
		for j := i; j < min(i+batch, n); j++ {
			msgs = append(msgs, &broker.Message{Topic: topic, Route: "fault.v1", Key: "k" + strconv.Itoa(j%32), ID: strconv.Itoa(j), Data: []byte(strconv.Itoa(j))})
		}
		for len(msgs) > 0 {
			err := b.Publish(ctx, msgs...)
			var pe *broker.PublishError
			switch {
			case err == nil:
				confirmed += len(msgs)
				msgs = nil
			case errors.As(err, &pe):
				var again []*broker.Message
				for k, m := range msgs {
					if pe.Failed(k) != nil {
						if !errors.Is(pe.Failed(k), broker.ErrUnavailable) {
							t.Fatalf("message %s: %v, want only broker.ErrUnavailable during the fault", m.ID, pe.Failed(k))
						}
						again = append(again, m)
					} else {
						confirmed++
					}
				}
				msgs = again
				retries++
			default:
				t.Fatalf("publish: %v", err)
			}
		}
	}
	if confirmed != n {
		t.Fatalf("confirmed %d of %d", confirmed, n)
	}
	select {
	case <-allSeen:
	case err := <-consumed:
		t.Fatalf("consumer stopped: %v", err)
	case <-ctx.Done():
		mu.Lock()
		defer mu.Unlock()
		t.Fatalf("waiting for all %d confirmed messages: received %d", n, got)
	}
	faultWG.Wait()
	t.Logf("%d messages confirmed and received in %v; %d publish calls retried", n, time.Since(start).Round(time.Millisecond), retries)
	cancel()
	<-consumed
}

// TestConnectionLoss closes the adapter's connections on the broker side
// in the middle of a 10k-message run.
func TestConnectionLoss(t *testing.T) {
	t.Parallel()
	name := uniq("herald-conn-loss")
	b := newTestBroker(t, WithConnectionName(name))
	faultRun(t, b, 10000, func() {
		if got := closeConnections(t, name); got != 2 {
			t.Errorf("closed %d connections named %s*, want 2 (pub and sub)", got, name)
		}
	})
}

// TestBrokerRestart stops and starts the RabbitMQ application in the
// middle of a 10k-message run. It disturbs every user of the local broker,
// so it runs only with HERALD_TEST_RABBIT_RESTART=1.
func TestBrokerRestart(t *testing.T) {
	if os.Getenv("HERALD_TEST_RABBIT_RESTART") != "1" {
		t.Skip("restarts the shared local RabbitMQ: set HERALD_TEST_RABBIT_RESTART=1 to run it")
	}
	b := newTestBroker(t)
	faultRun(t, b, 10000, func() {
		start := time.Now()
		rabbitmqctl(t, "stop_app")
		rabbitmqctl(t, "start_app")
		rabbitmqctl(t, "await_startup")
		t.Logf("stop_app + start_app took %v", time.Since(start).Round(time.Millisecond))
	})
}

// TestAckWaitRedelivers leaves a delivery unsettled: the adapter requeues
// it after the ack wait, to the same member, and a late ack is ignored.
func TestAckWaitRedelivers(t *testing.T) {
	t.Parallel()
	b := newTestBroker(t)
	topic := uniq("ackwait")
	const wait = 500 * time.Millisecond
	sub, err := b.Subscribe(t.Context(), topic, broker.SubscribeOptions{Group: "g", AckWait: wait})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if err := b.Publish(t.Context(), &broker.Message{Topic: topic, Route: "r", Data: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	d1, err := sub.Next(ctx)
	if err != nil {
		t.Fatalf("waiting for the first delivery: %v", err)
	}
	taken := time.Now()
	d2, err := sub.Next(ctx)
	if err != nil {
		t.Fatalf("waiting for the redelivery after the ack wait: %v", err)
	}
	if waited := time.Since(taken); waited < wait-50*time.Millisecond {
		t.Fatalf("redelivered after %v, want >= %v", waited, wait)
	}
	if d2.Attempt() != 2 {
		t.Fatalf("redelivery attempt %d, want 2", d2.Attempt())
	}
	if err := d1.Ack(ctx); err != nil {
		t.Fatalf("late ack of the expired delivery: %v, want it ignored", err)
	}
	if err := d2.Ack(ctx); err != nil {
		t.Fatal(err)
	}
	quiet, qcancel := context.WithTimeout(t.Context(), 2*wait)
	defer qcancel()
	if d, err := sub.Next(quiet); err == nil {
		t.Fatalf("got %q attempt %d after ack, want nothing", d.Message().Data, d.Attempt())
	}
}
