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
	eosSeedsEnv = "HERALD_KAFKA_EOS_SEEDS"
	eosTxnEnv   = "HERALD_KAFKA_EOS_TXN"
)

const (
	eosIn, eosOut = "eos-in", "eos-out"
	eosInputs     = 30
	eosBatch      = 5
	// eosCommitted batches commit in the child; it is killed inside the next.
	eosCommitted = 2
)

// eosProcess is the consume-transform-produce loop both processes run: it
// takes eosBatch deliveries, publishes one output per input and acks the
// inputs, all in one transaction. midBatch, when set, runs inside the
// transaction of batch number eosCommitted (0-based), after its outputs
// were published, and never returns.
func eosProcess(t *testing.T, b *kafka.Broker, sub broker.Subscription, batches int, midBatch func()) {
	t.Helper()
	for batch := range batches {
		ds := make([]broker.Delivery, eosBatch)
		for i := range ds {
			ds[i] = next(t, sub, fmt.Sprintf("input %d of batch %d", i, batch))
		}
		err := b.Transact(t.Context(), func(tx *kafka.Tx) error {
			for _, d := range ds {
				if err := tx.Publish(t.Context(), &broker.Message{Topic: eosOut, Route: "test.out.v1", Data: append([]byte("out-"), d.Message().Data...)}); err != nil {
					return err
				}
				if err := tx.Ack(d); err != nil {
					return err
				}
			}
			if midBatch != nil && batch == eosCommitted {
				midBatch()
			}
			return nil
		})
		if err != nil {
			t.Fatalf("batch %d: %v", batch, err)
		}
		fmt.Printf("COMMITTED %d\n", batch)
	}
}

// TestExactlyOnceAfterCrash is exactly-once consume-transform-produce
// through a crash: a child process commits two batches in Kafka
// transactions and is SIGKILLed in the middle of the third, after its
// outputs were written but before the commit. A new process with the same
// transactional id fences the dead one (its open transaction is aborted)
// and processes what is left. A read-committed reader sees the output of
// every input exactly once.
func TestExactlyOnceAfterCrash(t *testing.T) {
	t.Parallel()
	c := newCluster(t, kfake.GroupMinSessionTimeout(500*time.Millisecond))
	b := newBroker(t, c)
	if err := b.Publish(t.Context(), msgs(eosIn, 0, eosInputs, nil)...); err != nil {
		t.Fatal(err)
	}
	txn := "herald-eos-" + strconv.FormatInt(time.Now().UnixNano(), 36)

	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestExactlyOnceAfterCrashChild$", "-test.v")
	cmd.Env = append(os.Environ(), eosSeedsEnv+"="+strings.Join(c.ListenAddrs(), ","), eosTxnEnv+"="+txn)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	committed := 0
	sc := bufio.NewScanner(out)
	mid := false
	for !mid && sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "COMMITTED ") {
			committed++
		}
		mid = line == "MIDBATCH"
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	if !mid || committed != eosCommitted {
		t.Fatalf("child committed %d batches and reached the middle of the next: %v (want %d and true; scan error %v)", committed, mid, eosCommitted, sc.Err())
	}

	// The successor: same transactional id, same group.
	next := newBroker(t, c, kafka.WithTransactionalID(txn))
	sub := subscribe(t, next, eosIn, "g", func(o *broker.SubscribeOptions) { o.AckWait = time.Minute })
	eosProcess(t, next, sub, eosInputs/eosBatch-eosCommitted, nil)

	got := readCommitted(t, c.ListenAddrs(), eosOut, eosInputs)
	seen := map[string]int{}
	for _, v := range got {
		seen[v]++
	}
	for i := range eosInputs {
		if k := "out-" + strconv.Itoa(i); seen[k] != 1 {
			t.Errorf("output %s visible %d times, want 1", k, seen[k])
		}
	}
	if len(got) != eosInputs {
		t.Errorf("%d committed outputs, want %d: %q", len(got), eosInputs, got)
	}
	// The killed batch's outputs were written: only the transaction hides
	// them.
	if n := countUncommitted(t, c.ListenAddrs(), eosOut, eosInputs+eosBatch); n != eosInputs+eosBatch {
		t.Errorf("%d output records in the log, want %d (the aborted batch's among them)", n, eosInputs+eosBatch)
	}
}

// countUncommitted counts the records of topic a read-uncommitted reader
// sees, reading until want arrived or 10 seconds passed.
func countUncommitted(t *testing.T, seeds []string, topic string, want int) int {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchIsolationLevel(kgo.ReadUncommitted()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	n := 0
	for ctx.Err() == nil && n < want {
		n += len(cl.PollFetches(ctx).Records())
	}
	return n
}

// TestExactlyOnceAfterCrashChild is the process TestExactlyOnceAfterCrash
// kills in the middle of a transaction.
func TestExactlyOnceAfterCrashChild(t *testing.T) {
	seeds := os.Getenv(eosSeedsEnv)
	if seeds == "" {
		t.Skip("runs only as TestExactlyOnceAfterCrash's child process")
	}
	b, err := kafka.New(t.Context(), kafka.WithSeeds(strings.Split(seeds, ",")...), kafka.WithTransactionalID(os.Getenv(eosTxnEnv)),
		kafka.WithConsumerOptions(kgo.SessionTimeout(time.Second), kgo.HeartbeatInterval(100*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	sub, err := b.Subscribe(t.Context(), eosIn, broker.SubscribeOptions{Group: "g", Start: broker.FromFirst, AckWait: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	eosProcess(t, b, sub, eosCommitted+1, func() {
		fmt.Println("MIDBATCH")
		<-t.Context().Done() // killed here
	})
}
