package kafka_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/kafka"
)

const (
	childSeedsEnv = "HERALD_KAFKA_CHILD_SEEDS"
	childTopicEnv = "HERALD_KAFKA_CHILD_TOPIC"
)

// TestKillMember runs a group member in a child process, lets it ack some
// of its deliveries, and SIGKILLs it: the next member gets exactly the
// unacked messages, each as a redelivery.
func TestKillMember(t *testing.T) {
	t.Parallel()
	c := newCluster(t, kfake.GroupMinSessionTimeout(500*time.Millisecond))
	b := newBroker(t, c)
	const topic, n = "killed", 20
	if err := b.Publish(t.Context(), msgs(topic, 0, n, nil)...); err != nil {
		t.Fatal(err)
	}

	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestKillMemberChild$", "-test.v")
	cmd.Env = append(os.Environ(), childSeedsEnv+"="+strings.Join(c.ListenAddrs(), ","), childTopicEnv+"="+topic)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[int]bool{}
	sc := bufio.NewScanner(out)
	ready := false
	for !ready && sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "ACKED "); ok {
			i, err := strconv.Atoi(v)
			if err != nil {
				t.Fatalf("child said %q", line)
			}
			acked[i] = true
		}
		ready = line == "READY"
	}
	if !ready {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("child exited before it was ready: %v", sc.Err())
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if len(acked) != 5 {
		t.Fatalf("child acked %v, want 5 messages", acked)
	}

	sub := subscribe(t, b, topic, "g", nil)
	for remaining := n - len(acked); remaining > 0; remaining-- {
		d := next(t, sub, fmt.Sprintf("one of %d messages the killed member left unacked", remaining))
		i := num(t, d)
		if acked[i] {
			t.Fatalf("message %d was acked by the killed member and delivered again", i)
		}
		acked[i] = true // seen: a second delivery would fail above
		if d.Attempt() != 2 {
			t.Errorf("message %d: attempt %d, want 2 (delivered to the killed member)", i, d.Attempt())
		}
		if err := d.Ack(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	if d, err := sub.Next(ctx); err == nil {
		t.Fatalf("unexpected delivery of %q", d.Message().Data)
	}
}

// TestKillMemberChild is the member TestKillMember kills. It takes every
// message, then acks (confirmed) the even ones below 10, says which, and
// waits to be killed.
func TestKillMemberChild(t *testing.T) {
	seeds := os.Getenv(childSeedsEnv)
	if seeds == "" {
		t.Skip("runs only as TestKillMember's child process")
	}
	b, err := kafka.New(t.Context(), kafka.WithSeeds(strings.Split(seeds, ",")...),
		kafka.WithConsumerOptions(kgo.SessionTimeout(time.Second), kgo.HeartbeatInterval(100*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(t.Context(), os.Getenv(childTopicEnv), broker.SubscribeOptions{
		Group: "g", Start: broker.FromFirst, ConfirmAcks: true, AckWait: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Take everything first, so the confirmed acks' commits also record
	// that the others were delivered.
	var held []broker.Delivery
	for range 20 {
		held = append(held, next(t, sub, "a message for the child"))
	}
	for _, d := range held {
		if i := num(t, d); i < 10 && i%2 == 0 {
			if err := d.Ack(t.Context()); err != nil {
				t.Fatal(err)
			}
			fmt.Printf("ACKED %d\n", i)
		}
	}
	fmt.Println("READY")
	<-t.Context().Done() // killed here
}
