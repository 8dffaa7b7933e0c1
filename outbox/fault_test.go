package outbox_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/natsjs"
	"github.com/heraldhq/herald/consumer"
	"github.com/heraldhq/herald/event"
	"github.com/heraldhq/herald/idempotency"
	"github.com/heraldhq/herald/idempotency/pgstore"
	"github.com/heraldhq/herald/internal/testenv"
	"github.com/heraldhq/herald/outbox"
)

// The environment of a relay child process: the test binary run again
// with these set publishes from the table to the topic until killed.
const (
	childEnv      = "HERALD_OUTBOX_RELAY_CHILD"
	childNATSEnv  = "HERALD_OUTBOX_RELAY_NATS"
	childTableEnv = "HERALD_OUTBOX_RELAY_TABLE"
	childTopicEnv = "HERALD_OUTBOX_RELAY_TOPIC"
)

func runRelayChild() int {
	ctx := context.Background()
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "relay child:", err); return 1 }
	pool, err := pgxpool.New(ctx, testenv.PostgresURL)
	if err != nil {
		return fail(err)
	}
	b, err := natsjs.New(ctx, natsjs.WithURL(os.Getenv(childNATSEnv)))
	if err != nil {
		return fail(err)
	}
	c, err := herald.Connect(ctx, herald.Config{Broker: b, Source: "outbox-fault", DefaultTopic: os.Getenv(childTopicEnv)})
	if err != nil {
		return fail(err)
	}
	o, err := outbox.New(ctx, pool, outbox.WithTable(os.Getenv(childTableEnv)))
	if err != nil {
		return fail(err)
	}
	r, err := outbox.NewRelay(ctx, pool, c, outbox.WithOutbox(o), outbox.WithBatch(200), outbox.WithPollInterval(20*time.Millisecond))
	if err != nil {
		return fail(err)
	}
	fmt.Println("ready") // the parent kills only a running relay
	if err := r.Run(ctx); err != nil {
		return fail(err)
	}
	return 0
}

// A relay child process is SIGKILLed at random points while writers add
// faultEvents events: every event reaches the stream once, in per-key
// order, and a consumer with the inbox applies each once.
func TestRelaySIGKILL(t *testing.T) {
	p := testenv.PGPool(t, 12)
	o := newOutbox(t, p)
	topic := testenv.SQLName("outbox_fault_")
	c, b := natsClient(t, topic)
	ctx := t.Context()
	if err := b.EnsureTopic(ctx, topic, broker.TopicConfig{DedupWindow: 10 * time.Minute}); err != nil {
		t.Fatal(err)
	}
	applied := testenv.SQLName("outbox_applied_")
	if _, err := p.Exec(ctx, "CREATE TABLE "+applied+" (event_id text NOT NULL, key text NOT NULL, seq bigint NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = p.Exec(context.Background(), "DROP TABLE IF EXISTS "+applied) })
	inboxTable := testenv.SQLName("outbox_inbox_")
	t.Cleanup(func() { _, _ = p.Exec(context.Background(), "DROP TABLE IF EXISTS "+inboxTable) })
	inbox, err := pgstore.New(ctx, p, pgstore.WithTable(inboxTable), pgstore.WithMigrate())
	if err != nil {
		t.Fatal(err)
	}

	r, err := c.Router("applier", []string{topic}, consumer.WithStart(broker.FromFirst), consumer.WithConcurrency(4))
	if err != nil {
		t.Fatal(err)
	}
	r.HandleAll(func(ctx context.Context, m *consumer.Message) error {
		return ignoreDuplicate(inbox.Once(ctx, "applier/"+m.Event.ID, time.Hour, func(tx pgx.Tx) error {
			_, err := tx.Exec(ctx, "INSERT INTO "+applied+" VALUES ($1, $2, $3)", m.Event.ID, m.Event.Subject, m.Event.Sequence)
			return err
		}))
	})
	testenv.RunRouter(t, r)

	// Two writers, each the only one for its keys, so a key's versions
	// commit in order.
	const writers, keys, perTx = 2, 50, 50
	var w sync.WaitGroup
	for wi := range writers {
		w.Go(func() {
			next := map[string]uint64{}
			for done := 0; done < faultEvents/writers; done += perTx {
				err := pgx.BeginFunc(ctx, p, func(tx pgx.Tx) error {
					batch := make([]*event.Event, 0, perTx)
					for j := range perTx {
						key := "k" + strconv.Itoa(((done+j)%(keys/writers))*writers+wi)
						next[key]++
						batch = append(batch, newEvent(key, next[key]))
					}
					return o.Add(ctx, tx, batch...)
				})
				if err != nil {
					t.Errorf("writer %d: %v", wi, err)
					return
				}
			}
		})
	}
	writing := make(chan struct{})
	go func() { w.Wait(); close(writing) }()

	// The relay is killed at random points until the outbox is empty or
	// maxKills kills are done; then one relay finishes the work.
	const maxKills = 40
	kills := 0
	var stderr bytes.Buffer
	start := time.Now()
	for {
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), childEnv+"=1", childNATSEnv+"="+emb.ClientURL(), childTableEnv+"="+o.Table(), childTopicEnv+"="+topic)
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
				t.Fatalf("relay child did not start: %v; output:\n%s", err, stderr.String())
			}
		case <-time.After(time.Minute):
			t.Fatalf("relay child not ready after a minute; output:\n%s", stderr.String())
		}
		finished := false
		select {
		case <-writing:
			finished = pending(t, o) == 0
		default:
		}
		if !finished && kills >= maxKills {
			// Enough crashes: this relay lives until the writers are done
			// and the outbox is empty, however slow the machine.
			<-writing
			testenv.Eventually(t, 5*time.Minute, "the last relay to empty the outbox", func() bool { return pending(t, o) == 0 })
			finished = true
		}
		if finished {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			break
		}
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond) // a random point of the relay's life, not a wait for a condition
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = cmd.Wait()
		kills++
		if testing.Verbose() {
			t.Logf("kill %d at %v: %d pending", kills, time.Since(start).Round(time.Millisecond), pending(t, o))
		}
	}
	t.Logf("%d events, relay killed %d times, %v", faultEvents, kills, time.Since(start).Round(time.Millisecond))
	if kills < 3 {
		t.Fatalf("relay killed only %d times: the test did not exercise crashes", kills)
	}

	got := published(t, b, topic)
	if len(got) != faultEvents {
		t.Fatalf("stream holds %d events, want %d", len(got), faultEvents)
	}
	last := map[string]uint64{}
	for i, e := range got {
		if e.Sequence != last[e.Subject]+1 {
			t.Fatalf("stream message %d: key %s version %d follows %d", i+1, e.Subject, e.Sequence, last[e.Subject])
		}
		last[e.Subject] = e.Sequence
	}
	var rows, distinct int
	testenv.Eventually(t, 2*time.Minute, fmt.Sprintf("the consumer to apply %d events", faultEvents), func() bool {
		err := p.QueryRow(ctx, "SELECT count(*), count(DISTINCT event_id) FROM "+applied).Scan(&rows, &distinct)
		return err == nil && distinct == faultEvents
	})
	if rows != faultEvents {
		t.Fatalf("%d applications of %d distinct events: some applied twice", rows, distinct)
	}
}

func ignoreDuplicate(err error) error {
	if errors.Is(err, idempotency.ErrDuplicate) {
		return nil
	}
	return err
}
